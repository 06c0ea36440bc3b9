# code/data.cmake: the Oxford-IIIT Pet reader and the parallel batch loader (library petdata),
# and the figure helpers (canvas + text with stb_truetype) that the chapter programs draw with.
add_library(petdata STATIC code/dataset.c code/loader.c)
target_include_directories(petdata PUBLIC code)
target_link_libraries(petdata PUBLIC common Threads::Threads)
if(TARGET petimage)
  target_link_libraries(petdata PUBLIC petimage)
endif()
