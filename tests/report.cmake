# tests/report.cmake: the literate report: the placeholder expander (docgen) and `make report`.

# docgen: JSON parsing, formatting, code regions, tables, weights mark, failures naming file:line:key.
add_executable(test-docgen tests/test_docgen.c)
target_link_libraries(test-docgen PRIVATE docgen_lib)
add_test(NAME docgen COMMAND test-docgen $<TARGET_FILE:docgen> ${CMAKE_CURRENT_BINARY_DIR}/test-docgen.tmp)

# `make report`'s document half on the 3-breed subset (skipped when ../shared is absent): programs
# 01-03, report.pdf and its numbers, make's dependencies, the random-weights header on every page.
# Every output goes to a scratch folder; the developer's results/ and report.pdf are not touched.
add_test(NAME report COMMAND sh ${CMAKE_SOURCE_DIR}/tests/test_report.sh ${CMAKE_SOURCE_DIR}
         ${CMAKE_BINARY_DIR} ${PETS_SHARED_DIR} ${CMAKE_CURRENT_BINARY_DIR}/report.tmp)
# Generous: it renders the whole report (pdflatex included) and runs 07 on a tiny sweep.
set_tests_properties(report PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 1800)
