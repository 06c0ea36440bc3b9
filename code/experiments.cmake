# code/experiments.cmake: the training chapters, build/04-feature-extraction and
# build/05-fine-tuning, and the helpers they share (library `experiment`: command line, keyed
# caches, batch sources, epoch log, checkpoints, result files; SHA-256 for the cache keys).
add_library(experiment STATIC code/experiment.c code/exp_data.c code/exp_checkpoint.c code/sha256.c)
target_include_directories(experiment PUBLIC code)
target_link_libraries(experiment PUBLIC nn petdata petimage pth common m)

add_executable(04-feature-extraction code/04-feature-extraction.c)
target_link_libraries(04-feature-extraction PRIVATE experiment)

add_executable(05-fine-tuning code/05-fine-tuning.c)
target_link_libraries(05-fine-tuning PRIVATE experiment)
