// tests/test_experiments_unit.c: unit tests of the training chapters' helpers.
//   test-experiments-unit TMPDIR
// - SHA-256 (code/core/sha256.c) against FIPS 180-4's example digests and a million 'a's, fed in
//   pieces of every size from 1 to 130 bytes (block boundaries);
// - the cache file format (code/experiment/experiment.c): a written cache opens again with its data; a
//   different key, label, item count, a truncated file or one flipped byte in its labels, data or
//   ok flags (caught by the checksum) is refused (so the cache is rebuilt);
// - exp_diverged: when an epoch's losses (fp32) or skipped steps (fp16) mean the run diverged;
// - the results JSON writer (code/experiment/results.c), which every chapter's JSON goes through:
//   the exact bytes of a small file (shortest round-trip numbers, escapes, non-finite values).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/common.h"
#include "experiment/experiment.h"
#include "experiment/results.h"
#include "core/sha256.h"

static void hex_of(const void *data, size_t n, size_t piece, char hex[65]) {
    Sha256 s;
    sha256_init(&s);
    const uint8_t *p = data;
    for (size_t off = 0; off < n; off += piece) sha256_update(&s, p + off, n - off < piece ? n - off : piece);
    sha256_final_hex(&s, hex);
}

static void test_sha256(void) {
    char hex[65];
    hex_of("", 0, 1, hex);
    CHECK(!strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"), "empty: %s", hex);
    hex_of("abc", 3, 3, hex);
    CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"), "abc: %s", hex);
    const char *m2 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    for (size_t piece = 1; piece <= 130; piece++) {
        hex_of(m2, strlen(m2), piece, hex);
        CHECK(!strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
              "two-block message in pieces of %zu: %s", piece, hex);
    }
    size_t n = 1000000;
    char *a = xmalloc(n);
    memset(a, 'a', n);
    hex_of(a, n, 4097, hex);
    CHECK(!strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"), "1M a: %s", hex);
    free(a);
}

static void test_cache(const char *dir) {
    PetSplit ds = {0};
    ds.n = 5;
    PetItem items[5];
    for (int i = 0; i < 5; i++) items[i].label = i * 3, items[i].name = items[i].path = "x";
    ds.items = items;
    const size_t sb = 12;
    uint8_t data[5 * 12], ok[5] = {1, 1, 0, 1, 1};
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i * 7);
    const char *key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const char *key2 = "1123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    char *path = xasprintf("%s/cache.f32", dir);
    char err[512];
    CHECK(cache_write(path, CACHE_KIND_FEATURES, key, &ds, ok, sb, data, err, sizeof err) == 0, "write: %s", err);
    Cache c;
    CHECK(cache_open(&c, path, CACHE_KIND_FEATURES, key, &ds, sb) == 0, "open");
    if (c.map) {
        CHECK(c.n == 5 && memcmp(c.data, data, sizeof data) == 0, "data round trip");
        CHECK(memcmp(c.ok, ok, 5) == 0, "ok flags round trip");
        CHECK(c.label[4] == 12, "labels");
        cache_close(&c);
    }
    CHECK(cache_open(&c, path, CACHE_KIND_FEATURES, key2, &ds, sb) != 0, "another key must be refused");
    CHECK(cache_open(&c, path, CACHE_KIND_CROPS, key, &ds, sb) != 0, "another kind must be refused");
    items[2].label = 1;
    CHECK(cache_open(&c, path, CACHE_KIND_FEATURES, key, &ds, sb) != 0, "changed labels must be refused");
    items[2].label = 6;
    ds.n = 4;
    CHECK(cache_open(&c, path, CACHE_KIND_FEATURES, key, &ds, sb) != 0, "another count must be refused");
    ds.n = 5;
    size_t size = 0;
    uint8_t *buf = read_file(path, &size, 0, err, sizeof err);
    CHECK(buf != NULL, "read back");
    if (buf) {
        // one flipped bit anywhere after the header (labels, data, ok flags): the checksum fails
        const size_t at[3] = {128 + 4 * 3 + 1, 128 + 64 + 17, size - 2};
        for (int k = 0; k < 3; k++) {
            buf[at[k]] ^= 0x10;
            CHECK(write_file_atomic(path, buf, size, err, sizeof err) == 0, "flip");
            CHECK(cache_open(&c, path, CACHE_KIND_FEATURES, key, &ds, sb) != 0,
                  "a cache with a flipped byte at %zu must be refused", at[k]);
            buf[at[k]] ^= 0x10;
        }
        CHECK(write_file_atomic(path, buf, size, err, sizeof err) == 0, "restore");
        CHECK(cache_open(&c, path, CACHE_KIND_FEATURES, key, &ds, sb) == 0, "restored cache opens");
        cache_close(&c);
        CHECK(write_file_atomic(path, buf, size - 1, err, sizeof err) == 0, "truncate");
        CHECK(cache_open(&c, path, CACHE_KIND_FEATURES, key, &ds, sb) != 0, "a truncated cache must be refused");
        free(buf);
    }
    free(path);
}

// exp_diverged: non-finite losses stop an fp32 run; in fp16 only an epoch whose every step the
// GradScaler skipped does (an overflowing step is normal there and simply skipped).
static void test_diverged(void) {
    char why[256];
    const double inf = 1.0 / 0.0, nan = 0.0 / 0.0;
    CHECK(!exp_diverged(PREC_FP32, 2.5, 3.0, 10, 10, why, sizeof why), "finite fp32");
    CHECK(exp_diverged(PREC_FP32, nan, 3.0, 10, 10, why, sizeof why) && strstr(why, "training loss is nan"),
          "nan training loss: %s", why);
    CHECK(exp_diverged(PREC_FP32, 1.0, inf, 10, 10, why, sizeof why) && strstr(why, "validation loss is inf"),
          "inf validation loss: %s", why);
    CHECK(!exp_diverged(PREC_FP16, inf, 3.0, 10, 3, why, sizeof why), "fp16: some steps skipped is normal");
    CHECK(exp_diverged(PREC_FP16, 4.0, 3.0, 10, 0, why, sizeof why) && strstr(why, "skipped all 10"),
          "fp16: every step skipped: %s", why);
    CHECK(!exp_diverged(PREC_FP16, 0.0, 3.0, 0, 0, why, sizeof why), "fp16: an epoch without batches");
}

static void test_results(const char *dir) {
    Results r;
    results_init(&r);
    results_str(&r, "name", "a \"b\"\\\n");
    results_int(&r, "epochs", -3);
    results_uint(&r, "seed", 18446744073709551615ull);
    results_num(&r, "lr", 0.001);
    results_num(&r, "lr_final", (double)1e-3f / 100); // a float's value: the digits it needs
    results_num(&r, "lr_small", 1e-5);
    results_num(&r, "third", 1.0 / 3);
    results_num(&r, "acc", (double)0.3f);
    results_num(&r, "loss", -INFINITY);
    results_num(&r, "nan", NAN);
    char *path = xasprintf("%s/results.json", dir), err[512];
    CHECK(results_write(&r, path, err, sizeof err) == 0, "write: %s", err);
    results_free(&r);
    size_t size = 0;
    char *got = (char *)read_file(path, &size, 0, err, sizeof err);
    const char *want = "{\n"
                       "  \"name\": \"a \\\"b\\\"\\\\\\u000a\",\n"
                       "  \"epochs\": -3,\n"
                       "  \"seed\": 18446744073709551615,\n"
                       "  \"lr\": 0.001,\n"
                       "  \"lr_final\": 1.0000000474974514e-05,\n"
                       "  \"lr_small\": 1e-05,\n"
                       "  \"third\": 0.3333333333333333,\n"
                       "  \"acc\": 0.30000001192092896,\n"
                       "  \"loss\": \"-inf\",\n"
                       "  \"nan\": \"nan\"\n"
                       "}\n";
    CHECK(got && size == strlen(want) && memcmp(got, want, size) == 0, "results JSON:\n%.*s\nexpected:\n%s",
          got ? (int)size : 0, got ? got : "", want);
    free(got);
    free(path);
}

int main(int argc, char **argv) {
    if (argc != 2) die("usage: test-experiments-unit TMPDIR");
    if (mkdir_p(argv[1])) die("%s: cannot create", argv[1]);
    test_sha256();
    test_cache(argv[1]);
    test_diverged();
    test_results(argv[1]);
    return check_exit("PASS");
}
