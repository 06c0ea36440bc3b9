# tests/cpufast.cmake: every fast CPU kernel against its reference kernel (test_cpu_fast.c).
# `build/test-cpu-fast --bench` times the fast kernels at ResNet34's batch-32 shapes.
if(TARGET nn)
  add_executable(test-cpu-fast tests/test_cpu_fast.c)
  target_link_libraries(test-cpu-fast PRIVATE nn common)
  add_test(NAME cpu_fast COMMAND test-cpu-fast)
endif()
