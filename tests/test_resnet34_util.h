// test_resnet34_util.h: helpers shared by the ResNet34 tests: the deterministic weight and input
// formula of tests/ref_resnet34.py (bit-identical on both sides), the fixture reader, and
// tolerance bookkeeping that remembers the worst error per kind of tensor.
#ifndef TEST_RESNET34_UTIL_H
#define TEST_RESNET34_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "nn/resnet34.h"

// ----------------------------------------------------------------------------
// the formula (see tests/ref_resnet34.py)

static inline uint64_t fx_mix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline double fx_uniform(uint64_t stream, uint64_t i) {
    return (double)(fx_mix((stream << 32) | i) >> 11) * 0x1.0p-53;
}

static inline int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

// Value i of parameter number t (state-dict order, num_batches_tracked not counted).
static inline float fx_param_value(const Param *p, uint64_t case_seed, int t, size_t i) {
    const double u = fx_uniform(case_seed * 0x10000 + (uint64_t)t, i), s = 2.0 * u - 1.0;
    double v;
    if (p->ndim == 4) v = s * sqrt(6.0 / (double)(p->shape[1] * p->shape[2] * p->shape[3]));
    else if (strncmp(p->name, "fc.", 3) == 0) v = s * (1.0 / sqrt(512.0));
    else if (ends_with(p->name, "running_mean")) v = s * 0.1;
    else if (ends_with(p->name, "running_var")) v = 0.75 + 0.5 * u;
    else if (ends_with(p->name, "bn2.weight")) v = 0.3 + 0.1 * s;
    else if (ends_with(p->name, "weight")) v = 1.0 + 0.25 * s;
    else v = 0.1 * s;
    return (float)v;
}

// Sets every parameter and buffer of m from the formula.
static inline void fx_init_model(ResNet34 *m, uint64_t case_seed) {
    for (int t = 0; t < resnet34_num_params(m); t++) {
        Param *p = resnet34_param(m, t);
        size_t n = p->value->numel;
        float *v = xmalloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++) v[i] = fx_param_value(p, case_seed, t, i);
        p->value->be->tensor_upload(p->value, v);
        free(v);
    }
    resnet34_params_changed(m);
}

static inline float *fx_input(uint64_t case_seed, int n, int h, int w) {
    size_t cnt = (size_t)n * 3 * h * w;
    float *x = xmalloc(cnt * sizeof(float));
    for (size_t i = 0; i < cnt; i++)
        x[i] = (float)(1.5 * (2.0 * fx_uniform(case_seed * 0x10000 + 0xFFFF, i) - 1.0));
    return x;
}

static inline void fx_labels(uint64_t case_seed, int n, int k, int *labels) {
    for (int i = 0; i < n; i++)
        labels[i] = (int)(fx_mix(((case_seed * 0x10000 + 0xFFFE) << 32) | (uint64_t)i) % (uint64_t)k);
}

static inline size_t fx_sample_index(int t, int j, size_t numel) {
    return (size_t)(fx_mix(((uint64_t)(0x5A5A0000 + t) << 32) | (uint64_t)j) % numel);
}

// ----------------------------------------------------------------------------
// fixture files

enum { FX_F32 = 0, FX_F64 = 1, FX_I64 = 2, FX_BYTES = 3 };

typedef struct {
    char name[65];
    int dtype;
    size_t count;
    const void *data;
} FxRecord;

typedef struct {
    uint8_t *buf;
    int n;
    FxRecord *r;
} Fixture;

static inline void fx_load(Fixture *fx, const char *path) {
    char err[512];
    size_t size;
    fx->buf = read_file(path, &size, 64u << 20, err, sizeof(err));
    if (!fx->buf) die("%s (regenerate with /usr/bin/python3 tests/ref_resnet34.py)", err);
    if (size < 16 || memcmp(fx->buf, "RN34FIX", 8) != 0) die("%s: not a ResNet34 fixture", path);
    uint32_t version, count;
    memcpy(&version, fx->buf + 8, 4);
    memcpy(&count, fx->buf + 12, 4);
    if (version != 1) die("%s: fixture version %u, this test reads version 1", path, version);
    if (count > 100000) die("%s: absurd record count %u", path, count);
    fx->n = (int)count;
    fx->r = xcalloc(count, sizeof(FxRecord));
    size_t off = 16;
    for (uint32_t i = 0; i < count; i++) {
        if (size - off < 80) die("%s: truncated at record %u", path, i);
        FxRecord *r = &fx->r[i];
        memcpy(r->name, fx->buf + off, 64);
        r->name[64] = 0;
        uint32_t dt;
        uint64_t cnt;
        memcpy(&dt, fx->buf + off + 64, 4);
        memcpy(&cnt, fx->buf + off + 72, 8);
        off += 80;
        size_t es = dt == FX_F32 ? 4 : dt == FX_BYTES ? 1 : dt <= FX_I64 ? 8 : 0;
        if (!es) die("%s: record '%s' has unknown dtype %u", path, r->name, dt);
        if (cnt > (size - off) / es) die("%s: record '%s' is truncated", path, r->name);
        r->dtype = (int)dt;
        r->count = (size_t)cnt;
        r->data = fx->buf + off;
        off += (size_t)cnt * es;
    }
    if (off != size) die("%s: %zu trailing bytes", path, size - off);
}

static inline const FxRecord *fx_find(const Fixture *fx, const char *name) {
    for (int i = 0; i < fx->n; i++)
        if (strcmp(fx->r[i].name, name) == 0) return &fx->r[i];
    return NULL;
}

static inline const FxRecord *fx_need(const Fixture *fx, const char *name, int dtype, size_t count) {
    const FxRecord *r = fx_find(fx, name);
    if (!r) die("fixture lacks record '%s'", name);
    if (r->dtype != dtype || (count && r->count != count))
        die("fixture record '%s': dtype %d count %zu, expected dtype %d count %zu", name, r->dtype,
            r->count, dtype, count);
    return r;
}

// Values of a record as doubles (unaligned-safe).
static inline double fx_get(const FxRecord *r, size_t i) {
    if (r->dtype == FX_F32) {
        float f;
        memcpy(&f, (const uint8_t *)r->data + 4 * i, 4);
        return f;
    }
    if (r->dtype == FX_F64) {
        double d;
        memcpy(&d, (const uint8_t *)r->data + 8 * i, 8);
        return d;
    }
    int64_t v;
    memcpy(&v, (const uint8_t *)r->data + 8 * i, 8);
    return (double)v;
}

static inline void fx_free(Fixture *fx) {
    free(fx->buf);
    free(fx->r);
}

// ----------------------------------------------------------------------------
// comparisons: |got - ref| <= atol + rtol |ref|; the worst error of each kind is remembered

typedef struct {
    const char *kind;
    double worst_abs, worst_rel, worst_ratio; // ratio: error / allowed (fails when > 1)
    char where[96];
    long checked, failed;
} ErrStat;

static inline void err_check(ErrStat *s, const char *what, size_t idx, double got, double ref,
                             double atol, double rtol) {
    double err = fabs(got - ref), allowed = atol + rtol * fabs(ref);
    double ratio = allowed > 0 ? err / allowed : (err > 0 ? INFINITY : 0);
    if (isnan(got) || isnan(ref)) ratio = INFINITY;
    s->checked++;
    if (err > s->worst_abs) s->worst_abs = err;
    if (fabs(ref) > 0 && err / fabs(ref) > s->worst_rel && fabs(ref) > atol) s->worst_rel = err / fabs(ref);
    if (ratio > s->worst_ratio || (s->checked == 1)) {
        if (ratio > s->worst_ratio) s->worst_ratio = ratio;
        snprintf(s->where, sizeof(s->where), "%s[%zu]", what, idx);
    }
    if (!(ratio <= 1.0)) {
        if (s->failed < 10)
            fprintf(stderr, "MISMATCH %s %s[%zu]: got %.8g, reference %.8g (|err| %.3g > %.3g)\n",
                    s->kind, what, idx, got, ref, err, allowed);
        s->failed++;
    }
}

static inline void err_report(const ErrStat *s) {
    if (!s->checked) return;
    printf("  %-18s %7ld values  worst |err| %.3g  worst rel (|ref| > atol) %.3g  worst err/tol %.3f at %s%s\n",
           s->kind, s->checked, s->worst_abs, s->worst_rel, s->worst_ratio, s->where,
           s->failed ? "  FAILED" : "");
}

#endif // TEST_RESNET34_UTIL_H
