// test_gpu_standin.c: what the GPU backend does differently from the CPU, checked on the CPU
// stand-in that models it (nn/backend_standin.h), since this machine has no GPU:
// - fp16 rounding: round_to_half is __float2half_rn (ties to even, overflow to inf, subnormals);
// - the fc layer in fp16 like autocast: with GradScaler's first scale (65536) and reduction 'sum'
//   the fp16 gradients of fc overflow, so the first steps are skipped exactly as many times as
//   fp16 arithmetic on the host predicts, and then taken; in fp32 no step is skipped;
// - one host synchronisation for GradScaler's check over all ~110 gradients of fine-tuning, and
//   the same verdict as the CPU reference (tensor_nonfinite on each), NaN and inf found;
// - the activation pool sized by batch capacity: a smaller last batch allocates nothing and gives
//   the logits of a model that only ever saw that batch size; a larger one reallocates.
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "nn/backend_standin.h"
#include "nn/resnet34.h"
#include "nn/train.h"

static uint64_t rs = 42;
static float frand(void) { // [0, 1)
    rs = rs * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rs >> 40) / (double)(1ull << 24));
}

static Backend *open_standin(Precision p) {
    char err[256];
    Backend *be = backend_open("cuda", p, 1, err, sizeof err);
    if (!be) die("%s", err);
    if (!backend_standin_stats(be)) die("--device cuda did not open the stand-in (PETS_CUDA_STANDIN=1?)");
    return be;
}

// ----------------------------------------------------------------------------

static void test_round_to_half(void) {
    const struct { float in, out; } cases[] = {
        {1.0f, 1.0f}, {1.0f / 3.0f, 0.333251953125f}, {65504.0f, 65504.0f},
        {65519.0f, 65504.0f}, {-2049.0f, -2048.0f}, {2051.0f, 2052.0f},
        {1e-8f, 0.0f}, {3e-8f, 5.9604644775390625e-08f}, {6.1e-5f, 6.097555160522461e-05f}, {6.103515625e-05f, 6.103515625e-05f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK(round_to_half(cases[i].in) == cases[i].out, "round_to_half(%.9g) = %.9g, expected %.9g",
              (double)cases[i].in, (double)round_to_half(cases[i].in), (double)cases[i].out);
    CHECK(isinf(round_to_half(65520.0f)) && isinf(round_to_half(-1e6f)), "overflow must give inf");
    CHECK(isnan(round_to_half(NAN)), "NaN must stay NaN");
}

// ----------------------------------------------------------------------------
// GradScaler with the fc layer in fp16

enum { B = 32, CLASSES = 37 };

// Host prediction: does one backward at `scale` overflow in fp16? dy = half(scale * (softmax -
// onehot)), dw = half(dy^T half(x)), db = half(column sums of dy).
static int predict_overflow(const float *logits, const float *feat, const int *labels, float scale) {
    static float dyh[B * CLASSES];
    for (int n = 0; n < B; n++) {
        const float *z = logits + n * CLASSES;
        double mx = -INFINITY, se = 0;
        for (int j = 0; j < CLASSES; j++) mx = fmax(mx, z[j]);
        for (int j = 0; j < CLASSES; j++) se += exp((double)z[j] - mx);
        for (int j = 0; j < CLASSES; j++) {
            double g = exp((double)z[j] - mx) / se - (j == labels[n] ? 1.0 : 0.0);
            dyh[n * CLASSES + j] = round_to_half((float)((double)scale * g));
            if (isinf(dyh[n * CLASSES + j])) return 1;
        }
    }
    for (int j = 0; j < CLASSES; j++) {
        double db = 0;
        for (int n = 0; n < B; n++) db += dyh[n * CLASSES + j];
        if (isinf(round_to_half((float)db))) return 1;
        for (int k = 0; k < RESNET34_FEATURES; k++) {
            double dw = 0;
            for (int n = 0; n < B; n++)
                dw += (double)dyh[n * CLASSES + j] * round_to_half(feat[n * RESNET34_FEATURES + k]);
            if (isinf(round_to_half((float)dw))) return 1;
        }
    }
    return 0;
}

// Runs `steps` training steps of a new fc on fixed features; returns the steps skipped.
static int run_scaler(Precision prec, int steps, int *predicted) {
    Backend *be = open_standin(prec);
    ResNet34 *m = resnet34_create(be, CLASSES);
    resnet34_init_random(m, 7);
    resnet34_freeze_backbone(m, 1);
    float *feat = xmalloc(sizeof(float) * B * RESNET34_FEATURES);
    float logits[B * CLASSES];
    int labels[B];
    rs = 42;
    // like pretrained ResNet34's pooled features: non-negative, mean about 0.9
    for (int i = 0; i < B * RESNET34_FEATURES; i++) feat[i] = 1.8f * frand();
    for (int n = 0; n < B; n++) labels[n] = n % CLASSES;
    Adam opt;
    adam_init(&opt, 1e-3f);
    GradScaler sc;
    scaler_init(&sc, prec == PREC_FP16);
    int skipped = 0;
    *predicted = 0;
    for (int s = 0; s < steps; s++) {
        resnet34_forward_head(m, feat, B);
        resnet34_logits(m, logits);
        float scale = sc.scale;
        int pred = prec == PREC_FP16 && predict_overflow(logits, feat, labels, scale);
        *predicted += pred;
        long before = opt.step;
        resnet34_forward_head(m, feat, B);
        train_step(m, &opt, &sc, labels);
        int skip = opt.step == before;
        skipped += skip;
        CHECK(skip == pred, "%s step %d at scale %g: %s, the fp16 host prediction says %s",
              prec == PREC_FP16 ? "fp16" : "fp32", s + 1, (double)scale,
              skip ? "skipped" : "taken", pred ? "overflow" : "finite");
    }
    free(feat);
    resnet34_free(m);
    backend_close(be);
    return skipped;
}

static void test_scaler_fp16_fc(void) {
    int pred16, pred32;
    int skip16 = run_scaler(PREC_FP16, 10, &pred16);
    int skip32 = run_scaler(PREC_FP32, 3, &pred32);
    printf("GradScaler, fc in fp16: %d of the first 10 steps skipped (host prediction %d); "
           "fp32: %d of 3\n", skip16, pred16, skip32);
    CHECK(skip16 >= 1 && skip16 < 10, "fp16: the first step(s) must overflow and later ones not "
          "(skipped %d of 10)", skip16);
    CHECK(skip32 == 0, "fp32 has no loss scale: nothing may be skipped (skipped %d)", skip32);
}

// ----------------------------------------------------------------------------
// one synchronisation for the check over all gradients

static void test_single_sync(void) {
    Backend *be = open_standin(PREC_FP32);
    BackendStandinStats *st = backend_standin_stats(be);
    ResNet34 *m = resnet34_create(be, 10);
    resnet34_init_random(m, 3);
    const int n = 2, hw = 32;
    float *x = xmalloc(sizeof(float) * n * 3 * hw * hw);
    for (int i = 0; i < n * 3 * hw * hw; i++) x[i] = 2 * frand() - 1;
    int labels[2] = {1, 7};
    resnet34_forward(m, x, n, hw, hw, 1);
    resnet34_loss(m, labels, 0, 1, 1.0f, NULL);
    int grads = 0;
    for (int i = 0; i < resnet34_num_params(m); i++) grads += resnet34_param(m, i)->grad != NULL;
    long s0 = st->syncs;
    int bad = resnet34_grads_nonfinite(m);
    long used = st->syncs - s0;
    printf("grads_nonfinite over %d gradients: %ld host synchronisation(s)\n", grads, used);
    CHECK(grads > 100, "fine-tuning should have over 100 gradients, got %d", grads);
    CHECK(used == 1, "the check over %d gradients used %ld synchronisations, not 1", grads, used);
    CHECK(!bad, "finite gradients reported non-finite");
    // the CPU reference's verdict (each tensor on its own), with a NaN, then an inf, planted
    const float planted[2] = {NAN, INFINITY};
    for (int k = 0; k < 2; k++) {
        Param *p = resnet34_param(m, k == 0 ? 5 : resnet34_num_params(m) - 2);
        if (!p->grad) p = resnet34_find_param(m, "fc.weight");
        float *g = xmalloc(p->grad->numel * sizeof(float));
        be->tensor_download(p->grad, g);
        float keep = g[p->grad->numel / 2];
        g[p->grad->numel / 2] = planted[k];
        be->tensor_upload(p->grad, g);
        int ref = 0;
        for (int i = 0; i < resnet34_num_params(m); i++) {
            Param *q = resnet34_param(m, i);
            if (q->grad && !q->frozen && be->tensor_nonfinite(q->grad)) ref = 1;
        }
        CHECK(resnet34_grads_nonfinite(m) == 1 && ref == 1, "%s in %s not found (reference %d)",
              k ? "inf" : "NaN", p->name, ref);
        g[p->grad->numel / 2] = keep;
        be->tensor_upload(p->grad, g);
        free(g);
    }
    CHECK(!resnet34_grads_nonfinite(m), "restored gradients reported non-finite");
    free(x);
    resnet34_free(m);
    backend_close(be);
}

// ----------------------------------------------------------------------------
// the activation pool keeps its memory for a smaller last batch

static void test_pool_capacity(void) {
    Backend *be = open_standin(PREC_FP32);
    BackendStandinStats *st = backend_standin_stats(be);
    const int hw = 32, full = 4, last = 3;
    float *x = xmalloc(sizeof(float) * 5 * 3 * hw * hw);
    for (int i = 0; i < 5 * 3 * hw * hw; i++) x[i] = 2 * frand() - 1;
    ResNet34 *m = resnet34_create(be, 10);
    resnet34_init_random(m, 5);
    int labels[5] = {0, 1, 2, 3, 4};
    for (int train = 0; train < 2; train++) {
        // train: a full step (forward, backward) at each size, as an epoch's batches
        resnet34_forward(m, x, full, hw, hw, train);
        if (train) resnet34_loss(m, labels, 0, 1, 1.0f, NULL);
        long a0 = st->allocs;
        resnet34_forward(m, x, last, hw, hw, train);
        if (train) resnet34_loss(m, labels, 0, 1, 1.0f, NULL);
        resnet34_forward(m, x, full, hw, hw, train);
        if (train) resnet34_loss(m, labels, 0, 1, 1.0f, NULL);
        long made = st->allocs - a0;
        printf("%s: batch %d then %d then %d: %ld tensors allocated after the first\n",
               train ? "train" : "eval", full, last, full, made);
        CHECK(made == 0, "%s: a smaller batch reallocated %ld tensors", train ? "train" : "eval", made);
    }
    // the smaller batch's results are those of a model that never saw a larger one
    ResNet34 *a = resnet34_create(be, 10), *b = resnet34_create(be, 10);
    resnet34_init_random(a, 9);
    resnet34_init_random(b, 9);
    float la[5 * 10], lb[5 * 10];
    resnet34_forward(a, x, full, hw, hw, 0);
    resnet34_forward(a, x, last, hw, hw, 0);
    resnet34_logits(a, la);
    resnet34_forward(b, x, last, hw, hw, 0);
    resnet34_logits(b, lb);
    CHECK(!memcmp(la, lb, sizeof(float) * last * 10), "the batch of %d after one of %d differs from "
          "a batch of %d alone", last, full, last);
    // a larger batch than the capacity reallocates, and is right
    long a1 = st->allocs;
    resnet34_forward(a, x, 5, hw, hw, 0);
    resnet34_logits(a, la);
    resnet34_forward(b, x, 5, hw, hw, 0);
    resnet34_logits(b, lb);
    CHECK(st->allocs > a1, "a batch larger than the pool must allocate");
    CHECK(!memcmp(la, lb, sizeof(float) * 5 * 10), "the batch of 5 after smaller ones differs");
    free(x);
    resnet34_free(m);
    resnet34_free(a);
    resnet34_free(b);
    backend_close(be);
}

int main(void) {
    setenv("PETS_CUDA_STANDIN", "1", 1);
    unsetenv("PETS_STANDIN_FAULT");
    test_round_to_half();
    test_scaler_fp16_fc();
    test_single_sync();
    test_pool_capacity();
    return check_exit("GPU stand-in checks passed");
}
