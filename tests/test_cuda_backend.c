// test_cuda_backend.c: every layer of the cuDNN backend, forward and backward, against the CPU
// backend (the specification) on random inputs of ResNet34's kinds of shapes. fp32 is checked
// tightly; fp16 (autocast-style convolutions) loosely. Exits 77 (CTest: skipped) without a GPU.
//   usage: test-cuda-backend [fp32|fp16]
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "core/common.h"
#include "check.h"

static double ATOL, RTOL;

// ----------------------------------------------------------------------------
// helpers: a pair of tensors (cpu, gpu) holding the same values

typedef struct {
    Tensor *c, *g;
    float *host;
} Pair;

static uint64_t rng_state = 0x1234567ull;
static float frand(void) { // uniform in [-1, 1)
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng_state >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

static Pair pair_new(Backend *cpu, Backend *gpu, int n, int c, int h, int w, float scale, float offset) {
    Pair p;
    p.c = cpu->tensor_new(cpu, n, c, h, w);
    p.g = gpu->tensor_new(gpu, n, c, h, w);
    p.host = xmalloc(p.c->numel * sizeof(float));
    for (size_t i = 0; i < p.c->numel; i++) p.host[i] = offset + scale * frand();
    cpu->tensor_upload(p.c, p.host);
    gpu->tensor_upload(p.g, p.host);
    return p;
}

static void pair_free(Pair *p) {
    p->c->be->tensor_free(p->c);
    p->g->be->tensor_free(p->g);
    free(p->host);
}

// Compares the GPU tensor against the CPU one: |g - c| <= atol*scale + rtol*|c|, where scale is
// the largest |c| (so that tolerances follow the magnitude of the tensor).
static void check(const char *what, const Pair *p) {
    size_t n = p->c->numel;
    float *a = xmalloc(n * sizeof(float)), *b = xmalloc(n * sizeof(float));
    p->c->be->tensor_download(p->c, a);
    p->g->be->tensor_download(p->g, b);
    double amax = 0, worst = 0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(a[i])) amax = fmax(amax, fabs(a[i]));
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        // NaN must propagate where the CPU's does; infinities must match exactly
        if ((isnan(a[i]) && isnan(b[i])) || a[i] == b[i]) continue;
        double d = fabs((double)a[i] - (double)b[i]);
        if (!approx_eq(b[i], a[i], ATOL * (amax > 1 ? amax : 1), RTOL)) {
            if (!bad) first = i;
            bad++;
        }
        if (d > worst || isnan(d)) worst = d;
    }
    printf("%-34s max|ref| %.3e  max|diff| %.3e  %s\n", what, amax, worst, bad ? "FAIL" : "ok");
    if (bad) {
        printf("  %zu of %zu elements differ; first at %zu: cpu %.7g gpu %.7g\n", bad, n, first,
               a[first], b[first]);
        failures++;
    }
    free(a);
    free(b);
}

// ----------------------------------------------------------------------------
// layers

static void test_conv(Backend *cpu, Backend *gpu, int n, int c, int h, int k, int r, int stride, int pad) {
    int p = (h + 2 * pad - r) / stride + 1;
    Pair x = pair_new(cpu, gpu, n, c, h, h, 1.f, 0.f);
    Pair w = pair_new(cpu, gpu, k, c, r, r, 1.f / sqrtf((float)(c * r * r)), 0.f);
    Pair y = pair_new(cpu, gpu, n, k, p, p, 0.f, 0.f);
    Pair dy = pair_new(cpu, gpu, n, k, p, p, 1.f, 0.f);
    Pair dx = pair_new(cpu, gpu, n, c, h, h, 0.f, 0.f);
    Pair dw = pair_new(cpu, gpu, k, c, r, r, 0.f, 0.f);
    cpu->conv2d_forward(cpu, x.c, w.c, y.c, stride, pad);
    gpu->conv2d_forward(gpu, x.g, w.g, y.g, stride, pad);
    cpu->conv2d_backward(cpu, x.c, w.c, dy.c, dx.c, dw.c, stride, pad);
    gpu->conv2d_backward(gpu, x.g, w.g, dy.g, dx.g, dw.g, stride, pad);
    char name[96];
    snprintf(name, sizeof name, "conv %dx%d/%d c%d->%d fwd", r, r, stride, c, k);
    check(name, &y);
    snprintf(name, sizeof name, "conv %dx%d/%d c%d->%d bwd data", r, r, stride, c, k);
    check(name, &dx);
    snprintf(name, sizeof name, "conv %dx%d/%d c%d->%d bwd filter", r, r, stride, c, k);
    check(name, &dw);
    // backward with only the filter gradient (the first layer needs no dx)
    gpu->tensor_fill(dw.g, 0.f);
    gpu->conv2d_backward(gpu, x.g, w.g, dy.g, NULL, dw.g, stride, pad);
    check("conv bwd filter only", &dw);
    // and with only the input gradient (a frozen weight)
    gpu->tensor_fill(dx.g, 0.f);
    gpu->conv2d_backward(gpu, x.g, w.g, dy.g, dx.g, NULL, stride, pad);
    check("conv bwd data only", &dx);
    Pair *all[] = {&x, &w, &y, &dy, &dx, &dw};
    for (int i = 0; i < 6; i++) pair_free(all[i]);
}

static void test_batchnorm(Backend *cpu, Backend *gpu, int training) {
    int n = 4, c = 16, h = 7;
    Pair x = pair_new(cpu, gpu, n, c, h, h, 2.f, 0.5f);
    Pair y = pair_new(cpu, gpu, n, c, h, h, 0.f, 0.f);
    Pair dy = pair_new(cpu, gpu, n, c, h, h, 1.f, 0.f);
    Pair dx = pair_new(cpu, gpu, n, c, h, h, 0.f, 0.f);
    Pair wt = pair_new(cpu, gpu, c, 1, 1, 1, 0.5f, 1.f), bs = pair_new(cpu, gpu, c, 1, 1, 1, 0.5f, 0.f);
    Pair rm = pair_new(cpu, gpu, c, 1, 1, 1, 0.2f, 0.f), rv = pair_new(cpu, gpu, c, 1, 1, 1, 0.3f, 1.f);
    Pair sm = pair_new(cpu, gpu, c, 1, 1, 1, 0.f, 0.f), si = pair_new(cpu, gpu, c, 1, 1, 1, 0.f, 0.f);
    Pair dwt = pair_new(cpu, gpu, c, 1, 1, 1, 0.f, 0.f), dbs = pair_new(cpu, gpu, c, 1, 1, 1, 0.f, 0.f);
    BatchNorm bc = {wt.c, bs.c, rm.c, rv.c, sm.c, si.c, dwt.c, dbs.c, 0.1f, 1e-5f, 0};
    BatchNorm bg = {wt.g, bs.g, rm.g, rv.g, sm.g, si.g, dwt.g, dbs.g, 0.1f, 1e-5f, 0};
    cpu->batchnorm_forward(cpu, x.c, &bc, y.c, training);
    gpu->batchnorm_forward(gpu, x.g, &bg, y.g, training);
    cpu->batchnorm_backward(cpu, x.c, &bc, dy.c, dx.c, training);
    gpu->batchnorm_backward(gpu, x.g, &bg, dy.g, dx.g, training);
    const char *m = training ? "train" : "eval";
    char name[64];
    snprintf(name, sizeof name, "batchnorm %s fwd", m), check(name, &y);
    snprintf(name, sizeof name, "batchnorm %s bwd dx", m), check(name, &dx);
    snprintf(name, sizeof name, "batchnorm %s dweight", m), check(name, &dwt);
    snprintf(name, sizeof name, "batchnorm %s dbias", m), check(name, &dbs);
    snprintf(name, sizeof name, "batchnorm %s running_mean", m), check(name, &rm);
    snprintf(name, sizeof name, "batchnorm %s running_var", m), check(name, &rv);
    if (bc.num_batches_tracked != bg.num_batches_tracked) {
        printf("batchnorm num_batches_tracked: cpu %lld gpu %lld FAIL\n",
               (long long)bc.num_batches_tracked, (long long)bg.num_batches_tracked);
        failures++;
    }
    Pair *all[] = {&x, &y, &dy, &dx, &wt, &bs, &rm, &rv, &sm, &si, &dwt, &dbs};
    for (int i = 0; i < 12; i++) pair_free(all[i]);
}

static void test_elementwise(Backend *cpu, Backend *gpu) {
    int n = 3, c = 8, h = 13;
    Pair a = pair_new(cpu, gpu, n, c, h, h, 1.f, 0.f), b = pair_new(cpu, gpu, n, c, h, h, 1.f, 0.f);
    Pair y = pair_new(cpu, gpu, n, c, h, h, 0.f, 0.f), d = pair_new(cpu, gpu, n, c, h, h, 0.f, 0.f);
    cpu->relu_forward(cpu, a.c, y.c), gpu->relu_forward(gpu, a.g, y.g), check("relu fwd", &y);
    cpu->relu_backward(cpu, y.c, b.c, d.c), gpu->relu_backward(gpu, y.g, b.g, d.g), check("relu bwd", &d);
    cpu->add_relu_forward(cpu, a.c, b.c, y.c), gpu->add_relu_forward(gpu, a.g, b.g, y.g);
    check("add_relu fwd", &y);
    cpu->add_forward(cpu, a.c, b.c, y.c), gpu->add_forward(gpu, a.g, b.g, y.g);
    check("add fwd", &y);
    // max pool 3x3/2 pad 1 on data with ties (values rounded to a coarse grid)
    for (size_t i = 0; i < a.c->numel; i++) a.host[i] = roundf(a.host[i] * 2.f) / 2.f;
    cpu->tensor_upload(a.c, a.host), gpu->tensor_upload(a.g, a.host);
    int p = (h + 2 - 3) / 2 + 1;
    Pair py = pair_new(cpu, gpu, n, c, p, p, 0.f, 0.f), pdy = pair_new(cpu, gpu, n, c, p, p, 1.f, 0.f);
    cpu->maxpool_forward(cpu, a.c, py.c, 3, 2, 1), gpu->maxpool_forward(gpu, a.g, py.g, 3, 2, 1);
    check("maxpool fwd (ties)", &py);
    cpu->maxpool_backward(cpu, a.c, pdy.c, d.c, 3, 2, 1), gpu->maxpool_backward(gpu, a.g, pdy.g, d.g, 3, 2, 1);
    check("maxpool bwd (ties)", &d);
    Pair av = pair_new(cpu, gpu, n, c, 1, 1, 0.f, 0.f), dav = pair_new(cpu, gpu, n, c, 1, 1, 1.f, 0.f);
    cpu->avgpool_forward(cpu, a.c, av.c), gpu->avgpool_forward(gpu, a.g, av.g), check("avgpool fwd", &av);
    cpu->avgpool_backward(cpu, dav.c, d.c), gpu->avgpool_backward(gpu, dav.g, d.g), check("avgpool bwd", &d);
    Pair *all[] = {&a, &b, &y, &d, &py, &pdy, &av, &dav};
    for (int i = 0; i < 8; i++) pair_free(all[i]);
}

static void test_linear_loss_adam(Backend *cpu, Backend *gpu) {
    int n = 5, k = 512, m = 37;
    Pair x = pair_new(cpu, gpu, n, k, 1, 1, 1.f, 0.f), w = pair_new(cpu, gpu, m, k, 1, 1, 0.05f, 0.f);
    Pair b = pair_new(cpu, gpu, m, 1, 1, 1, 0.05f, 0.f), y = pair_new(cpu, gpu, n, m, 1, 1, 0.f, 0.f);
    Pair dy = pair_new(cpu, gpu, n, m, 1, 1, 0.f, 0.f), dx = pair_new(cpu, gpu, n, k, 1, 1, 0.f, 0.f);
    Pair dw = pair_new(cpu, gpu, m, k, 1, 1, 0.f, 0.f), db = pair_new(cpu, gpu, m, 1, 1, 1, 0.f, 0.f);
    // fp16: the fc layer runs in fp16 like autocast (fp16 operands and results): the tolerances of
    // the fp16 convolutions
    const double atol32 = ATOL, rtol32 = RTOL;
    if (gpu->precision == PREC_FP16) ATOL = 5e-3, RTOL = 1e-2;
    cpu->linear_forward(cpu, x.c, w.c, b.c, y.c), gpu->linear_forward(gpu, x.g, w.g, b.g, y.g);
    check("linear fwd", &y);
    ATOL = atol32, RTOL = rtol32;
    int labels[5] = {0, 36, 5, 5, 17};
    double lc = cpu->cross_entropy_forward_backward(cpu, y.c, labels, dy.c, 1.f);
    double lg = gpu->cross_entropy_forward_backward(gpu, y.g, labels, dy.g, 1.f);
    int loss_ok = approx_eq(lg, lc, 1e-5, 1e-4);
    printf("%-34s cpu %.7f gpu %.7f  %s\n", "cross entropy (sum)", lc, lg, loss_ok ? "ok" : "FAIL");
    if (!loss_ok) failures++;
    check("cross entropy dlogits", &dy);
    double lg2 = gpu->cross_entropy_forward_backward(gpu, y.g, labels, NULL, 1.f);
    printf("%-34s %s\n", "cross entropy without dlogits", lg2 == lg ? "ok" : "FAIL");
    if (lg2 != lg) failures++;
    cpu->linear_backward(cpu, x.c, w.c, dy.c, dx.c, dw.c, db.c);
    gpu->linear_backward(gpu, x.g, w.g, dy.g, dx.g, dw.g, db.g);
    if (gpu->precision == PREC_FP16) ATOL = 5e-3, RTOL = 1e-2;
    check("linear bwd dx", &dx), check("linear bwd dw", &dw), check("linear bwd db", &db);
    ATOL = atol32, RTOL = rtol32;
    // Adam on the very same gradient on both sides (the CPU's)
    cpu->tensor_download(dw.c, dw.host);
    gpu->tensor_upload(dw.g, dw.host);
    Pair mm = pair_new(cpu, gpu, m, k, 1, 1, 0.f, 0.f), vv = pair_new(cpu, gpu, m, k, 1, 1, 0.f, 0.f);
    for (long step = 1; step <= 3; step++) {
        cpu->adam_update(cpu, w.c, dw.c, mm.c, vv.c, 1e-3f, 0.9f, 0.999f, 1e-8f, step, 0.5f);
        gpu->adam_update(gpu, w.g, dw.g, mm.g, vv.g, 1e-3f, 0.9f, 0.999f, 1e-8f, step, 0.5f);
    }
    check("adam 3 steps: param", &w), check("adam 3 steps: m", &mm), check("adam 3 steps: v", &vv);
    // non-finite detection (GradScaler's check)
    int f0 = gpu->tensor_nonfinite(dw.g);
    dw.host[7] = INFINITY;
    gpu->tensor_upload(dw.g, dw.host);
    int f1 = gpu->tensor_nonfinite(dw.g);
    printf("%-34s finite %d, with inf %d  %s\n", "tensor_nonfinite", f0, f1, (!f0 && f1) ? "ok" : "FAIL");
    if (f0 || !f1) failures++;
    // the same over a list, with one synchronisation (tensors_nonfinite; NULL entries skipped)
    Tensor *list[3] = {dx.g, NULL, dw.g};
    int l1 = gpu->tensors_nonfinite(gpu, list, 3);
    dw.host[7] = 0.f;
    gpu->tensor_upload(dw.g, dw.host);
    int l0 = gpu->tensors_nonfinite(gpu, list, 3);
    printf("%-34s finite %d, with inf %d  %s\n", "tensors_nonfinite", l0, l1, (!l0 && l1) ? "ok" : "FAIL");
    if (l0 || !l1) failures++;
    // a smaller batch viewing the same memory: the first samples' results unchanged
    gpu->tensor_set_batch(x.g, 3), gpu->tensor_set_batch(y.g, 3);
    cpu->tensor_set_batch(x.c, 3), cpu->tensor_set_batch(y.c, 3);
    cpu->linear_forward(cpu, x.c, w.c, b.c, y.c), gpu->linear_forward(gpu, x.g, w.g, b.g, y.g);
    if (gpu->precision == PREC_FP16) ATOL = 5e-3, RTOL = 1e-2;
    check("linear fwd, batch 5 -> 3 (set_batch)", &y);
    ATOL = atol32, RTOL = rtol32;
    gpu->tensor_set_batch(x.g, 5), gpu->tensor_set_batch(y.g, 5);
    cpu->tensor_set_batch(x.c, 5), cpu->tensor_set_batch(y.c, 5);
    Pair *all[] = {&x, &w, &b, &y, &dy, &dx, &dw, &db, &mm, &vv};
    for (int i = 0; i < 10; i++) pair_free(all[i]);
}

// Every way a weight is written must reach the next convolution: in fp16 the backend caches an
// fp16 copy of the weight (and of the input activation), which must be remade after an upload, a
// fill, a copy or an Adam step, and after the input is rewritten in place.
static void test_weight_writes(Backend *cpu, Backend *gpu) {
    int n = 2, c = 8, h = 9, k = 8;
    Pair x = pair_new(cpu, gpu, n, c, h, h, 1.f, 0.f), w = pair_new(cpu, gpu, k, c, 3, 3, 0.2f, 0.f);
    Pair w2 = pair_new(cpu, gpu, k, c, 3, 3, 0.2f, 0.f), y = pair_new(cpu, gpu, n, k, h, h, 0.f, 0.f);
    Pair g = pair_new(cpu, gpu, k, c, 3, 3, 1.f, 0.f), m = pair_new(cpu, gpu, k, c, 3, 3, 0.f, 0.f);
    Pair v = pair_new(cpu, gpu, k, c, 3, 3, 0.f, 0.f);
#define FWD(what)                                                                                 \
    do {                                                                                          \
        cpu->conv2d_forward(cpu, x.c, w.c, y.c, 1, 1);                                            \
        gpu->conv2d_forward(gpu, x.g, w.g, y.g, 1, 1);                                            \
        check(what, &y);                                                                          \
    } while (0)
    FWD("weight writes: first forward");
    for (size_t i = 0; i < w.c->numel; i++) w.host[i] = -2.f * w.host[i];
    cpu->tensor_upload(w.c, w.host), gpu->tensor_upload(w.g, w.host);
    FWD("weight writes: after upload");
    cpu->tensor_fill(w.c, 0.01f), gpu->tensor_fill(w.g, 0.01f);
    FWD("weight writes: after fill");
    cpu->tensor_copy(w.c, w2.c), gpu->tensor_copy(w.g, w2.g);
    FWD("weight writes: after copy");
    cpu->adam_update(cpu, w.c, g.c, m.c, v.c, 0.1f, 0.9f, 0.999f, 1e-8f, 1, 1.f);
    gpu->adam_update(gpu, w.g, g.g, m.g, v.g, 0.1f, 0.9f, 0.999f, 1e-8f, 1, 1.f);
    FWD("weight writes: after adam");
    cpu->relu_forward(cpu, x.c, x.c), gpu->relu_forward(gpu, x.g, x.g); // the input, in place
    FWD("input rewritten in place (relu)");
#undef FWD
    Pair *all[] = {&x, &w, &w2, &y, &g, &m, &v};
    for (int i = 0; i < 7; i++) pair_free(all[i]);
}

// In-place calls, NaN propagation and the max-pool NaN rule, as backend_cpu.c defines them.
static void test_inplace_nan(Backend *cpu, Backend *gpu) {
    int n = 2, c = 4, h = 9;
    Pair a = pair_new(cpu, gpu, n, c, h, h, 1.f, 0.f), b = pair_new(cpu, gpu, n, c, h, h, 1.f, 0.f);
    for (size_t i = 0; i < a.c->numel; i += 7) a.host[i] = NAN;
    a.host[3] = INFINITY, a.host[5] = -INFINITY, a.host[11] = -0.0f;
    cpu->tensor_upload(a.c, a.host), gpu->tensor_upload(a.g, a.host);
    Pair y = pair_new(cpu, gpu, n, c, h, h, 0.f, 0.f);
    cpu->add_relu_forward(cpu, a.c, b.c, y.c), gpu->add_relu_forward(gpu, a.g, b.g, y.g);
    check("add_relu with NaN/inf", &y);
    cpu->add_forward(cpu, a.c, b.c, a.c), gpu->add_forward(gpu, a.g, b.g, a.g); // y == a
    check("add in place (y == a)", &a);
    cpu->add_forward(cpu, a.c, b.c, b.c), gpu->add_forward(gpu, a.g, b.g, b.g); // y == b
    check("add in place (y == b)", &b);
    cpu->relu_forward(cpu, a.c, a.c), gpu->relu_forward(gpu, a.g, a.g);
    check("relu in place, NaN kept", &a);
    cpu->relu_backward(cpu, a.c, b.c, b.c), gpu->relu_backward(gpu, a.g, b.g, b.g);
    check("relu bwd in place (dx == dy)", &b);
    // max pool with NaNs (several per window) and infinities
    for (size_t i = 0; i < a.c->numel; i++) a.host[i] = roundf(a.host[i] * 2.f);
    for (size_t i = 0; i < a.c->numel; i += 5) a.host[i] = NAN;
    for (size_t i = 2; i < a.c->numel; i += 13) a.host[i] = -INFINITY;
    cpu->tensor_upload(a.c, a.host), gpu->tensor_upload(a.g, a.host);
    int p = (h + 2 - 3) / 2 + 1;
    Pair py = pair_new(cpu, gpu, n, c, p, p, 0.f, 0.f), pdy = pair_new(cpu, gpu, n, c, p, p, 1.f, 0.f);
    Pair d = pair_new(cpu, gpu, n, c, h, h, 0.f, 0.f);
    cpu->maxpool_forward(cpu, a.c, py.c, 3, 2, 1), gpu->maxpool_forward(gpu, a.g, py.g, 3, 2, 1);
    check("maxpool fwd (NaN, -inf)", &py);
    cpu->maxpool_backward(cpu, a.c, pdy.c, d.c, 3, 2, 1), gpu->maxpool_backward(gpu, a.g, pdy.g, d.g, 3, 2, 1);
    check("maxpool bwd (NaN, -inf)", &d);
    // all -inf windows route to the window's first element
    for (size_t i = 0; i < a.c->numel; i++) a.host[i] = -INFINITY;
    cpu->tensor_upload(a.c, a.host), gpu->tensor_upload(a.g, a.host);
    cpu->maxpool_backward(cpu, a.c, pdy.c, d.c, 3, 2, 1), gpu->maxpool_backward(gpu, a.g, pdy.g, d.g, 3, 2, 1);
    check("maxpool bwd (all -inf)", &d);
    int fa = gpu->tensor_nonfinite(a.g);
    printf("%-34s %d  %s\n", "tensor_nonfinite (all -inf)", fa, fa ? "ok" : "FAIL");
    if (!fa) failures++;
    Pair *all[] = {&a, &b, &y, &py, &pdy, &d};
    for (int i = 0; i < 6; i++) pair_free(all[i]);
}

// Batch norm as resnet34.c calls it beyond the plain case: two training steps (running
// statistics and the counter accumulate), parameter gradients without dx (a frozen conv below a
// trainable batch norm), dx without parameter gradients (frozen gamma/beta).
static void test_batchnorm_more(Backend *cpu, Backend *gpu) {
    int n = 3, c = 40, h = 5;
    Pair x = pair_new(cpu, gpu, n, c, h, h, 3.f, -1.f), y = pair_new(cpu, gpu, n, c, h, h, 0.f, 0.f);
    Pair dy = pair_new(cpu, gpu, n, c, h, h, 1.f, 0.2f), dx = pair_new(cpu, gpu, n, c, h, h, 0.f, 0.f);
    Pair wt = pair_new(cpu, gpu, c, 1, 1, 1, 0.5f, 1.f), bs = pair_new(cpu, gpu, c, 1, 1, 1, 0.5f, 0.f);
    Pair rm = pair_new(cpu, gpu, c, 1, 1, 1, 0.2f, 0.f), rv = pair_new(cpu, gpu, c, 1, 1, 1, 0.3f, 1.f);
    Pair sm = pair_new(cpu, gpu, c, 1, 1, 1, 0.f, 0.f), si = pair_new(cpu, gpu, c, 1, 1, 1, 0.f, 0.f);
    Pair dwt = pair_new(cpu, gpu, c, 1, 1, 1, 0.f, 0.f), dbs = pair_new(cpu, gpu, c, 1, 1, 1, 0.f, 0.f);
    BatchNorm bc = {wt.c, bs.c, rm.c, rv.c, sm.c, si.c, dwt.c, dbs.c, 0.1f, 1e-5f, 5};
    BatchNorm bg = {wt.g, bs.g, rm.g, rv.g, sm.g, si.g, dwt.g, dbs.g, 0.1f, 1e-5f, 5};
    for (int step = 0; step < 2; step++) {
        cpu->batchnorm_forward(cpu, x.c, &bc, y.c, 1), gpu->batchnorm_forward(gpu, x.g, &bg, y.g, 1);
        for (size_t i = 0; i < x.c->numel; i++) x.host[i] = 0.5f * x.host[i] + 0.1f;
        cpu->tensor_upload(x.c, x.host), gpu->tensor_upload(x.g, x.host);
    }
    check("batchnorm 2 steps: running_mean", &rm), check("batchnorm 2 steps: running_var", &rv);
    check("batchnorm 2 steps: save_mean", &sm), check("batchnorm 2 steps: save_invstd", &si);
    if (bc.num_batches_tracked != 7 || bg.num_batches_tracked != 7) {
        printf("batchnorm num_batches_tracked: cpu %lld gpu %lld, want 7 FAIL\n",
               (long long)bc.num_batches_tracked, (long long)bg.num_batches_tracked);
        failures++;
    }
    cpu->batchnorm_forward(cpu, x.c, &bc, y.c, 1), gpu->batchnorm_forward(gpu, x.g, &bg, y.g, 1);
    for (int training = 1; training >= 0; training--) {
        const char *mode = training ? "train" : "eval";
        char name[80];
        cpu->batchnorm_backward(cpu, x.c, &bc, dy.c, NULL, training);
        gpu->batchnorm_backward(gpu, x.g, &bg, dy.g, NULL, training);
        snprintf(name, sizeof name, "batchnorm %s no dx: dweight", mode), check(name, &dwt);
        snprintf(name, sizeof name, "batchnorm %s no dx: dbias", mode), check(name, &dbs);
        bc.dweight = bc.dbias = bg.dweight = bg.dbias = NULL;
        cpu->batchnorm_backward(cpu, x.c, &bc, dy.c, dx.c, training);
        gpu->batchnorm_backward(gpu, x.g, &bg, dy.g, dx.g, training);
        snprintf(name, sizeof name, "batchnorm %s frozen gamma: dx", mode), check(name, &dx);
        bc.dweight = dwt.c, bc.dbias = dbs.c, bg.dweight = dwt.g, bg.dbias = dbs.g;
    }
    Pair *all[] = {&x, &y, &dy, &dx, &wt, &bs, &rm, &rv, &sm, &si, &dwt, &dbs};
    for (int i = 0; i < 12; i++) pair_free(all[i]);
}

int main(int argc, char **argv) {
    const char *prec = argc > 1 ? argv[1] : "fp32";
    Precision p = strcmp(prec, "fp16") == 0 ? PREC_FP16 : PREC_FP32;
    if (!backend_cuda_available()) {
        printf("SKIP: no usable CUDA GPU (or the cuDNN backend was not built)\n");
        return 77;
    }
    char err[256];
    Backend *cpu = backend_cpu_create(PREC_FP32, err, sizeof err);
    if (!cpu) die("%s", err);
    Backend *gpu = backend_cuda_create(p, err, sizeof err);
    if (!gpu) die("%s", err);
    printf("%s vs %s\n", gpu->description, cpu->description);
    // fp32: cuDNN's algorithms sum in another order (Winograd/FFT included, whose transforms
    // lose a few more bits): 1e-4 of the tensor's magnitude, far below any indexing error.
    // fp16: inputs rounded to 11 bits before a sum of up to 4608 terms, output rounded too.
    ATOL = p == PREC_FP16 ? 5e-3 : 1e-4;
    RTOL = p == PREC_FP16 ? 1e-2 : 1e-4;
    test_conv(cpu, gpu, 2, 3, 32, 16, 7, 2, 3);   // conv1 kind
    test_conv(cpu, gpu, 2, 16, 14, 16, 3, 1, 1);  // block conv
    test_conv(cpu, gpu, 2, 16, 14, 32, 3, 2, 1);  // downsampling conv
    test_conv(cpu, gpu, 2, 16, 14, 32, 1, 2, 0);  // 1x1 shortcut
    test_conv(cpu, gpu, 3, 40, 13, 24, 3, 1, 1);  // partial 32x32 tiles of the NHWC transposes
    test_conv(cpu, gpu, 1, 64, 8, 72, 3, 2, 1);   // several channel tiles, one sample
    test_weight_writes(cpu, gpu);
    ATOL = 2e-5, RTOL = 1e-4; // everything else runs in fp32 in both modes
    test_batchnorm(cpu, gpu, 1);
    test_batchnorm(cpu, gpu, 0);
    test_batchnorm_more(cpu, gpu);
    test_elementwise(cpu, gpu);
    test_inplace_nan(cpu, gpu);
    test_linear_loss_adam(cpu, gpu);
    gpu->destroy(gpu);
    cpu->destroy(cpu);
    return check_exit("all layers match");
}
