// test_pth_bad.c: broken and hostile checkpoints. Each must be refused with a message that names
// the problem, never crash, never allocate from an unchecked size: a real fixture truncated at
// every byte, its pickle truncated at every byte, random byte flips (in the file, and in the
// pickle with the CRC fixed so the unpickler sees them), forbidden globals, absurd sizes, the
// legacy format, TorchScript, not-a-zip, empty and missing files.
//   test-pth-bad FIXTURE_DIR OUT_DIR
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "checkpoint/pickle.h"
#include "checkpoint/pth.h"
#include "checkpoint/zip.h"
#include "check.h"

static char err[1024];

// Loads from memory; expects failure with every `want` substring in the message.
static void expect_error(const uint8_t *buf, size_t n, const char *what, const char *want1,
                         const char *want2) {
    StateDict sd;
    err[0] = 0;
    if (pth_load_mem(buf, n, "bad.pth", &sd, err, sizeof err) == 0) {
        fprintf(stderr, "FAIL %s: loaded without error\n", what);
        sd_free(&sd);
        failures++;
        return;
    }
    if (!strstr(err, "bad.pth") || (want1 && !strstr(err, want1)) ||
        (want2 && !strstr(err, want2))) {
        fprintf(stderr, "FAIL %s: message \"%s\" lacks \"%s\" / \"%s\"\n", what, err,
                want1 ? want1 : "", want2 ? want2 : "");
        failures++;
        return;
    }
    printf("ok   %-34s %s\n", what, err);
}

// ----------------------------------------------------------------------------
// building archives and pickles by hand

typedef struct {
    uint8_t *b;
    size_t n;
} Buf;

static void add(Buf *p, const void *s, size_t k) {
    p->b = xrealloc(p->b, p->n + k + 1);
    memcpy(p->b + p->n, s, k);
    p->n += k;
}
static void adds(Buf *p, const char *s) { add(p, s, strlen(s)); }
static void add1(Buf *p, uint8_t c) { add(p, &c, 1); }
static void add_str(Buf *p, const char *s) { // BINUNICODE
    uint32_t k = (uint32_t)strlen(s);
    add1(p, 'X');
    uint8_t l[4] = {(uint8_t)k, (uint8_t)(k >> 8), (uint8_t)(k >> 16), (uint8_t)(k >> 24)};
    add(p, l, 4);
    adds(p, s);
}
static void add_int(Buf *p, int64_t v) { // LONG1, 8 bytes: any int64
    add1(p, 0x8a);
    add1(p, 8);
    for (int i = 0; i < 8; i++) add1(p, (uint8_t)((uint64_t)v >> (8 * i)));
}

// One archive: "<prefix>/<pkl_file>" = pkl, then storages "<prefix>/data/0", "<prefix>/data/1",
// ... and "<prefix>/version".
static Buf make_zip_in(const Buf *pkl, const char *prefix, const char *pkl_file, int nst,
                       const Buf *st) {
    Buf z = {0};
    char *mem = NULL;
    size_t memn = 0;
    FILE *f = open_memstream(&mem, &memn);
    ZipWriter w;
    zipw_init(&w, f);
    char name[128];
    snprintf(name, sizeof name, "%s/%s", prefix, pkl_file);
    zipw_add(&w, name, pkl->b, pkl->n, err, sizeof err);
    for (int i = 0; i < nst; i++) {
        snprintf(name, sizeof name, "%s/data/%d", prefix, i);
        zipw_add(&w, name, st[i].b, st[i].n, err, sizeof err);
    }
    snprintf(name, sizeof name, "%s/version", prefix);
    zipw_add(&w, name, "3\n", 2, err, sizeof err);
    zipw_finish(&w, err, sizeof err);
    zipw_free(&w);
    fclose(f);
    add(&z, mem, memn);
    free(mem);
    return z;
}

static Buf make_zip(const Buf *pkl, const char *pkl_file, int nst, const Buf *st) {
    return make_zip_in(pkl, "archive", pkl_file ? pkl_file : "data.pkl", nst, st);
}

typedef struct {
    const char *storage_type; // "FloatStorage"
    const char *key;          // "0"
    int64_t numel;            // storage elements claimed in the persistent id
    int64_t offset;
    int ndim;
    int64_t shape[10], stride[10];
    const char *name;
} TensorSpec;

// The pickle torch writes for OrderedDict([(name, tensor)]), with every field chosen by the test.
static Buf tensor_pickle(const TensorSpec *t) {
    Buf p = {0};
    add(&p, "\x80\x02", 2);
    adds(&p, "ccollections\nOrderedDict\n)R(");
    add_str(&p, t->name ? t->name : "w");
    adds(&p, "ctorch._utils\n_rebuild_tensor_v2\n((");
    add_str(&p, "storage");
    adds(&p, "ctorch\n");
    adds(&p, t->storage_type);
    adds(&p, "\n");
    add_str(&p, t->key);
    add_str(&p, "cpu");
    add_int(&p, t->numel);
    adds(&p, "tQ");
    add_int(&p, t->offset);
    add1(&p, '(');
    for (int d = 0; d < t->ndim; d++) add_int(&p, t->shape[d]);
    adds(&p, "t(");
    for (int d = 0; d < t->ndim; d++) add_int(&p, t->stride[d]);
    adds(&p, "t\x89");
    adds(&p, "ccollections\nOrderedDict\n)RtRu.");
    return p;
}

static const float six[6] = {1, 2, 3, 4, 5, 6};

// A one-tensor archive of pickle `pkl` whose single storage holds six floats.
static void expect_pickle_error(const char *pkl, size_t n, const char *what, const char *w1,
                                const char *w2) {
    Buf p = {0};
    add(&p, pkl, n);
    Buf st = {0};
    add(&st, six, sizeof six);
    Buf z = make_zip(&p, NULL, 1, &st);
    expect_error(z.b, z.n, what, w1, w2);
    free(p.b);
    free(st.b);
    free(z.b);
}

// The same with the pickle of tensor spec t.
static void expect_tensor_error(const TensorSpec *t, const char *what, const char *w1,
                                const char *w2) {
    Buf p = tensor_pickle(t);
    expect_pickle_error((const char *)p.b, p.n, what, w1, w2);
    free(p.b);
}

static void load_ok(const uint8_t *b, size_t n, const char *what) {
    StateDict sd;
    if (pth_load_mem(b, n, "bad.pth", &sd, err, sizeof err)) {
        fprintf(stderr, "FAIL %s: %s\n", what, err);
        failures++;
        return;
    }
    sd_free(&sd);
}

// ----------------------------------------------------------------------------
// the tests

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static int fuzz_iters = 3000; // PTH_FUZZ_ITERS=N for a longer run (e.g. under ASan)
static uint32_t next_rand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

static void test_truncation(const uint8_t *buf, size_t n) {
    // The whole file cut at every length: always an error naming a truncated/non-zip file.
    int bad = 0;
    for (size_t k = 0; k < n; k++) {
        StateDict sd;
        if (pth_load_mem(buf, k, "bad.pth", &sd, err, sizeof err) == 0) {
            fprintf(stderr, "FAIL truncated to %zu bytes: loaded\n", k);
            sd_free(&sd);
            bad++;
        } else if (!strstr(err, "bad.pth") ||
                   !(strstr(err, "truncated") || strstr(err, "empty file") ||
                     strstr(err, "not a zip") || strstr(err, "not a PyTorch checkpoint"))) {
            fprintf(stderr, "FAIL truncated to %zu bytes: unclear message: %s\n", k, err);
            bad++;
        }
    }
    failures += bad;
    if (!bad) printf("ok   %zu truncations of the file all refused (e.g. \"%s\")\n", n, err);
}

static void test_pickle_truncation(const uint8_t *buf, size_t n) {
    // The archive intact but its data.pkl cut at every length (CRC consistent): the unpickler
    // alone must notice.
    ZipReader z;
    if (zip_open_mem(&z, buf, n, "fixture", err, sizeof err)) {
        fprintf(stderr, "FAIL fixture: %s\n", err);
        failures++;
        return;
    }
    const ZipEntry *pe = zip_find(&z, "dtypes/data.pkl");
    Buf st[32];
    int nst = 0;
    for (; nst < 32; nst++) {
        char name[64];
        snprintf(name, sizeof name, "dtypes/data/%d", nst);
        const ZipEntry *e = zip_find(&z, name);
        if (!e) break;
        st[nst] = (Buf){0};
        add(&st[nst], buf + e->data_offset, (size_t)e->size);
    }
    int bad = 0;
    for (size_t k = 0; k < pe->size; k++) {
        Buf p = {0};
        add(&p, buf + pe->data_offset, k);
        Buf a = make_zip_in(&p, "dtypes", "data.pkl", nst, st);
        StateDict sd;
        if (pth_load_mem(a.b, a.n, "bad.pth", &sd, err, sizeof err) == 0) {
            fprintf(stderr, "FAIL pickle cut to %zu bytes: loaded\n", k);
            sd_free(&sd);
            bad++;
        } else if (!strstr(err, "data.pkl") && !strstr(err, "state dict")) {
            fprintf(stderr, "FAIL pickle cut to %zu bytes: message lacks data.pkl: %s\n", k, err);
            bad++;
        }
        free(p.b);
        free(a.b);
    }
    failures += bad;
    if (!bad)
        printf("ok   %llu truncations of data.pkl all refused (e.g. \"%s\")\n",
               (unsigned long long)pe->size, err);

    // Byte flips inside the pickle (with a valid CRC): errors or a state dict, never a crash.
    int loaded = 0, refused = 0;
    for (int it = 0; it < fuzz_iters; it++) {
        Buf p = {0};
        add(&p, buf + pe->data_offset, (size_t)pe->size);
        int flips = 1 + (int)(next_rand() % 3);
        for (int f = 0; f < flips; f++) {
            size_t at = next_rand() % p.n;
            p.b[at] = (next_rand() & 1) ? (uint8_t)next_rand() : (uint8_t)(p.b[at] ^ (1u << (next_rand() % 8)));
        }
        Buf a = make_zip_in(&p, "dtypes", "data.pkl", nst, st);
        StateDict sd;
        if (pth_load_mem(a.b, a.n, "bad.pth", &sd, err, sizeof err) == 0) {
            loaded++;
            sd_free(&sd);
        } else {
            refused++;
            if (!err[0]) {
                fprintf(stderr, "FAIL pickle flip %d: empty message\n", it);
                failures++;
            }
        }
        free(a.b);
        free(p.b);
    }
    printf("ok   %d pickles with flipped bytes: %d refused, %d still valid, no crash\n",
           fuzz_iters, refused, loaded);
    for (int i = 0; i < nst; i++) free(st[i].b);
    zip_close(&z);
}

static void test_flips(const uint8_t *buf, size_t n) {
    // Random flips anywhere in the file. A flip inside an entry's bytes must be caught (CRC);
    // elsewhere (padding, fields the reader ignores) a load may still succeed.
    ZipReader z;
    zip_open_mem(&z, buf, n, "fixture", err, sizeof err);
    uint8_t *c = xmalloc(n);
    int refused = 0, loaded = 0, bad = 0;
    for (int it = 0; it < fuzz_iters; it++) {
        memcpy(c, buf, n);
        size_t at = next_rand() % n;
        c[at] ^= (uint8_t)(1u << (next_rand() % 8));
        int in_data = 0;
        for (int i = 0; i < z.count; i++)
            if (at >= z.e[i].data_offset && at < z.e[i].data_offset + z.e[i].size) in_data = 1;
        StateDict sd;
        if (pth_load_mem(c, n, "bad.pth", &sd, err, sizeof err) == 0) {
            loaded++;
            sd_free(&sd);
            if (in_data) {
                fprintf(stderr, "FAIL flip at %zu inside entry data was not detected\n", at);
                bad++;
            }
        } else {
            refused++;
        }
    }
    failures += bad;
    printf("ok   %d single-bit flips: %d refused, %d harmless (padding/ignored fields), every "
           "flip in entry data caught\n", fuzz_iters, refused, loaded);
    free(c);
    zip_close(&z);
}

static void test_forbidden(void) {
    static const char *globals[][2] = {
        {"posix", "system"}, {"os", "system"}, {"builtins", "eval"}, {"__builtin__", "eval"},
        {"subprocess", "Popen"}, {"torch._utils", "_rebuild_tensor"}, {"torch", "load"},
        {"collections", "defaultdict"},
    };
    for (size_t i = 0; i < sizeof globals / sizeof globals[0]; i++) {
        Buf p = {0};
        add(&p, "\x80\x02", 2);
        adds(&p, "c");
        adds(&p, globals[i][0]);
        adds(&p, "\n");
        adds(&p, globals[i][1]);
        adds(&p, "\n");
        add_str(&p, "echo pwned");
        adds(&p, "\x85R.");
        char want[128], what[128];
        snprintf(want, sizeof want, "forbidden pickle global '%s.%s'", globals[i][0],
                 globals[i][1]);
        snprintf(what, sizeof what, "global %s.%s", globals[i][0], globals[i][1]);
        expect_pickle_error((const char *)p.b, p.n, what, want, NULL);
        free(p.b);
    }
    // STACK_GLOBAL (protocol 4) goes through the same allowlist.
    Buf p = {0};
    add(&p, "\x80\x04", 2);
    add_str(&p, "os");
    add_str(&p, "system");
    adds(&p, "\x93");
    add_str(&p, "id");
    adds(&p, "\x85R.");
    expect_pickle_error((const char *)p.b, p.n, "STACK_GLOBAL os.system",
                        "forbidden pickle global 'os.system'", NULL);
    free(p.b);
}

static void test_absurd(void) {
    TensorSpec ok = {"FloatStorage", "0", 6, 0, 2, {2, 3}, {3, 1}, NULL};
    {
        Buf p = tensor_pickle(&ok), st = {0};
        add(&st, six, sizeof six);
        Buf z = make_zip(&p, NULL, 1, &st);
        load_ok(z.b, z.n, "hand-made valid tensor");
        free(p.b);
        free(st.b);
        free(z.b);
    }
    TensorSpec t;
    t = ok; t.shape[0] = 1ll << 31; t.shape[1] = 1ll << 31; t.stride[0] = 1ll << 31;
    expect_tensor_error(&t, "huge numel", "outside its storage", NULL);
    t = ok; t.shape[0] = 1ll << 40; t.shape[1] = 1ll << 40;
    expect_tensor_error(&t, "shape product overflow", "overflow", NULL);
    t = ok; t.offset = 100;
    expect_tensor_error(&t, "storage offset past end", "past the end", NULL);
    t = ok; t.offset = 1;
    expect_tensor_error(&t, "view runs past the storage", "outside its storage", NULL);
    t = ok; t.offset = -5;
    expect_tensor_error(&t, "negative storage offset", "storage offset", NULL);
    t = ok; t.shape[0] = -1;
    expect_tensor_error(&t, "negative dimension", "negative size", NULL);
    t = ok; t.stride[1] = -1;
    expect_tensor_error(&t, "negative stride", "negative", NULL);
    t = ok; t.numel = 1000;
    expect_tensor_error(&t, "storage size mismatch", "holds 24 bytes", NULL);
    t = ok; t.numel = 1ll << 62;
    expect_tensor_error(&t, "storage numel overflow", "holds 24 bytes", NULL);
    t = ok; t.numel = -1;
    expect_tensor_error(&t, "negative storage numel", "element count", NULL);
    t = ok; t.ndim = 1; t.shape[0] = 1000000; t.stride[0] = 0;
    expect_tensor_error(&t, "expanded (stride 0) view", "expanded", NULL);
    t = ok; t.ndim = 9;
    for (int d = 0; d < 9; d++) { t.shape[d] = 1; t.stride[d] = 1; }
    expect_tensor_error(&t, "too many dimensions", "dimensions", NULL);
    t = ok; t.key = "7";
    expect_tensor_error(&t, "missing storage entry", "missing from the archive", "data/7");
    t = ok; t.storage_type = "BFloat16Storage";
    expect_tensor_error(&t, "unsupported dtype", "torch.BFloat16Storage", "not supported");
    t = ok; t.storage_type = "Storage";
    expect_tensor_error(&t, "unknown storage type", "forbidden pickle global 'torch.Storage'",
                        NULL);

    // pickle-level nonsense
    static const char huge_memo[] = "\x80\x02}r\xff\xff\xff\xff.";
    expect_pickle_error(huge_memo, sizeof huge_memo - 1, "memo index 2^32-1", "memo index",
                        "out of range");
    static const char bad_get[] = "\x80\x02j\x00\x01\x00\x00.";
    expect_pickle_error(bad_get, sizeof bad_get - 1, "LONG_BINGET of nothing", "never stored",
                        NULL);
    static const char huge_str[] = "\x80\x02X\xff\xff\xff\xff";
    expect_pickle_error(huge_str, sizeof huge_str - 1, "string longer than the pickle",
                        "truncated", NULL);
    static const char huge_long[] = "\x80\x02\x8a\xff";
    expect_pickle_error(huge_long, sizeof huge_long - 1, "LONG1 of 255 bytes", "truncated", NULL);
    static const char inst[] = "\x80\x02(iposix\nsystem\n.";
    expect_pickle_error(inst, sizeof inst - 1, "INST opcode", "unsupported pickle opcode", NULL);
    static const char underflow[] = "\x80\x02R.";
    expect_pickle_error(underflow, sizeof underflow - 1, "stack underflow", "underflow", NULL);
    static const char nostop[] = "\x80\x02}";
    expect_pickle_error(nostop, sizeof nostop - 1, "no STOP", "without STOP", NULL);
    static const char notdict[] = "\x80\x02]\x4b\x01\x61.";
    expect_pickle_error(notdict, sizeof notdict - 1, "list at top level", "not a state dict",
                        NULL);
    Buf p = {0};
    add(&p, "\x80\x02}", 3);
    add_str(&p, "epoch");
    adds(&p, "K\x03s.");
    expect_pickle_error((const char *)p.b, p.n, "int value in the dict", "'epoch'",
                        "not a tensor");
    free(p.b);
    p = (Buf){0};
    add(&p, "\x80\x02}", 3);
    add_str(&p, "w");
    adds(&p, "K\x05\x85Qs.");
    expect_pickle_error((const char *)p.b, p.n, "persistent id not a storage tuple",
                        "persistent id", NULL);
    free(p.b);
}

static void test_zip_damage(const uint8_t *buf, size_t n) {
    uint8_t *c = xmalloc(n);
    // Entry count in the end record far larger than the directory could hold.
    memcpy(c, buf, n);
    size_t eocd = n - 22, e64 = eocd - 20 - 56;
    for (int i = 0; i < 8; i++) c[e64 + 32 + i] = 0xff;
    expect_error(c, n, "2^64 entries in the zip64 record", "claims", NULL);
    // Central directory offset past the end.
    memcpy(c, buf, n);
    c[e64 + 48 + 6] = 0x7f;
    expect_error(c, n, "central directory past the end", "outside the file", NULL);
    // A compressed (deflate) entry: method patched in the central directory.
    memcpy(c, buf, n);
    ZipReader z;
    zip_open_mem(&z, buf, n, "fixture", err, sizeof err);
    uint64_t cd = 0;
    for (int i = 0; i < 8; i++) cd |= (uint64_t)buf[e64 + 48 + i] << (8 * i);
    c[cd + 10] = 8;
    zip_close(&z);
    expect_error(c, n, "compressed data.pkl", "compressed", "re-save");
    // A local header offset pointing past the end.
    memcpy(c, buf, n);
    c[cd + 42 + 3] = 0x7f;
    expect_error(c, n, "local header offset past the end", "local header", NULL);
    free(c);
}

static void test_not_checkpoints(const char *fix, const char *out) {
    char path[1024];
    snprintf(path, sizeof path, "%s/legacy.pth", fix);
    size_t n;
    uint8_t *b = read_file(path, &n, 0, err, sizeof err);
    if (!b) {
        fprintf(stderr, "FAIL %s\n", err);
        failures++;
    } else {
        expect_error(b, n, "legacy (pre-1.6) torch file", "legacy",
                     "torch.save(torch.load(p), p2)");
        free(b);
    }
    static const char text[] = "this is a text file, not a checkpoint\n";
    expect_error((const uint8_t *)text, sizeof text - 1, "text file", "not a PyTorch checkpoint",
                 NULL);
    static const char pk[] = "\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00}\x94.";
    expect_error((const uint8_t *)pk, sizeof pk - 1, "bare pickle", "bare pickle", NULL);
    expect_error((const uint8_t *)"", 0, "empty buffer", "empty file", NULL);

    // A TorchScript archive, and a zip without data.pkl.
    Buf p = {0};
    adds(&p, "x");
    Buf z = make_zip(&p, "constants.pkl", 0, NULL);
    expect_error(z.b, z.n, "TorchScript archive", "TorchScript", "state_dict");
    free(z.b);
    z = make_zip(&p, "other.bin", 0, NULL);
    expect_error(z.b, z.n, "zip without data.pkl", "data.pkl", NULL);
    free(z.b);
    free(p.b);

    // Files: missing, empty, a directory.
    StateDict sd;
    snprintf(path, sizeof path, "%s/pth_missing_file.pth", out);
    remove(path);
    if (pth_load(path, &sd, err, sizeof err) == 0 || !strstr(err, "pth_missing_file.pth") ||
        !strstr(err, "cannot open")) {
        fprintf(stderr, "FAIL missing file: %s\n", err);
        failures++;
    } else {
        printf("ok   %-34s %s\n", "missing file", err);
    }
    snprintf(path, sizeof path, "%s/pth_empty_file.pth", out);
    FILE *f = fopen(path, "wb");
    if (f) fclose(f);
    if (pth_load(path, &sd, err, sizeof err) == 0 || !strstr(err, "empty file")) {
        fprintf(stderr, "FAIL empty file: %s\n", err);
        failures++;
    } else {
        printf("ok   %-34s %s\n", "empty file", err);
    }
    if (pth_load(out, &sd, err, sizeof err) == 0 || !strstr(err, "not a regular file")) {
        fprintf(stderr, "FAIL directory: %s\n", err);
        failures++;
    } else {
        printf("ok   %-34s %s\n", "directory", err);
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: test-pth-bad FIXTURE_DIR OUT_DIR\n");
        return 2;
    }
    if (getenv("PTH_FUZZ_ITERS")) fuzz_iters = atoi(getenv("PTH_FUZZ_ITERS"));
    char path[1024];
    snprintf(path, sizeof path, "%s/dtypes.pth", argv[1]);
    size_t n;
    uint8_t *buf = read_or_die(path, &n, 0);
    load_ok(buf, n, "intact fixture");
    test_truncation(buf, n);
    test_pickle_truncation(buf, n);
    test_flips(buf, n);
    test_forbidden();
    test_absurd();
    test_zip_damage(buf, n);
    test_not_checkpoints(argv[1], argv[2]);
    free(buf);
    return check_exit("all bad-input tests passed");
}
