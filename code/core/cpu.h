// cpu.h: which SIMD code path this CPU runs, decided at run time. The project is built for any
// x86-64 (no -march=native); the few hand-written vector kernels (the AVX-512 resize in
// data/preprocess.c, the FMA peak of bench-resnet34) are compiled with target attributes and
// called only when the CPU reports the features they use. Everything else is plain C.
//
// PETS_SIMD=scalar (or avx2) caps the level, so that a test can compare a fast path against the
// scalar one on the same machine, and a user can rule a vector kernel out when reporting a bug.
#ifndef CPU_H
#define CPU_H

typedef enum {
    CPU_SIMD_SCALAR = 0,  // baseline x86-64 (SSE2), or not x86 at all
    CPU_SIMD_AVX2 = 1,    // AVX2 + FMA
    CPU_SIMD_AVX512 = 2,  // AVX-512 F, BW, VL and VBMI (Ice Lake, Zen 4 and later)
} CpuSimd;

// What the CPU supports (ignoring PETS_SIMD and overrides).
CpuSimd cpu_simd_detected(void);
// What the fast paths may use: the detected level, capped by PETS_SIMD or cpu_simd_override.
CpuSimd cpu_simd(void);
// "scalar", "avx2", "avx512".
const char *cpu_simd_name(CpuSimd level);
// Test hook: caps the level at `level` (as PETS_SIMD would); -1 removes the cap.
void cpu_simd_override(int level);

#endif // CPU_H
