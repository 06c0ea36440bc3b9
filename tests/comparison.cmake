# tests/comparison.cmake: chapter 6 (build/06-comparison) on synthetic result files of chapters 04
# and 05, and the gnuplot figures of chapters 4-6 drawn from them (tests/test_comparison.sh).
add_test(NAME comparison
         COMMAND sh ${CMAKE_SOURCE_DIR}/tests/test_comparison.sh ${CMAKE_BINARY_DIR}
                 ${CMAKE_SOURCE_DIR} ${CMAKE_CURRENT_BINARY_DIR}/comparison.tmp)

# The run-file readers of chapter 6 on good files and on what the fuzzer found (tests/fuzz/).
add_executable(test-runfiles tests/test_runfiles.c)
target_link_libraries(test-runfiles PRIVATE petresults)
add_test(NAME runfiles COMMAND test-runfiles ${CMAKE_CURRENT_BINARY_DIR}/test-runfiles.tmp)
