# code/chapters.cmake: one program per chapter, each landing in the build folder as
# build/NN-name (01-data-loading, 02-visualization, 03-preprocessing, ...).
add_executable(01-data-loading code/01-data-loading.c)
target_link_libraries(01-data-loading PRIVATE petdata petimage)

add_executable(02-visualization code/02-visualization.c)
target_link_libraries(02-visualization PRIVATE petdata petfigure petimage)

# (sha256.c: --compare checks that an image is the one a torchvision fixture was made from)
add_executable(03-preprocessing code/03-preprocessing.c code/sha256.c)
target_link_libraries(03-preprocessing PRIVATE petdata petfigure petimage)
