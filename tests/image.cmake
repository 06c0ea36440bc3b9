# tests/image.cmake: image decoding and preprocessing against PIL / torchvision fixtures
# (tests/fixtures/preprocess/, written by tests/ref_preprocess.py).
set(PREP_FIXTURES ${CMAKE_SOURCE_DIR}/tests/fixtures/preprocess)

# Decoding: formats as PIL converts them, bad input (empty, MATLAB, unknown, truncated, corrupt,
# oversized) refused with clear reasons; PNG writing. The real images when ../shared exists.
add_executable(test-image tests/test_image.c)
target_link_libraries(test-image PRIVATE petimage)
target_include_directories(test-image SYSTEM PRIVATE ${STB_INCLUDE_DIR})
add_test(NAME image COMMAND test-image ${PREP_FIXTURES} ${CMAKE_CURRENT_BINARY_DIR}/test-image.tmp)
add_test(NAME image-shared COMMAND test-image ${PREP_FIXTURES}
         ${CMAKE_CURRENT_BINARY_DIR}/test-image-shared.tmp --shared ${PETS_SHARED_DIR})
set_tests_properties(image-shared PROPERTIES SKIP_RETURN_CODE 77)

# Resize / crop / normalize, bit-exact against Pillow and torchvision on synthetic images.
add_executable(test-preprocess tests/test_preprocess.c)
target_link_libraries(test-preprocess PRIVATE petimage)
add_test(NAME preprocess COMMAND test-preprocess ${PREP_FIXTURES})

# The real PNG, GIF and JPEGs of the 3-class set against torchvision (skips without ../shared).
add_executable(test-preprocess-real tests/test_preprocess_real.c)
target_link_libraries(test-preprocess-real PRIVATE petimage)
add_test(NAME preprocess-shared COMMAND test-preprocess-real ${PREP_FIXTURES} ${PETS_SHARED_DIR})
set_tests_properties(preprocess-shared PROPERTIES SKIP_RETURN_CODE 77)
