// test_cpu_dispatch.c: the run-time choice of SIMD path (core/cpu.h). The build has no
// -march=native, so a vector kernel runs only when the CPU reports its features:
//   - cpu_simd_detected() agrees with the kernel's view of this CPU (/proc/cpuinfo flags);
//   - the resize takes its AVX-512 passes exactly when the CPU has AVX-512 F/BW/VL/VBMI;
//   - PETS_SIMD=scalar and cpu_simd_override force the scalar passes, and the forced-scalar
//     resize gives the very bytes of the default path on random sizes (on an AVX-512 machine this
//     compares the two paths; elsewhere both are scalar, and the test says so).
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/cpu.h"
#include "data/preprocess.h"

// 1 when every flag in `flags` (space separated) is on the "flags" line of /proc/cpuinfo;
// -1 when there is no /proc/cpuinfo (not Linux x86).
static int cpuinfo_has(const char *flags) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return -1;
    char *line = NULL;
    size_t cap = 0;
    int found = -1;
    while (getline(&line, &cap, f) > 0) {
        if (strncmp(line, "flags", 5)) continue;
        found = 1;
        char want[256];
        snprintf(want, sizeof want, "%s", flags);
        for (char *tok = strtok(want, " "); tok; tok = strtok(NULL, " ")) {
            char pat[64];
            snprintf(pat, sizeof pat, " %s", tok);
            char *p = line;
            int hit = 0;
            while ((p = strstr(p, pat))) {
                char end = p[strlen(pat)];
                if (end == ' ' || end == '\n' || end == '\0') { hit = 1; break; }
                p++;
            }
            if (!hit) found = 0;
        }
        break;
    }
    free(line);
    fclose(f);
    return found;
}

static uint64_t rng_state = 987654321;
static int rnd(int lo, int hi) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (int)((rng_state >> 33) % (uint64_t)(hi - lo + 1));
}

int main(void) {
    unsetenv("PETS_SIMD");
    CpuSimd det = cpu_simd_detected();
    int avx512 = cpuinfo_has("avx512f avx512bw avx512vl avx512vbmi");
    int avx2 = cpuinfo_has("avx2 fma");
    printf("this CPU: %s (cpuinfo: avx512 %d, avx2+fma %d)\n", cpu_simd_name(det), avx512, avx2);
    if (avx512 >= 0) {
        CpuSimd want = avx512 ? CPU_SIMD_AVX512 : avx2 ? CPU_SIMD_AVX2 : CPU_SIMD_SCALAR;
        CHECK(det == want, "detected %s, /proc/cpuinfo says %s", cpu_simd_name(det),
              cpu_simd_name(want));
    }
    CHECK(cpu_simd() == det, "without PETS_SIMD the level is the detected one");
    CHECK(resize_uses_avx512() == (det == CPU_SIMD_AVX512),
          "resize takes the AVX-512 passes %s on a CPU with %s", resize_uses_avx512() ? "" : "not",
          cpu_simd_name(det));
    const int default_avx512 = resize_uses_avx512();

    // PETS_SIMD caps the level, never raises it
    setenv("PETS_SIMD", "scalar", 1);
    CHECK(cpu_simd() == CPU_SIMD_SCALAR && !resize_uses_avx512(), "PETS_SIMD=scalar is ignored");
    setenv("PETS_SIMD", "avx2", 1);
    CHECK(cpu_simd() == (det < CPU_SIMD_AVX2 ? det : CPU_SIMD_AVX2), "PETS_SIMD=avx2 is ignored");
    setenv("PETS_SIMD", "avx512", 1);
    CHECK(cpu_simd() == det, "PETS_SIMD=avx512 must not raise the level above the CPU's");
    unsetenv("PETS_SIMD");

    // default path vs forced scalar, byte for byte
    int cases = 0;
    for (int t = 0; t < 60; t++) {
        int w = rnd(1, 700), h = rnd(1, 700), ow = rnd(1, 400), oh = rnd(1, 400);
        Image in = {.w = w, .h = h, .rgb = xmalloc((size_t)w * h * 3)};
        for (size_t i = 0; i < (size_t)w * h * 3; i++) in.rgb[i] = (uint8_t)rnd(0, 255);
        Image a, b;
        cpu_simd_override(-1);
        CHECK(resize_bilinear(&in, ow, oh, &a) == 0, "resize failed");
        cpu_simd_override(CPU_SIMD_SCALAR);
        CHECK(!resize_uses_avx512(), "cpu_simd_override(scalar) is ignored");
        CHECK(resize_bilinear(&in, ow, oh, &b) == 0, "resize (scalar) failed");
        CHECK(a.rgb && b.rgb && !memcmp(a.rgb, b.rgb, (size_t)ow * oh * 3),
              "%s path != scalar path resizing %dx%d to %dx%d",
              default_avx512 ? "avx512" : "default", w, h, ow, oh);
        image_free(&a);
        image_free(&b);
        image_free(&in);
        cases++;
    }
    cpu_simd_override(-1);
    printf("resize: %s path vs forced scalar: %d random sizes, byte-identical%s\n",
           default_avx512 ? "avx512" : "scalar", cases,
           default_avx512 ? "" : " (SKIP the avx512 comparison: this CPU has no AVX-512)");
    return check_exit("cpu dispatch checks passed");
}
