// tests/train_fixture.h: reads the PyTorch fixtures that tests/ref_train.py writes
// (tests/fixtures/train/*.bin) and compares values with tolerances atol + rtol * |ref|.
// Format, version 1, little endian: "PFIX", u32 version, u32 count, then per array: u32 name
// length, name, u32 ndim, ndim x i64 dims, numel x f64 values.
#ifndef TRAIN_FIXTURE_H
#define TRAIN_FIXTURE_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/common.h"

typedef struct {
    char name[96];
    int ndim;
    int64_t dims[4];
    size_t numel;
    double *v;
} FixArray;

typedef struct {
    int n;
    FixArray *a;
    char path[512];
} Fixture;

static inline uint32_t fix_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

// Loads FIXTURE_DIR/name; dies with a message naming the file on any inconsistency.
static inline void fix_load(Fixture *fx, const char *dir, const char *name) {
    snprintf(fx->path, sizeof fx->path, "%s/%s", dir, name);
    char err[600];
    size_t size;
    uint8_t *buf = read_file(fx->path, &size, 16u << 20, err, sizeof err);
    if (!buf) die("%s (regenerate with /usr/bin/python3 tests/ref_train.py)", err);
    if (size < 12 || memcmp(buf, "PFIX", 4) || fix_u32(buf + 4) != 1)
        die("%s: not a version-1 PFIX fixture", fx->path);
    fx->n = (int)fix_u32(buf + 8);
    fx->a = xcalloc((size_t)fx->n, sizeof(FixArray));
    size_t off = 12;
    for (int i = 0; i < fx->n; i++) {
        FixArray *a = &fx->a[i];
        if (off + 4 > size) die("%s: truncated", fx->path);
        uint32_t len = fix_u32(buf + off);
        off += 4;
        if (len >= sizeof a->name || off + len + 4 > size) die("%s: bad name", fx->path);
        memcpy(a->name, buf + off, len);
        off += len;
        a->ndim = (int)fix_u32(buf + off);
        off += 4;
        if (a->ndim > 4 || off + 8u * (size_t)a->ndim > size) die("%s: bad ndim", fx->path);
        a->numel = 1;
        for (int d = 0; d < a->ndim; d++) {
            int64_t v;
            memcpy(&v, buf + off, 8);
            off += 8;
            if (v < 0 || v > (1 << 24)) die("%s: bad dim in %s", fx->path, a->name);
            a->dims[d] = v;
            a->numel *= (size_t)v;
        }
        if (off + 8 * a->numel > size) die("%s: truncated in %s", fx->path, a->name);
        a->v = xmalloc(8 * a->numel + 8);
        memcpy(a->v, buf + off, 8 * a->numel);
        off += 8 * a->numel;
    }
    free(buf);
}

static inline FixArray *fix_get(Fixture *fx, const char *name) {
    for (int i = 0; i < fx->n; i++)
        if (!strcmp(fx->a[i].name, name)) return &fx->a[i];
    die("%s: no array '%s' (regenerate with /usr/bin/python3 tests/ref_train.py)", fx->path, name);
}

static inline void fix_free(Fixture *fx) {
    for (int i = 0; i < fx->n; i++) free(fx->a[i].v);
    free(fx->a);
}

// ----------------------------------------------------------------------------
// comparisons (CHECK and approx_eq come from check.h)

// Compares got[i] with ref[i] for i < n, |got - ref| <= atol + rtol |ref|; prints the worst
// error and returns it. NaN in got never passes.
static inline double check_close(const char *what, const float *got, const double *ref, size_t n,
                          double atol, double rtol) {
    double worst = 0, worst_rel = 0;
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!approx_eq(got[i], ref[i], atol, rtol)) {
            if (!bad) first_bad = i;
            bad++;
        }
        if (d > worst || isnan(d)) worst = d;
        double rel = d / (fabs(ref[i]) + 1e-30);
        if (rel > worst_rel && fabs(ref[i]) > atol) worst_rel = rel;
    }
    printf("  %-34s n=%-6zu max|err|=%.3g  max rel=%.3g%s\n", what, n, worst, worst_rel,
           bad ? "  MISMATCH" : "");
    CHECK(!bad, "%s: %zu of %zu values off; first at %zu: got %.9g, want %.9g", what, bad, n,
          first_bad, (double)got[first_bad], ref[first_bad]);
    return worst;
}

#endif // TRAIN_FIXTURE_H
