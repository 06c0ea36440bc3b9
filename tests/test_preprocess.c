// tests/test_preprocess.c: the resize / crop / normalize of code/data/preprocess.c against Pillow and
// torchvision, on synthetic images (no data needed), using tests/fixtures/preprocess/ written by
// tests/ref_preprocess.py:
//   - resize_bilinear (fast) and resize_bilinear_ref give Pillow's Image.resize bytes (hashes of
//     synthetic.txt) for shrinking, enlarging, tiny, odd, tall and wide sizes;
//   - preprocess_u8 gives torchvision's resize(256) + center_crop(224) bytes;
//   - center_crop matches torchvision's, zero padding included;
//   - normalize_chw's values equal torchvision's for every uint8 value and channel;
//   - fast == reference, byte for byte, on many random sizes, for whole images and crop regions.
// usage: test-preprocess FIXTURE_DIR
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "data/image.h"
#include "data/preprocess.h"
#include "check.h"

// ----------------------------------------------------------------------------
// the synthetic image and the hash of tests/ref_preprocess.py

static Image pattern(int w, int h) { // (h, w, 3): noise, diagonal ramp, 3x5 checkerboard
    Image im = {w, h, xmalloc((size_t)w * h * 3)};
    uint32_t wh = (uint32_t)((uint64_t)w * 83492791u);
    uint64_t den = (uint64_t)(w + h - 2 > 1 ? w + h - 2 : 1);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = im.rgb + ((size_t)y * w + x) * 3;
            uint32_t hs = ((uint32_t)x * 73856093u) ^ ((uint32_t)y * 19349663u) ^ wh;
            p[0] = (uint8_t)((hs >> 8) & 255);
            p[1] = (uint8_t)(((uint64_t)(x + y) * 255) / den);
            p[2] = (uint8_t)(((x / 3 + y / 5) % 2) * 200 + 20);
        }
    return im;
}

static uint64_t hash_bytes(const uint8_t *b, size_t n, uint64_t *sum) {
    uint64_t h = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t m = (uint64_t)i * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
        h += ((uint64_t)b[i] + 1) * m;
        s += b[i];
    }
    *sum = s;
    return h;
}

static void check_hash(const char *what, const uint8_t *b, size_t n, uint64_t want, uint64_t wsum) {
    uint64_t sum, h = hash_bytes(b, n, &sum);
    CHECK(h == want && sum == wsum, "%s: hash %016llx sum %llu, Pillow/torchvision %016llx sum %llu",
          what, (unsigned long long)h, (unsigned long long)sum, (unsigned long long)want,
          (unsigned long long)wsum);
}

// ----------------------------------------------------------------------------
// fixtures

static int test_synthetic(const char *dir) {
    char *path = xasprintf("%s/synthetic.txt", dir);
    FILE *f = fopen(path, "r");
    if (!f) die("%s: missing (run /usr/bin/python3 tests/ref_preprocess.py)", path);
    char line[256];
    int n = 0, lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (line[0] == '#' || line[0] == '\n') continue;
        char kind[16], what[128];
        int w, h, a, b;
        unsigned long long hs, sum;
        if (sscanf(line, "resize %d %d %d %d %llx %llu", &w, &h, &a, &b, &hs, &sum) == 6) {
            Image in = pattern(w, h), fast, ref;
            snprintf(what, sizeof what, "resize %dx%d -> %dx%d", w, h, a, b);
            CHECK(resize_bilinear(&in, a, b, &fast) == 0, "%s failed", what);
            CHECK(resize_bilinear_ref(&in, a, b, &ref) == 0, "%s (ref) failed", what);
            if (fast.rgb) check_hash(what, fast.rgb, (size_t)a * b * 3, hs, sum);
            if (ref.rgb) check_hash("  (reference)", ref.rgb, (size_t)a * b * 3, hs, sum);
            image_free(&in);
            image_free(&fast);
            image_free(&ref);
        } else if (sscanf(line, "prep %d %d %llx %llu", &w, &h, &hs, &sum) == 4) {
            Image in = pattern(w, h);
            uint8_t *crop = xmalloc((size_t)PREP_CROP * PREP_CROP * 3);
            snprintf(what, sizeof what, "resize(256) + center_crop(224) of %dx%d", w, h);
            CHECK(preprocess_u8(&in, crop) == 0, "%s failed", what);
            check_hash(what, crop, (size_t)PREP_CROP * PREP_CROP * 3, hs, sum);
            // the same through the public step-by-step functions
            Image r, c;
            CHECK(resize_shorter_side(&in, PREP_RESIZE, &r) == 0, "%s: resize failed", what);
            CHECK(center_crop(&r, PREP_CROP, &c) == 0, "%s: crop failed", what);
            if (c.rgb) check_hash("  (step by step)", c.rgb, (size_t)PREP_CROP * PREP_CROP * 3, hs, sum);
            image_free(&r);
            image_free(&c);
            image_free(&in);
            free(crop);
        } else if (sscanf(line, "crop %d %d %d %llx %llu", &w, &h, &a, &hs, &sum) == 5) {
            Image in = pattern(w, h), c;
            snprintf(what, sizeof what, "center_crop(%d) of %dx%d", a, w, h);
            CHECK(center_crop(&in, a, &c) == 0, "%s failed", what);
            if (c.rgb) check_hash(what, c.rgb, (size_t)a * a * 3, hs, sum);
            image_free(&in);
            image_free(&c);
        } else if (sscanf(line, "%15s", kind) == 1) {
            die("%s:%d: unknown fixture line (regenerate with tests/ref_preprocess.py)", path,
                lineno);
        } else {
            continue;
        }
        n++;
    }
    fclose(f);
    CHECK(n >= 40, "%s: only %d cases", path, n);
    printf("synthetic: %d Pillow/torchvision cases checked\n", n);
    free(path);
    return n;
}

static void test_normalize(const char *dir) {
    char *path = xasprintf("%s/normalize.f32", dir);
    size_t n;
    uint8_t *buf = read_or_die(path, &n, 0);
    if (n != 3 * 256 * sizeof(float)) die("%s: %zu bytes, expected %d", path, n, 3 * 256 * 4);
    float ref[3][256];
    memcpy(ref, buf, n);
    // a crop whose pixel i holds value i % 256 in every channel
    uint8_t *hwc = xmalloc((size_t)PREP_CROP * PREP_CROP * 3);
    float *chw = xmalloc(PREP_FLOATS * sizeof(float));
    for (int i = 0; i < PREP_CROP * PREP_CROP; i++)
        hwc[3 * i] = hwc[3 * i + 1] = hwc[3 * i + 2] = (uint8_t)(i % 256);
    normalize_chw(hwc, chw);
    double maxd = 0;
    int exact = 1;
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < PREP_CROP * PREP_CROP; i++) {
            float got = chw[c * PREP_CROP * PREP_CROP + i], want = ref[c][i % 256];
            double d = fabs((double)got - want);
            if (d > maxd) maxd = d;
            if (memcmp(&got, &want, sizeof got)) exact = 0;
        }
    CHECK(maxd < 1e-6, "normalize: max abs diff %g from torchvision", maxd);
    printf("normalize: max abs diff from torchvision %g (%s)\n", maxd,
           exact ? "bit-exact" : "not bit-exact");
    free(hwc);
    free(chw);
    free(buf);
    free(path);
}

// ----------------------------------------------------------------------------
// fast == reference

static uint64_t rng_state = 12345;
static int rnd(int lo, int hi) { // uniform in [lo, hi]
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (int)((rng_state >> 33) % (uint64_t)(hi - lo + 1));
}

static void test_fast_vs_ref(void) {
    int cases = 0;
    for (int t = 0; t < 120; t++) {
        int w = rnd(1, t < 100 ? 300 : 1200), h = rnd(1, t < 100 ? 300 : 1200);
        int ow = rnd(1, 400), oh = rnd(1, 400);
        if (t % 4 == 0) ow = w;  // vertical pass only
        if (t % 7 == 0) oh = h;  // horizontal pass only
        Image in = pattern(w, h), fast, ref;
        for (size_t i = 0; i < (size_t)w * h * 3; i++) in.rgb[i] ^= (uint8_t)rnd(0, 255);
        resize_bilinear(&in, ow, oh, &fast);
        resize_bilinear_ref(&in, ow, oh, &ref);
        CHECK(fast.rgb && ref.rgb && !memcmp(fast.rgb, ref.rgb, (size_t)ow * oh * 3),
              "fast != reference resizing %dx%d to %dx%d", w, h, ow, oh);
        image_free(&fast);
        image_free(&ref);
        // the cropped fast path against the reference resize + crop
        uint8_t *crop = xmalloc((size_t)PREP_CROP * PREP_CROP * 3);
        Image r, c;
        preprocess_u8(&in, crop);
        int rw, rh;
        resized_size(w, h, PREP_RESIZE, &rw, &rh);
        if ((size_t)rw * rh <= 4u << 20) {
            resize_bilinear_ref(&in, rw, rh, &r);
            center_crop(&r, PREP_CROP, &c);
            CHECK(!memcmp(crop, c.rgb, (size_t)PREP_CROP * PREP_CROP * 3),
                  "preprocess_u8 != reference resize + crop for %dx%d", w, h);
            image_free(&r);
            image_free(&c);
        }
        free(crop);
        image_free(&in);
        cases++;
    }
    // what was compared: the vectorised passes only exist in builds for AVX-512 (VBMI) CPUs
    if (strcmp(resize_fast_passes(), "AVX-512") == 0)
        printf("fast vs reference: %d random sizes, byte-identical (compared: the AVX-512 "
               "passes and the cropping shortcut)\n", cases);
    else
        printf("fast vs reference: %d random sizes, byte-identical (compared: the cropping "
               "shortcut over the scalar passes)\nSKIP: the AVX-512 resize passes: this build "
               "has none (its CPU lacks AVX-512 BW/VBMI); run this test on such a machine\n", cases);
}

static void test_sizes(void) {
    int w, h, l, t;
    resized_size(500, 375, 256, &w, &h);
    CHECK(w == 341 && h == 256, "500x375 -> %dx%d, expected 341x256", w, h);
    resized_size(375, 500, 256, &w, &h);
    CHECK(w == 256 && h == 341, "375x500 -> %dx%d, expected 256x341", w, h);
    resized_size(3, 500, 256, &w, &h);
    CHECK(w == 256 && h == 42666, "3x500 -> %dx%d, expected 256x42666", w, h);
    center_crop_offsets(341, 256, 224, &l, &t); // (341-224)/2 = 58.5 -> 58 (round half to even)
    CHECK(l == 58 && t == 16, "crop offsets of 341x256: %d,%d, expected 58,16", l, t);
    center_crop_offsets(256, 343, 224, &l, &t); // 59.5 -> 60
    CHECK(l == 16 && t == 60, "crop offsets of 256x343: %d,%d, expected 16,60", l, t);
    Image empty = {0, 0, NULL}, out;
    CHECK(resize_bilinear(&empty, 10, 10, &out) == -1, "resizing an empty image must fail");
    Image one = pattern(4, 4);
    CHECK(resize_bilinear(&one, 0, 10, &out) == -1, "resizing to width 0 must fail");
    image_free(&one);
}

int main(int argc, char **argv) {
    if (argc != 2) die("usage: test-preprocess FIXTURE_DIR (tests/fixtures/preprocess)");
    test_sizes();
    test_normalize(argv[1]);
    test_synthetic(argv[1]);
    test_fast_vs_ref();
    return check_exit("all preprocess checks passed");
}
