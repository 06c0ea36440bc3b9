# code/bench/bench.cmake: the speed benchmarks that `make bench` runs beside PyTorch
# (tests/bench-preprocess.sh, tests/bench-resnet34.sh).
#   bench-preprocess: decode + preprocess, single-threaded and through the batch loader;
#   bench-resnet34:   the eval forward and the training step of ResNet34.
add_executable(bench-preprocess code/bench/bench-preprocess.c)
target_link_libraries(bench-preprocess PRIVATE petdata petimage Threads::Threads)
target_compile_definitions(bench-preprocess PRIVATE HAVE_LOADER=1
                           PETS_SHARED_DIR="${PETS_SHARED_DIR}")

add_executable(bench-resnet34 code/bench/bench-resnet34.c)
target_link_libraries(bench-resnet34 PRIVATE nn common m Threads::Threads)
