# tests/portable.cmake: one build for every x86-64. The SIMD path is chosen at run time (core/cpu.h)
# and the scalar one gives the same bytes; the build flags carry no -march=native and -Werror only
# for CI and developers (PETS_WERROR).
add_executable(test-cpu-dispatch tests/test_cpu_dispatch.c)
target_link_libraries(test-cpu-dispatch PRIVATE petimage common)
add_test(NAME cpu-dispatch COMMAND test-cpu-dispatch)
add_test(NAME build-flags COMMAND sh ${CMAKE_SOURCE_DIR}/tests/test_build_flags.sh
         ${CMAKE_SOURCE_DIR} ${CMAKE_CURRENT_BINARY_DIR}/build-flags.tmp)
# The fast CPU kernels exist twice (portable, and AVX2 + FMA chosen at run time): cpu_fast tests the
# one this CPU picks; this one the portable build, forced by PETS_SIMD=scalar.
if(TARGET test-cpu-fast)
  add_test(NAME cpu_fast-portable COMMAND test-cpu-fast)
  set_tests_properties(cpu_fast-portable PROPERTIES ENVIRONMENT "PETS_SIMD=scalar")
endif()
