# tests/data.cmake: the dataset reader, the batch loader and `make data`.
add_executable(test-loader tests/test_loader.c)
target_link_libraries(test-loader PRIVATE petdata)
add_test(NAME loader COMMAND test-loader)

add_executable(test-dataset tests/test_dataset.c)
target_link_libraries(test-dataset PRIVATE petdata)
add_test(NAME dataset COMMAND test-dataset ${CMAKE_CURRENT_BINARY_DIR}/test-dataset.tmp)

# The real 3-class subset: split sizes, class ids and names (skips when ../shared is absent).
add_test(NAME dataset-shared COMMAND test-dataset --shared ${PETS_SHARED_DIR})
set_tests_properties(dataset-shared PROPERTIES SKIP_RETURN_CODE 77)

# `make data` on local files: checksum verification, atomic + resumable download, extraction.
add_test(NAME make-data COMMAND sh ${CMAKE_SOURCE_DIR}/tests/test_make_data.sh ${CMAKE_SOURCE_DIR}
         ${CMAKE_CURRENT_BINARY_DIR}/make-data.tmp)
set_tests_properties(make-data PROPERTIES SKIP_RETURN_CODE 77) # no curl
