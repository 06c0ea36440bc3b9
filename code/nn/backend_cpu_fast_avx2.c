// backend_cpu_fast_avx2.c: the fast CPU kernels of backend_cpu_fast.c compiled a second time,
// for CPUs with AVX2 and FMA (code/nn/nn.cmake adds -mavx2 -mfma -ffp-contract=off for this file
// only). backend_cpu_fast.c's cpu_fast_install chooses this build at run time.
#define CPU_FAST_AVX2 1
#include "nn/backend_cpu_fast.c"
