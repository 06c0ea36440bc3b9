# code/tools.cmake: the package's tools (programs that are not chapters).

# --- docgen: the report's placeholder expander (Makefile.doc runs build/docgen on each chapter).
add_library(docgen_lib STATIC code/docgen.c)
target_link_libraries(docgen_lib PUBLIC common m)
add_executable(docgen code/docgen_main.c)
target_link_libraries(docgen PRIVATE docgen_lib)
