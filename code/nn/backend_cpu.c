// backend_cpu.c: the CPU backend's reference kernels, the specification every other backend is
// checked against. Each layer is written the obvious way, loops over the PyTorch formula with
// float64 accumulation for reductions, parallelised across output channels with OpenMP and
// nothing cleverer. Tensors are plain NCHW float32 arrays (t->data), priv is unused.
//
// backend_cpu_create builds the table from these kernels and then lets cpu_fast_install()
// (backend_cpu_fast.c: oneDNN and vectorised kernels) replace entries with fast versions of the
// same semantics, unless the environment says PETS_CPU_REFERENCE=1.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "nn/backend.h"
#include "nn/adam.h"
#include "nn/backend_cpu_fast.h"
#include "core/common.h"

#define F(t) ((float *)(t)->data)
#define CF(t) ((const float *)(t)->data)

static void check_same_shape(const char *op, const Tensor *a, const Tensor *b) {
    if (a->n != b->n || a->c != b->c || a->h != b->h || a->w != b->w)
        die("backend_cpu: %s: shape (%d, %d, %d, %d) does not match (%d, %d, %d, %d)", op, a->n,
            a->c, a->h, a->w, b->n, b->c, b->h, b->w);
}

// ----------------------------------------------------------------------------
// tensors

static Tensor *tensor_new(Backend *be, int n, int c, int h, int w) {
    if (n <= 0 || c <= 0 || h <= 0 || w <= 0)
        die("backend_cpu: tensor_new: bad shape (%d, %d, %d, %d)", n, c, h, w);
    size_t numel = (size_t)n, bytes;
    if (size_mul(numel, (size_t)c, &numel) || size_mul(numel, (size_t)h, &numel) ||
        size_mul(numel, (size_t)w, &numel) || size_mul(numel, sizeof(float), &bytes))
        die("backend_cpu: tensor_new: shape (%d, %d, %d, %d) overflows", n, c, h, w);
    Tensor *t = xcalloc(1, sizeof(Tensor));
    t->n = n, t->c = c, t->h = h, t->w = w;
    t->numel = numel;
    t->cap_n = n;
    t->data = xcalloc(numel, sizeof(float));
    t->be = be;
    return t;
}

static void tensor_free(Tensor *t) {
    if (!t) return;
    free(t->data);
    free(t);
}

static void tensor_upload(Tensor *t, const float *src) { memcpy(t->data, src, t->numel * sizeof(float)); }
static void tensor_download(const Tensor *t, float *dst) { memcpy(dst, t->data, t->numel * sizeof(float)); }

static void tensor_fill(Tensor *t, float value) {
    float *p = F(t);
    for (size_t i = 0; i < t->numel; i++) p[i] = value;
}

static void tensor_copy(Tensor *dst, const Tensor *src) {
    check_same_shape("tensor_copy", dst, src);
    memcpy(dst->data, src->data, src->numel * sizeof(float));
}

static int tensor_nonfinite(const Tensor *t) {
    const float *p = CF(t);
    int bad = 0;
#pragma omp parallel for reduction(| : bad) schedule(static)
    for (size_t i = 0; i < t->numel; i++) bad |= !isfinite(p[i]);
    return bad;
}

// The specification of the one-synchronisation check: any tensor's tensor_nonfinite.
static int tensors_nonfinite(Backend *be, Tensor *const *ts, int count) {
    for (int i = 0; i < count; i++)
        if (ts[i] && be->tensor_nonfinite(ts[i])) return 1;
    return 0;
}

static void tensor_set_batch(Tensor *t, int n) { backend_set_batch_shape(t, n); }

// ----------------------------------------------------------------------------
// convolution, no bias. x (N, C, H, W), w (K, C, R, S), y (N, K, P, Q)
//
// Written as the textbook im2col + matrix product, per sample: the (P Q, C R S) matrix colT holds
// in row (p, q) the input patch that output pixel sees (zeros where it hangs over the padding), so
//   y^T (PQ, K)   = colT (PQ, CRS) w^T (CRS, K)
//   dcolT (PQ, CRS) = dy^T (PQ, K) w (K, CRS),  then scattered back onto dx (col2im)
//   dw (K, CRS)  += dy (K, PQ) colT (PQ, CRS)     summed over the batch

// C (M, Nc) = A (M, Kc) B (Kc, Nc), or C += A B; row-major; the plain triple loop in i-k-j order
// (the inner loop runs along rows of B and C), rows shared among threads.
static void gemm(int M, int Nc, int Kc, const float *A, const float *B, float *C, int accumulate) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * Nc;
        if (!accumulate) memset(c, 0, sizeof(float) * Nc);
        for (int l = 0; l < Kc; l++) {
            const float a = A[(size_t)i * Kc + l];
            const float *b = B + (size_t)l * Nc;
            for (int j = 0; j < Nc; j++) c[j] += a * b[j];
        }
    }
}

// dst (cols, rows) = src (rows, cols)^T
static void transpose(const float *src, int rows, int cols, float *dst) {
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) dst[(size_t)j * rows + i] = src[(size_t)i * cols + j];
}

typedef struct {
    int C, H, W, K, R, S, P, Q, stride, pad;
} ConvGeom;

// colT (P Q, C R S) from one sample x (C, H, W).
static void im2col_t(const ConvGeom *g, const float *x, float *colT) {
    const size_t crs = (size_t)g->C * g->R * g->S;
    for (int p = 0; p < g->P; p++) {
        for (int q = 0; q < g->Q; q++) {
            float *row = colT + ((size_t)p * g->Q + q) * crs;
            for (int c = 0; c < g->C; c++) {
                for (int r = 0; r < g->R; r++) {
                    for (int s = 0; s < g->S; s++) {
                        int ih = p * g->stride - g->pad + r, iw = q * g->stride - g->pad + s;
                        int inside = ih >= 0 && ih < g->H && iw >= 0 && iw < g->W;
                        *row++ = inside ? x[((size_t)c * g->H + ih) * g->W + iw] : 0.0f;
                    }
                }
            }
        }
    }
}

// dx (C, H, W) = the sum, over the patches of dcolT (P Q, C R S), of each value onto the input
// pixel it came from.
static void col2im_t(const ConvGeom *g, const float *dcolT, float *dx) {
    memset(dx, 0, sizeof(float) * g->C * g->H * g->W);
    for (int p = 0; p < g->P; p++) {
        for (int q = 0; q < g->Q; q++) {
            const float *row = dcolT + ((size_t)p * g->Q + q) * g->C * g->R * g->S;
            for (int c = 0; c < g->C; c++) {
                for (int r = 0; r < g->R; r++) {
                    for (int s = 0; s < g->S; s++, row++) {
                        int ih = p * g->stride - g->pad + r, iw = q * g->stride - g->pad + s;
                        if (ih >= 0 && ih < g->H && iw >= 0 && iw < g->W)
                            dx[((size_t)c * g->H + ih) * g->W + iw] += *row;
                    }
                }
            }
        }
    }
}

static ConvGeom conv_geom(const Tensor *x, const Tensor *w, const Tensor *y, int stride, int pad) {
    ConvGeom g = {x->c, x->h, x->w, w->n, w->h, w->w, 0, 0, stride, pad};
    if (stride < 1 || pad < 0 || x->h + 2 * pad < w->h || x->w + 2 * pad < w->w)
        die("backend_cpu: conv2d: bad stride %d / pad %d for x (%d, %d, %d, %d), w (%d, %d, %d, %d)",
            stride, pad, x->n, x->c, x->h, x->w, w->n, w->c, w->h, w->w);
    g.P = (x->h + 2 * pad - w->h) / stride + 1;
    g.Q = (x->w + 2 * pad - w->w) / stride + 1;
    if (w->c != x->c || y->n != x->n || y->c != w->n || y->h != g.P || y->w != g.Q)
        die("backend_cpu: conv2d: x (%d, %d, %d, %d), w (%d, %d, %d, %d), y (%d, %d, %d, %d) "
            "do not fit stride %d pad %d",
            x->n, x->c, x->h, x->w, w->n, w->c, w->h, w->w, y->n, y->c, y->h, y->w, stride, pad);
    return g;
}

static void conv2d_forward(Backend *be, const Tensor *x, const Tensor *w, Tensor *y, int stride,
                           int pad) {
    (void)be;
    const ConvGeom g = conv_geom(x, w, y, stride, pad);
    const size_t pq = (size_t)g.P * g.Q, crs = (size_t)g.C * g.R * g.S;
    float *wT = xmalloc(crs * g.K * sizeof(float));      // (CRS, K)
    float *colT = xmalloc(pq * crs * sizeof(float));     // (PQ, CRS)
    float *yT = xmalloc(pq * g.K * sizeof(float));       // (PQ, K)
    transpose(CF(w), g.K, (int)crs, wT);
    for (int n = 0; n < x->n; n++) {
        im2col_t(&g, CF(x) + (size_t)n * g.C * g.H * g.W, colT);
        gemm((int)pq, g.K, (int)crs, colT, wT, yT, 0);
        transpose(yT, (int)pq, g.K, F(y) + (size_t)n * g.K * pq);
    }
    free(wT);
    free(colT);
    free(yT);
}

// The fused inference convolution, spelled out: conv, then per element + bias, + residual, relu.
static void conv_bias_act_forward(Backend *be, const Tensor *x, const Tensor *w, const Tensor *b,
                                  const Tensor *residual, Tensor *y, int stride, int pad,
                                  int relu) {
    if (b->numel != (size_t)w->n)
        die("backend_cpu: conv_bias_act_forward: bias has %zu values for %d output channels",
            b->numel, w->n);
    if (residual) check_same_shape("conv_bias_act_forward residual", residual, y);
    // y may be the residual: keep the residual's values before the convolution overwrites them
    float *r = NULL;
    if (residual) {
        r = xmalloc(residual->numel * sizeof(float));
        memcpy(r, CF(residual), residual->numel * sizeof(float));
    }
    conv2d_forward(be, x, w, y, stride, pad);
    const size_t pq = (size_t)y->h * y->w;
    float *yp = F(y);
    for (int n = 0; n < y->n; n++)
        for (int k = 0; k < y->c; k++) {
            const size_t off = ((size_t)n * y->c + k) * pq;
            for (size_t j = 0; j < pq; j++) {
                float v = yp[off + j] + CF(b)[k];
                if (r) v += r[off + j];
                yp[off + j] = relu && v <= 0.0f ? 0.0f : v;
            }
        }
    free(r);
}

static void conv2d_backward(Backend *be, const Tensor *x, const Tensor *w, const Tensor *dy,
                            Tensor *dx, Tensor *dw, int stride, int pad) {
    (void)be;
    const ConvGeom g = conv_geom(x, w, dy, stride, pad);
    if (dx) check_same_shape("conv2d_backward dx", dx, x);
    if (dw) check_same_shape("conv2d_backward dw", dw, w);
    const size_t pq = (size_t)g.P * g.Q, crs = (size_t)g.C * g.R * g.S, chw = (size_t)g.C * g.H * g.W;
    float *colT = xmalloc(pq * crs * sizeof(float));     // (PQ, CRS): colT or dcolT
    float *dyT = dx ? xmalloc(pq * g.K * sizeof(float)) : NULL; // (PQ, K)
    for (int n = 0; n < x->n; n++) {
        const float *dyn = CF(dy) + (size_t)n * g.K * pq;  // (K, PQ)
        if (dw) {
            im2col_t(&g, CF(x) + (size_t)n * chw, colT);
            gemm(g.K, (int)crs, (int)pq, dyn, colT, F(dw), n > 0);
        }
        if (dx) {
            transpose(dyn, g.K, (int)pq, dyT);
            gemm((int)pq, (int)crs, g.K, dyT, CF(w), colT, 0);
            col2im_t(&g, colT, F(dx) + (size_t)n * chw);
        }
    }
    free(colT);
    free(dyT);
}

// ----------------------------------------------------------------------------
// batch norm. x, y (N, C, H, W); parameters and statistics (C)

static void bn_check(const Tensor *x, const BatchNorm *bn) {
    if (bn->weight->numel != (size_t)x->c || bn->bias->numel != (size_t)x->c ||
        bn->running_mean->numel != (size_t)x->c || bn->running_var->numel != (size_t)x->c)
        die("backend_cpu: batchnorm: parameters do not have %d channels", x->c);
}

static void batchnorm_forward(Backend *be, const Tensor *x, BatchNorm *bn, Tensor *y, int training) {
    (void)be;
    bn_check(x, bn);
    check_same_shape("batchnorm_forward", x, y);
    const int N = x->n, C = x->c;
    const size_t HW = (size_t)x->h * x->w, M = (size_t)N * HW;
    const float *X = CF(x), *g = CF(bn->weight), *b = CF(bn->bias);
    float *Y = F(y), *rm = F(bn->running_mean), *rv = F(bn->running_var);
    if (training && M < 2)
        die("backend_cpu: batchnorm in training mode needs more than 1 value per channel "
            "(got input (%d, %d, %d, %d))", x->n, x->c, x->h, x->w);
    if (training && (!bn->save_mean || !bn->save_invstd))
        die("backend_cpu: batchnorm_forward(training) needs save_mean and save_invstd tensors");
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double mean, invstd;
        if (training) {
            double sum = 0.0;
            for (int n = 0; n < N; n++) {
                const float *xp = X + ((size_t)n * C + c) * HW;
                for (size_t i = 0; i < HW; i++) sum += xp[i];
            }
            mean = sum / (double)M;
            double ss = 0.0;
            for (int n = 0; n < N; n++) {
                const float *xp = X + ((size_t)n * C + c) * HW;
                for (size_t i = 0; i < HW; i++) {
                    double d = xp[i] - mean;
                    ss += d * d;
                }
            }
            double var = ss / (double)M; // biased: normalises the batch
            invstd = 1.0 / sqrt(var + bn->eps);
            F(bn->save_mean)[c] = (float)mean;
            F(bn->save_invstd)[c] = (float)invstd;
            double unbiased = ss / (double)(M - 1); // unbiased: the running estimate
            rm[c] = (float)((1.0 - bn->momentum) * rm[c] + bn->momentum * mean);
            rv[c] = (float)((1.0 - bn->momentum) * rv[c] + bn->momentum * unbiased);
        } else {
            mean = rm[c];
            invstd = 1.0 / sqrt((double)rv[c] + bn->eps);
        }
        // y = (x - mean) * invstd * gamma + beta, as y = x * alpha + shift
        const float alpha = (float)(invstd * g[c]);
        const float shift = (float)(b[c] - mean * invstd * g[c]);
        for (int n = 0; n < N; n++) {
            const float *xp = X + ((size_t)n * C + c) * HW;
            float *yp = Y + ((size_t)n * C + c) * HW;
            for (size_t i = 0; i < HW; i++) yp[i] = xp[i] * alpha + shift;
        }
    }
    if (training) bn->num_batches_tracked += 1;
}

static void batchnorm_backward(Backend *be, const Tensor *x, BatchNorm *bn, const Tensor *dy,
                               Tensor *dx, int training) {
    (void)be;
    bn_check(x, bn);
    check_same_shape("batchnorm_backward", x, dy);
    if (dx) check_same_shape("batchnorm_backward dx", x, dx);
    const int N = x->n, C = x->c;
    const size_t HW = (size_t)x->h * x->w, M = (size_t)N * HW;
    const float *X = CF(x), *DY = CF(dy), *g = CF(bn->weight);
    float *DX = dx ? F(dx) : NULL;
    float *dg = bn->dweight ? F(bn->dweight) : NULL, *db = bn->dbias ? F(bn->dbias) : NULL;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double mean, invstd;
        if (training) {
            mean = CF(bn->save_mean)[c];
            invstd = CF(bn->save_invstd)[c];
        } else {
            mean = CF(bn->running_mean)[c];
            invstd = 1.0 / sqrt((double)CF(bn->running_var)[c] + bn->eps);
        }
        // sum_dy = sum dy, sum_dy_xhat = sum dy * (x - mean) * invstd
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (int n = 0; n < N; n++) {
            const float *xp = X + ((size_t)n * C + c) * HW;
            const float *dyp = DY + ((size_t)n * C + c) * HW;
            for (size_t i = 0; i < HW; i++) {
                sum_dy += dyp[i];
                sum_dy_xhat += dyp[i] * ((xp[i] - mean) * invstd);
            }
        }
        if (dg) dg[c] = (float)sum_dy_xhat;
        if (db) db[c] = (float)sum_dy;
        if (!DX) continue;
        for (int n = 0; n < N; n++) {
            const float *xp = X + ((size_t)n * C + c) * HW;
            const float *dyp = DY + ((size_t)n * C + c) * HW;
            float *dxp = DX + ((size_t)n * C + c) * HW;
            if (training) {
                // dx = gamma invstd (dy - mean(dy) - xhat mean(dy xhat))
                const double mdy = sum_dy / (double)M, mdyx = sum_dy_xhat / (double)M;
                for (size_t i = 0; i < HW; i++) {
                    double xhat = (xp[i] - mean) * invstd;
                    dxp[i] = (float)(g[c] * invstd * (dyp[i] - mdy - xhat * mdyx));
                }
            } else {
                const float scale = (float)(g[c] * invstd);
                for (size_t i = 0; i < HW; i++) dxp[i] = dyp[i] * scale;
            }
        }
    }
}

// ----------------------------------------------------------------------------
// element-wise: relu, residual add

static void relu_forward(Backend *be, const Tensor *x, Tensor *y) {
    (void)be;
    check_same_shape("relu_forward", x, y);
    const float *X = CF(x);
    float *Y = F(y);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < x->numel; i++) Y[i] = (X[i] > 0.0f || isnan(X[i])) ? X[i] : 0.0f;
}

static void relu_backward(Backend *be, const Tensor *y, const Tensor *dy, Tensor *dx) {
    (void)be;
    check_same_shape("relu_backward", y, dy);
    check_same_shape("relu_backward", y, dx);
    const float *Y = CF(y), *DY = CF(dy);
    float *DX = F(dx);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < y->numel; i++) DX[i] = Y[i] <= 0.0f ? 0.0f : DY[i];
}

static void add_relu_forward(Backend *be, const Tensor *a, const Tensor *b, Tensor *y) {
    (void)be;
    check_same_shape("add_relu_forward", a, b);
    check_same_shape("add_relu_forward", a, y);
    const float *A = CF(a), *B = CF(b);
    float *Y = F(y);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < a->numel; i++) {
        float s = A[i] + B[i];
        Y[i] = (s > 0.0f || isnan(s)) ? s : 0.0f;
    }
}

static void add_forward(Backend *be, const Tensor *a, const Tensor *b, Tensor *y) {
    (void)be;
    check_same_shape("add_forward", a, b);
    check_same_shape("add_forward", a, y);
    const float *A = CF(a), *B = CF(b);
    float *Y = F(y);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < a->numel; i++) Y[i] = A[i] + B[i];
}

// ----------------------------------------------------------------------------
// max pool (k x k, stride, pad), x (N, C, H, W) -> y (N, C, P, Q)

// Index (into one H x W plane) of the window's maximum: the first one in row-major order, and a
// NaN wins, as in PyTorch's CPU kernel.
static size_t maxpool_argmax(const float *xp, int H, int W, int p, int q, int k, int stride, int pad) {
    int h0 = p * stride - pad, w0 = q * stride - pad;
    int h1 = h0 + k < H ? h0 + k : H, w1 = w0 + k < W ? w0 + k : W;
    if (h0 < 0) h0 = 0;
    if (w0 < 0) w0 = 0;
    size_t best = (size_t)h0 * W + w0;
    float bestv = -INFINITY;
    for (int ih = h0; ih < h1; ih++) {
        for (int iw = w0; iw < w1; iw++) {
            float v = xp[(size_t)ih * W + iw];
            if (v > bestv || isnan(v)) {
                bestv = v;
                best = (size_t)ih * W + iw;
            }
        }
    }
    return best;
}

static void maxpool_check(const Tensor *x, const Tensor *y, int k, int stride, int pad) {
    int P = (x->h + 2 * pad - k) / stride + 1, Q = (x->w + 2 * pad - k) / stride + 1;
    if (y->n != x->n || y->c != x->c || y->h != P || y->w != Q || pad * 2 > k)
        die("backend_cpu: maxpool: x (%d, %d, %d, %d) and y (%d, %d, %d, %d) do not fit k %d "
            "stride %d pad %d", x->n, x->c, x->h, x->w, y->n, y->c, y->h, y->w, k, stride, pad);
}

static void maxpool_forward(Backend *be, const Tensor *x, Tensor *y, int k, int stride, int pad) {
    (void)be;
    maxpool_check(x, y, k, stride, pad);
    const int NC = x->n * x->c, H = x->h, W = x->w, P = y->h, Q = y->w;
    const float *X = CF(x);
    float *Y = F(y);
#pragma omp parallel for schedule(static)
    for (int nc = 0; nc < NC; nc++) {
        const float *xp = X + (size_t)nc * H * W;
        float *yp = Y + (size_t)nc * P * Q;
        for (int p = 0; p < P; p++)
            for (int q = 0; q < Q; q++)
                yp[(size_t)p * Q + q] = xp[maxpool_argmax(xp, H, W, p, q, k, stride, pad)];
    }
}

static void maxpool_backward(Backend *be, const Tensor *x, const Tensor *dy, Tensor *dx, int k,
                             int stride, int pad) {
    (void)be;
    maxpool_check(x, dy, k, stride, pad);
    check_same_shape("maxpool_backward dx", x, dx);
    const int NC = x->n * x->c, H = x->h, W = x->w, P = dy->h, Q = dy->w;
    const float *X = CF(x), *DY = CF(dy);
    float *DX = F(dx);
#pragma omp parallel for schedule(static)
    for (int nc = 0; nc < NC; nc++) {
        const float *xp = X + (size_t)nc * H * W;
        const float *dyp = DY + (size_t)nc * P * Q;
        float *dxp = DX + (size_t)nc * H * W;
        memset(dxp, 0, sizeof(float) * H * W);
        for (int p = 0; p < P; p++)
            for (int q = 0; q < Q; q++)
                dxp[maxpool_argmax(xp, H, W, p, q, k, stride, pad)] += dyp[(size_t)p * Q + q];
    }
}

// ----------------------------------------------------------------------------
// adaptive average pool to 1x1: x (N, C, H, W) -> y (N, C, 1, 1)

static void avgpool_forward(Backend *be, const Tensor *x, Tensor *y) {
    (void)be;
    if (y->n != x->n || y->c != x->c || y->h != 1 || y->w != 1)
        die("backend_cpu: avgpool_forward: y must be (%d, %d, 1, 1)", x->n, x->c);
    const size_t NC = (size_t)x->n * x->c, HW = (size_t)x->h * x->w;
    const float *X = CF(x);
    float *Y = F(y);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < NC; i++) {
        double s = 0.0;
        for (size_t j = 0; j < HW; j++) s += X[i * HW + j];
        Y[i] = (float)(s / (double)HW);
    }
}

static void avgpool_backward(Backend *be, const Tensor *dy, Tensor *dx) {
    (void)be;
    if (dy->n != dx->n || dy->c != dx->c || dy->h != 1 || dy->w != 1)
        die("backend_cpu: avgpool_backward: dy must be (%d, %d, 1, 1)", dx->n, dx->c);
    const size_t NC = (size_t)dx->n * dx->c, HW = (size_t)dx->h * dx->w;
    const float *DY = CF(dy);
    float *DX = F(dx);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < NC; i++) {
        float g = (float)(DY[i] / (double)HW);
        for (size_t j = 0; j < HW; j++) DX[i * HW + j] = g;
    }
}

// ----------------------------------------------------------------------------
// linear: y = x w^T + b. x (N, K), w (M, K), b (M), y (N, M), each stored as (., ., 1, 1)

static void linear_forward(Backend *be, const Tensor *x, const Tensor *w, const Tensor *b, Tensor *y) {
    (void)be;
    const int N = x->n, K = x->c * x->h * x->w, M = w->n;
    if ((int)(w->numel / (size_t)M) != K || y->n != N || (int)(y->numel / (size_t)N) != M ||
        (b && (int)b->numel != M))
        die("backend_cpu: linear_forward: x (%d, %d), w (%d, %zu), y (%d, %zu) do not fit", N, K,
            M, w->numel / (size_t)M, y->n, y->numel / (size_t)y->n);
    const float *X = CF(x), *Wt = CF(w), *B = b ? CF(b) : NULL;
    float *Y = F(y);
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++) {
        for (int m = 0; m < M; m++) {
            double s = B ? B[m] : 0.0;
            for (int k = 0; k < K; k++) s += (double)X[(size_t)n * K + k] * Wt[(size_t)m * K + k];
            Y[(size_t)n * M + m] = (float)s;
        }
    }
}

static void linear_backward(Backend *be, const Tensor *x, const Tensor *w, const Tensor *dy,
                            Tensor *dx, Tensor *dw, Tensor *db) {
    (void)be;
    const int N = x->n, K = x->c * x->h * x->w, M = w->n;
    if ((int)(w->numel / (size_t)M) != K || dy->n != N || (int)(dy->numel / (size_t)N) != M)
        die("backend_cpu: linear_backward: x (%d, %d), w (%d, %zu), dy (%d, %zu) do not fit", N,
            K, M, w->numel / (size_t)M, dy->n, dy->numel / (size_t)dy->n);
    const float *X = CF(x), *Wt = CF(w), *DY = CF(dy);
    if (dx) {
        float *DX = F(dx);
#pragma omp parallel for collapse(2) schedule(static)
        for (int n = 0; n < N; n++) {
            for (int k = 0; k < K; k++) {
                double s = 0.0;
                for (int m = 0; m < M; m++) s += (double)DY[(size_t)n * M + m] * Wt[(size_t)m * K + k];
                DX[(size_t)n * K + k] = (float)s;
            }
        }
    }
    if (dw) {
        float *DW = F(dw);
#pragma omp parallel for collapse(2) schedule(static)
        for (int m = 0; m < M; m++) {
            for (int k = 0; k < K; k++) {
                double s = 0.0;
                for (int n = 0; n < N; n++) s += (double)DY[(size_t)n * M + m] * X[(size_t)n * K + k];
                DW[(size_t)m * K + k] = (float)s;
            }
        }
    }
    if (db) {
        float *DB = F(db);
        for (int m = 0; m < M; m++) {
            double s = 0.0;
            for (int n = 0; n < N; n++) s += DY[(size_t)n * M + m];
            DB[m] = (float)s;
        }
    }
}

// ----------------------------------------------------------------------------
// softmax cross-entropy. logits (N, M); loss_i = logsumexp(logits_i) - logits_i[label_i]

static double cross_entropy_forward_backward(Backend *be, const Tensor *logits, const int *labels,
                                             Tensor *dlogits, float grad_scale) {
    (void)be;
    const int N = logits->n, M = (int)(logits->numel / (size_t)N);
    const float *L = CF(logits);
    float *D = dlogits ? F(dlogits) : NULL;
    if (dlogits) check_same_shape("cross_entropy dlogits", logits, dlogits);
    double total = 0.0;
    for (int n = 0; n < N; n++) {
        if (labels[n] < 0 || labels[n] >= M)
            die("backend_cpu: cross_entropy: label %d of sample %d is outside [0, %d)", labels[n],
                n, M);
        const float *l = L + (size_t)n * M;
        double mx = l[0];
        for (int m = 1; m < M; m++)
            if (l[m] > mx) mx = l[m];
        double se = 0.0;
        for (int m = 0; m < M; m++) se += exp(l[m] - mx);
        double lse = mx + log(se);
        total += lse - l[labels[n]];
        if (D) {
            float *d = D + (size_t)n * M;
            for (int m = 0; m < M; m++) {
                double p = exp(l[m] - lse);
                d[m] = (float)(grad_scale * (p - (m == labels[n] ? 1.0 : 0.0)));
            }
        }
    }
    return total;
}

// ----------------------------------------------------------------------------
// Adam (torch.optim.Adam's single-tensor update, weight_decay 0, amsgrad off)

static void adam_update(Backend *be, Tensor *param, const Tensor *grad, Tensor *m, Tensor *v,
                        float lr, float beta1, float beta2, float eps, long step,
                        float inv_grad_scale) {
    (void)be;
    check_same_shape("adam_update grad", param, grad);
    check_same_shape("adam_update m", param, m);
    check_same_shape("adam_update v", param, v);
    // The scalars as torch/optim/adam.py computes them, in double, then used as float by the
    // element-wise kernels:
    //   exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    //   exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    //   denom = (exp_avg_sq.sqrt() / sqrt(1 - beta2**step)).add_(eps)
    //   param.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**step))
    // PyTorch's hyper-parameters are Python doubles; adam_scalars (adam.h) recovers them from
    // the floats of the table and computes 1 - beta and the bias corrections in double.
    const AdamScalars a = adam_scalars(lr, beta1, beta2, step);
    const float neg_step_size = -a.step_size, bc2_sqrt = a.bc2_sqrt;
    const float one_m_b1 = a.one_minus_b1, one_m_b2 = a.one_minus_b2;
    float *P = F(param), *Mm = F(m), *V = F(v);
    const float *G = CF(grad);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < param->numel; i++) {
        float g = G[i] * inv_grad_scale;
        Mm[i] = Mm[i] * beta1 + one_m_b1 * g;
        V[i] = V[i] * beta2 + one_m_b2 * g * g;
        float denom = sqrtf(V[i]) / bc2_sqrt + eps;
        P[i] = P[i] + neg_step_size * Mm[i] / denom;
    }
}

// ----------------------------------------------------------------------------
// lifetime

static void synchronize(Backend *be) { (void)be; }

static void destroy(Backend *be) { free(be); }

Backend *backend_cpu_create(Precision precision, char *err, size_t errlen) {
    if (precision != PREC_FP32) {
        set_err(err, errlen, "the CPU backend computes in fp32 only (fp16 mixed precision needs "
                             "--device cuda)");
        return NULL;
    }
    Backend *be = xcalloc(1, sizeof(Backend));
    be->name = "cpu";
    be->device = DEVICE_CPU;
    be->precision = PREC_FP32;
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    snprintf(be->description, sizeof(be->description), "CPU: %d thread%s, reference kernels",
             threads, threads == 1 ? "" : "s");
    snprintf(be->kernels, sizeof be->kernels, "cpu-reference");
    be->tensor_new = tensor_new;
    be->tensor_free = tensor_free;
    be->tensor_upload = tensor_upload;
    be->tensor_download = tensor_download;
    be->tensor_fill = tensor_fill;
    be->tensor_copy = tensor_copy;
    be->tensor_nonfinite = tensor_nonfinite;
    be->tensors_nonfinite = tensors_nonfinite;
    be->tensor_set_batch = tensor_set_batch;
    be->conv2d_forward = conv2d_forward;
    be->conv2d_backward = conv2d_backward;
    be->conv_bias_act_forward = conv_bias_act_forward;
    be->batchnorm_forward = batchnorm_forward;
    be->batchnorm_backward = batchnorm_backward;
    be->relu_forward = relu_forward;
    be->relu_backward = relu_backward;
    be->add_relu_forward = add_relu_forward;
    be->add_forward = add_forward;
    be->maxpool_forward = maxpool_forward;
    be->maxpool_backward = maxpool_backward;
    be->avgpool_forward = avgpool_forward;
    be->avgpool_backward = avgpool_backward;
    be->linear_forward = linear_forward;
    be->linear_backward = linear_backward;
    be->cross_entropy_forward_backward = cross_entropy_forward_backward;
    be->adam_update = adam_update;
    be->synchronize = synchronize;
    be->destroy = destroy;
#ifdef PETS_HAVE_CPU_FAST
    const char *ref = getenv("PETS_CPU_REFERENCE");
    if (!(ref && strcmp(ref, "1") == 0)) cpu_fast_install(be);
#endif
    return be;
}
