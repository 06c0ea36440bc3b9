// tests/test_predict_helper.c: the in-memory side of tests/test_predict.sh.
//   test-predict-helper make DIR SEED CLASSES
//     builds a ResNet34 with resnet34_init_random(SEED) and writes into DIR: model.pth (our
//     checkpoint writer), x.f32 (2 seeded random 3x224x224 inputs), ref_logits.f32 and
//     ref_features.f32 (the in-memory model's eval outputs for x), img.png (a synthetic picture).
//   test-predict-helper top LOGITS.f32 CLASSES K
//     prints, for each row of a logits file, the K most probable class indices with their
//     softmax probability in percent ("index pct"), computed independently of predict.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "core/common.h"
#include "data/image.h"
#include "data/preprocess.h"
#include "checkpoint/pth.h"
#include "nn/resnet34.h"
#include "core/rng.h"

static void save(const char *dir, const char *name, const void *data, size_t bytes) {
    char path[1024], err[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (write_file_atomic(path, data, bytes, err, sizeof err)) die("%s", err);
}

static int make(const char *dir, uint64_t seed, int classes) {
    char err[1024];
    Backend *be = backend_open("cpu", PREC_FP32, 1, err, sizeof err);
    if (!be) die("%s", err);
    ResNet34 *m = resnet34_create(be, classes);
    resnet34_init_random(m, seed);

    StateDict sd = {0};
    resnet34_to_state(m, &sd);
    char path[1024];
    snprintf(path, sizeof path, "%s/model.pth", dir);
    if (pth_save(path, &sd, "model", err, sizeof err)) die("%s", err);
    sd_free(&sd);

    const int n = 2;
    float *x = xmalloc(sizeof(float) * PREP_FLOATS * n);
    Rng rng;
    rng_seed(&rng, seed ^ 0x5eed);
    for (size_t i = 0; i < (size_t)PREP_FLOATS * n; i++) x[i] = (float)rng_normal(&rng);
    save(dir, "x.f32", x, sizeof(float) * PREP_FLOATS * n);

    resnet34_forward(m, x, n, PREP_CROP, PREP_CROP, 0);
    float *logits = xmalloc(sizeof(float) * (size_t)classes * n);
    float *feat = xmalloc(sizeof(float) * RESNET34_FEATURES * n);
    resnet34_logits(m, logits);
    resnet34_features(m, feat);
    save(dir, "ref_logits.f32", logits, sizeof(float) * (size_t)classes * n);
    save(dir, "ref_features.f32", feat, sizeof(float) * RESNET34_FEATURES * n);

    // a 320x240 picture with structure (a disc on a gradient), for the image path
    Image img = {.w = 320, .h = 240};
    img.rgb = xmalloc((size_t)img.w * img.h * 3);
    for (int yy = 0; yy < img.h; yy++)
        for (int xx = 0; xx < img.w; xx++) {
            uint8_t *p = img.rgb + ((size_t)yy * img.w + xx) * 3;
            int in = (xx - 160) * (xx - 160) + (yy - 120) * (yy - 120) < 80 * 80;
            p[0] = (uint8_t)(in ? 200 : xx * 255 / img.w);
            p[1] = (uint8_t)(in ? 120 : yy * 255 / img.h);
            p[2] = (uint8_t)(in ? 40 : 128);
        }
    snprintf(path, sizeof path, "%s/img.png", dir);
    if (image_write_png(path, &img, err, sizeof err)) die("%s", err);
    image_free(&img);

    free(x);
    free(logits);
    free(feat);
    resnet34_free(m);
    backend_close(be);
    return 0;
}

static const double *g_prob;
static int by_prob(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b;
    if (g_prob[i] != g_prob[j]) return g_prob[i] > g_prob[j] ? -1 : 1;
    return i - j;
}

static int top(const char *path, int classes, int k) {
    char err[1024];
    size_t bytes;
    float *l = (float *)read_file(path, &bytes, 1u << 30, err, sizeof err);
    if (!l) die("%s", err);
    size_t rows = bytes / sizeof(float) / (size_t)classes;
    double *prob = xmalloc(sizeof(double) * (size_t)classes);
    int *idx = xmalloc(sizeof(int) * (size_t)classes);
    for (size_t r = 0; r < rows; r++) {
        const float *row = l + r * (size_t)classes;
        long double mx = row[0], sum = 0;
        for (int c = 1; c < classes; c++) mx = row[c] > mx ? row[c] : mx;
        for (int c = 0; c < classes; c++) sum += expl((long double)row[c] - mx);
        for (int c = 0; c < classes; c++) {
            prob[c] = (double)(expl((long double)row[c] - mx) / sum);
            idx[c] = c;
        }
        g_prob = prob;
        qsort(idx, (size_t)classes, sizeof(int), by_prob);
        for (int i = 0; i < k && i < classes; i++) printf("%d %.2f\n", idx[i], 100 * prob[idx[i]]);
    }
    free(prob);
    free(idx);
    free(l);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && !strcmp(argv[1], "make"))
        return make(argv[2], strtoull(argv[3], NULL, 10), atoi(argv[4]));
    if (argc == 5 && !strcmp(argv[1], "top")) return top(argv[2], atoi(argv[3]), atoi(argv[4]));
    die("usage: test-predict-helper make DIR SEED CLASSES | top LOGITS.f32 CLASSES K");
}
