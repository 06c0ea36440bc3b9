# tests/train.cmake: the training pieces (code/nn/train.c and adam.c, compiled into the nn
# library; the RNG of code/core/rng.c) and the backends' cross-entropy and Adam against PyTorch
# fixtures (tests/fixtures/train, written by tests/ref_train.py).
if(TARGET nn)
  set(_fix ${CMAKE_SOURCE_DIR}/tests/fixtures/train)
  add_executable(test-train tests/test_train.c)
  target_include_directories(test-train PRIVATE tests)
  target_link_libraries(test-train PRIVATE nn common m)
  add_test(NAME train COMMAND test-train ${_fix})

  add_executable(test-train-nn tests/test_train_nn.c)
  target_include_directories(test-train-nn PRIVATE tests)
  target_link_libraries(test-train-nn PRIVATE nn common m)
  add_test(NAME train-nn COMMAND test-train-nn ${_fix} cpu)
  add_test(NAME train-nn-cuda COMMAND test-train-nn ${_fix} cuda)
  set_tests_properties(train-nn-cuda PROPERTIES SKIP_RETURN_CODE 77 LABELS gpu)
endif()
