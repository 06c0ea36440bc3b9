# tests/bench.cmake: a smoke run of build/bench-resnet34 on a tiny configuration, so that the
# benchmark keeps working; the real numbers come from `make bench` (tests/bench-resnet34.sh).
if(TARGET bench-resnet34)
  add_test(NAME bench-resnet34-smoke COMMAND bench-resnet34 --batch 2 --size 64 --iters 1
           --warmup 0 --no-peak)
  set_tests_properties(bench-resnet34-smoke PROPERTIES PASS_REGULAR_EXPRESSION
    "resnet34_eval_img_per_s=[0-9.]+\nresnet34_eval_gflop_per_s=[0-9.]+\nresnet34_eval_peak_rss_mib=[0-9]+\nresnet34_train_img_per_s=[0-9.]+")
endif()
