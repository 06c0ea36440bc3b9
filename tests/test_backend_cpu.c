// test_backend_cpu.c: every layer of the CPU backend checked against its definition, for the naive
// reference table (PETS_CPU_REFERENCE=1) and for the default table (the fast kernels installed
// over it), on random shapes that cover stride, padding and odd sizes:
// - convolution: forward against the defining sum at sampled pixels; backward through the adjoint
//   identities <conv(x, w), dy> = <x, dx> = <w, dw>;
// - batch norm (train and eval): forward statistics and running-statistics update against the
//   formulas, backward against central finite differences;
// - relu, residual add, max pool (PyTorch's first-max rule, NaN wins), average pool, linear,
//   softmax cross-entropy, Adam against their formulas in float64.
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "core/common.h"
#include "core/rng.h"
#include "check.h"

static Rng rng;

static Tensor *rand_tensor(Backend *be, int n, int c, int h, int w, double scale) {
    Tensor *t = be->tensor_new(be, n, c, h, w);
    float *v = xmalloc(t->numel * sizeof(float));
    for (size_t i = 0; i < t->numel; i++) v[i] = (float)(scale * (2 * rng_uniform(&rng) - 1));
    be->tensor_upload(t, v);
    free(v);
    return t;
}

static float *host(const Tensor *t) {
    float *v = xmalloc(t->numel * sizeof(float));
    t->be->tensor_download(t, v);
    return v;
}

static double dot(const Tensor *a, const Tensor *b) {
    float *x = host(a), *y = host(b);
    double s = 0;
    for (size_t i = 0; i < a->numel; i++) s += (double)x[i] * y[i];
    free(x);
    free(y);
    return s;
}

static double norm(const Tensor *a) { return sqrt(dot(a, a)); }

// ----------------------------------------------------------------------------

static void test_tensors(Backend *be) {
    Tensor *a = rand_tensor(be, 2, 3, 4, 5, 1.0), *b = be->tensor_new(be, 2, 3, 4, 5);
    CHECK(a->numel == 120, "numel %zu", a->numel);
    float *z = host(b);
    int zero = 1;
    for (size_t i = 0; i < b->numel; i++) zero &= z[i] == 0.0f;
    CHECK(zero, "tensor_new is not zero-filled");
    free(z);
    be->tensor_copy(b, a);
    float *x = host(a), *y = host(b);
    CHECK(memcmp(x, y, a->numel * sizeof(float)) == 0, "tensor_copy differs");
    CHECK(!be->tensor_nonfinite(b), "finite tensor reported non-finite");
    y[77] = NAN;
    be->tensor_upload(b, y);
    CHECK(be->tensor_nonfinite(b), "NaN not found");
    y[77] = INFINITY;
    be->tensor_upload(b, y);
    CHECK(be->tensor_nonfinite(b), "inf not found");
    be->tensor_fill(b, 2.5f);
    free(y);
    y = host(b);
    CHECK(y[0] == 2.5f && y[119] == 2.5f, "tensor_fill");
    free(x);
    free(y);
    be->tensor_free(a);
    be->tensor_free(b);
}

static void test_conv(Backend *be, int n, int c, int h, int w, int k, int r, int stride, int pad) {
    const int P = (h + 2 * pad - r) / stride + 1, Q = (w + 2 * pad - r) / stride + 1;
    Tensor *x = rand_tensor(be, n, c, h, w, 1.0), *wt = rand_tensor(be, k, c, r, r, 0.5);
    Tensor *y = be->tensor_new(be, n, k, P, Q), *dy = rand_tensor(be, n, k, P, Q, 1.0);
    Tensor *dx = be->tensor_new(be, n, c, h, w), *dw = be->tensor_new(be, k, c, r, r);
    be->conv2d_forward(be, x, wt, y, stride, pad);
    // forward against the definition at sampled output pixels
    float *X = host(x), *W = host(wt), *Y = host(y);
    for (int t = 0; t < 50; t++) {
        int in = (int)(rng_u64(&rng) % (uint64_t)n), ik = (int)(rng_u64(&rng) % (uint64_t)k);
        int p = (int)(rng_u64(&rng) % (uint64_t)P), q = (int)(rng_u64(&rng) % (uint64_t)Q);
        double s = 0, sa = 0;
        for (int ic = 0; ic < c; ic++)
            for (int i = 0; i < r; i++)
                for (int j = 0; j < r; j++) {
                    int ih = p * stride - pad + i, iw = q * stride - pad + j;
                    if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
                    double v = (double)X[(((size_t)in * c + ic) * h + ih) * w + iw] * W[(((size_t)ik * c + ic) * r + i) * r + j];
                    s += v, sa += fabs(v);
                }
        double got = Y[(((size_t)in * k + ik) * P + p) * Q + q];
        CHECK(approx_eq(got, s, 1e-5 * sa + 1e-6, 0), "conv forward (%d,%d,%d,%d) k%d r%d s%d p%d at (%d,%d,%d,%d): %g vs %g",
              n, c, h, w, k, r, stride, pad, in, ik, p, q, got, s);
    }
    free(X), free(W), free(Y);
    // adjoints: <y, dy> = <x, dx> = <w, dw>
    be->conv2d_backward(be, x, wt, dy, dx, dw, stride, pad);
    double a = dot(y, dy), b = dot(x, dx), cc = dot(wt, dw);
    double scale = norm(y) * norm(dy) + 1e-30;
    CHECK(fabs(a - b) <= 1e-5 * scale, "conv backward data adjoint (%d,%d,%d,%d) k%d r%d s%d p%d: %g vs %g", n, c, h, w, k, r, stride, pad, a, b);
    CHECK(fabs(a - cc) <= 1e-5 * scale, "conv backward filter adjoint (%d,%d,%d,%d) k%d r%d s%d p%d: %g vs %g", n, c, h, w, k, r, stride, pad, a, cc);
    // NULL outputs are skipped; one output alone equals the joint computation
    Tensor *dw2 = be->tensor_new(be, k, c, r, r);
    be->conv2d_backward(be, x, wt, dy, NULL, dw2, stride, pad);
    float *g1 = host(dw), *g2 = host(dw2);
    double md = 0;
    for (size_t i = 0; i < dw->numel; i++) md = fmax(md, fabs(g1[i] - g2[i]));
    CHECK(md <= 1e-6 * (norm(dw) + 1), "conv backward dw alone differs by %g", md);
    free(g1), free(g2);
    be->tensor_free(dw2);
    Tensor *ts[] = {x, wt, y, dy, dx, dw};
    for (int i = 0; i < 6; i++) be->tensor_free(ts[i]);
}

static void make_bn(Backend *be, BatchNorm *bn, int c) {
    memset(bn, 0, sizeof(*bn));
    bn->weight = rand_tensor(be, c, 1, 1, 1, 1.0);
    bn->bias = rand_tensor(be, c, 1, 1, 1, 1.0);
    bn->running_mean = rand_tensor(be, c, 1, 1, 1, 0.5);
    bn->running_var = be->tensor_new(be, c, 1, 1, 1);
    float *v = host(bn->running_var);
    for (int i = 0; i < c; i++) v[i] = (float)(0.5 + rng_uniform(&rng));
    be->tensor_upload(bn->running_var, v);
    free(v);
    bn->save_mean = be->tensor_new(be, c, 1, 1, 1);
    bn->save_invstd = be->tensor_new(be, c, 1, 1, 1);
    bn->dweight = be->tensor_new(be, c, 1, 1, 1);
    bn->dbias = be->tensor_new(be, c, 1, 1, 1);
    bn->momentum = 0.1f;
    bn->eps = 1e-5f;
}

static void free_bn(BatchNorm *bn) {
    Tensor *ts[] = {bn->weight, bn->bias, bn->running_mean, bn->running_var, bn->save_mean, bn->save_invstd, bn->dweight, bn->dbias};
    for (int i = 0; i < 8; i++) ts[i]->be->tensor_free(ts[i]);
}

// L = <bn(x), r>, in float64 from the backend's float forward (eval mode leaves stats alone;
// train mode's running statistics are restored by the caller's copies).
static double bn_loss(Backend *be, Tensor *x, BatchNorm *bn, Tensor *y, Tensor *r, int training) {
    be->batchnorm_forward(be, x, bn, y, training);
    return dot(y, r);
}

static void test_batchnorm(Backend *be, int n, int c, int h, int w, int training) {
    Tensor *x = rand_tensor(be, n, c, h, w, 2.0), *y = be->tensor_new(be, n, c, h, w);
    Tensor *r = rand_tensor(be, n, c, h, w, 1.0), *dx = be->tensor_new(be, n, c, h, w);
    BatchNorm bn;
    make_bn(be, &bn, c);
    float *X = host(x), *G = host(bn.weight), *B = host(bn.bias), *RM = host(bn.running_mean), *RV = host(bn.running_var);
    be->batchnorm_forward(be, x, &bn, y, training);
    float *Y = host(y), *RM2 = host(bn.running_mean), *RV2 = host(bn.running_var);
    const size_t hw = (size_t)h * w, M = (size_t)n * hw;
    for (int ch = 0; ch < c; ch++) {
        double mean = 0, var = 0;
        for (int i = 0; i < n; i++)
            for (size_t j = 0; j < hw; j++) mean += X[((size_t)i * c + ch) * hw + j];
        mean /= M;
        for (int i = 0; i < n; i++)
            for (size_t j = 0; j < hw; j++) var += pow(X[((size_t)i * c + ch) * hw + j] - mean, 2);
        var /= M;
        double m_use = training ? mean : RM[ch], v_use = training ? var : RV[ch];
        for (int i = 0; i < n; i++)
            for (size_t j = 0; j < hw; j += 7) {
                size_t idx = ((size_t)i * c + ch) * hw + j;
                double ref = (X[idx] - m_use) / sqrt(v_use + 1e-5) * G[ch] + B[ch];
                CHECK(approx_eq(Y[idx], ref, 1e-5, 1e-5), "bn%s forward y[%zu] %g vs %g", training ? "train" : "eval", idx, Y[idx], ref);
            }
        double rm = training ? 0.9 * RM[ch] + 0.1 * mean : RM[ch];
        double rv = training ? 0.9 * RV[ch] + 0.1 * var * M / (M - 1) : RV[ch];
        CHECK(approx_eq(RM2[ch], rm, 1e-6, 1e-5), "bn running_mean[%d] %g vs %g", ch, RM2[ch], rm);
        CHECK(approx_eq(RV2[ch], rv, 1e-6, 1e-5), "bn running_var[%d] %g vs %g (unbiased update)", ch, RV2[ch], rv);
    }
    CHECK(bn.num_batches_tracked == (training ? 1 : 0), "num_batches_tracked %lld", (long long)bn.num_batches_tracked);
    // backward against central differences of L = <y, r>
    be->batchnorm_backward(be, x, &bn, r, dx, training);
    float *DX = host(dx), *DG = host(bn.dweight), *DB = host(bn.dbias);
    const double eps = 3e-2;
    for (int t = 0; t < 12; t++) {
        // t < 6: an input element; 6..8: a weight; 9..11: a bias
        Tensor *target = t < 6 ? x : t < 9 ? bn.weight : bn.bias;
        size_t idx = (size_t)(rng_u64(&rng) % target->numel);
        float *v = host(target);
        float orig = v[idx];
        v[idx] = orig + (float)eps;
        be->tensor_upload(target, v);
        double lp = bn_loss(be, x, &bn, y, r, training);
        v[idx] = orig - (float)eps;
        be->tensor_upload(target, v);
        double lm = bn_loss(be, x, &bn, y, r, training);
        v[idx] = orig;
        be->tensor_upload(target, v);
        free(v);
        double fd = (lp - lm) / (2 * eps), an = t < 6 ? DX[idx] : t < 9 ? DG[idx] : DB[idx];
        CHECK(approx_eq(an, fd, 5e-3, 5e-3), "bn%s backward d%s[%zu]: %g vs finite difference %g", training ? "train" : "eval",
              t < 6 ? "x" : t < 9 ? "weight" : "bias", idx, an, fd);
    }
    // dx = NULL skips dx but still fills the parameter gradients
    be->tensor_fill(bn.dbias, 0.0f);
    be->batchnorm_forward(be, x, &bn, y, training);
    be->batchnorm_backward(be, x, &bn, r, NULL, training);
    float *DB2 = host(bn.dbias);
    CHECK(approx_eq(DB2[0], DB[0], 1e-6, 1e-6), "bn backward without dx: dbias %g vs %g", DB2[0], DB[0]);
    free(DB2);
    free(X), free(G), free(B), free(RM), free(RV), free(Y), free(RM2), free(RV2), free(DX), free(DG), free(DB);
    free_bn(&bn);
    be->tensor_free(x), be->tensor_free(y), be->tensor_free(r), be->tensor_free(dx);
}

static void test_elementwise(Backend *be) {
    Tensor *a = rand_tensor(be, 2, 3, 5, 7, 1.0), *b = rand_tensor(be, 2, 3, 5, 7, 1.0);
    Tensor *y = be->tensor_new(be, 2, 3, 5, 7), *dy = rand_tensor(be, 2, 3, 5, 7, 1.0), *dx = be->tensor_new(be, 2, 3, 5, 7);
    float *A = host(a), *B = host(b);
    A[0] = NAN;
    A[1] = 0.0f;
    be->tensor_upload(a, A);
    be->relu_forward(be, a, y);
    float *Y = host(y);
    CHECK(isnan(Y[0]), "relu(NaN) must stay NaN (PyTorch)");
    for (size_t i = 1; i < a->numel; i++) CHECK(Y[i] == (A[i] > 0 ? A[i] : 0.0f), "relu[%zu]", i);
    be->relu_backward(be, y, dy, dx);
    float *DY = host(dy), *DX = host(dx);
    for (size_t i = 1; i < a->numel; i++) CHECK(DX[i] == (Y[i] > 0 ? DY[i] : 0.0f), "relu_backward[%zu]", i);
    be->relu_backward(be, y, dy, dy); // in place
    free(DX);
    DX = host(dy);
    for (size_t i = 1; i < a->numel; i++) CHECK(DX[i] == (Y[i] > 0 ? DY[i] : 0.0f), "relu_backward in place[%zu]", i);
    be->add_relu_forward(be, a, b, y);
    free(Y);
    Y = host(y);
    for (size_t i = 1; i < a->numel; i++) {
        float s = A[i] + B[i];
        CHECK(Y[i] == (s > 0 ? s : 0.0f), "add_relu[%zu]", i);
    }
    be->add_forward(be, a, b, a); // in place
    free(Y);
    Y = host(a);
    for (size_t i = 1; i < a->numel; i++) CHECK(Y[i] == A[i] + B[i], "add[%zu]", i);
    be->relu_forward(be, b, b); // in place
    free(DY);
    DY = host(b);
    for (size_t i = 0; i < b->numel; i++) CHECK(DY[i] == (B[i] > 0 ? B[i] : 0.0f), "relu in place[%zu]", i);
    free(A), free(B), free(Y), free(DY), free(DX);
    Tensor *ts[] = {a, b, y, dy, dx};
    for (int i = 0; i < 5; i++) be->tensor_free(ts[i]);
}

static void test_pools(Backend *be) {
    // 3x3 / stride 2 / pad 1 max pool on a 1x1x4x5 plane with ties: the first maximum in
    // row-major order takes the gradient.
    const float xv[20] = {1, 5, 5, 0, 2,  //
                          5, 3, 1, 7, 7,  //
                          0, 0, 9, 9, 1,  //
                          4, 4, 4, 4, 4};
    Tensor *x = be->tensor_new(be, 1, 1, 4, 5), *y = be->tensor_new(be, 1, 1, 2, 3);
    Tensor *dy = be->tensor_new(be, 1, 1, 2, 3), *dx = be->tensor_new(be, 1, 1, 4, 5);
    be->tensor_upload(x, xv);
    be->maxpool_forward(be, x, y, 3, 2, 1);
    float *Y = host(y);
    const float yref[6] = {5, 7, 7, 5, 9, 9};
    for (int i = 0; i < 6; i++) CHECK(Y[i] == yref[i], "maxpool y[%d] = %g, expected %g", i, Y[i], yref[i]);
    const float dyv[6] = {1, 10, 100, 1000, 10000, 100000};
    be->tensor_upload(dy, dyv);
    be->maxpool_backward(be, x, dy, dx, 3, 2, 1);
    float *DX = host(dx);
    // windows: (0,0) rows -1..1 cols -1..1 -> first 5 at (0,1); (0,1) cols 1..3 -> 7 at (1,3);
    // (0,2) cols 3..5 -> 7 at (1,3); (1,0) rows 1..3 cols -1..1 -> 5 at (1,0);
    // (1,1) -> 9 at (2,2); (1,2) -> 9 at (2,3)
    float dref[20] = {0};
    dref[1] = 1, dref[8] = 10 + 100, dref[12] = 10000, dref[13] = 100000;
    // (1,0): window rows 1..3, cols -1..1: values 5,3 / 0,0 / 4,4 -> 5 at (1,0)
    dref[5] = 1000;
    for (int i = 0; i < 20; i++) CHECK(DX[i] == dref[i], "maxpool dx[%d] = %g, expected %g", i, DX[i], dref[i]);
    // NaN wins
    float xn[20];
    memcpy(xn, xv, sizeof(xn));
    xn[6] = NAN;
    be->tensor_upload(x, xn);
    be->maxpool_forward(be, x, y, 3, 2, 1);
    free(Y);
    Y = host(y);
    CHECK(isnan(Y[0]) && isnan(Y[1]) && isnan(Y[3]), "maxpool: a NaN in the window gives NaN");
    free(Y), free(DX);
    be->tensor_free(x), be->tensor_free(y), be->tensor_free(dy), be->tensor_free(dx);

    // average pool to 1x1
    Tensor *a = rand_tensor(be, 3, 4, 5, 6, 1.0), *p = be->tensor_new(be, 3, 4, 1, 1), *dp = rand_tensor(be, 3, 4, 1, 1, 1.0);
    Tensor *da = be->tensor_new(be, 3, 4, 5, 6);
    be->avgpool_forward(be, a, p);
    be->avgpool_backward(be, dp, da);
    float *A = host(a), *P = host(p), *DP = host(dp), *DA = host(da);
    for (int i = 0; i < 12; i++) {
        double s = 0;
        for (int j = 0; j < 30; j++) s += A[i * 30 + j];
        CHECK(approx_eq(P[i], s / 30, 1e-6, 1e-6), "avgpool[%d]", i);
        for (int j = 0; j < 30; j++) CHECK(approx_eq(DA[i * 30 + j], DP[i] / 30.0, 1e-7, 1e-6), "avgpool backward[%d]", i);
    }
    free(A), free(P), free(DP), free(DA);
    be->tensor_free(a), be->tensor_free(p), be->tensor_free(dp), be->tensor_free(da);
}

static void test_linear_ce(Backend *be) {
    const int N = 5, K = 64, M = 37;
    Tensor *x = rand_tensor(be, N, K, 1, 1, 1.0), *w = rand_tensor(be, M, K, 1, 1, 0.2), *b = rand_tensor(be, M, 1, 1, 1, 0.2);
    Tensor *y = be->tensor_new(be, N, M, 1, 1), *dy = rand_tensor(be, N, M, 1, 1, 1.0);
    Tensor *dx = be->tensor_new(be, N, K, 1, 1), *dw = be->tensor_new(be, M, K, 1, 1), *db = be->tensor_new(be, M, 1, 1, 1);
    be->linear_forward(be, x, w, b, y);
    float *X = host(x), *W = host(w), *B = host(b), *Y = host(y);
    for (int n = 0; n < N; n++)
        for (int m = 0; m < M; m++) {
            double s = B[m];
            for (int k = 0; k < K; k++) s += (double)X[n * K + k] * W[m * K + k];
            CHECK(approx_eq(Y[n * M + m], s, 1e-5, 1e-5), "linear y[%d,%d] %g vs %g", n, m, Y[n * M + m], s);
        }
    be->linear_backward(be, x, w, dy, dx, dw, db);
    double a = dot(y, dy) - dot(b, db), scale = norm(y) * norm(dy);
    // <y - b, dy> = <x, dx> = <w, dw>, and db = sum over the batch of dy
    CHECK(fabs(a - dot(x, dx)) < 1e-5 * scale, "linear backward data adjoint");
    CHECK(fabs(a - dot(w, dw)) < 1e-5 * scale, "linear backward weight adjoint");
    float *DY = host(dy), *DB = host(db);
    for (int m = 0; m < M; m++) {
        double s = 0;
        for (int n = 0; n < N; n++) s += DY[n * M + m];
        CHECK(approx_eq(DB[m], s, 1e-6, 1e-6), "linear db[%d]", m);
    }
    // cross-entropy on the logits y
    int labels[5] = {0, 36, 5, 5, 17};
    Tensor *dl = be->tensor_new(be, N, M, 1, 1);
    double loss = be->cross_entropy_forward_backward(be, y, labels, dl, 0.5f);
    double ref = 0;
    float *DL = host(dl);
    for (int n = 0; n < N; n++) {
        double mx = -INFINITY, se = 0;
        for (int m = 0; m < M; m++) mx = fmax(mx, Y[n * M + m]);
        for (int m = 0; m < M; m++) se += exp(Y[n * M + m] - mx);
        double lse = mx + log(se);
        ref += lse - Y[n * M + labels[n]];
        for (int m = 0; m < M; m++) {
            double g = 0.5 * (exp(Y[n * M + m] - lse) - (m == labels[n]));
            CHECK(approx_eq(DL[n * M + m], g, 1e-7, 1e-5), "cross-entropy grad[%d,%d] %g vs %g", n, m, DL[n * M + m], g);
        }
    }
    CHECK(approx_eq(loss, ref, 1e-9, 1e-9), "cross-entropy loss %.10g vs %.10g", loss, ref);
    CHECK(approx_eq(be->cross_entropy_forward_backward(be, y, labels, NULL, 1.0f), ref, 1e-9, 1e-9), "cross-entropy without gradient");
    free(X), free(W), free(B), free(Y), free(DY), free(DB), free(DL);
    Tensor *ts[] = {x, w, b, y, dy, dx, dw, db, dl};
    for (int i = 0; i < 9; i++) be->tensor_free(ts[i]);
}

static void test_adam(Backend *be) {
    const int n = 1000;
    Tensor *p = rand_tensor(be, n, 1, 1, 1, 1.0), *g = be->tensor_new(be, n, 1, 1, 1);
    Tensor *m = be->tensor_new(be, n, 1, 1, 1), *v = be->tensor_new(be, n, 1, 1, 1);
    float *P = host(p);
    double *rp = xmalloc(n * sizeof(double)), *rm = xcalloc(n, sizeof(double)), *rv = xcalloc(n, sizeof(double));
    for (int i = 0; i < n; i++) rp[i] = P[i];
    float *G = xmalloc(n * sizeof(float));
    const double lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8, inv_scale = 0.25;
    for (int step = 1; step <= 3; step++) {
        for (int i = 0; i < n; i++) G[i] = (float)((2 * rng_uniform(&rng) - 1) * (i % 10 == 0 ? 1e-6 : 4.0));
        be->tensor_upload(g, G);
        be->adam_update(be, p, g, m, v, (float)lr, (float)b1, (float)b2, (float)eps, step, (float)inv_scale);
        for (int i = 0; i < n; i++) {
            double gg = G[i] * inv_scale;
            rm[i] = b1 * rm[i] + (1 - b1) * gg;
            rv[i] = b2 * rv[i] + (1 - b2) * gg * gg;
            double mh = rm[i] / (1 - pow(b1, step)), vh = rv[i] / (1 - pow(b2, step));
            rp[i] -= lr * mh / (sqrt(vh) + eps);
        }
    }
    free(P);
    P = host(p);
    double worst = 0;
    for (int i = 0; i < n; i++) worst = fmax(worst, fabs(P[i] - rp[i]));
    CHECK(worst < 2e-6, "adam: parameters differ from the float64 formula by %g after 3 steps", worst);
    free(P), free(G), free(rp), free(rm), free(rv);
    be->tensor_free(p), be->tensor_free(g), be->tensor_free(m), be->tensor_free(v);
}

static void run_all(Backend *be) {
    printf("[%s] %s\n", check_context, be->description);
    test_tensors(be);
    // (n, c, h, w, k, r, stride, pad): ResNet's shapes in small, plus odd ones
    test_conv(be, 2, 3, 23, 19, 8, 7, 2, 3);
    test_conv(be, 2, 8, 9, 9, 8, 3, 1, 1);
    test_conv(be, 3, 8, 9, 10, 16, 3, 2, 1);
    test_conv(be, 2, 8, 9, 10, 16, 1, 2, 0);
    test_conv(be, 1, 5, 4, 4, 6, 3, 1, 0);
    test_conv(be, 2, 16, 2, 2, 32, 3, 1, 1);
    test_batchnorm(be, 3, 5, 4, 3, 1);
    test_batchnorm(be, 3, 5, 4, 3, 0);
    test_batchnorm(be, 2, 4, 1, 1, 1);
    test_elementwise(be);
    test_pools(be);
    test_linear_ce(be);
    test_adam(be);
}

int main(void) {
    char err[256];
    rng_seed(&rng, 1234);
    setenv("PETS_CPU_REFERENCE", "1", 1);
    check_context = "reference";
    Backend *ref = backend_cpu_create(PREC_FP32, err, sizeof(err));
    if (!ref) die("%s", err);
    run_all(ref);
    backend_close(ref);
    unsetenv("PETS_CPU_REFERENCE");
    check_context = "default";
    Backend *def = backend_cpu_create(PREC_FP32, err, sizeof(err));
    if (!def) die("%s", err);
    run_all(def);
    backend_close(def);
    // backend selection
    check_context = "backend_open";
    Backend *be = backend_open("cpu", PREC_FP32, 1, err, sizeof(err));
    CHECK(be && be->device == DEVICE_CPU, "backend_open(cpu)");
    backend_close(be);
    be = backend_open("auto", PREC_FP32, 1, err, sizeof(err));
    CHECK(be != NULL, "backend_open(auto): %s", err);
    if (!backend_cuda_available()) CHECK(be && be->device == DEVICE_CPU, "auto without a GPU must give the CPU");
    backend_close(be);
    be = backend_open("tpu", PREC_FP32, 1, err, sizeof(err));
    CHECK(!be && strstr(err, "tpu"), "an unknown device must be refused naming it (%s)", err);
    if (!backend_cuda_available()) {
        be = backend_open("cuda", PREC_FP32, 1, err, sizeof(err));
        CHECK(!be && strstr(err, "--device cuda"), "--device cuda without a GPU must fail: %s", err);
        printf("--device cuda here: %s\n", err);
    }
    be = backend_open("cpu", PREC_FP16, 1, err, sizeof(err));
    CHECK(be && be->precision == PREC_FP32, "cpu with fp16 falls back to fp32");
    backend_close(be);
    return check_exit("all backend checks passed");
}
