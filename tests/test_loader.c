// tests/test_loader.c: the batch loader (code/data/loader.c) on synthetic items.
// Checks: loader_permutation against tests/loader_permutation.py's output; batches arrive in order
// with the right item indices; 1 thread and many threads give identical bytes; failed samples are
// flagged with their reason and zero-filled; the ring bounds how far workers run ahead; an epoch
// can be abandoned (loader_start again, or loader_destroy while workers are busy).
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/common.h"
#include "data/loader.h"
#include "check.h"

#define SAMPLE 37 // bytes per sample (odd on purpose)

typedef struct {
    int fail_mod;         // items with index % fail_mod == fail_rem fail (0 = none fail)
    int fail_rem;
    int delay_us;         // work per sample, varied by index so samples finish out of order
    atomic_int max_index; // the largest index loaded so far
    atomic_int calls;
} Ctx;

static void sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static int load_fn(void *vctx, int index, void *out, char *err, size_t errlen) {
    Ctx *c = vctx;
    atomic_fetch_add(&c->calls, 1);
    int m = atomic_load(&c->max_index);
    while (index > m && !atomic_compare_exchange_weak(&c->max_index, &m, index)) {}
    if (c->delay_us) sleep_us(c->delay_us * (1 + (index * 7919) % 5));
    uint8_t *o = out;
    for (int k = 0; k < SAMPLE; k++) o[k] = (uint8_t)(index * 131 + k * 7 + 1);
    if (c->fail_mod && index % c->fail_mod == c->fail_rem) {
        o[0] = 0xAB; // garbage the loader must wipe
        return set_err(err, errlen, "item %d: synthetic failure", index);
    }
    return 0;
}

// Runs one epoch; returns all sample bytes concatenated, checking indices against `order`.
static uint8_t *run_epoch(int n, int bs, int threads, int prefetch, const int *order, Ctx *ctx,
                          int *n_failed) {
    Loader *l = loader_create(n, SAMPLE, bs, threads, prefetch, load_fn, ctx);
    loader_start(l, order, n);
    uint8_t *all = xcalloc((size_t)n, SAMPLE);
    Batch b;
    int pos = 0, nb = 0;
    *n_failed = 0;
    while (loader_next(l, &b)) {
        int expect_n = n - pos < bs ? n - pos : bs;
        CHECK(b.n == expect_n, "batch %d has %d samples, expected %d", nb, b.n, expect_n);
        for (int k = 0; k < b.n; k++) {
            int want = order ? order[pos + k] : pos + k;
            CHECK(b.index[k] == want, "batch %d sample %d: index %d, expected %d", nb, k,
                  b.index[k], want);
            if (!b.ok[k]) {
                (*n_failed)++;
                char expect[64];
                snprintf(expect, sizeof expect, "item %d: synthetic failure", b.index[k]);
                CHECK(b.errors[k] && strcmp(b.errors[k], expect) == 0, "error '%s', expected '%s'",
                      b.errors[k] ? b.errors[k] : "(null)", expect);
                const uint8_t *d = (const uint8_t *)b.data + (size_t)k * SAMPLE;
                int zero = 1;
                for (int j = 0; j < SAMPLE; j++) zero &= d[j] == 0;
                CHECK(zero, "failed sample %d is not zero-filled", b.index[k]);
            } else {
                CHECK(b.errors[k] == NULL, "ok sample has an error string");
            }
        }
        memcpy(all + (size_t)pos * SAMPLE, b.data, (size_t)b.n * SAMPLE);
        pos += b.n;
        nb++;
    }
    CHECK(pos == n, "epoch delivered %d samples, expected %d", pos, n);
    CHECK(!loader_next(l, &b), "loader_next after the end returned a batch");
    loader_destroy(l);
    return all;
}

static void test_permutation(void) {
    // from `python3 tests/loader_permutation.py`
    static const int p1[10] = {6, 1, 8, 5, 2, 7, 4, 3, 9, 0};
    static const int p2[10] = {9, 0, 5, 3, 7, 2, 8, 1, 6, 4};
    static const int p3[20] = {13, 10, 1, 3, 14, 11, 7, 6, 2, 16, 9, 0, 12, 4, 5, 18, 17, 19, 15, 8};
    static const int p4[7] = {2, 4, 3, 5, 6, 1, 0};
    int o[20];
    loader_permutation(o, 10, 42, 0);
    CHECK(memcmp(o, p1, sizeof p1) == 0, "permutation(10, 42, 0) differs from the Python reference");
    loader_permutation(o, 10, 42, 1);
    CHECK(memcmp(o, p2, sizeof p2) == 0, "permutation(10, 42, 1) differs from the Python reference");
    loader_permutation(o, 20, 0xDEADBEEFCAFEF00DULL, 3);
    CHECK(memcmp(o, p3, sizeof p3) == 0, "permutation(20, 0xdeadbeefcafef00d, 3) differs");
    loader_permutation(o, 7, 0, -1);
    CHECK(memcmp(o, p4, sizeof p4) == 0, "permutation(7, 0, -1) differs");
    // a real permutation for a big n, and deterministic
    int n = 3680;
    int *a = xmalloc(n * sizeof(int)), *b = xmalloc(n * sizeof(int)), *seen = xcalloc(n, sizeof(int));
    loader_permutation(a, n, 1234, 5);
    loader_permutation(b, n, 1234, 5);
    CHECK(memcmp(a, b, n * sizeof(int)) == 0, "same seed and epoch gave different orders");
    int fixed = 0;
    for (int i = 0; i < n; i++) {
        CHECK(a[i] >= 0 && a[i] < n && !seen[a[i]], "not a permutation at %d", i);
        if (a[i] >= 0 && a[i] < n) seen[a[i]] = 1;
        fixed += a[i] == i;
    }
    CHECK(fixed < 10, "%d fixed points: the shuffle barely moved anything", fixed);
    loader_permutation(b, n, 1234, 6);
    CHECK(memcmp(a, b, n * sizeof(int)) != 0, "epochs 5 and 6 gave the same order");
    // (seed, epoch) is hashed, not added: seed s at epoch e + 1 (b) is not seed s + 1 at epoch e,
    // nor are seed and epoch interchangeable
    loader_permutation(a, n, 1235, 5);
    CHECK(memcmp(a, b, n * sizeof(int)) != 0, "seed 1234 epoch 6 shuffles like seed 1235 epoch 5");
    for (int s = 0; s < 8; s++)
        for (int e = 0; e < 8; e++) {
            loader_permutation(a, n, (uint64_t)s, e + 1);
            loader_permutation(b, n, (uint64_t)s + 1, e);
            CHECK(memcmp(a, b, n * sizeof(int)) != 0,
                  "seed %d epoch %d shuffles like seed %d epoch %d", s, e + 1, s + 1, e);
            loader_permutation(b, n, (uint64_t)e + 1, s);
            CHECK(s == e + 1 || memcmp(a, b, n * sizeof(int)) != 0,
                  "seed %d epoch %d shuffles like seed %d epoch %d", s, e + 1, e + 1, s);
        }
    loader_permutation(o, 1, 9, 9);
    CHECK(o[0] == 0, "permutation of one item");
    free(a), free(b), free(seen);
}

static void test_order_and_threads(void) {
    int n = 203, bs = 16, nf;
    Ctx c1 = {.delay_us = 0};
    uint8_t *ref = run_epoch(n, bs, 1, 1, NULL, &c1, &nf);
    CHECK(nf == 0, "%d failures without failing items", nf);
    for (int i = 0; i < n; i++)
        CHECK(ref[(size_t)i * SAMPLE + 3] == (uint8_t)(i * 131 + 21 + 1), "sample %d bytes", i);
    int configs[][2] = {{2, 0}, {4, 2}, {8, 3}, {13, 0}, {3, 1}};
    for (size_t t = 0; t < sizeof configs / sizeof configs[0]; t++) {
        Ctx c = {.delay_us = 50};
        uint8_t *got = run_epoch(n, bs, configs[t][0], configs[t][1], NULL, &c, &nf);
        CHECK(memcmp(ref, got, (size_t)n * SAMPLE) == 0,
              "%d threads, prefetch %d: bytes differ from 1 thread", configs[t][0], configs[t][1]);
        CHECK(atomic_load(&c.calls) == n, "fn called %d times for %d items", atomic_load(&c.calls),
              n);
        free(got);
    }
    // shuffled epoch: batches follow the permutation
    int *order = xmalloc(n * sizeof(int));
    loader_permutation(order, n, 7, 2);
    Ctx c2 = {.delay_us = 20};
    uint8_t *sh = run_epoch(n, bs, 4, 0, order, &c2, &nf);
    for (int i = 0; i < n; i++)
        CHECK(memcmp(sh + (size_t)i * SAMPLE, ref + (size_t)order[i] * SAMPLE, SAMPLE) == 0,
              "shuffled position %d does not hold item %d", i, order[i]);
    free(sh), free(order), free(ref);
    // batch size larger than the dataset, and an empty epoch
    Ctx c3 = {0};
    uint8_t *one = run_epoch(5, 64, 3, 0, NULL, &c3, &nf);
    free(one);
    Ctx c4 = {0};
    Loader *l = loader_create(0, SAMPLE, 8, 2, 0, load_fn, &c4);
    loader_start(l, NULL, 0);
    Batch b;
    CHECK(!loader_next(l, &b), "an empty epoch returned a batch");
    loader_destroy(l);
}

static void test_failures(void) {
    int n = 100, nf;
    Ctx c = {.fail_mod = 7, .fail_rem = 3, .delay_us = 10};
    uint8_t *all = run_epoch(n, 9, 4, 0, NULL, &c, &nf);
    int expect = 0;
    for (int i = 0; i < n; i++) expect += i % 7 == 3;
    CHECK(nf == expect, "%d failed samples reported, expected %d", nf, expect);
    free(all);
}

static void test_bounded(void) {
    // Workers may run ahead of the consumer by at most the ring: while the consumer holds batch k,
    // no position at or beyond (k + prefetch) * bs may have been claimed.
    int n = 400, bs = 8, prefetch = 3;
    Ctx c = {.delay_us = 0};
    atomic_init(&c.max_index, -1);
    Loader *l = loader_create(n, SAMPLE, bs, 4, prefetch, load_fn, &c);
    CHECK(loader_prefetch(l) == prefetch, "prefetch %d, asked %d", loader_prefetch(l), prefetch);
    loader_start(l, NULL, n);
    Batch b;
    int k = 0, reached = 0;
    while (loader_next(l, &b)) {
        sleep_us(2000); // a slow consumer: workers fill the ring and must then wait
        int m = atomic_load(&c.max_index);
        int limit = (k + prefetch) * bs;
        if (limit > n) limit = n;
        CHECK(m < limit, "holding batch %d, item %d was loaded (limit %d)", k, m, limit);
        reached += m == limit - 1;
        k++;
    }
    CHECK(reached > 0, "workers never filled the ring ahead of the consumer");
    loader_destroy(l);
    // the default ring is small too: a few batches, not the dataset
    Loader *l2 = loader_create(100000, SAMPLE, 32, 16, 0, load_fn, &c);
    CHECK(loader_prefetch(l2) == 2, "default prefetch for 16 threads, batch 32: %d",
          loader_prefetch(l2));
    loader_destroy(l2);
}

static void test_abandon(void) {
    // loader_destroy while workers are busy mid-epoch
    Ctx c = {.delay_us = 300};
    Loader *l = loader_create(2000, SAMPLE, 10, 4, 0, load_fn, &c);
    loader_start(l, NULL, 2000);
    Batch b;
    CHECK(loader_next(l, &b) && loader_next(l, &b), "first batches");
    double t0 = now_seconds();
    loader_destroy(l);
    CHECK(now_seconds() - t0 < 2.0, "loader_destroy took %.2f s mid-epoch", now_seconds() - t0);
    CHECK(atomic_load(&c.calls) < 2000, "the whole epoch was loaded before destroy returned");
    // loader_start again mid-epoch: the new epoch is complete and correct
    Ctx c2 = {.delay_us = 100, .fail_mod = 5, .fail_rem = 0};
    l = loader_create(300, SAMPLE, 7, 3, 0, load_fn, &c2);
    loader_start(l, NULL, 300);
    for (int i = 0; i < 3; i++) CHECK(loader_next(l, &b), "batch %d", i);
    int order[50];
    loader_permutation(order, 50, 3, 0);
    for (int i = 0; i < 50; i++) order[i] += 200;
    loader_start(l, order, 50);
    int pos = 0, nfail = 0;
    while (loader_next(l, &b)) {
        for (int k = 0; k < b.n; k++, pos++) {
            CHECK(b.index[k] == order[pos], "restarted epoch position %d: %d != %d", pos,
                  b.index[k], order[pos]);
            const uint8_t *d = (const uint8_t *)b.data + (size_t)k * SAMPLE;
            if (b.ok[k])
                CHECK(d[5] == (uint8_t)(b.index[k] * 131 + 35 + 1), "restarted epoch bytes");
            else
                nfail++;
        }
    }
    CHECK(pos == 50, "restarted epoch delivered %d of 50", pos);
    int expect = 0;
    for (int i = 0; i < 50; i++) expect += order[i] % 5 == 0;
    CHECK(nfail == expect, "restarted epoch: %d failures, expected %d", nfail, expect);
    // a second full epoch on the same loader
    loader_start(l, NULL, 300);
    pos = 0;
    while (loader_next(l, &b)) pos += b.n;
    CHECK(pos == 300, "second epoch delivered %d of 300", pos);
    loader_destroy(l);
}

int main(void) {
    test_permutation();
    test_order_and_threads();
    test_failures();
    test_bounded();
    test_abandon();
    return check_exit("test-loader: all checks passed");
}
