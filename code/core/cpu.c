// cpu.c: the run-time choice of SIMD code path (cpu.h), from the CPU's own feature flags
// (__builtin_cpu_supports, GCC and clang) capped by PETS_SIMD.
#include "core/cpu.h"

#include <stdlib.h>
#include <string.h>

#include "core/common.h"

static int g_override = -1;

CpuSimd cpu_simd_detected(void) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vbmi"))
        return CPU_SIMD_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CPU_SIMD_AVX2;
#endif
    return CPU_SIMD_SCALAR;
}

static int parse_level(const char *s) {
    if (!strcmp(s, "scalar")) return CPU_SIMD_SCALAR;
    if (!strcmp(s, "avx2")) return CPU_SIMD_AVX2;
    if (!strcmp(s, "avx512")) return CPU_SIMD_AVX512;
    return -1;
}

CpuSimd cpu_simd(void) {
    // the detection is cheap (a few bit tests of data cached by the runtime), so no static state
    // is shared between the loader's threads
    int level = (int)cpu_simd_detected();
    const char *env = getenv("PETS_SIMD");
    if (env && env[0]) {
        int cap = parse_level(env);
        if (cap < 0) die("PETS_SIMD=%s: use scalar, avx2 or avx512 (or unset it)", env);
        if (cap < level) level = cap;
    }
    int ov = __atomic_load_n(&g_override, __ATOMIC_RELAXED);
    if (ov >= 0 && ov < level) level = ov;
    return (CpuSimd)level;
}

const char *cpu_simd_name(CpuSimd level) {
    return level == CPU_SIMD_AVX512 ? "avx512" : level == CPU_SIMD_AVX2 ? "avx2" : "scalar";
}

void cpu_simd_override(int level) { __atomic_store_n(&g_override, level, __ATOMIC_RELAXED); }
