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

// nthreads <= 0 means all cores. prefetch = batches in flight (>= 1; 0 picks 2 per thread).
Loader *loader_create(int n_items, size_t sample_bytes, int batch_size, int nthreads, int prefetch,
                      LoadFn fn, void *ctx);
// Starts an epoch over `order` (n_order item indices; NULL = 0..n_items-1 in order).
void loader_start(Loader *l, const int *order, int n_order);
// Next batch of the epoch, or 0 at its end. The batch stays valid until the next call.
int loader_next(Loader *l, Batch *b);
void loader_destroy(Loader *l);

// The shuffled order for an epoch: a Fisher-Yates permutation of 0..n-1 driven by
// splitmix64(seed + epoch); identical on every machine.
void loader_permutation(int *order, int n, uint64_t seed, int epoch);

#endif // LOADER_H
