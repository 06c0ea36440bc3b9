# code/bench.cmake: build/bench-resnet34, the ResNet34 speed benchmark that `make bench` runs
# beside PyTorch (tests/bench-resnet34.sh).
if(TARGET nn)
  add_executable(bench-resnet34 code/bench-resnet34.c)
  target_link_libraries(bench-resnet34 PRIVATE nn common m Threads::Threads)
endif()
