# code/image.cmake: image decoding (stb_image, JPEG/PNG/GIF only) and torchvision's preprocessing,
# as the static library `petimage`; and the decode+preprocess benchmark build/bench-preprocess.
add_library(petimage STATIC code/image.c code/preprocess.c)
target_include_directories(petimage PUBLIC code)
target_include_directories(petimage SYSTEM PRIVATE ${STB_INCLUDE_DIR})
target_link_libraries(petimage PUBLIC common m Threads::Threads)

# The benchmark times the multi-threaded run through the batch loader (library petdata, defined
# in code/data.cmake, which is included after this file); without it, plain pthreads.
add_executable(bench-preprocess code/bench-preprocess.c)
target_link_libraries(bench-preprocess PRIVATE petimage $<TARGET_NAME_IF_EXISTS:petdata>
                      Threads::Threads)
target_compile_definitions(bench-preprocess PRIVATE
  $<$<TARGET_EXISTS:petdata>:HAVE_LOADER=1> PETS_SHARED_DIR="${PETS_SHARED_DIR}")
