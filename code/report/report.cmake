# code/report/report.cmake: what turns results into the report.
#   petfigure: the canvas and text (stb_truetype) the chapter programs draw their figures with;
#   docgen_lib + build/docgen: the report's placeholder expander (Makefile.doc runs it on each
#   chapter) and its flat JSON reader, which 06-comparison also uses.
add_library(petfigure STATIC code/report/figure.c)
target_include_directories(petfigure SYSTEM PRIVATE ${STB_INCLUDE_DIR})
target_link_libraries(petfigure PUBLIC petimage common m)

add_library(docgen_lib STATIC code/report/docgen.c)
target_link_libraries(docgen_lib PUBLIC common m)
add_executable(docgen code/report/docgen_main.c)
target_link_libraries(docgen PRIVATE docgen_lib)
