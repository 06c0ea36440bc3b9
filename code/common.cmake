# code/common.cmake: the helpers every library and program uses.
add_library(common STATIC code/common.c)
target_include_directories(common PUBLIC code)
target_link_libraries(common PUBLIC m Threads::Threads)
