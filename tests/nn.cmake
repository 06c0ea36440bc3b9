# tests/nn.cmake: the ResNet34 core on the CPU. test-backend-cpu checks every layer of the CPU
# backend (reference kernels and the fast ones installed over them) against definitions and
# adjoint identities; test-resnet34 checks the whole network against PyTorch fixtures written by
# tests/ref_resnet34.py (tests/fixtures/resnet34); test-resnet34-model checks freezing, memory
# reuse, initialisation and checkpoint loading.
if(TARGET nn)
  set(_fix ${CMAKE_SOURCE_DIR}/tests/fixtures/resnet34)
  add_executable(test-resnet34 tests/test_resnet34.c)
  target_include_directories(test-resnet34 PRIVATE tests)
  target_link_libraries(test-resnet34 PRIVATE nn common m)
  # The default CPU table (fast kernels where installed) and the naive reference kernels alone.
  add_test(NAME resnet34-parity COMMAND test-resnet34 ${_fix})
  add_test(NAME resnet34-parity-reference COMMAND test-resnet34 ${_fix})
  # OpenMP threads sleep instead of spinning at barriers: ctest runs tests side by side on few cores.
  set_tests_properties(resnet34-parity PROPERTIES ENVIRONMENT OMP_WAIT_POLICY=PASSIVE)
  set_tests_properties(resnet34-parity-reference PROPERTIES
                       ENVIRONMENT "PETS_CPU_REFERENCE=1;OMP_WAIT_POLICY=PASSIVE")
endif()

if(TARGET nn)
  add_executable(test-backend-cpu tests/test_backend_cpu.c)
  target_link_libraries(test-backend-cpu PRIVATE nn common m)
  add_test(NAME backend-cpu COMMAND test-backend-cpu)
  set_tests_properties(backend-cpu PROPERTIES ENVIRONMENT OMP_WAIT_POLICY=PASSIVE)
endif()

if(TARGET nn)
  add_executable(test-resnet34-model tests/test_resnet34_model.c)
  target_include_directories(test-resnet34-model PRIVATE tests)
  target_link_libraries(test-resnet34-model PRIVATE nn common m)
  add_test(NAME resnet34-model COMMAND test-resnet34-model)
  set_tests_properties(resnet34-model PROPERTIES ENVIRONMENT OMP_WAIT_POLICY=PASSIVE)
endif()
