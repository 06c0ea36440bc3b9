# tests/testing.cmake: pets_nn_test(), the one way the tests of the network core declare a C test
# program and its CTest test, included before the other tests/*.cmake.
#   pets_nn_test(NAME [SOURCE file] [TEST test] [ARGS ...] [ENV ...])
# builds test-NAME from SOURCE (default tests/test_NAME.c with - as _), linked with the nn and
# common libraries and able to include tests/*.h, and registers the test TEST (default NAME) that
# runs it with ARGS. Every such test runs with OMP_WAIT_POLICY=PASSIVE (OpenMP threads sleep
# instead of spinning at barriers: ctest runs tests side by side on few cores) plus ENV.
function(pets_nn_test name)
  cmake_parse_arguments(T "" "SOURCE;TEST" "ARGS;ENV" ${ARGN})
  if(NOT T_SOURCE)
    string(REPLACE "-" "_" src ${name})
    set(T_SOURCE tests/test_${src}.c)
  endif()
  if(NOT T_TEST)
    set(T_TEST ${name})
  endif()
  if(NOT TARGET test-${name})
    add_executable(test-${name} ${T_SOURCE})
    target_include_directories(test-${name} PRIVATE tests)
    target_link_libraries(test-${name} PRIVATE nn common m)
  endif()
  add_test(NAME ${T_TEST} COMMAND test-${name} ${T_ARGS})
  set_tests_properties(${T_TEST} PROPERTIES ENVIRONMENT "OMP_WAIT_POLICY=PASSIVE;${T_ENV}")
endfunction()
