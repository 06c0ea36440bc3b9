# code/comparison.cmake: chapter 6, build/06-comparison. It reads the results of chapters 04 and 05:
# their logs with code/runfiles.c, their JSON with docgen_lib's flat JSON reader; it draws with
# petfigure and takes class names from petdata.
add_executable(06-comparison code/06-comparison.c code/runfiles.c)
target_link_libraries(06-comparison PRIVATE docgen_lib petfigure petdata petimage common m)
