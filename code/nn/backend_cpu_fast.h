// backend_cpu_fast.h: the fast CPU kernels (oneDNN convolutions, vectorised multi-threaded
// element-wise layers). backend_cpu.c builds the CPU table from its naive reference kernels and
// then calls cpu_fast_install(), which replaces table entries by fast versions with the very same
// arguments and semantics. Setting PETS_CPU_REFERENCE=1 in the environment skips the install, so
// every fast kernel can be checked against its reference.
#ifndef BACKEND_CPU_FAST_H
#define BACKEND_CPU_FAST_H

#include "nn/backend.h"

void cpu_fast_install(Backend *be);

#endif // BACKEND_CPU_FAST_H
