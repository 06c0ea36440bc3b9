// loader.c: the parallel batch loader of loader.h.
//
// Design. The epoch is a sequence of positions 0..n_order-1; position j belongs to batch
// j / batch_size, which lives in ring slot (j / batch_size) % prefetch. Workers claim positions one
// at a time from a shared counter (so all threads help with the same batch and a batch is ready as
// soon as possible), but only for batches that have a free slot: batch b may be filled once the
// consumer has released batch b - prefetch. The consumer waits until every sample of the next
// batch is in, hands it out, and releases it on its next call. Memory is therefore prefetch
// batches, whatever the dataset size, and the bytes of every batch do not depend on the number of
// threads or on timing: each sample is written to its fixed place by the LoadFn alone.
#define _GNU_SOURCE
#include "data/loader.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/common.h"
#include "core/rng.h"

// ----------------------------------------------------------------------------
// the shuffled order

// One hash of (seed, epoch): seed mixed, xored with the epoch, mixed again (loader.h). Mixing the
// seed first is what keeps (seed, epoch + 1) apart from (seed + 1, epoch).
static uint64_t epoch_state(uint64_t seed, int epoch) {
    uint64_t x = seed;
    x = splitmix64(&x) ^ (uint64_t)(int64_t)epoch;
    return splitmix64(&x);
}

void loader_permutation(int *order, int n, uint64_t seed, int epoch) {
    for (int i = 0; i < n; i++) order[i] = i;
    uint64_t state = epoch_state(seed, epoch);
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(splitmix64(&state) % (uint64_t)(i + 1));
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

// ----------------------------------------------------------------------------
// the ring

typedef struct {
    uint8_t *data; // (batch_size, sample_bytes)
    int *index;    // (batch_size)
    int *ok;       // (batch_size)
    char **errors; // (batch_size)
    int filled;    // samples of the batch written so far
} Slot;

struct Loader {
    int n_items, batch_size, nthreads, prefetch;
    size_t sample_bytes;
    LoadFn fn;
    void *ctx;
    Slot *slots;        // (prefetch)
    pthread_t *threads; // (nthreads)

    pthread_mutex_t mu;
    pthread_cond_t work; // signalled when positions become claimable (or on stop)
    pthread_cond_t done; // signalled when a sample is finished
    int *order;          // (n_order) this epoch's item indices
    int n_order, n_batches;
    int active;          // an epoch is running
    int stop;            // loader_destroy was called
    int next_pos;        // next position to claim
    int released;        // batches the consumer has finished with
    int delivered;       // batches handed to the consumer
    int busy;            // workers inside fn
};

static int batch_len(const Loader *l, int b) {
    int rest = l->n_order - b * l->batch_size;
    return rest < l->batch_size ? rest : l->batch_size;
}

static int claimable(const Loader *l) {
    return l->active && l->next_pos < l->n_order &&
           l->next_pos / l->batch_size < l->released + l->prefetch;
}

static void *worker_main(void *arg) {
    Loader *l = arg;
    char err[1024];
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->stop && !claimable(l)) pthread_cond_wait(&l->work, &l->mu);
        if (l->stop) break;
        int pos = l->next_pos++;
        int b = pos / l->batch_size, k = pos % l->batch_size;
        Slot *s = &l->slots[b % l->prefetch];
        int item = l->order[pos];
        l->busy++;
        pthread_mutex_unlock(&l->mu);

        // The slot is ours for this position: the consumer does not read it until it is full and
        // no other worker writes this sample.
        uint8_t *out = s->data + (size_t)k * l->sample_bytes;
        err[0] = 0;
        int rc = l->fn(l->ctx, item, out, err, sizeof err);
        s->index[k] = item;
        s->ok[k] = rc == 0;
        if (rc != 0) {
            memset(out, 0, l->sample_bytes);
            s->errors[k] = xstrdup(err[0] ? err : "load failed (no reason given)");
        }

        pthread_mutex_lock(&l->mu);
        l->busy--;
        s->filled++;
        pthread_cond_broadcast(&l->done);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static void slot_reset(Slot *s, int batch_size) {
    for (int k = 0; k < batch_size; k++) {
        free(s->errors[k]);
        s->errors[k] = NULL;
    }
    s->filled = 0;
}

// ----------------------------------------------------------------------------
// API

Loader *loader_create(int n_items, size_t sample_bytes, int batch_size, int nthreads, int prefetch,
                      LoadFn fn, void *ctx) {
    if (n_items < 0 || batch_size < 1 || !fn) die("loader_create: bad arguments");
    if (nthreads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = c > 0 ? (int)c : 1;
    }
    if (prefetch <= 0) {
        // enough batches in flight that every thread has a sample to work on while the consumer
        // holds one batch: one batch held, then ceil(2 * nthreads / batch_size) being filled
        prefetch = 1 + (2 * nthreads + batch_size - 1) / batch_size;
        if (prefetch < 2) prefetch = 2;
    }
    size_t batch_bytes;
    if (size_mul(sample_bytes ? sample_bytes : 1, (size_t)batch_size, &batch_bytes))
        die("loader_create: a batch of %d samples of %zu bytes overflows", batch_size,
            sample_bytes);
    Loader *l = xcalloc(1, sizeof *l);
    l->n_items = n_items;
    l->sample_bytes = sample_bytes;
    l->batch_size = batch_size;
    l->nthreads = nthreads;
    l->prefetch = prefetch;
    l->fn = fn;
    l->ctx = ctx;
    l->slots = xcalloc((size_t)prefetch, sizeof(Slot));
    for (int i = 0; i < prefetch; i++) {
        l->slots[i].data = xcalloc(1, batch_bytes);
        l->slots[i].index = xcalloc((size_t)batch_size, sizeof(int));
        l->slots[i].ok = xcalloc((size_t)batch_size, sizeof(int));
        l->slots[i].errors = xcalloc((size_t)batch_size, sizeof(char *));
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->work, NULL);
    pthread_cond_init(&l->done, NULL);
    l->threads = xcalloc((size_t)nthreads, sizeof(pthread_t));
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&l->threads[i], NULL, worker_main, l) != 0)
            die("loader_create: cannot start worker thread %d of %d", i + 1, nthreads);
    return l;
}

void loader_start(Loader *l, const int *order, int n_order) {
    pthread_mutex_lock(&l->mu);
    // abandon an epoch in progress: no new claims, wait for samples being loaded
    l->active = 0;
    while (l->busy > 0) pthread_cond_wait(&l->done, &l->mu);
    for (int i = 0; i < l->prefetch; i++) slot_reset(&l->slots[i], l->batch_size);
    free(l->order);
    if (!order) n_order = l->n_items;
    l->order = xmalloc((size_t)(n_order > 0 ? n_order : 1) * sizeof(int));
    for (int i = 0; i < n_order; i++) {
        int v = order ? order[i] : i;
        if (v < 0 || v >= l->n_items)
            die("loader_start: order[%d] = %d is outside 0..%d", i, v, l->n_items - 1);
        l->order[i] = v;
    }
    l->n_order = n_order;
    l->n_batches = (n_order + l->batch_size - 1) / l->batch_size;
    l->next_pos = 0;
    l->released = 0;
    l->delivered = 0;
    l->active = 1;
    pthread_cond_broadcast(&l->work);
    pthread_mutex_unlock(&l->mu);
}

int loader_next(Loader *l, Batch *b) {
    memset(b, 0, sizeof *b);
    pthread_mutex_lock(&l->mu);
    if (!l->active) {
        pthread_mutex_unlock(&l->mu);
        return 0;
    }
    if (l->delivered > l->released) { // release the batch handed out last time
        slot_reset(&l->slots[l->released % l->prefetch], l->batch_size);
        l->released++;
        pthread_cond_broadcast(&l->work);
    }
    if (l->delivered == l->n_batches) {
        l->active = 0;
        pthread_mutex_unlock(&l->mu);
        return 0;
    }
    int bi = l->delivered;
    Slot *s = &l->slots[bi % l->prefetch];
    int n = batch_len(l, bi);
    while (s->filled < n) pthread_cond_wait(&l->done, &l->mu);
    l->delivered++;
    pthread_mutex_unlock(&l->mu);
    b->n = n;
    b->data = s->data;
    b->index = s->index;
    b->ok = s->ok;
    b->errors = s->errors;
    return 1;
}

int loader_prefetch(const Loader *l) { return l->prefetch; }
int loader_threads(const Loader *l) { return l->nthreads; }

void loader_destroy(Loader *l) {
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_broadcast(&l->work);
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; i < l->nthreads; i++) pthread_join(l->threads[i], NULL);
    for (int i = 0; i < l->prefetch; i++) {
        slot_reset(&l->slots[i], l->batch_size);
        free(l->slots[i].data);
        free(l->slots[i].index);
        free(l->slots[i].ok);
        free(l->slots[i].errors);
    }
    free(l->slots);
    free(l->threads);
    free(l->order);
    pthread_cond_destroy(&l->work);
    pthread_cond_destroy(&l->done);
    pthread_mutex_destroy(&l->mu);
    free(l);
}
