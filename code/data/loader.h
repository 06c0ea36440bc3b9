// loader.h: a parallel batch loader. Worker threads produce samples (decode + preprocess, or any
// per-item function) into a bounded ring of batches, so memory stays bounded whatever the dataset
// size; the consumer receives batches in order. Shuffling uses a seeded permutation that is the
// same on every machine (see loader_permutation).
#ifndef LOADER_H
#define LOADER_H

#include <stddef.h>
#include <stdint.h>

// Fills `out` (sample_bytes bytes) for item `index`. Returns 0, or -1 with a reason in err
// (the item is then reported as failed in its batch, never silently dropped).
typedef int (*LoadFn)(void *ctx, int index, void *out, char *err, size_t errlen);

typedef struct {
    int n;           // samples in this batch (the last batch may be short)
    void *data;      // (n, sample_bytes) packed, in order
    const int *index;// (n) item index of each sample
    const int *ok;   // (n) 1 if loaded, 0 if it failed (its data is zeros)
    char **errors;   // (n) reason for a failed sample, NULL otherwise
} Batch;

typedef struct Loader Loader;

// nthreads <= 0 means all cores. prefetch = batches in the ring, the one the consumer holds
// included (>= 1; 0 picks 1 + ceil(2 * nthreads / batch_size), at least 2). Memory: prefetch
// batches of batch_size * sample_bytes, whatever n_items. Worker threads call fn concurrently, each
// on a different index; fn must be safe to call that way. The bytes of every batch are the same
// for any nthreads and prefetch (each sample is written to its own place by fn alone).
Loader *loader_create(int n_items, size_t sample_bytes, int batch_size, int nthreads, int prefetch,
                      LoadFn fn, void *ctx);
// Starts an epoch over `order` (n_order item indices, copied; NULL = 0..n_items-1 in order).
// An epoch still running is abandoned (samples being loaded are waited for, then discarded).
void loader_start(Loader *l, const int *order, int n_order);
// Next batch of the epoch, or 0 at its end. The batch stays valid until the next call.
int loader_next(Loader *l, Batch *b);
// Stops the workers (each finishes the sample it is loading; safe mid-epoch) and frees everything.
void loader_destroy(Loader *l);
int loader_prefetch(const Loader *l); // the ring size chosen
int loader_threads(const Loader *l);  // the worker count chosen

// The shuffled order for an epoch, identical on every machine. Exactly (all arithmetic on
// unsigned 64-bit integers, wrapping; tests/loader_permutation.py reproduces it in Python), with
// next(x) = splitmix64(&x) of core/rng.h:
//   next(x):  x += 0x9e3779b97f4a7c15;  z = x;
//             z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
//             return z ^ (z >> 31)
//   x = seed;  x = next(x) ^ epoch  (epoch sign-extended to 64 bits);  state = next(x)
//   order[i] = i for all i
//   for i = n-1 down to 1:  j = next(state) % (i + 1);  swap(order[i], order[j])  (Fisher-Yates)
// The seed is mixed before the epoch enters, so (seed, epoch + 1) and (seed + 1, epoch) give
// unrelated orders; for one seed, distinct epochs give distinct starting states.
void loader_permutation(int *order, int n, uint64_t seed, int epoch);

#endif // LOADER_H
