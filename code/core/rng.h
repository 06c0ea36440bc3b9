// rng.h: the project's one random number generator, identical streams on every machine:
// xoshiro256** (Blackman and Vigna) seeded through splitmix64, and splitmix64 itself, which also
// derives per-purpose seeds and the loader's shuffle (data/loader.h). A leaf: includes nothing of
// the project.
#ifndef RNG_H
#define RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} Rng;
void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_u64(Rng *r);
double rng_uniform(Rng *r);            // [0, 1)
double rng_normal(Rng *r);             // N(0, 1)
// splitmix64: *state += 0x9e3779b97f4a7c15, then returns the mix of the new *state:
//   z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
//   return z ^ (z >> 31)
// The mix is a bijection of 64-bit words, so distinct states give distinct outputs.
uint64_t splitmix64(uint64_t *state);

#endif // RNG_H
