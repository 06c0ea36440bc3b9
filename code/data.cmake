# code/data.cmake: the Oxford-IIIT Pet reader, the parallel batch loader and the flat JSON results
# writer (library petdata),
# and the figure helpers (library petfigure: canvas + text with stb_truetype) the chapter programs
# draw with.
add_library(petdata STATIC code/dataset.c code/loader.c code/results.c)
target_include_directories(petdata PUBLIC code)
target_link_libraries(petdata PUBLIC common Threads::Threads)
if(TARGET petimage)
  target_link_libraries(petdata PUBLIC petimage)
endif()

add_library(petfigure STATIC code/figure.c)
target_include_directories(petfigure PUBLIC code)
target_include_directories(petfigure SYSTEM PRIVATE ${STB_INCLUDE_DIR})
target_link_libraries(petfigure PUBLIC petimage common m)
