// tests/test_preprocess_real.c: decode + preprocess of the real 3-class Oxford-IIIT Pet images
// against torchvision (fixtures from tests/ref_preprocess.py in tests/fixtures/preprocess/real).
// torchvision's float tensor is a function of its uint8 224x224 crop (checked by the reference
// script), and normalize_chw equals torchvision's normalization bit for bit (test-preprocess), so
// the fixtures hold torchvision's crops and the differences are measured on normalized tensors:
//   - Abyssinian_5.jpg (PNG, RGBA) and Abyssinian_34.jpg (GIF): max abs diff < 1e-5 (in fact the
//     crops are identical);
//   - a fixed sample of 12 JPEGs stored whole (progressive, Adobe, EXIF, plain): max abs diff
//     < 0.07 and mean abs diff < 0.002 (stb_image and libjpeg decode JPEGs slightly differently);
//   - every real JPEG, through its 16x16 block sums: the block-mean differences are lower bounds
//     of the max and mean abs differences, and must stay below the same limits.
// Exits 77 (skipped) when the shared set is absent.
// usage: test-preprocess-real FIXTURE_DIR SHARED_DIR
//        test-preprocess-real --dump-crops OUT_DIR SHARED_DIR   (our uint8 crops, for
//        tests/ref_preprocess.py --check-all, which measures every image exactly)
#define _GNU_SOURCE
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "data/image.h"
#include "data/preprocess.h"
#include "check.h"

#define CROP_BYTES ((size_t)PREP_CROP * PREP_CROP * 3)
#define JPEG_MAX_LIMIT PREP_TV_JPEG_MAX_LIMIT   // 0.07
#define JPEG_MEAN_LIMIT PREP_TV_JPEG_MEAN_LIMIT // 0.002
#define EXACT_LIMIT PREP_TV_EXACT_LIMIT         // 1e-5

// Our crop of a real image (decode + resize + crop); dies with the reason if it fails.
static void our_crop(const char *path, uint8_t *crop) {
    char err[512];
    Image img;
    if (image_load(path, &img, err, sizeof err)) die("%s", err);
    if (preprocess_u8(&img, crop)) die("%s: preprocessing failed", path);
    image_free(&img);
}

// max and mean abs difference of the normalized tensors of two crops
static void tensor_diff(const uint8_t *a, const uint8_t *b, double *maxd, double *meand) {
    float *fa = xmalloc(PREP_FLOATS * sizeof(float)), *fb = xmalloc(PREP_FLOATS * sizeof(float));
    normalize_chw(a, fa);
    normalize_chw(b, fb);
    double mx = 0, sum = 0;
    for (int i = 0; i < PREP_FLOATS; i++) {
        double d = fabs((double)fa[i] - fb[i]);
        if (d > mx) mx = d;
        sum += d;
    }
    *maxd = mx;
    *meand = sum / PREP_FLOATS;
    free(fa);
    free(fb);
}

// torchvision's crop from a fixture PNG
static int load_ref_crop(const char *fixtures, const char *name, uint8_t *crop) {
    char stem[256], err[512];
    snprintf(stem, sizeof stem, "%.*s", (int)(strlen(name) - 4), name);
    char *path = xasprintf("%s/real/%s.crop.png", fixtures, stem);
    Image img;
    int rc = image_load(path, &img, err, sizeof err);
    if (rc) die("%s (regenerate with /usr/bin/python3 tests/ref_preprocess.py)", err);
    if (img.w != PREP_CROP || img.h != PREP_CROP) die("%s: %dx%d, not a 224x224 crop", path, img.w, img.h);
    memcpy(crop, img.rgb, CROP_BYTES);
    image_free(&img);
    free(path);
    return 0;
}

static void test_exact(const char *fixtures, const char *images, const char *name, const char *kind) {
    uint8_t *ours = xmalloc(CROP_BYTES), *ref = xmalloc(CROP_BYTES);
    char *path = xasprintf("%s/%s", images, name);
    our_crop(path, ours);
    load_ref_crop(fixtures, name, ref);
    double mx, mean;
    tensor_diff(ours, ref, &mx, &mean);
    CHECK(mx < EXACT_LIMIT, "%s (%s): max abs diff %g from torchvision (limit %g)", name, kind, mx,
          EXACT_LIMIT);
    printf("%s (%s): max abs diff %.3g, mean %.3g, crops %s\n", name, kind, mx, mean,
           memcmp(ours, ref, CROP_BYTES) ? "differ" : "identical");
    // the float pipeline end to end gives the same tensor as crop + normalize
    Image img;
    char err[512];
    float *a = xmalloc(PREP_FLOATS * sizeof(float)), *b = xmalloc(PREP_FLOATS * sizeof(float));
    if (image_load(path, &img, err, sizeof err)) die("%s", err);
    CHECK(preprocess_image(&img, a) == 0, "%s: preprocess_image failed", name);
    normalize_chw(ref, b);
    double mx2 = 0;
    for (int i = 0; i < PREP_FLOATS; i++) mx2 = fmax(mx2, fabs((double)a[i] - b[i]));
    CHECK(mx2 < EXACT_LIMIT, "%s: preprocess_image max abs diff %g", name, mx2);
    image_free(&img);
    free(a);
    free(b);
    free(path);
    free(ours);
    free(ref);
}

static const char *JPEG_SAMPLE[] = {
    "Abyssinian_120.jpg", "Bengal_183.jpg", "Abyssinian_121.jpg", "Bengal_192.jpg",
    "Abyssinian_1.jpg", "Abyssinian_60.jpg", "american_bulldog_10.jpg", "american_bulldog_111.jpg",
    "american_bulldog_200.jpg", "Bengal_1.jpg", "Bengal_100.jpg", "Bengal_57.jpg"};

static void test_jpeg_sample(const char *fixtures, const char *images) {
    uint8_t *ours = xmalloc(CROP_BYTES), *ref = xmalloc(CROP_BYTES);
    double gmax = 0, gsum = 0;
    int n = (int)(sizeof JPEG_SAMPLE / sizeof JPEG_SAMPLE[0]);
    for (int i = 0; i < n; i++) {
        char *path = xasprintf("%s/%s", images, JPEG_SAMPLE[i]);
        our_crop(path, ours);
        load_ref_crop(fixtures, JPEG_SAMPLE[i], ref);
        double mx, mean;
        tensor_diff(ours, ref, &mx, &mean);
        CHECK(mx < JPEG_MAX_LIMIT && mean < JPEG_MEAN_LIMIT,
              "%s: max abs diff %.4f (limit %.2f), mean %.5f (limit %.3f)", JPEG_SAMPLE[i], mx,
              JPEG_MAX_LIMIT, mean, JPEG_MEAN_LIMIT);
        gmax = fmax(gmax, mx);
        gsum += mean;
        free(path);
    }
    CHECK(gsum / n < JPEG_MEAN_LIMIT, "JPEG sample: mean abs diff %.5f", gsum / n);
    printf("JPEG sample (%d whole tensors): max abs diff %.4f, mean abs diff %.5f\n", n, gmax,
           gsum / n);
    free(ours);
    free(ref);
}

// Every real JPEG through the 16x16 block sums of torchvision's crop.
static void test_jpeg_blocks(const char *fixtures, const char *images) {
    char *path = xasprintf("%s/real/jpeg_blocks.bin", fixtures);
    size_t n;
    uint8_t *buf = read_or_die(path, &n, 0);
    const size_t rec = 64 + 14 * 14 * 3 * 2;
    uint32_t count;
    if (n < 12 || memcmp(buf, "PETBLK1\n", 8)) die("%s: not a block-sum file", path);
    memcpy(&count, buf + 8, 4);
    if (n != 12 + count * rec) die("%s: %zu bytes for %u records", path, n, count);
    uint8_t *ours = xmalloc(CROP_BYTES);
    double bmax = 0, bsum = 0, worst_mean = 0;
    const char *worst = "";
    for (uint32_t r = 0; r < count; r++) {
        const uint8_t *p = buf + 12 + r * rec;
        char name[65];
        memcpy(name, p, 64);
        name[64] = 0;
        char *img = xasprintf("%s/%s", images, name);
        our_crop(img, ours);
        double isum = 0;
        for (int by = 0; by < 14; by++)
            for (int bx = 0; bx < 14; bx++)
                for (int c = 0; c < 3; c++) {
                    uint32_t s = 0;
                    for (int y = 0; y < 16; y++)
                        for (int x = 0; x < 16; x++)
                            s += ours[(((size_t)by * 16 + y) * PREP_CROP + bx * 16 + x) * 3 + c];
                    const uint8_t *q = p + 64 + ((by * 14 + bx) * 3 + c) * 2;
                    uint32_t ref = (uint32_t)q[0] | (uint32_t)q[1] << 8;
                    // mean over the block of the normalized difference
                    double d = fabs(((double)s - ref) / 256.0 / 255.0 / PREP_STD[c]);
                    bmax = fmax(bmax, d);
                    isum += d;
                }
        isum /= 14 * 14 * 3;
        bsum += isum;
        if (isum > worst_mean) {
            worst_mean = isum;
            worst = (const char *)p;
        }
        free(img);
    }
    CHECK(count == 598, "%s: %u JPEGs, expected the 598 of the 3-class set", path, count);
    CHECK(bmax < JPEG_MAX_LIMIT, "all JPEGs: a block-mean difference of %.4f (limit %.2f)", bmax,
          JPEG_MAX_LIMIT);
    CHECK(bsum / count < JPEG_MEAN_LIMIT, "all JPEGs: mean block difference %.5f (limit %.3f)",
          bsum / count, JPEG_MEAN_LIMIT);
    printf("all %u JPEGs (16x16 block means, lower bounds): max %.4f, mean %.5f, worst image %s "
           "%.5f\n", count, bmax, bsum / count, worst, worst_mean);
    free(ours);
    free(buf);
    free(path);
}

static int dump_crops(const char *out, const char *images) {
    if (mkdir_p(out)) die("%s: cannot create", out);
    DIR *d = opendir(images);
    if (!d) die("%s: cannot open", images);
    struct dirent *e;
    uint8_t *crop = xmalloc(CROP_BYTES);
    char err[512];
    int n = 0;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".jpg")) continue;
        char *path = xasprintf("%s/%s", images, e->d_name);
        char *dst = xasprintf("%s/%s.u8", out, e->d_name);
        our_crop(path, crop);
        if (write_file_atomic(dst, crop, CROP_BYTES, err, sizeof err)) die("%s", err);
        n++;
        free(path);
        free(dst);
    }
    closedir(d);
    free(crop);
    printf("%d crops written to %s\n", n, out);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "--dump-crops")) {
        char *images = xasprintf("%s/images", argv[3]);
        return dump_crops(argv[2], images);
    }
    if (argc != 3) die("usage: test-preprocess-real FIXTURE_DIR SHARED_DIR");
    char *images = xasprintf("%s/images", argv[2]);
    if (!file_exists(images)) {
        printf("SKIP: %s not found (the shared 3-class subset)\n", images);
        return 77;
    }
    test_exact(argv[1], images, "Abyssinian_5.jpg", "PNG with alpha");
    test_exact(argv[1], images, "Abyssinian_34.jpg", "GIF");
    test_jpeg_sample(argv[1], images);
    test_jpeg_blocks(argv[1], images);
    free(images);
    return check_exit("all real-image preprocess checks passed");
}
