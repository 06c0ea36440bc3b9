# code/experiment/experiment.cmake: the machinery the training chapters share, above the model.
#   petresults: the one JSON results writer (results.c) and the readers of run files (runfiles.c:
#               epoch logs, predictions) that 06 uses; chapters 01-03 write their results with it;
#   experiment: command line, keyed caches, batch sources, epoch log and checkpoints of 04 and 05;
#               few_shot.c: subsets, epoch rule, training-free baselines and run table of 07.
add_library(petresults STATIC code/experiment/results.c code/experiment/runfiles.c)
target_link_libraries(petresults PUBLIC petdata common m)

add_library(experiment STATIC code/experiment/experiment.c code/experiment/exp_data.c
                              code/experiment/exp_checkpoint.c code/experiment/few_shot.c)
target_link_libraries(experiment PUBLIC nn petresults petdata petimage pth common m)
