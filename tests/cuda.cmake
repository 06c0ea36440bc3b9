# tests/cuda.cmake: tests of the cuDNN backend, labelled `gpu`. They are built in every build
# (against the CPU-only library they simply find no GPU) and report "skipped" (exit code 77)
# where no usable GPU is present. tests/gpu/device-check.sh runs them on a GPU machine.
if(TARGET nn)
  foreach(t cuda-backend cuda-resnet34)
    string(REPLACE "-" "_" src ${t})
    add_executable(test-${t} tests/test_${src}.c)
    target_link_libraries(test-${t} PRIVATE nn common)
    foreach(prec fp32 fp16)
      add_test(NAME ${t}-${prec} COMMAND test-${t} ${prec})
      set_tests_properties(${t}-${prec} PROPERTIES LABELS gpu SKIP_RETURN_CODE 77)
    endforeach()
  endforeach()
endif()
# What the GPU backend does differently (fp16 fc, one synchronisation for GradScaler's check, the
# activation pool by batch capacity), on the CPU stand-in that models it (nn/backend_standin.h):
# runs everywhere.
if(TARGET nn)
  add_executable(test-gpu-standin tests/test_gpu_standin.c)
  target_include_directories(test-gpu-standin PRIVATE tests)
  target_link_libraries(test-gpu-standin PRIVATE nn common m)
  add_test(NAME gpu-standin COMMAND test-gpu-standin)
  set_tests_properties(gpu-standin PROPERTIES ENVIRONMENT OMP_WAIT_POLICY=PASSIVE)
endif()
# The GPU self-check before --device auto / cuda trusts a GPU (nn/selfcheck.h), with planted faults
# in the stand-in: the library call, then the programs' behaviour.
if(TARGET nn)
  add_executable(test-self-check tests/test_self_check.c)
  target_include_directories(test-self-check PRIVATE tests)
  target_link_libraries(test-self-check PRIVATE nn common m)
  add_test(NAME self-check COMMAND test-self-check)
  add_test(NAME self-check-programs COMMAND sh ${CMAKE_SOURCE_DIR}/tests/test_self_check.sh
           ${CMAKE_BINARY_DIR} ${CMAKE_CURRENT_BINARY_DIR}/self-check.tmp)
  set_tests_properties(self-check self-check-programs PROPERTIES ENVIRONMENT OMP_WAIT_POLICY=PASSIVE)
endif()
# The layer-by-layer GPU test run against the stand-in: the stand-in's fp16 model of the GPU stays
# within the tolerances the device is held to (and the test itself runs somewhere on every build).
if(TARGET nn)
  foreach(prec fp32 fp16)
    add_test(NAME cuda-backend-standin-${prec} COMMAND test-cuda-backend ${prec})
    set_tests_properties(cuda-backend-standin-${prec} PROPERTIES
                         ENVIRONMENT "PETS_CUDA_STANDIN=1;OMP_WAIT_POLICY=PASSIVE")
  endforeach()
endif()
