# tests/nn.cmake: the ResNet34 core on the CPU. test-backend-cpu checks every layer of the CPU
# backend (reference kernels and the fast ones installed over them) against definitions and
# adjoint identities; test-resnet34 checks the whole network against PyTorch fixtures written by
# tests/ref_resnet34.py (tests/fixtures/resnet34); test-resnet34-model checks freezing, memory
# reuse, initialisation and checkpoint loading.
if(TARGET nn)
  set(_fix ${CMAKE_SOURCE_DIR}/tests/fixtures/resnet34)
  # The default CPU table (fast kernels where installed) and the naive reference kernels alone.
  pets_nn_test(resnet34 TEST resnet34-parity ARGS ${_fix})
  pets_nn_test(resnet34 TEST resnet34-parity-reference ARGS ${_fix} ENV PETS_CPU_REFERENCE=1)
  pets_nn_test(backend-cpu)
  pets_nn_test(resnet34-model)
endif()
