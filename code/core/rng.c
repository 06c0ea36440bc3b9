// rng.c: xoshiro256** and splitmix64 (rng.h). Integer arithmetic only, so the u64 stream is the
// same on every machine and compiler. Checked by tests/test_train.c against published values and
// an independent Python implementation (tests/ref_train.py).
#include "core/rng.h"

#include <math.h>

// ----------------------------------------------------------------------------
// xoshiro256**, its 256-bit state filled by splitmix64 from one 64-bit seed, as the xoshiro
// authors recommend.

uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void rng_seed(Rng *r, uint64_t seed) {
    uint64_t sm = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&sm);
    // splitmix64 never yields four zero words in a row, so the state is never all zero.
}

static inline uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t rng_u64(Rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl64(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

// ----------------------------------------------------------------------------
// uniform and normal doubles

// The top 53 bits as a double in [0, 1): every value is a multiple of 2^-53, exactly
// representable, so uniform numbers too are identical everywhere.
double rng_uniform(Rng *r) { return (double)(rng_u64(r) >> 11) * 0x1.0p-53; }

// Standard normal by the Box-Muller transform, using the cosine branch only (one normal per two
// uniforms; Rng keeps no cached second value so that its state stays four words).
// u1 is taken in (0, 1] so that log(u1) is finite. The result goes through libm's log, sqrt and
// cos, so it may differ in the last bit between C libraries; the uniforms feeding it never do.
double rng_normal(Rng *r) {
    double u1 = 1.0 - rng_uniform(r); // (0, 1]
    double u2 = rng_uniform(r);       // [0, 1)
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
