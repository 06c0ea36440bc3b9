# tests/report.cmake: the literate report: the placeholder expander (docgen) and `make report`.

# docgen: JSON parsing, formatting, code regions, tables, weights mark, failures naming file:line:key.
add_executable(test-docgen tests/test_docgen.c)
target_link_libraries(test-docgen PRIVATE docgen_lib)
add_test(NAME docgen COMMAND test-docgen $<TARGET_FILE:docgen> ${CMAKE_CURRENT_BINARY_DIR}/test-docgen.tmp)
