# code/comparison.cmake: chapter 6, build/06-comparison (reads the results of chapters 04 and 05;
# flat JSON reader from docgen_lib, the figure helpers from petfigure, class names from petdata).
add_executable(06-comparison code/06-comparison.c)
target_link_libraries(06-comparison PRIVATE docgen_lib petfigure petdata petimage common m)
