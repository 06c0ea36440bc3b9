// test_cpu_fast.c: every fast CPU kernel (code/nn/backend_cpu_fast.c, oneDNN convolutions and
// OpenMP element-wise layers) against the naive reference kernel of code/nn/backend_cpu.c, on random
// inputs of ResNet34's layer shapes with batch and spatial size scaled down (plus odd and
// non-square sizes, and one full 224x224 conv1): convolution forward and both backward passes
// (1x1, 3x3, 7x7; stride 1 and 2; padding), batch norm in training and eval mode (forward, running
// statistics, backward with and without parameter gradients), ReLU, residual adds, max pool with
// many ties, average pool, linear, Adam, fill/copy/non-finite check. Then two fast backends side
// by side (1 and 2 threads), convolutions interleaved on both, each against the reference: each
// keeps its oneDNN plans and thread count in its own priv, and neither touches the caller's OpenMP
// thread count.
//
// Tolerances, |fast - ref| <= atol + rtol |ref| for every element, atol given as a fraction of the
// tensor's largest finite |ref| (equal infinities and NaN against NaN match):
//   exact (0, 0): ReLU (NaN included), adds, max pool forward (NaN/-inf windows included), fill,
//   copy, non-finite check;
//   max pool backward (tie routing) and avg pool backward: 1e-6, 1e-6 (measured: exact);
//   convolutions: 2e-5, 1e-4 (sums of up to ~10^5 float products in another order; measured
//   worst 5.4e-6 of max|ref|, conv1 dw at 224x224);
//   batch norm, avg pool forward, linear: 1e-5, 1e-4 (measured worst 1.5e-6 of max|ref|, BN with
//   mean 50); Adam, 5 steps: 1e-6, 1e-5 (measured: bit-identical).
//
//   test-cpu-fast            run the comparisons (exit 1 on any mismatch)
//   test-cpu-fast --bench    time the fast kernels at ResNet34's batch-32, 224x224 shapes
#define _GNU_SOURCE
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "core/common.h"
#include "check.h"

static Backend *ref, *fast;
static int checks; // (failures: check.h)

// ----------------------------------------------------------------------------
// random data and comparisons

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float urand(void) { // uniform [0, 1)
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (1.0 / 16777216.0));
}

typedef struct {
    Tensor *r, *f; // the same values in the reference and in the fast backend
} Pair;

static Pair pair_new(int n, int c, int h, int w) {
    Pair p = {ref->tensor_new(ref, n, c, h, w), fast->tensor_new(fast, n, c, h, w)};
    return p;
}

static void pair_set(Pair p, const float *v) {
    ref->tensor_upload(p.r, v);
    fast->tensor_upload(p.f, v);
}

// Values lo + (hi - lo) U[0,1); quant > 0 rounds them to multiples of quant (to make ties).
static Pair pair_rand(int n, int c, int h, int w, float lo, float hi, float quant) {
    Pair p = pair_new(n, c, h, w);
    float *v = xmalloc(p.r->numel * sizeof(float));
    for (size_t i = 0; i < p.r->numel; i++) {
        v[i] = lo + (hi - lo) * urand();
        if (quant > 0) v[i] = quant * floorf(v[i] / quant);
    }
    pair_set(p, v);
    free(v);
    return p;
}

static void pair_free(Pair p) {
    ref->tensor_free(p.r);
    fast->tensor_free(p.f);
}

// Compares fast against reference: |f - r| <= atol_rel * max|r| + rtol * |r| (max over the
// finite reference values); equal infinities and NaN against NaN match.
static void check(const char *what, Pair p, double atol_rel, double rtol) {
    size_t n = p.r->numel;
    float *a = xmalloc(n * sizeof(float)), *b = xmalloc(n * sizeof(float));
    ref->tensor_download(p.r, a);
    fast->tensor_download(p.f, b);
    double maxref = 0, maxerr = 0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(a[i])) maxref = fmax(maxref, fabs(a[i]));
    double atol = atol_rel * maxref;
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        // equal values (infinities included) and NaN against NaN match; the rest by tolerance
        double err = a[i] == b[i] ? 0 : fabs((double)b[i] - a[i]);
        int ok = a[i] == b[i] || approx_eq(b[i], a[i], atol, rtol) ||
                 (isnan(a[i]) && isnan(b[i]));
        if (!ok && bad++ == 0) first = i;
        if (isfinite(err) && err > maxerr) maxerr = err;
    }
    checks++;
    if (bad) {
        failures++;
        printf("FAIL %-48s %zu of %zu values off; first at %zu: fast %.9g ref %.9g; max err %.3g "
               "(atol %.3g, rtol %.1g)\n",
               what, bad, n, first, b[first], a[first], maxerr, atol, rtol);
    } else {
        printf("ok   %-48s max |err| %.3g, max |ref| %.3g (rel %.2g)\n", what, maxerr, maxref,
               maxref > 0 ? maxerr / maxref : 0);
    }
    free(a);
    free(b);
}

// ----------------------------------------------------------------------------
// convolution

typedef struct {
    int n, c, h, w, k, r, stride, pad;
} ConvCase;

static void test_conv(ConvCase cs) {
    int P = (cs.h + 2 * cs.pad - cs.r) / cs.stride + 1, Q = (cs.w + 2 * cs.pad - cs.r) / cs.stride + 1;
    float ws = 1.0f / sqrtf((float)cs.c * cs.r * cs.r); // outputs of order 1
    Pair x = pair_rand(cs.n, cs.c, cs.h, cs.w, -1, 1, 0);
    Pair w = pair_rand(cs.k, cs.c, cs.r, cs.r, -ws, ws, 0);
    Pair y = pair_new(cs.n, cs.k, P, Q), dy = pair_rand(cs.n, cs.k, P, Q, -1, 1, 0);
    Pair dx = pair_new(cs.n, cs.c, cs.h, cs.w), dw = pair_new(cs.k, cs.c, cs.r, cs.r);
    char name[128];
    snprintf(name, sizeof name, "conv %dx%d/%d pad %d x(%d,%d,%d,%d) K %d", cs.r, cs.r, cs.stride,
             cs.pad, cs.n, cs.c, cs.h, cs.w, cs.k);
    char what[192];
    ref->conv2d_forward(ref, x.r, w.r, y.r, cs.stride, cs.pad);
    fast->conv2d_forward(fast, x.f, w.f, y.f, cs.stride, cs.pad);
    snprintf(what, sizeof what, "%s fwd", name);
    check(what, y, 2e-5, 1e-4);
    ref->conv2d_backward(ref, x.r, w.r, dy.r, dx.r, dw.r, cs.stride, cs.pad);
    fast->conv2d_backward(fast, x.f, w.f, dy.f, dx.f, dw.f, cs.stride, cs.pad);
    snprintf(what, sizeof what, "%s dx", name);
    check(what, dx, 2e-5, 1e-4);
    snprintf(what, sizeof what, "%s dw", name);
    check(what, dw, 2e-5, 1e-4);
    // Each gradient alone (the other NULL): same values, nothing else written.
    fast->tensor_fill(dx.f, 7.0f);
    fast->conv2d_backward(fast, x.f, w.f, dy.f, NULL, dw.f, cs.stride, cs.pad);
    snprintf(what, sizeof what, "%s dw only", name);
    check(what, dw, 2e-5, 1e-4);
    fast->conv2d_backward(fast, x.f, w.f, dy.f, dx.f, NULL, cs.stride, cs.pad);
    snprintf(what, sizeof what, "%s dx only", name);
    check(what, dx, 2e-5, 1e-4);
    Pair *all[6] = {&x, &w, &y, &dy, &dx, &dw};
    for (int i = 0; i < 6; i++) pair_free(*all[i]);
}

// The fused inference convolution y = act(conv(x, w) + b + residual), chained as in a residual
// block: y = relu(conv(x) + b1), z = conv(y) + b2, then relu(conv(z) + b2 + y) written over y
// (the fast backend keeps y and z blocked, and takes the sum in place). Then the same chain again with the weights the
// first chain left in the fast backend's blocked weight layout, and every tensor read back (the
// fast backend turns blocked tensors back to NCHW when another op or a download reads them).
static void test_conv_fused(int n, int c, int h, int w, int k, int r, int stride, int pad) {
    int P = (h + 2 * pad - r) / stride + 1, Q = (w + 2 * pad - r) / stride + 1;
    float s1 = 1.0f / sqrtf((float)c * r * r), s2 = 1.0f / sqrtf((float)k * 9);
    Pair x = pair_rand(n, c, h, w, -1, 1, 0), w1 = pair_rand(k, c, r, r, -s1, s1, 0);
    Pair b1 = pair_rand(k, 1, 1, 1, -0.5f, 0.5f, 0), w2 = pair_rand(k, k, 3, 3, -s2, s2, 0);
    Pair b2 = pair_rand(k, 1, 1, 1, -0.5f, 0.5f, 0), y = pair_new(n, k, P, Q), z = pair_new(n, k, P, Q);
    char what[160];
    for (int round = 0; round < 2; round++) {
        ref->conv_bias_act_forward(ref, x.r, w1.r, b1.r, NULL, y.r, stride, pad, 1);
        fast->conv_bias_act_forward(fast, x.f, w1.f, b1.f, NULL, y.f, stride, pad, 1);
        ref->conv_bias_act_forward(ref, y.r, w2.r, b2.r, NULL, z.r, 1, 1, 0); // no relu, no sum
        fast->conv_bias_act_forward(fast, y.f, w2.f, b2.f, NULL, z.f, 1, 1, 0);
        snprintf(what, sizeof what, "conv+bias %dx%d x(%d,%d,%d,%d) K %d round %d", 3, 3, n, k, P,
                 Q, k, round);
        check(what, z, 2e-5, 1e-4);
        ref->conv_bias_act_forward(ref, z.r, w2.r, b2.r, y.r, y.r, 1, 1, 1); // in place over y
        fast->conv_bias_act_forward(fast, z.f, w2.f, b2.f, y.f, y.f, 1, 1, 1);
        snprintf(what, sizeof what, "conv+bias+sum+relu x(%d,%d,%d,%d) %dx%d/%d K %d round %d", n,
                 c, h, w, r, r, stride, k, round);
        check(what, y, 2e-5, 1e-4);
    }
    // the residual in another tensor, and relu(y) read by a plain op afterwards
    ref->conv_bias_act_forward(ref, x.r, w1.r, b1.r, z.r, y.r, stride, pad, 1);
    fast->conv_bias_act_forward(fast, x.f, w1.f, b1.f, z.f, y.f, stride, pad, 1);
    ref->relu_forward(ref, y.r, z.r);
    fast->relu_forward(fast, y.f, z.f);
    snprintf(what, sizeof what, "conv+bias+residual+relu, then relu x(%d,%d,%d,%d) K %d", n, c, h, w, k);
    check(what, z, 2e-5, 1e-4);
    check("fused conv weights read back (w1)", w1, 0, 0);
    check("fused conv weights read back (w2)", w2, 0, 0);
    check("fused conv input read back", x, 0, 0);
    Pair *all[7] = {&x, &w1, &b1, &w2, &b2, &y, &z};
    for (int i = 0; i < 7; i++) pair_free(*all[i]);
}

// ----------------------------------------------------------------------------
// batch norm

typedef struct {
    BatchNorm r, f;
    Pair weight, bias, rmean, rvar, smean, sinvstd, dweight, dbias;
} BnPair;

static BnPair bn_new(int c, int with_grads) {
    BnPair b;
    b.weight = pair_rand(c, 1, 1, 1, 0.5f, 1.5f, 0);
    b.bias = pair_rand(c, 1, 1, 1, -0.5f, 0.5f, 0);
    b.rmean = pair_rand(c, 1, 1, 1, -0.2f, 0.2f, 0);
    b.rvar = pair_rand(c, 1, 1, 1, 0.5f, 2.0f, 0);
    b.smean = pair_new(c, 1, 1, 1);
    b.sinvstd = pair_new(c, 1, 1, 1);
    b.dweight = pair_new(c, 1, 1, 1);
    b.dbias = pair_new(c, 1, 1, 1);
    BatchNorm *s[2] = {&b.r, &b.f};
    for (int i = 0; i < 2; i++) {
        BatchNorm *bn = s[i];
        memset(bn, 0, sizeof *bn);
#define SIDE(p) (i == 0 ? (p).r : (p).f)
        bn->weight = SIDE(b.weight);
        bn->bias = SIDE(b.bias);
        bn->running_mean = SIDE(b.rmean);
        bn->running_var = SIDE(b.rvar);
        bn->save_mean = SIDE(b.smean);
        bn->save_invstd = SIDE(b.sinvstd);
        bn->dweight = with_grads ? SIDE(b.dweight) : NULL;
        bn->dbias = with_grads ? SIDE(b.dbias) : NULL;
#undef SIDE
        bn->momentum = 0.1f;
        bn->eps = 1e-5f;
        bn->num_batches_tracked = 3;
    }
    return b;
}

static void bn_free(BnPair *b) {
    Pair *all[8] = {&b->weight, &b->bias, &b->rmean, &b->rvar, &b->smean, &b->sinvstd,
                    &b->dweight, &b->dbias};
    for (int i = 0; i < 8; i++) pair_free(*all[i]);
}

static void test_bn(int n, int c, int h, int w, float offset, int training, int with_grads) {
    BnPair b = bn_new(c, with_grads);
    Pair x = pair_rand(n, c, h, w, offset - 2, offset + 2, 0);
    Pair y = pair_new(n, c, h, w), dy = pair_rand(n, c, h, w, -1, 1, 0);
    Pair dx = pair_new(n, c, h, w);
    char name[128], what[192];
    snprintf(name, sizeof name, "bn %s x(%d,%d,%d,%d)%s%s", training ? "train" : "eval", n, c, h,
             w, offset ? " offset" : "", with_grads ? "" : " frozen");
    ref->batchnorm_forward(ref, x.r, &b.r, y.r, training);
    fast->batchnorm_forward(fast, x.f, &b.f, y.f, training);
    snprintf(what, sizeof what, "%s y", name);
    check(what, y, 1e-5, 1e-4);
    if (training) {
        snprintf(what, sizeof what, "%s save_mean", name);
        check(what, b.smean, 1e-5, 1e-4);
        snprintf(what, sizeof what, "%s save_invstd", name);
        check(what, b.sinvstd, 1e-5, 1e-4);
        snprintf(what, sizeof what, "%s running_mean", name);
        check(what, b.rmean, 1e-5, 1e-4);
        snprintf(what, sizeof what, "%s running_var", name);
        check(what, b.rvar, 1e-5, 1e-4);
    }
    checks++;
    if (b.r.num_batches_tracked != b.f.num_batches_tracked) {
        failures++;
        printf("FAIL %s num_batches_tracked: fast %lld ref %lld\n", name,
               (long long)b.f.num_batches_tracked, (long long)b.r.num_batches_tracked);
    }
    ref->batchnorm_backward(ref, x.r, &b.r, dy.r, dx.r, training);
    fast->batchnorm_backward(fast, x.f, &b.f, dy.f, dx.f, training);
    snprintf(what, sizeof what, "%s dx", name);
    check(what, dx, 1e-5, 1e-4);
    if (with_grads) {
        snprintf(what, sizeof what, "%s dweight", name);
        check(what, b.dweight, 1e-5, 1e-4);
        snprintf(what, sizeof what, "%s dbias", name);
        check(what, b.dbias, 1e-5, 1e-4);
        // Parameter gradients only (dx NULL).
        fast->tensor_fill(b.dweight.f, 0);
        fast->tensor_fill(b.dbias.f, 0);
        fast->batchnorm_backward(fast, x.f, &b.f, dy.f, NULL, training);
        snprintf(what, sizeof what, "%s dweight (dx NULL)", name);
        check(what, b.dweight, 1e-5, 1e-4);
        snprintf(what, sizeof what, "%s dbias (dx NULL)", name);
        check(what, b.dbias, 1e-5, 1e-4);
    }
    pair_free(x);
    pair_free(y);
    pair_free(dy);
    pair_free(dx);
    bn_free(&b);
}

// ----------------------------------------------------------------------------
// element-wise layers, pools, linear, Adam, tensor helpers

static void test_elementwise(void) {
    int n = 3, c = 5, h = 7, w = 9;
    // Values in multiples of 0.25 around 0: exact zeros and sums that cancel to 0.
    Pair a = pair_rand(n, c, h, w, -1, 1, 0.25f), b = pair_rand(n, c, h, w, -1, 1, 0.25f);
    Pair y = pair_new(n, c, h, w), dy = pair_rand(n, c, h, w, -1, 1, 0), dx = pair_new(n, c, h, w);
    { // NaN passes through relu (as in PyTorch); a few of them in a
        float *v = xmalloc(a.r->numel * sizeof(float));
        ref->tensor_download(a.r, v);
        v[3] = NAN;
        v[100] = NAN;
        v[101] = -0.0f;
        pair_set(a, v);
        free(v);
    }
    ref->relu_forward(ref, a.r, y.r);
    fast->relu_forward(fast, a.f, y.f);
    check("relu fwd", y, 0, 0);
    ref->relu_backward(ref, y.r, dy.r, dx.r);
    fast->relu_backward(fast, y.f, dy.f, dx.f);
    check("relu bwd", dx, 0, 0);
    ref->add_relu_forward(ref, a.r, b.r, y.r);
    fast->add_relu_forward(fast, a.f, b.f, y.f);
    check("add_relu fwd", y, 0, 0);
    if (ref->add_forward && fast->add_forward) {
        ref->add_forward(ref, a.r, b.r, y.r);
        fast->add_forward(fast, a.f, b.f, y.f);
        check("add fwd", y, 0, 0);
    }
    // In place: relu on x == y, relu_backward with dx == dy, add into a.
    ref->relu_forward(ref, b.r, b.r);
    fast->relu_forward(fast, b.f, b.f);
    check("relu fwd in place", b, 0, 0);
    ref->relu_backward(ref, b.r, dy.r, dy.r);
    fast->relu_backward(fast, b.f, dy.f, dy.f);
    check("relu bwd in place", dy, 0, 0);
    ref->add_relu_forward(ref, a.r, b.r, a.r);
    fast->add_relu_forward(fast, a.f, b.f, a.f);
    check("add_relu fwd in place", a, 0, 0);

    ref->tensor_fill(y.r, 0.375f);
    fast->tensor_fill(y.f, 0.375f);
    check("tensor_fill", y, 0, 0);
    ref->tensor_copy(y.r, dx.r);
    fast->tensor_copy(y.f, dx.f);
    check("tensor_copy", y, 0, 0);
    int nf[2] = {ref->tensor_nonfinite(y.r), fast->tensor_nonfinite(y.f)};
    float *v = xmalloc(y.r->numel * sizeof(float));
    ref->tensor_download(y.r, v);
    v[y.r->numel - 1] = INFINITY;
    pair_set(y, v);
    int inf[2] = {ref->tensor_nonfinite(y.r), fast->tensor_nonfinite(y.f)};
    v[y.r->numel - 1] = 0;
    v[17] = NAN;
    pair_set(y, v);
    int nan[2] = {ref->tensor_nonfinite(y.r), fast->tensor_nonfinite(y.f)};
    free(v);
    checks++;
    if (nf[0] != 0 || nf[1] != 0 || inf[0] != 1 || inf[1] != 1 || nan[0] != 1 || nan[1] != 1) {
        failures++;
        printf("FAIL tensor_nonfinite: finite %d/%d, inf %d/%d, nan %d/%d (ref/fast)\n", nf[0],
               nf[1], inf[0], inf[1], nan[0], nan[1]);
    } else {
        printf("ok   tensor_nonfinite (finite, inf, nan)\n");
    }
    Pair *all[5] = {&a, &b, &y, &dy, &dx};
    for (int i = 0; i < 5; i++) pair_free(*all[i]);
}

// specials: some inputs become NaN (which wins a window; the last one gets the gradient) or -inf.
static void test_maxpool(int n, int c, int h, int w, int k, int stride, int pad, int specials) {
    int P = (h + 2 * pad - k) / stride + 1, Q = (w + 2 * pad - k) / stride + 1;
    // Values from {-1, 0, 1, 2} : many ties inside a window.
    Pair x = pair_rand(n, c, h, w, -1, 3, 1.0f), y = pair_new(n, c, P, Q);
    if (specials) {
        float *v = xmalloc(x.r->numel * sizeof(float));
        ref->tensor_download(x.r, v);
        for (size_t i = 0; i < x.r->numel; i++) {
            float u = urand();
            if (u < 0.03f) v[i] = NAN;
            else if (u < 0.10f) v[i] = -INFINITY;
        }
        for (int i = 0; i < 2 * w; i++) v[i] = -INFINITY; // whole windows of -inf
        pair_set(x, v);
        free(v);
    }
    Pair dy = pair_rand(n, c, P, Q, -1, 1, 0), dx = pair_new(n, c, h, w);
    char what[128];
    ref->maxpool_forward(ref, x.r, y.r, k, stride, pad);
    fast->maxpool_forward(fast, x.f, y.f, k, stride, pad);
    snprintf(what, sizeof what, "maxpool %d/%d pad %d x(%d,%d,%d,%d)%s fwd", k, stride, pad, n, c,
             h, w, specials ? " nan/-inf" : "");
    check(what, y, 0, 0);
    ref->maxpool_backward(ref, x.r, dy.r, dx.r, k, stride, pad);
    fast->maxpool_backward(fast, x.f, dy.f, dx.f, k, stride, pad);
    snprintf(what, sizeof what, "maxpool %d/%d pad %d x(%d,%d,%d,%d)%s bwd (ties)", k, stride, pad,
             n, c, h, w, specials ? " nan/-inf" : "");
    check(what, dx, 1e-6, 1e-6); // sums of up to 4 routed values, possibly in another order
    pair_free(x);
    pair_free(y);
    pair_free(dy);
    pair_free(dx);
}

static void test_avgpool(int n, int c, int h, int w) {
    Pair x = pair_rand(n, c, h, w, -1, 2, 0), y = pair_new(n, c, 1, 1);
    Pair dy = pair_rand(n, c, 1, 1, -1, 1, 0), dx = pair_new(n, c, h, w);
    char what[128];
    ref->avgpool_forward(ref, x.r, y.r);
    fast->avgpool_forward(fast, x.f, y.f);
    snprintf(what, sizeof what, "avgpool x(%d,%d,%d,%d) fwd", n, c, h, w);
    check(what, y, 1e-5, 1e-4);
    ref->avgpool_backward(ref, dy.r, dx.r);
    fast->avgpool_backward(fast, dy.f, dx.f);
    snprintf(what, sizeof what, "avgpool x(%d,%d,%d,%d) bwd", n, c, h, w);
    check(what, dx, 1e-6, 1e-6);
    pair_free(x);
    pair_free(y);
    pair_free(dy);
    pair_free(dx);
}

static void test_linear(int n, int k, int m) {
    float ws = 1.0f / sqrtf((float)k);
    Pair x = pair_rand(n, k, 1, 1, 0, 2, 0), w = pair_rand(m, k, 1, 1, -ws, ws, 0);
    Pair b = pair_rand(m, 1, 1, 1, -ws, ws, 0), y = pair_new(n, m, 1, 1);
    Pair dy = pair_rand(n, m, 1, 1, -1, 1, 0), dx = pair_new(n, k, 1, 1);
    Pair dw = pair_new(m, k, 1, 1), db = pair_new(m, 1, 1, 1);
    char what[128];
    ref->linear_forward(ref, x.r, w.r, b.r, y.r);
    fast->linear_forward(fast, x.f, w.f, b.f, y.f);
    snprintf(what, sizeof what, "linear %d -> %d, batch %d fwd", k, m, n);
    check(what, y, 1e-5, 1e-4);
    ref->linear_backward(ref, x.r, w.r, dy.r, dx.r, dw.r, db.r);
    fast->linear_backward(fast, x.f, w.f, dy.f, dx.f, dw.f, db.f);
    snprintf(what, sizeof what, "linear %d -> %d, batch %d dx", k, m, n);
    check(what, dx, 1e-5, 1e-4);
    snprintf(what, sizeof what, "linear %d -> %d, batch %d dw", k, m, n);
    check(what, dw, 1e-5, 1e-4);
    snprintf(what, sizeof what, "linear %d -> %d, batch %d db", k, m, n);
    check(what, db, 1e-5, 1e-4);
    // dx not needed (the frozen-backbone case).
    fast->tensor_fill(dw.f, 0);
    fast->linear_backward(fast, x.f, w.f, dy.f, NULL, dw.f, db.f);
    snprintf(what, sizeof what, "linear %d -> %d, batch %d dw (dx NULL)", k, m, n);
    check(what, dw, 1e-5, 1e-4);
    Pair *all[8] = {&x, &w, &b, &y, &dy, &dx, &dw, &db};
    for (int i = 0; i < 8; i++) pair_free(*all[i]);
}

static void test_adam(void) {
    int n = 1000;
    Pair p = pair_rand(n, 1, 1, 1, -1, 1, 0), m = pair_new(n, 1, 1, 1), v = pair_new(n, 1, 1, 1);
    for (long step = 1; step <= 5; step++) {
        Pair g = pair_rand(n, 1, 1, 1, -0.1f, 0.1f, 0);
        float scale = step == 3 ? 1.0f / 1024 : 1.0f; // a grad scale, as with fp16 loss scaling
        ref->adam_update(ref, p.r, g.r, m.r, v.r, 1e-3f, 0.9f, 0.999f, 1e-8f, step, scale);
        fast->adam_update(fast, p.f, g.f, m.f, v.f, 1e-3f, 0.9f, 0.999f, 1e-8f, step, scale);
        pair_free(g);
    }
    check("adam 5 steps param", p, 1e-6, 1e-5);
    check("adam 5 steps m", m, 1e-6, 1e-5);
    check("adam 5 steps v", v, 1e-6, 1e-5);
    pair_free(p);
    pair_free(m);
    pair_free(v);
}

// ----------------------------------------------------------------------------
// two fast backends side by side

static Backend *fast_with_threads(const char *threads) {
    char err[256];
    setenv("PETS_THREADS", threads, 1);
    Backend *be = backend_cpu_create(PREC_FP32, err, sizeof err);
    unsetenv("PETS_THREADS");
    if (!be) die("test_cpu_fast: cannot create the CPU backend: %s", err);
    return be;
}

// Backends a and b run convolutions op by op in turn (forward a, forward b, backward a, backward
// b, on different shapes and then on the same one), each result checked against the reference.
// The caller's OpenMP thread count (3 here, neither backend's) must survive every call.
static void test_two_backends(void) {
    Backend *saved = fast;
    omp_set_num_threads(3);
    Backend *a = fast_with_threads("1"), *b = fast_with_threads("2");
    CHECK(omp_get_max_threads() == 3, "creating fast backends changed the caller's OpenMP thread "
          "count: 3 -> %d", omp_get_max_threads());
    CHECK(strstr(a->description, " 1 thread,") && strstr(b->description, " 2 threads,"),
          "descriptions \"%s\" / \"%s\" do not say 1 and 2 threads", a->description,
          b->description);
    CHECK(a->priv && b->priv && a->priv != b->priv, "the two fast backends share their state");
    printf("side by side: %s | %s\n", a->description, b->description);
    const ConvCase cases[3][2] = {
        {{2, 16, 14, 14, 32, 3, 2, 1}, {3, 32, 13, 11, 48, 3, 1, 1}},
        {{2, 24, 15, 15, 40, 3, 2, 1}, {2, 24, 15, 15, 40, 3, 2, 1}}, // one shape on both
        {{2, 3, 32, 32, 16, 7, 2, 3}, {2, 64, 9, 9, 128, 1, 2, 0}},
    };
    Backend *bes[2] = {a, b};
    for (int i = 0; i < 3; i++) {
        Pair x[2], w[2], y[2], dy[2], dx[2], dw[2];
        ConvCase cs[2] = {cases[i][0], cases[i][1]};
        for (int j = 0; j < 2; j++) {
            int P = (cs[j].h + 2 * cs[j].pad - cs[j].r) / cs[j].stride + 1,
                Q = (cs[j].w + 2 * cs[j].pad - cs[j].r) / cs[j].stride + 1;
            float ws = 1.0f / sqrtf((float)cs[j].c * cs[j].r * cs[j].r);
            fast = bes[j];
            x[j] = pair_rand(cs[j].n, cs[j].c, cs[j].h, cs[j].w, -1, 1, 0);
            w[j] = pair_rand(cs[j].k, cs[j].c, cs[j].r, cs[j].r, -ws, ws, 0);
            y[j] = pair_new(cs[j].n, cs[j].k, P, Q);
            dy[j] = pair_rand(cs[j].n, cs[j].k, P, Q, -1, 1, 0);
            dx[j] = pair_new(cs[j].n, cs[j].c, cs[j].h, cs[j].w);
            dw[j] = pair_new(cs[j].k, cs[j].c, cs[j].r, cs[j].r);
            ref->conv2d_forward(ref, x[j].r, w[j].r, y[j].r, cs[j].stride, cs[j].pad);
            ref->conv2d_backward(ref, x[j].r, w[j].r, dy[j].r, dx[j].r, dw[j].r, cs[j].stride,
                                 cs[j].pad);
        }
        for (int j = 0; j < 2; j++)
            bes[j]->conv2d_forward(bes[j], x[j].f, w[j].f, y[j].f, cs[j].stride, cs[j].pad);
        for (int j = 0; j < 2; j++)
            bes[j]->conv2d_backward(bes[j], x[j].f, w[j].f, dy[j].f, dx[j].f, dw[j].f,
                                    cs[j].stride, cs[j].pad);
        for (int j = 0; j < 2; j++) {
            char what[160];
            fast = bes[j];
            snprintf(what, sizeof what, "side by side %c: conv %dx%d/%d C %d K %d fwd", "ab"[j],
                     cs[j].r, cs[j].r, cs[j].stride, cs[j].c, cs[j].k);
            check(what, y[j], 2e-5, 1e-4);
            snprintf(what, sizeof what, "side by side %c: conv %dx%d/%d C %d K %d dx", "ab"[j],
                     cs[j].r, cs[j].r, cs[j].stride, cs[j].c, cs[j].k);
            check(what, dx[j], 2e-5, 1e-4);
            snprintf(what, sizeof what, "side by side %c: conv %dx%d/%d C %d K %d dw", "ab"[j],
                     cs[j].r, cs[j].r, cs[j].stride, cs[j].c, cs[j].k);
            check(what, dw[j], 2e-5, 1e-4);
            Pair *all[6] = {&x[j], &w[j], &y[j], &dy[j], &dx[j], &dw[j]};
            for (int k = 0; k < 6; k++) pair_free(*all[k]);
        }
        CHECK(omp_get_max_threads() == 3, "a fast backend's convolution changed the caller's "
              "OpenMP thread count: 3 -> %d", omp_get_max_threads());
    }
    // Closing one leaves the other working.
    backend_close(a);
    fast = b;
    test_conv((ConvCase){2, 16, 14, 14, 16, 3, 1, 1});
    backend_close(b);
    CHECK(omp_get_max_threads() == 3, "closing the fast backends changed the caller's OpenMP "
          "thread count: 3 -> %d", omp_get_max_threads());
    fast = saved;
}

// ----------------------------------------------------------------------------
// benchmark: the fast kernels at ResNet34's batch-32 shapes

typedef struct {
    int c, k, h, r, stride, pad, count; // count: how many such convs ResNet34 has
} NetConv;
static const NetConv resnet34_convs[] = {
    {3, 64, 224, 7, 2, 3, 1},    {64, 64, 56, 3, 1, 1, 6},    {64, 128, 56, 3, 2, 1, 1},
    {64, 128, 56, 1, 2, 0, 1},   {128, 128, 28, 3, 1, 1, 7},  {128, 256, 28, 3, 2, 1, 1},
    {128, 256, 28, 1, 2, 0, 1},  {256, 256, 14, 3, 1, 1, 11}, {256, 512, 14, 3, 2, 1, 1},
    {256, 512, 14, 1, 2, 0, 1},  {512, 512, 7, 3, 1, 1, 5},
};

#define TIME_BEST(best, reps, stmt)                                                                \
    do {                                                                                           \
        stmt; /* warm-up: primitive creation, page faults */                                      \
        best = 1e30;                                                                               \
        for (int r_ = 0; r_ < (reps); r_++) {                                                      \
            double t_ = now_seconds();                                                             \
            stmt;                                                                                  \
            t_ = now_seconds() - t_;                                                               \
            if (t_ < best) best = t_;                                                              \
        }                                                                                          \
    } while (0)

static int bench(int batch, int reps) {
    Backend *be = fast;
    printf("fast CPU kernels at batch %d (%s); best of %d runs\n", batch, be->description, reps);
    printf("%-26s %9s %9s %9s %7s %7s %7s\n", "conv (C->K, HxW, RxR/s)", "fwd ms", "bwd_d ms",
           "bwd_w ms", "fwd GF", "bwd_d GF", "bwd_w GF");
    double tot[3] = {0, 0, 0}, flops_net = 0, flops_bwd = 0;
    for (size_t i = 0; i < sizeof resnet34_convs / sizeof *resnet34_convs; i++) {
        NetConv cv = resnet34_convs[i];
        int P = (cv.h + 2 * cv.pad - cv.r) / cv.stride + 1;
        Tensor *x = be->tensor_new(be, batch, cv.c, cv.h, cv.h), *w = be->tensor_new(be, cv.k, cv.c, cv.r, cv.r);
        Tensor *y = be->tensor_new(be, batch, cv.k, P, P), *dx = be->tensor_new(be, batch, cv.c, cv.h, cv.h);
        Tensor *dw = be->tensor_new(be, cv.k, cv.c, cv.r, cv.r);
        be->tensor_fill(x, 0.5f);
        be->tensor_fill(w, 0.01f);
        be->tensor_fill(y, 0.1f);
        double t[3];
        TIME_BEST(t[0], reps, be->conv2d_forward(be, x, w, y, cv.stride, cv.pad));
        if (i == 0)
            t[1] = 0; // ResNet never needs the gradient of the image
        else
            TIME_BEST(t[1], reps, be->conv2d_backward(be, x, w, y, dx, NULL, cv.stride, cv.pad));
        TIME_BEST(t[2], reps, be->conv2d_backward(be, x, w, y, NULL, dw, cv.stride, cv.pad));
        double fl = 2.0 * batch * cv.k * P * P * cv.c * cv.r * cv.r;
        char label[64];
        snprintf(label, sizeof label, "%d->%d, %dx%d, %dx%d/%d x%d", cv.c, cv.k, cv.h, cv.h, cv.r,
                 cv.r, cv.stride, cv.count);
        printf("%-26s %9.2f %9.2f %9.2f %7.0f %7.0f %7.0f\n", label, t[0] * 1e3, t[1] * 1e3,
               t[2] * 1e3, fl / t[0] * 1e-9, t[1] > 0 ? fl / t[1] * 1e-9 : 0, fl / t[2] * 1e-9);
        for (int k = 0; k < 3; k++) tot[k] += t[k] * cv.count;
        flops_net += fl * cv.count;
        flops_bwd += fl * cv.count * (i == 0 ? 1 : 2);
        be->tensor_free(x);
        be->tensor_free(w);
        be->tensor_free(y);
        be->tensor_free(dx);
        be->tensor_free(dw);
    }
    printf("all 36 convs of ResNet34: fwd %.3f s (%.0f GFLOP/s), bwd %.3f s (%.0f GFLOP/s); "
           "%.2f GFLOP per image forward\n",
           tot[0], flops_net / tot[0] * 1e-9, tot[1] + tot[2],
           flops_bwd / (tot[1] + tot[2]) * 1e-9, flops_net / batch * 1e-9);

    // Memory-bound layers at conv1's output (batch, 64, 112, 112) and layer1's (batch, 64, 56, 56).
    printf("%-34s %9s %9s\n", "layer (shape)", "ms", "GB/s");
    int shapes[2][2] = {{64, 112}, {64, 56}};
    for (int s = 0; s < 2; s++) {
        int C = shapes[s][0], H = shapes[s][1];
        Tensor *x = be->tensor_new(be, batch, C, H, H), *y = be->tensor_new(be, batch, C, H, H);
        Tensor *d = be->tensor_new(be, batch, C, H, H);
        be->tensor_fill(x, 0.5f);
        be->tensor_fill(d, 0.25f);
        Tensor *v[8];
        for (int i = 0; i < 8; i++) {
            v[i] = be->tensor_new(be, C, 1, 1, 1);
            be->tensor_fill(v[i], 1.0f);
        }
        BatchNorm bn = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], 0.1f, 1e-5f, 0};
        double bytes = (double)x->numel * 4, t;
        char label[64];
#define ROW(name, traffic, stmt)                                                                   \
    TIME_BEST(t, reps, stmt);                                                                      \
    snprintf(label, sizeof label, "%s (%d,%d,%d,%d)", name, batch, C, H, H);                       \
    printf("%-34s %9.2f %9.1f\n", label, t * 1e3, (traffic) * bytes / t * 1e-9)
        ROW("bn train fwd", 3, be->batchnorm_forward(be, x, &bn, y, 1));
        ROW("bn train bwd", 5, be->batchnorm_backward(be, x, &bn, d, y, 1));
        ROW("bn eval fwd", 2, be->batchnorm_forward(be, x, &bn, y, 0));
        ROW("relu fwd (in place)", 2, be->relu_forward(be, y, y));
        ROW("relu bwd", 3, be->relu_backward(be, x, d, y));
        ROW("add_relu fwd", 3, be->add_relu_forward(be, x, d, y));
        if (s == 0) {
            Tensor *p = be->tensor_new(be, batch, C, H / 2, H / 2);
            ROW("maxpool 3/2 fwd", 1.25, be->maxpool_forward(be, x, p, 3, 2, 1));
            ROW("maxpool 3/2 bwd", 2.25, be->maxpool_backward(be, x, p, y, 3, 2, 1));
            be->tensor_free(p);
        }
#undef ROW
        for (int i = 0; i < 8; i++) be->tensor_free(v[i]);
        be->tensor_free(x);
        be->tensor_free(y);
        be->tensor_free(d);
    }
    // Adam over ResNet34's 21.8 M parameters (one tensor here).
    {
        int n = 21797672;
        Tensor *p = be->tensor_new(be, n, 1, 1, 1), *g = be->tensor_new(be, n, 1, 1, 1);
        Tensor *m = be->tensor_new(be, n, 1, 1, 1), *v = be->tensor_new(be, n, 1, 1, 1);
        be->tensor_fill(g, 0.01f);
        long step = 1;
        double t;
        TIME_BEST(t, reps, be->adam_update(be, p, g, m, v, 1e-3f, 0.9f, 0.999f, 1e-8f, step++, 1.0f));
        printf("%-34s %9.2f %9.1f\n", "adam (21.8 M params)", t * 1e3, 7.0 * n * 4 / t * 1e-9);
        be->tensor_free(p);
        be->tensor_free(g);
        be->tensor_free(m);
        be->tensor_free(v);
    }
    return 0;
}

// ----------------------------------------------------------------------------

int main(int argc, char **argv) {
    int do_bench = 0, batch = 32, reps = 3;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--bench") == 0) do_bench = 1;
        else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc) batch = atoi(argv[++i]);
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--bench [--batch N] [--reps R]]\n", argv[0]);
            return 2;
        }
    }
    char err[256];
    // The reference table (fast kernels not installed), then the fast one.
    setenv("PETS_CPU_REFERENCE", "1", 1);
    ref = backend_cpu_create(PREC_FP32, err, sizeof err);
    unsetenv("PETS_CPU_REFERENCE");
    fast = backend_cpu_create(PREC_FP32, err, sizeof err);
    if (!ref || !fast) die("test_cpu_fast: cannot create the CPU backend: %s", err);
    if (fast->conv2d_forward == ref->conv2d_forward || fast->batchnorm_forward == ref->batchnorm_forward)
        die("test_cpu_fast: backend_cpu_create did not install the fast kernels "
            "(cpu_fast_install); nothing to compare");
    if (do_bench) return bench(batch, reps);

    printf("reference: %s\nfast:      %s\n", ref->description, fast->description);
    // Convolutions: ResNet34's kinds (7x7/2 pad 3, 3x3/1, 3x3/2, 1x1/2 downsample) at small
    // batch and spatial size, odd and non-square inputs, and conv1 at full 224x224.
    ConvCase convs[] = {
        {2, 3, 32, 32, 16, 7, 2, 3},   {2, 16, 14, 14, 16, 3, 1, 1}, {2, 16, 14, 14, 32, 3, 2, 1},
        {2, 16, 14, 14, 32, 1, 2, 0},  {3, 32, 13, 11, 48, 3, 1, 1}, {2, 24, 15, 15, 40, 3, 2, 1},
        {2, 64, 7, 7, 64, 3, 1, 1},    {2, 64, 9, 9, 128, 1, 2, 0},  {1, 5, 10, 12, 7, 3, 1, 0},
        {2, 3, 224, 224, 64, 7, 2, 3},
        {3, 8, 224, 224, 64, 1, 1, 0}, // 38.5 MB output: the forward runs on sub-batches 2 + 1
    };
    for (size_t i = 0; i < sizeof convs / sizeof *convs; i++) test_conv(convs[i]);
    // Fused inference convolutions (eval path): the stem (3 channels), blocked 3x3 and 1x1/2,
    // and channel counts that are not multiples of the block (NCHW throughout).
    test_conv_fused(2, 3, 32, 32, 16, 7, 2, 3);
    test_conv_fused(2, 16, 14, 14, 16, 3, 1, 1);
    test_conv_fused(2, 16, 14, 14, 32, 1, 2, 0);
    test_conv_fused(2, 64, 9, 9, 128, 3, 2, 1);
    test_conv_fused(1, 5, 10, 12, 7, 3, 1, 1);
    // Batch norm: training and eval, with and without parameter gradients, with a large mean.
    test_bn(4, 16, 14, 14, 0, 1, 1);
    test_bn(4, 16, 14, 14, 50.0f, 1, 1);
    test_bn(3, 8, 7, 5, 0, 1, 0);
    test_bn(4, 16, 14, 14, 0, 0, 1);
    test_bn(2, 8, 7, 7, 0, 0, 0);
    test_bn(32, 8, 1, 1, 0, 1, 1); // 1x1 spatial: statistics over the batch only
    test_elementwise();
    test_maxpool(2, 8, 112, 112, 3, 2, 1, 0);
    test_maxpool(2, 5, 15, 13, 3, 2, 1, 0);
    test_maxpool(1, 3, 8, 8, 2, 2, 0, 0);
    test_maxpool(2, 4, 16, 15, 3, 2, 1, 1);
    test_maxpool(1, 3, 9, 9, 3, 1, 1, 1);
    test_avgpool(4, 64, 7, 7);
    test_avgpool(3, 5, 4, 6);
    test_linear(4, 512, 37);
    test_linear(3, 512, 1000);
    test_adam();
    test_two_backends();

    backend_close(ref);
    backend_close(fast);
    printf("%d of %d checks failed\n", failures, checks);
    return failures ? 1 : 0;
}
