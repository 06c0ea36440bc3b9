# tests/cuda.cmake: tests of the cuDNN backend, labelled `gpu`. They are built in every build
# (against the CPU-only library they simply find no GPU) and report "skipped" (exit code 77)
# where no usable GPU is present. tests/gpu/device-check.sh runs them on a GPU machine.
# The same programs, layer by layer and the whole network, also run against the CPU stand-in of
# the GPU (nn/backend_standin.h, PETS_CUDA_STANDIN=1) on every build: its fp16 model of the GPU
# stays within the tolerances the device is held to (the whole network's fp16 gradients are held
# to a baseline the test measures: see tests/test_cuda_resnet34.c; fp16 12-15 s on 2 threads).
if(TARGET nn)
  foreach(t cuda-backend cuda-resnet34)
    foreach(prec fp32 fp16)
      pets_nn_test(${t} TEST ${t}-${prec} ARGS ${prec})
      set_tests_properties(${t}-${prec} PROPERTIES LABELS gpu SKIP_RETURN_CODE 77)
      pets_nn_test(${t} TEST ${t}-standin-${prec} ARGS ${prec} ENV PETS_CUDA_STANDIN=1)
    endforeach()
  endforeach()
  # What the GPU backend does differently (fp16 fc, one synchronisation for GradScaler's check,
  # the activation pool by batch capacity), on the stand-in that models it: runs everywhere.
  pets_nn_test(gpu-standin)
  # The GPU self-check before --device auto / cuda trusts a GPU (nn/selfcheck.h), with planted
  # faults in the stand-in: the library call, then the programs' behaviour.
  pets_nn_test(self-check)
  add_test(NAME self-check-programs COMMAND sh ${CMAKE_SOURCE_DIR}/tests/test_self_check.sh
           ${CMAKE_BINARY_DIR} ${CMAKE_CURRENT_BINARY_DIR}/self-check.tmp)
  set_tests_properties(self-check-programs PROPERTIES ENVIRONMENT OMP_WAIT_POLICY=PASSIVE)
endif()
