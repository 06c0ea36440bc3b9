# tests/layers.cmake: the layers of code/ (code/layers.txt, drawn in code/README.md). `layers`
# fails when a file includes a header of a higher layer or modules include each other in a cycle;
# `layers-selftest` shows that it can fail, on synthetic trees. POSIX sh and awk only.
add_test(NAME layers COMMAND sh ${CMAKE_SOURCE_DIR}/tests/check_layers.sh ${CMAKE_SOURCE_DIR}/code)
add_test(NAME layers-selftest COMMAND sh ${CMAKE_SOURCE_DIR}/tests/test_check_layers.sh
         ${CMAKE_SOURCE_DIR} ${CMAKE_CURRENT_BINARY_DIR}/layers-selftest.tmp)
