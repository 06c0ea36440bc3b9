// test_pth.c: checkpoints read and written by code/checkpoint/pth.c against files torch.save wrote
// (tests/fixtures/pth, made by tests/ref_pth.py), byte for byte where torch's layout is fixed.
//   test-pth FIXTURE_DIR OUT_DIR      run the tests (CTest)
//   test-pth --resave IN OUT [NAME]   load IN, save it as OUT (archive folder NAME)
//   test-pth --time IN [REPEATS]      time pth_load of IN
//   test-pth --write-fixture DIR      (re)write DIR/c_written.pth (the C-written fixture); then
//       /usr/bin/python3 tests/ref_pth.py --torch-expect DIR/c_written.pth DIR/c_written.txt
//   writes its expected values as torch.load reads them
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "checkpoint/pickle.h"
#include "checkpoint/pth.h"
#include "checkpoint/zip.h"
#include "check.h"

// ----------------------------------------------------------------------------
// expected values (NAME.txt from ref_pth.py)

static const char *dtype_str(PthDType dt) {
    static const char *s[] = {"f32", "f16", "f64", "i64", "i32", "u8"};
    return s[dt];
}

static double half_to_double(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(m + 1024, e - 25);
    return (h & 0x8000) ? -v : v;
}

static double elem_double(const PthTensor *t, size_t i) {
    switch (t->dtype) {
    case PTH_F32: return ((const float *)t->data)[i];
    case PTH_F16: return half_to_double(((const uint16_t *)t->data)[i]);
    case PTH_F64: return ((const double *)t->data)[i];
    default: return NAN;
    }
}

static int64_t elem_int(const PthTensor *t, size_t i) {
    switch (t->dtype) {
    case PTH_I64: return ((const int64_t *)t->data)[i];
    case PTH_I32: return ((const int32_t *)t->data)[i];
    case PTH_U8: return ((const uint8_t *)t->data)[i];
    default: return INT64_MIN;
    }
}

// Compares a loaded state dict with a text file of expected values: names, order, dtypes,
// shapes and every value exactly.
static void compare_expect(const StateDict *sd, const char *txt, const char *what) {
    size_t n;
    char err[512];
    char *buf = (char *)read_file(txt, &n, 0, err, sizeof err);
    if (!buf) {
        CHECK(0, "%s", err);
        return;
    }
    buf = xrealloc(buf, n + 1);
    buf[n] = 0;
    int i = 0, bad = 0;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save), i++) {
        char name[256], dt[8];
        int nd, off;
        if (sscanf(line, "%255s %7s %d%n", name, dt, &nd, &off) != 3) {
            CHECK(0, "%s: bad line %d", txt, i);
            break;
        }
        if (i >= sd->n) {
            CHECK(0, "%s: %s: missing tensor %s", what, txt, name);
            bad++;
            break;
        }
        const PthTensor *t = &sd->t[i];
        char *p = line + off;
        int64_t shape[PTH_MAX_DIMS];
        for (int d = 0; d < nd && d < PTH_MAX_DIMS; d++) shape[d] = strtoll(p, &p, 10);
        if (strcmp(t->name, name) || strcmp(dtype_str(t->dtype), dt) || t->ndim != nd) {
            CHECK(0, "%s: tensor %d is %s %s/%d, expected %s %s/%d", what, i, t->name,
                  dtype_str(t->dtype), t->ndim, name, dt, nd);
            bad++;
            continue;
        }
        for (int d = 0; d < nd; d++)
            if (t->shape[d] != shape[d]) {
                CHECK(0, "%s: %s dim %d is %lld, expected %lld", what, name, d,
                      (long long)t->shape[d], (long long)shape[d]);
                bad++;
            }
        p = strstr(p, ":");
        if (!p) { CHECK(0, "%s: no values for %s", txt, name); continue; }
        p++;
        size_t k = 0;
        for (;; k++) {
            char *end;
            if (t->dtype == PTH_F32 || t->dtype == PTH_F16 || t->dtype == PTH_F64) {
                double v = strtod(p, &end);
                if (end == p) break;
                if (k < t->numel && elem_double(t, k) != v) {
                    CHECK(0, "%s: %s[%zu] = %.17g, expected %.17g", what, name, k,
                          elem_double(t, k), v);
                    bad++;
                }
            } else {
                long long v = strtoll(p, &end, 10);
                if (end == p) break;
                if (k < t->numel && elem_int(t, k) != v) {
                    CHECK(0, "%s: %s[%zu] = %lld, expected %lld", what, name, k,
                          (long long)elem_int(t, k), v);
                    bad++;
                }
            }
            p = end;
        }
        CHECK(k == t->numel, "%s: %s has %zu values, expected %zu", what, name, t->numel, k);
    }
    CHECK(i == sd->n, "%s: %d tensors, expected %d", what, sd->n, i);
    free(buf);
    if (!bad) printf("ok   %s: %d tensors match %s\n", what, sd->n, txt);
}

static int files_equal(const char *a, const char *b) {
    size_t na, nb;
    uint8_t *x = read_or_die(a, &na, 0), *y = read_or_die(b, &nb, 0);
    size_t first = 0;
    while (first < na && first < nb && x[first] == y[first]) first++;
    int eq = na == nb && first == na;
    if (!eq) fprintf(stderr, "%s (%zu bytes) and %s (%zu bytes) differ from byte %zu\n", a, na, b,
                     nb, first);
    free(x);
    free(y);
    return eq;
}

// ----------------------------------------------------------------------------
// a state dict made from a formula (the C-written fixture; ref_pth.py --check reads it)

static void formula_sd(StateDict *sd) {
    memset(sd, 0, sizeof *sd);
    int64_t s4[4] = {4, 3, 3, 3}, s1[1] = {4}, s2[2] = {5, 4};
    float w[108], b[4], fc[20];
    for (int i = 0; i < 108; i++) w[i] = (float)sin(0.1 * i) * 0.5f;
    for (int i = 0; i < 4; i++) b[i] = 0.25f * (float)i - 0.5f;
    for (int i = 0; i < 20; i++) fc[i] = (float)cos(0.37 * i);
    uint16_t h[4] = {0x3c00, 0xc000, 0x3555, 0x0001}; // 1, -2, 0.333..., smallest subnormal
    int64_t nbt = 12345678901LL;
    int32_t i32[4] = {-1, 0, 1, 2147483647};
    uint8_t u8[4] = {0, 7, 128, 255};
    double f64[4] = {1e-300, -2.5, 3.141592653589793, 1e300};
    sd_add(sd, "conv1.weight", PTH_F32, 4, s4, w);
    sd_add(sd, "bn1.bias", PTH_F32, 1, s1, b);
    sd_add(sd, "bn1.num_batches_tracked", PTH_I64, 0, NULL, &nbt);
    sd_add(sd, "fc.weight", PTH_F32, 2, s2, fc);
    sd_add(sd, "half", PTH_F16, 1, s1, h);
    sd_add(sd, "int", PTH_I32, 1, s1, i32);
    sd_add(sd, "byte", PTH_U8, 1, s1, u8);
    sd_add(sd, "double", PTH_F64, 1, s1, f64);
    int64_t e[2] = {0, 3};
    sd_add(sd, "empty", PTH_F32, 2, e, NULL);
    for (int i = 0; i < 12; i++) { // enough names for LONG_BINPUT in our own pickle
        char name[32];
        float v = (float)i;
        snprintf(name, sizeof name, "extra.%d.weight", i);
        sd_add(sd, name, PTH_F32, 1, (int64_t[]){1}, &v);
    }
}

// ----------------------------------------------------------------------------
// writing the zip variations other writers produce

static int write_variant(const char *path, const StateDict *sd, const char *archive,
                         int zip64_fields, int sizes_in_local, const char *byteorder) {
    char err[512];
    FILE *f = fopen(path, "wb");
    if (!f) die("%s: cannot write", path);
    ZipWriter w;
    zipw_init(&w, f);
    w.zip64_fields = zip64_fields;
    w.sizes_in_local = sizes_in_local;
    size_t pn;
    uint8_t *pkl = pickle_state_dict(sd, &pn);
    char name[256];
    snprintf(name, sizeof name, "%s/data.pkl", archive);
    int rc = zipw_add(&w, name, pkl, pn, err, sizeof err);
    free(pkl);
    if (byteorder) {
        snprintf(name, sizeof name, "%s/byteorder", archive);
        rc |= zipw_add(&w, name, byteorder, strlen(byteorder), err, sizeof err);
    }
    // storages in reverse order, to show the reader does not depend on entry order
    for (int i = sd->n - 1; i >= 0; i--) {
        snprintf(name, sizeof name, "%s/data/%d", archive, i);
        rc |= zipw_add(&w, name, sd->t[i].data, sd->t[i].numel * pth_dtype_size(sd->t[i].dtype),
                       err, sizeof err);
    }
    snprintf(name, sizeof name, "%s/.data/serialization_id", archive);
    rc |= zipw_add(&w, name, "1234", 4, err, sizeof err);
    snprintf(name, sizeof name, "%s/version", archive);
    rc |= zipw_add(&w, name, "3\n", 2, err, sizeof err);
    rc |= zipw_finish(&w, err, sizeof err);
    zipw_free(&w);
    fclose(f);
    return rc;
}

static int sd_equal(const StateDict *a, const StateDict *b) {
    if (a->n != b->n) return 0;
    for (int i = 0; i < a->n; i++) {
        const PthTensor *x = &a->t[i], *y = &b->t[i];
        if (strcmp(x->name, y->name) || x->dtype != y->dtype || x->ndim != y->ndim ||
            x->numel != y->numel || memcmp(x->shape, y->shape, sizeof(int64_t) * (size_t)x->ndim) ||
            memcmp(x->data, y->data, x->numel * pth_dtype_size(x->dtype)))
            return 0;
    }
    return 1;
}

// ----------------------------------------------------------------------------
// the tests

static void test_fixture(const char *fix, const char *name) {
    char pth[1024], txt[1024], err[512];
    snprintf(pth, sizeof pth, "%s/%s.pth", fix, name);
    snprintf(txt, sizeof txt, "%s/%s.txt", fix, name);
    StateDict sd;
    if (pth_load(pth, &sd, err, sizeof err)) {
        CHECK(0, "%s", err);
        return;
    }
    compare_expect(&sd, txt, pth);
    sd_free(&sd);
}

static void test_round_trip(const char *fix, const char *out) {
    // torch.save(OrderedDict of tensors) -> pth_load -> pth_save: the very same bytes.
    char in[1024], path[1024], err[512];
    snprintf(in, sizeof in, "%s/many.pth", fix);
    snprintf(path, sizeof path, "%s/pth_roundtrip_many.pth", out);
    StateDict sd;
    if (pth_load(in, &sd, err, sizeof err)) {
        CHECK(0, "%s", err);
        return;
    }
    CHECK(pth_save(path, &sd, "many", err, sizeof err) == 0, "%s", err);
    CHECK(files_equal(in, path), "pth_save output differs from torch.save's for many.pth");
    printf("ok   round trip: pth_save(pth_load(many.pth)) is byte-identical to torch.save's\n");
    sd_free(&sd);
}

static void test_variants(const char *fix, const char *out) {
    char in[1024], path[1024], txt[1024], err[512];
    snprintf(in, sizeof in, "%s/many.pth", fix);
    snprintf(txt, sizeof txt, "%s/many.txt", fix);
    StateDict sd;
    if (pth_load(in, &sd, err, sizeof err)) {
        CHECK(0, "%s", err);
        return;
    }
    static const struct {
        const char *archive;
        int zip64, local;
        const char *byteorder;
    } v[] = {
        {"archive", 1, 0, NULL},                 // zip64 extra fields, 0xFFFFFFFF everywhere
        {"archive", 0, 1, NULL},                 // sizes in the local headers, no descriptor
        {"archive", 1, 1, "little"},             // both, plus a byteorder record
        {"resnet34-b627a593", 0, 0, "little"},   // torchvision's folder name, newer torch
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        snprintf(path, sizeof path, "%s/pth_variant%zu.pth", out, i);
        CHECK(write_variant(path, &sd, v[i].archive, v[i].zip64, v[i].local, v[i].byteorder) == 0,
              "writing %s", path);
        StateDict back;
        if (pth_load(path, &back, err, sizeof err)) {
            CHECK(0, "variant %zu: %s", i, err);
            continue;
        }
        compare_expect(&back, txt, path);
        sd_free(&back);
    }
    snprintf(path, sizeof path, "%s/pth_variant_big_endian.pth", out);
    write_variant(path, &sd, "archive", 0, 0, "big");
    StateDict back;
    CHECK(pth_load(path, &back, err, sizeof err) != 0 && strstr(err, "byte order 'big'"),
          "big-endian archive: %s", err);
    printf("ok   big-endian refused: %s\n", err);
    sd_free(&sd);
}

static void test_c_written(const char *fix, const char *out) {
    char ref[1024], path[1024], txt[1024], err[512];
    snprintf(ref, sizeof ref, "%s/c_written.pth", fix);
    snprintf(txt, sizeof txt, "%s/c_written.txt", fix);
    snprintf(path, sizeof path, "%s/c_written.pth", out);
    StateDict sd;
    formula_sd(&sd);
    CHECK(pth_save(path, &sd, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(files_equal(ref, path), "pth_save output changed from the committed c_written.pth "
          "(checked by ref_pth.py --check)");
    StateDict back;
    if (pth_load(ref, &back, err, sizeof err) == 0) {
        CHECK(sd_equal(&sd, &back), "c_written.pth does not read back as written");
        sd_free(&back);
    } else {
        CHECK(0, "%s", err);
    }
    // what we meant to write against what torch.load reads in the committed file (c_written.txt
    // comes from PyTorch: ref_pth.py --torch-expect)
    compare_expect(&sd, txt, "c_written.pth as written by C vs torch.load");
    printf("ok   c_written.pth: the writer's bytes are stable, read back exactly, and torch.load "
           "reads the values written\n");
    sd_free(&sd);
}

static void test_sd_helpers(const char *out) {
    StateDict sd = {0};
    float v[6] = {1, 2, 3, 4, 5, 6};
    int64_t shape[2] = {2, 3};
    sd_add(&sd, "a", PTH_F32, 2, shape, v);
    v[0] = 99; // sd_add copies
    sd_add(&sd, "b", PTH_F32, 1, (int64_t[]){6}, v);
    const PthTensor *a = sd_find(&sd, "a");
    CHECK(a && a->numel == 6 && ((float *)a->data)[0] == 1 && a->shape[1] == 3, "sd_find(a)");
    CHECK(sd_find(&sd, "b") && ((float *)sd_find(&sd, "b")->data)[0] == 99, "sd_find(b)");
    CHECK(sd_find(&sd, "c") == NULL, "sd_find(c) should be NULL");
    CHECK(pth_dtype_size(PTH_F16) == 2 && pth_dtype_size(PTH_I64) == 8, "pth_dtype_size");

    // A failing save leaves the previous file untouched (atomic write).
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/pth_atomic.pth", out);
    CHECK(pth_save(path, &sd, NULL, err, sizeof err) == 0, "%s", err);
    size_t n0, n1;
    uint8_t *before = read_or_die(path, &n0, 0);
    sd.t[1].numel = 7; // inconsistent with its shape: refused before anything is written
    CHECK(pth_save(path, &sd, NULL, err, sizeof err) != 0 && strstr(err, "'b'"),
          "inconsistent tensor should be refused: %s", err);
    sd.t[1].numel = 6;
    sd_add(&sd, "a", PTH_F32, 0, NULL, v);
    CHECK(pth_save(path, &sd, NULL, err, sizeof err) != 0 && strstr(err, "appears twice"),
          "duplicate key should be refused: %s", err);
    uint8_t *after = read_or_die(path, &n1, 0);
    CHECK(n0 == n1 && memcmp(before, after, n0) == 0, "failed save changed the file");
    free(before);
    free(after);
    CHECK(pth_save("/nonexistent-dir/x/y.pth", &sd, NULL, err, sizeof err) != 0 &&
              strstr(err, "y.pth"), "save into a missing directory: %s", err);
    CHECK(pth_save(path, &sd, "a/b", err, sizeof err) != 0, "archive name with '/'");
    sd_free(&sd);
    CHECK(sd.n == 0 && sd.t == NULL, "sd_free");
    printf("ok   sd_add/sd_find/sd_free, atomic and refused saves\n");
}

// ----------------------------------------------------------------------------
// command-line tools

static int resave(const char *in, const char *out, const char *archive) {
    char err[512];
    StateDict sd;
    double t0 = now_seconds();
    if (pth_load(in, &sd, err, sizeof err)) die("%s", err);
    double t1 = now_seconds();
    if (pth_save(out, &sd, archive, err, sizeof err)) die("%s", err);
    double t2 = now_seconds();
    size_t bytes = 0;
    for (int i = 0; i < sd.n; i++) bytes += sd.t[i].numel * pth_dtype_size(sd.t[i].dtype);
    printf("%s: %d tensors, %.1f MB: loaded in %.1f ms, saved %s in %.1f ms\n", in, sd.n,
           bytes / 1e6, 1e3 * (t1 - t0), out, 1e3 * (t2 - t1));
    sd_free(&sd);
    return 0;
}

static int time_load(const char *in, int reps) {
    char err[512];
    double best = 1e9;
    for (int r = 0; r < reps; r++) {
        StateDict sd;
        double t0 = now_seconds();
        if (pth_load(in, &sd, err, sizeof err)) die("%s", err);
        double t = now_seconds() - t0;
        if (t < best) best = t;
        if (r == reps - 1) printf("%s: %d tensors\n", in, sd.n);
        sd_free(&sd);
    }
    printf("pth_load_ms=%.1f (best of %d)\n", 1e3 * best, reps);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "--resave") == 0)
        return resave(argv[2], argv[3], argc > 4 ? argv[4] : NULL);
    if (argc >= 3 && strcmp(argv[1], "--time") == 0)
        return time_load(argv[2], argc > 3 ? atoi(argv[3]) : 5);
    if (argc == 3 && strcmp(argv[1], "--write-fixture") == 0) {
        char path[1024], err[512];
        StateDict sd;
        formula_sd(&sd);
        snprintf(path, sizeof path, "%s/c_written.pth", argv[2]);
        if (pth_save(path, &sd, NULL, err, sizeof err)) die("%s", err);
        sd_free(&sd);
        printf("wrote %s; now write its expected values with PyTorch:\n  /usr/bin/python3 "
               "tests/ref_pth.py --torch-expect %s %s/c_written.txt\n", path, path, argv[2]);
        return 0;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: test-pth FIXTURE_DIR OUT_DIR | --resave IN OUT [NAME] | "
                        "--time IN [REPEATS] | --write-fixture DIR\n");
        return 2;
    }
    const char *fix = argv[1], *out = argv[2];
    test_fixture(fix, "dtypes");
    test_fixture(fix, "many");
    test_fixture(fix, "many_meta");
    // one state dict saved with each pickle protocol torch.load reads (4 and 5: MEMOIZE, FRAME)
    test_fixture(fix, "proto2");
    test_fixture(fix, "proto3");
    test_fixture(fix, "proto4");
    test_fixture(fix, "proto5");
    test_round_trip(fix, out);
    test_variants(fix, out);
    test_c_written(fix, out);
    test_sd_helpers(out);
    return check_exit("all pth tests passed");
}
