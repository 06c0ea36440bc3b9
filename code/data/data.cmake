# code/data/data.cmake: everything between a file on disk and a normalised tensor.
#   petimage: image decoding (stb_image, JPEG/PNG/GIF only, behind checks of our own: jpeg_scan.c
#             walks JPEG scans) and torchvision's preprocessing;
#   petdata:  the Oxford-IIIT Pet reader and the parallel batch loader.
add_library(petimage STATIC code/data/image.c code/data/jpeg_scan.c code/data/stb_write.c
            code/data/preprocess.c)
# stb_image_write's JPEG writer shifts into the sign bit (see stb_write.c): exempt from that check
set_source_files_properties(code/data/stb_write.c PROPERTIES COMPILE_OPTIONS -fno-sanitize=shift-base)
target_include_directories(petimage SYSTEM PRIVATE ${STB_INCLUDE_DIR})
target_link_libraries(petimage PUBLIC common m Threads::Threads)

add_library(petdata STATIC code/data/dataset.c code/data/loader.c)
target_link_libraries(petdata PUBLIC petimage common Threads::Threads)
