# tests/chapters.cmake: the chapter programs end to end (tests/test_chapters.sh), on a synthetic
# dataset written by make-fake-pets and, when it exists, on the real 3-class subset.
add_executable(make-fake-pets tests/make_fake_pets.c)
target_link_libraries(make-fake-pets PRIVATE petimage common)
target_include_directories(make-fake-pets SYSTEM PRIVATE ${STB_INCLUDE_DIR})
add_test(NAME chapters-01-03
         COMMAND sh ${CMAKE_SOURCE_DIR}/tests/test_chapters.sh ${CMAKE_BINARY_DIR}
                 ${CMAKE_CURRENT_BINARY_DIR}/chapters-01-03.tmp ${PETS_SHARED_DIR})
