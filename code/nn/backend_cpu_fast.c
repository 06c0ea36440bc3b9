// backend_cpu_fast.c: the fast CPU kernels. cpu_fast_install() replaces entries of the CPU
// backend table (built by backend_cpu.c from its naive reference kernels) by versions with the
// very same arguments and semantics:
// - convolutions run on oneDNN's AVX-512 kernels in blocked layouts (cpu_conv_dnnl.c); tensors
//   stay NCHW float32, the layout every CPU kernel shares, except for the fused inference
//   convolution (conv_bias_act_forward), which keeps activations in oneDNN's blocked layout
//   nChw8c / nChw16c from one convolution to the next (t->layout = LAYOUT_BLOCKED). Every other
//   op first turns a blocked input back into NCHW in place (plain()), and marks what it writes NCHW;
//   the fused convolution's weights stay in oneDNN's blocked weight layout (LAYOUT_WEIGHTS) until
//   something else reads or writes them (an upload marks them NCHW again);
// - the memory-bound layers (batch norm, ReLU, residual add, pooling, linear, Adam, fills) are
//   written here as vectorisable loops, split over threads with OpenMP (the same thread pool
//   oneDNN uses).
// Threads: PETS_THREADS, else OMP_NUM_THREADS, else every online core, read when the backend is
// created and kept in its priv (with the oneDNN plans): backends do not share state, and the
// process's OpenMP default is left alone. PETS_CPU_REFERENCE=1 keeps
// the reference kernels (the tests compare every fast kernel against them: tests/test_cpu_fast.c).
#include "nn/backend_cpu_fast.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/common.h"
#include "core/cpu.h"
#include "nn/cpu_conv_dnnl.h"
#include "nn/adam.h"

// This file is compiled twice (code/nn/nn.cmake): for any x86-64, and as backend_cpu_fast_avx2.c
// with -mavx2 -mfma (-ffp-contract=off: every product and sum rounded as written), whose
// cpu_fast_install_avx2 the portable cpu_fast_install hands over to on a CPU with AVX2 and FMA
// (core/cpu.h; PETS_SIMD=scalar keeps the portable build).
#ifdef CPU_FAST_AVX2
#define cpu_fast_install cpu_fast_install_avx2
#elif defined(PETS_CPU_FAST_AVX2)
void cpu_fast_install_avx2(Backend *be);
#endif

// ----------------------------------------------------------------------------
// per-backend state (be->priv): nothing here is process-wide, so two fast backends (say with
// different thread counts) live side by side. Every parallel region names its backend's thread
// count (num_threads), and the convolutions set it only for the duration of a oneDNN call.

typedef struct {
    CpuConv *conv;                     // oneDNN plans and scratch buffers
    double (*base_cross_entropy)(Backend *, const Tensor *, const int *, Tensor *, float);
    int threads;
    void *base_priv;                   // the reference table's priv, given back before its destroy
    void (*base_destroy)(Backend *be); // the reference table's destroy, called after ours
} FastState;

static inline FastState *FS(const Backend *be) { return (FastState *)be->priv; }
static inline int NT(const Backend *be) { return FS(be)->threads; }

static inline float *F(const Tensor *t) { return (float *)t->data; }

// Work below this many elements runs on one thread: a parallel region costs more than it saves
// (and much more when other processes compete for the cores).
#define PAR_MIN ((size_t)1 << 15)

// ----------------------------------------------------------------------------
// layouts: NCHW (0) or oneDNN's blocked nChw<B>c (LAYOUT_BLOCKED), see the top of the file

#define LAYOUT_BLOCKED 1 // an activation in nChw8c / nChw16c
#define LAYOUT_WEIGHTS 2 // a weight in OIhw8i8o / OIhw16i16o (Ohwi8o / Ohwi16o for 3 channels):
                         // a fused convolution's weights stay so from call to call

// t in the given layout (0 NCHW, LAYOUT_BLOCKED, LAYOUT_WEIGHTS), converted in place if needed
// (through NCHW). The logical tensor is unchanged, so this is allowed on the const inputs of an op.
static void to_layout(const Tensor *t, int layout) {
    if (t->layout == layout) return;
    CpuConv *cc = FS(t->be)->conv;
    float *d = (float *)t->data;
    if (t->layout) cpu_conv_relayout(cc, t->n, t->c, t->h, t->w, d, d, 0, t->layout == LAYOUT_WEIGHTS);
    if (layout) cpu_conv_relayout(cc, t->n, t->c, t->h, t->w, d, d, 1, layout == LAYOUT_WEIGHTS);
    ((Tensor *)t)->layout = layout;
}

static inline void plain(const Tensor *t) {
    if (t && t->layout) to_layout(t, 0);
}

// An op's output: the kernels below write NCHW.
static inline void out(Tensor *t) {
    if (t) t->layout = 0;
}

static void need_same_shape(const char *op, const Tensor *a, const Tensor *b) {
    if (a->n != b->n || a->c != b->c || a->h != b->h || a->w != b->w)
        die("backend_cpu_fast.c: %s: shapes differ: (%d, %d, %d, %d) vs (%d, %d, %d, %d)", op,
            a->n, a->c, a->h, a->w, b->n, b->c, b->h, b->w);
}

// ----------------------------------------------------------------------------
// tensors

static void fast_tensor_fill(Tensor *t, float value) {
    out(t);
    float *p = F(t);
    size_t n = t->numel;
#pragma omp parallel for simd schedule(static) num_threads(NT(t->be)) if (parallel : n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) p[i] = value;
}

static void fast_tensor_copy(Tensor *dst, const Tensor *src) {
    plain(src);
    out(dst);
    need_same_shape("tensor_copy", dst, src);
    const size_t chunk = 1 << 16;
    size_t n = src->numel, nchunks = (n + chunk - 1) / chunk;
    float *d = F(dst);
    const float *s = F(src);
#pragma omp parallel for schedule(static) num_threads(NT(dst->be)) if (parallel : n >= PAR_MIN)
    for (size_t i = 0; i < nchunks; i++) {
        size_t lo = i * chunk, len = lo + chunk < n ? chunk : n - lo;
        memcpy(d + lo, s + lo, len * sizeof(float));
    }
}

static int fast_tensor_nonfinite(const Tensor *t) {
    const uint32_t *p = (const uint32_t *)t->data;
    size_t n = t->numel;
    uint32_t bad = 0;
    // exponent bits all ones (inf or nan) <=> (exponent + one exponent unit) reaches bit 31:
    // integer arithmetic, which both GCC and clang vectorise by themselves (clang 14 cannot
    // honour `parallel for simd` with this reduction, and says so)
#pragma omp parallel for reduction(| : bad) schedule(static) \
    num_threads(NT(t->be)) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) bad |= ((p[i] & 0x7f800000u) + 0x00800000u) >> 31;
    return (int)bad;
}

// ----------------------------------------------------------------------------
// convolution (oneDNN)

static ConvShape conv_shape(const char *op, const Tensor *x, const Tensor *w, const Tensor *y,
                            int stride, int pad) {
    if (w->c != x->c || y->n != x->n || y->c != w->n)
        die("backend_cpu_fast.c: %s: x (%d, %d, %d, %d), w (%d, %d, %d, %d) and y/dy (%d, %d, "
            "%d, %d) do not fit together",
            op, x->n, x->c, x->h, x->w, w->n, w->c, w->h, w->w, y->n, y->c, y->h, y->w);
    ConvShape sh = {x->n, x->c, x->h, x->w, w->n, w->h, w->w, y->h, y->w, stride, pad};
    return sh;
}

static void fast_conv2d_forward(Backend *be, const Tensor *x, const Tensor *w, Tensor *y,
                                int stride, int pad) {
    plain(x);
    plain(w);
    out(y);
    ConvShape sh = conv_shape("conv2d_forward", x, w, y, stride, pad);
    cpu_conv_forward(FS(be)->conv, &sh, F(x), F(w), F(y));
}

static void fast_conv2d_backward(Backend *be, const Tensor *x, const Tensor *w, const Tensor *dy,
                                 Tensor *dx, Tensor *dw, int stride, int pad) {
    plain(x);
    plain(w);
    plain(dy);
    out(dx);
    out(dw);
    ConvShape sh = conv_shape("conv2d_backward", x, w, dy, stride, pad);
    if (dx) need_same_shape("conv2d_backward dx", dx, x);
    if (dw) need_same_shape("conv2d_backward dw", dw, w);
    cpu_conv_backward(FS(be)->conv, &sh, F(x), F(w), F(dy), dx ? F(dx) : NULL, dw ? F(dw) : NULL);
}

// The fused inference convolution: one oneDNN forward_inference primitive with the bias and the
// post-ops sum (the residual, first copied into y in y's layout unless y is the residual) and
// relu. Activations whose channels fill whole blocks (every ResNet34 activation but the input
// image) are used and left in the blocked layout.
static void fast_conv_bias_act_forward(Backend *be, const Tensor *x, const Tensor *w,
                                       const Tensor *b, const Tensor *residual, Tensor *y,
                                       int stride, int pad, int relu) {
    ConvShape sh = conv_shape("conv_bias_act_forward", x, w, y, stride, pad);
    if (b->numel != (size_t)w->n)
        die("backend_cpu_fast.c: conv_bias_act_forward: bias has %zu values for %d output "
            "channels", b->numel, w->n);
    if (x == y || x == residual)
        die("backend_cpu_fast.c: conv_bias_act_forward: x must not be y or the residual");
    plain(b);
    CpuConv *cc = FS(be)->conv;
    const int block = cpu_conv_block(cc);
    const int xl = x->c % block == 0 ? LAYOUT_BLOCKED : 0, yl = y->c % block == 0 ? LAYOUT_BLOCKED : 0;
    const int wb = cpu_conv_fused_weights_blocked(cc, &sh, xl == LAYOUT_BLOCKED,
                                                  yl == LAYOUT_BLOCKED, residual != NULL, relu);
    to_layout(w, wb ? LAYOUT_WEIGHTS : 0); // kept: the next call finds them converted
    to_layout(x, xl);
    if (residual && residual != y) {
        need_same_shape("conv_bias_act_forward residual", residual, y);
        if (residual->layout == yl) memcpy(y->data, residual->data, y->numel * sizeof(float));
        else if (residual->layout == 0) cpu_conv_relayout(cc, y->n, y->c, y->h, y->w, F(residual), F(y), 1, 0);
        else {
            to_layout(residual, yl);
            memcpy(y->data, residual->data, y->numel * sizeof(float));
        }
    } else if (residual) {
        to_layout(y, yl);
    }
    y->layout = yl;
    cpu_conv_fused_forward(cc, &sh, F(x), xl == LAYOUT_BLOCKED, F(w), F(b), F(y),
                           yl == LAYOUT_BLOCKED, residual != NULL, relu);
}

// ----------------------------------------------------------------------------
// batch norm: one channel per iteration, statistics accumulated in double

// Sum and sum of squares of (v - shift) over one channel's N rows of hw values.
static void channel_moments(const float *x, int n, size_t row_stride, size_t hw, float shift,
                            double *sum, double *sumsq) {
    double s = 0, ss = 0;
    for (int i = 0; i < n; i++) {
        const float *row = x + (size_t)i * row_stride;
        double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
        for (size_t j = 0; j < hw; j++) {
            double d = (double)(row[j] - shift);
            a += d;
            b += d * d;
        }
        s += a;
        ss += b;
    }
    *sum = s;
    *sumsq = ss;
}

static void fast_batchnorm_forward(Backend *be, const Tensor *x, BatchNorm *bn, Tensor *y,
                                   int training) {
    plain(x);
    out(y);
    need_same_shape("batchnorm_forward", x, y);
    const int N = x->n, C = x->c;
    const size_t HW = (size_t)x->h * x->w, CHW = (size_t)C * HW;
    const double M = (double)N * HW;
    if (training && M < 2)
        die("backend_cpu_fast.c: batchnorm_forward in training mode needs more than one value per "
            "channel, got input (%d, %d, %d, %d)", x->n, x->c, x->h, x->w);
    const float *xp = F(x), *g = F(bn->weight), *b = F(bn->bias);
    float *yp = F(y), *rm = F(bn->running_mean), *rv = F(bn->running_var);
    float *sm = training ? F(bn->save_mean) : NULL, *si = training ? F(bn->save_invstd) : NULL;
    const float mom = bn->momentum, eps = bn->eps;
#pragma omp parallel for schedule(static) num_threads(NT(be)) if (x->numel >= PAR_MIN)
    for (int c = 0; c < C; c++) {
        const float *xc = xp + c * HW;
        float mean, invstd;
        if (training) {
            float shift = xc[0]; // shifted sums: no cancellation when |mean| >> std
            double s, ss;
            channel_moments(xc, N, CHW, HW, shift, &s, &ss);
            double dm = s / M, var = ss / M - dm * dm;
            if (var < 0) var = 0;
            mean = (float)(shift + dm);
            invstd = (float)(1.0 / sqrt(var + eps));
            sm[c] = mean;
            si[c] = invstd;
            rm[c] = mom * mean + (1 - mom) * rm[c];
            rv[c] = mom * (float)(var * M / (M - 1)) + (1 - mom) * rv[c];
        } else {
            mean = rm[c];
            invstd = 1.0f / sqrtf(rv[c] + eps);
        }
        const float scale = g[c] * invstd, shift = b[c] - mean * scale;
        for (int i = 0; i < N; i++) {
            const float *row = xc + (size_t)i * CHW;
            float *out = yp + (size_t)i * CHW + c * HW;
#pragma omp simd
            for (size_t j = 0; j < HW; j++) out[j] = row[j] * scale + shift;
        }
    }
    if (training) bn->num_batches_tracked++;
}

// PyTorch's batch_norm_backward: with batch statistics
//   dx = (dy - mean(dy) - (x - mean) * sum(dy (x - mean)) invstd^2 / M) * invstd * gamma,
// with running statistics dx = dy * invstd * gamma; dgamma = sum(dy xhat), dbeta = sum(dy).
static void fast_batchnorm_backward(Backend *be, const Tensor *x, BatchNorm *bn, const Tensor *dy,
                                    Tensor *dx, int training) {
    plain(x);
    plain(dy);
    out(dx);
    need_same_shape("batchnorm_backward", x, dy);
    if (dx) need_same_shape("batchnorm_backward dx", x, dx);
    const int N = x->n, C = x->c;
    const size_t HW = (size_t)x->h * x->w, CHW = (size_t)C * HW;
    const double M = (double)N * HW;
    const float *xp = F(x), *dyp = F(dy), *g = F(bn->weight);
    float *dxp = dx ? F(dx) : NULL;
    float *dg = bn->dweight ? F(bn->dweight) : NULL, *db = bn->dbias ? F(bn->dbias) : NULL;
    const int need_sums = (dxp && training) || dg || db; // eval-mode dx needs no sums
    if (!dxp && !need_sums) return;
#pragma omp parallel for schedule(static) num_threads(NT(be)) if (x->numel >= PAR_MIN)
    for (int c = 0; c < C; c++) {
        float mean, invstd;
        if (training) {
            mean = F(bn->save_mean)[c];
            invstd = F(bn->save_invstd)[c];
        } else {
            mean = F(bn->running_mean)[c];
            invstd = 1.0f / sqrtf(F(bn->running_var)[c] + bn->eps);
        }
        double sdy = 0, sdyx = 0;
        if (need_sums)
            for (int i = 0; i < N; i++) {
                const float *xr = xp + (size_t)i * CHW + c * HW, *dr = dyp + (size_t)i * CHW + c * HW;
                double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
                for (size_t j = 0; j < HW; j++) {
                    a += dr[j];
                    b += (double)dr[j] * (double)(xr[j] - mean);
                }
                sdy += a;
                sdyx += b;
            }
        if (dg) dg[c] = (float)(sdyx * invstd);
        if (db) db[c] = (float)sdy;
        if (!dxp) continue;
        const float w = g[c] * invstd;
        if (training) {
            const float gmean = (float)(sdy / M), k = (float)(sdyx * invstd * invstd / M);
            for (int i = 0; i < N; i++) {
                const float *xr = xp + (size_t)i * CHW + c * HW, *dr = dyp + (size_t)i * CHW + c * HW;
                float *out = dxp + (size_t)i * CHW + c * HW;
#pragma omp simd
                for (size_t j = 0; j < HW; j++) out[j] = (dr[j] - gmean - (xr[j] - mean) * k) * w;
            }
        } else {
            for (int i = 0; i < N; i++) {
                const float *dr = dyp + (size_t)i * CHW + c * HW;
                float *out = dxp + (size_t)i * CHW + c * HW;
#pragma omp simd
                for (size_t j = 0; j < HW; j++) out[j] = dr[j] * w;
            }
        }
    }
}

// ----------------------------------------------------------------------------
// ReLU and the residual adds (element-wise; in place allowed). NaN passes through relu and its
// gradient as in PyTorch (x <= 0 is false for NaN).

static void fast_relu_forward(Backend *be, const Tensor *x, Tensor *y) {
    plain(x);
    out(y);
    need_same_shape("relu_forward", x, y);
    const float *xp = F(x);
    float *yp = F(y);
    size_t n = x->numel;
#pragma omp parallel for simd schedule(static) num_threads(NT(be)) if (parallel : n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) yp[i] = xp[i] <= 0.0f ? 0.0f : xp[i];
}

static void fast_relu_backward(Backend *be, const Tensor *y, const Tensor *dy, Tensor *dx) {
    plain(y);
    plain(dy);
    out(dx);
    need_same_shape("relu_backward", y, dy);
    need_same_shape("relu_backward dx", y, dx);
    const float *yp = F(y), *dyp = F(dy);
    float *dxp = F(dx);
    size_t n = y->numel;
#pragma omp parallel for simd schedule(static) num_threads(NT(be)) if (parallel : n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) dxp[i] = yp[i] <= 0.0f ? 0.0f : dyp[i];
}

static void fast_add_relu_forward(Backend *be, const Tensor *a, const Tensor *b, Tensor *y) {
    plain(a);
    plain(b);
    out(y);
    need_same_shape("add_relu_forward", a, b);
    need_same_shape("add_relu_forward y", a, y);
    const float *ap = F(a), *bp = F(b);
    float *yp = F(y);
    size_t n = a->numel;
#pragma omp parallel for simd schedule(static) num_threads(NT(be)) if (parallel : n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float s = ap[i] + bp[i];
        yp[i] = s <= 0.0f ? 0.0f : s;
    }
}

static void fast_add_forward(Backend *be, const Tensor *a, const Tensor *b, Tensor *y) {
    plain(a);
    plain(b);
    out(y);
    need_same_shape("add_forward", a, b);
    need_same_shape("add_forward y", a, y);
    const float *ap = F(a), *bp = F(b);
    float *yp = F(y);
    size_t n = a->numel;
#pragma omp parallel for simd schedule(static) num_threads(NT(be)) if (parallel : n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) yp[i] = ap[i] + bp[i];
}

// ----------------------------------------------------------------------------
// max pool: windows clipped to the input (padding never wins); the first maximum in row-major
// window order wins ties, a NaN wins over numbers (PyTorch's rules). Parallel over (n, c) planes.

static void pool_check(const char *op, const Tensor *x, const Tensor *y, int k, int stride,
                       int pad) {
    if (k <= 0 || stride <= 0 || pad < 0 || 2 * pad > k || y->n != x->n || y->c != x->c ||
        y->h != (x->h + 2 * pad - k) / stride + 1 || y->w != (x->w + 2 * pad - k) / stride + 1)
        die("backend_cpu_fast.c: %s: x (%d, %d, %d, %d) -> y (%d, %d, %d, %d) does not fit "
            "kernel %d, stride %d, pad %d", op, x->n, x->c, x->h, x->w, y->n, y->c, y->h, y->w, k,
            stride, pad);
}

// Forward is separable: for each output row, the column maxima over the window's rows
// (contiguous, vectorised), then the maxima over each window's columns. A max that lets NaN win is
// associative, so the values equal the row-major scan of the reference (only the sign of a zero
// tied with another zero may differ).
static inline float max_nan(float m, float v) { return (v > m || isnan(v)) ? v : m; }

static void fast_maxpool_forward(Backend *be, const Tensor *x, Tensor *y, int k, int stride,
                                 int pad) {
    plain(x);
    out(y);
    pool_check("maxpool_forward", x, y, k, stride, pad);
    const int H = x->h, W = x->w, P = y->h, Q = y->w;
    const long planes = (long)x->n * x->c;
    const float *xp = F(x);
    float *yp = F(y);
#pragma omp parallel num_threads(NT(be)) if (x->numel >= PAR_MIN)
    {
        float *cm = xmalloc(sizeof(float) * W);
#pragma omp for schedule(static)
        for (long pl = 0; pl < planes; pl++) {
            const float *in = xp + (size_t)pl * H * W;
            float *out = yp + (size_t)pl * P * Q;
            for (int p = 0; p < P; p++) {
                int h0 = p * stride - pad, hs = h0 < 0 ? 0 : h0, he = h0 + k > H ? H : h0 + k;
                memcpy(cm, in + (size_t)hs * W, sizeof(float) * W);
                for (int h = hs + 1; h < he; h++) {
                    const float *row = in + (size_t)h * W;
#pragma omp simd
                    for (int w = 0; w < W; w++) cm[w] = max_nan(cm[w], row[w]);
                }
                float *o = out + (size_t)p * Q;
                if (k == 3 && stride == 2 && pad == 1 && Q >= 2) { // ResNet's stem pool
                    o[0] = max_nan(cm[0], cm[1]);
                    int qe = (W - 2) / 2 + 1 < Q ? (W - 2) / 2 + 1 : Q; // windows inside the row
#pragma omp simd
                    for (int q = 1; q < qe; q++)
                        o[q] = max_nan(max_nan(cm[2 * q - 1], cm[2 * q]), cm[2 * q + 1]);
                    for (int q = qe; q < Q; q++) {
                        float m = -INFINITY;
                        for (int w = 2 * q - 1; w < W && w <= 2 * q + 1; w++) m = max_nan(m, cm[w]);
                        o[q] = m;
                    }
                } else {
                    for (int q = 0; q < Q; q++) {
                        int w0 = q * stride - pad, ws = w0 < 0 ? 0 : w0, we = w0 + k > W ? W : w0 + k;
                        float m = -INFINITY;
                        for (int w = ws; w < we; w++) m = max_nan(m, cm[w]);
                        o[q] = m;
                    }
                }
            }
        }
        free(cm);
    }
}

// Backward routes each dy to the reference's argmax, found for a whole output row at once: the
// window positions are visited in the reference's row-major order, each as a vectorised pass over
// the output columns q that keeps (value, index) where the new value is larger or NaN (the
// reference's rule: first maximum wins ties, a NaN wins). Then a scalar pass adds dy at the
// indices (neighbouring windows may share an input).
static void fast_maxpool_backward(Backend *be, const Tensor *x, const Tensor *dy, Tensor *dx,
                                  int k, int stride, int pad) {
    plain(x);
    plain(dy);
    out(dx);
    pool_check("maxpool_backward", x, dy, k, stride, pad);
    need_same_shape("maxpool_backward dx", x, dx);
    const int H = x->h, W = x->w, P = dy->h, Q = dy->w;
    const long planes = (long)x->n * x->c;
    const float *xp = F(x), *dyp = F(dy);
    float *dxp = F(dx);
#pragma omp parallel num_threads(NT(be)) if (x->numel >= PAR_MIN)
    {
        float *best = xmalloc(sizeof(float) * Q);
        int *arg = xmalloc(sizeof(int) * Q);
#pragma omp for schedule(static)
        for (long pl = 0; pl < planes; pl++) {
            const float *in = xp + (size_t)pl * H * W, *g = dyp + (size_t)pl * P * Q;
            float *out = dxp + (size_t)pl * H * W;
            memset(out, 0, sizeof(float) * H * W);
            for (int p = 0; p < P; p++) {
                int h0 = p * stride - pad, hs = h0 < 0 ? 0 : h0, he = h0 + k > H ? H : h0 + k;
                for (int q = 0; q < Q; q++) { // the window's first position, as the reference
                    int w0 = q * stride - pad;
                    best[q] = -INFINITY;
                    arg[q] = hs * W + (w0 < 0 ? 0 : w0);
                }
                for (int h = hs; h < he; h++)
                    for (int dw = 0; dw < k; dw++) {
                        // columns q whose position w = q*stride - pad + dw lies in [0, W)
                        int off = dw - pad, qa = off < 0 ? (-off + stride - 1) / stride : 0;
                        int qb = W - off <= 0 ? 0 : (W - off - 1) / stride + 1;
                        if (qb > Q) qb = Q;
                        const float *row = in + (size_t)h * W + off;
                        const int base = h * W + off;
#pragma omp simd
                        for (int q = qa; q < qb; q++) {
                            float v = row[q * stride];
                            int take = v > best[q] || v != v;
                            best[q] = take ? v : best[q];
                            arg[q] = take ? base + q * stride : arg[q];
                        }
                    }
                const float *gr = g + (size_t)p * Q;
                for (int q = 0; q < Q; q++) out[arg[q]] += gr[q];
            }
        }
        free(best);
        free(arg);
    }
}

// ----------------------------------------------------------------------------
// adaptive average pool to 1x1

static void fast_avgpool_forward(Backend *be, const Tensor *x, Tensor *y) {
    plain(x);
    out(y);
    if (y->n != x->n || y->c != x->c || y->h != 1 || y->w != 1)
        die("backend_cpu_fast.c: avgpool_forward: y (%d, %d, %d, %d) is not (%d, %d, 1, 1)", y->n,
            y->c, y->h, y->w, x->n, x->c);
    const size_t HW = (size_t)x->h * x->w;
    const long planes = (long)x->n * x->c;
    const float *xp = F(x);
    float *yp = F(y);
#pragma omp parallel for schedule(static) num_threads(NT(be)) if (x->numel >= PAR_MIN)
    for (long pl = 0; pl < planes; pl++) {
        const float *in = xp + pl * HW;
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (size_t j = 0; j < HW; j++) s += in[j];
        yp[pl] = (float)(s / HW);
    }
}

static void fast_avgpool_backward(Backend *be, const Tensor *dy, Tensor *dx) {
    plain(dy);
    out(dx);
    if (dy->n != dx->n || dy->c != dx->c || dy->h != 1 || dy->w != 1)
        die("backend_cpu_fast.c: avgpool_backward: dy (%d, %d, %d, %d) is not (%d, %d, 1, 1)",
            dy->n, dy->c, dy->h, dy->w, dx->n, dx->c);
    const size_t HW = (size_t)dx->h * dx->w;
    const long planes = (long)dx->n * dx->c;
    const float *g = F(dy);
    float *out = F(dx);
#pragma omp parallel for schedule(static) num_threads(NT(be)) if (dx->numel >= PAR_MIN)
    for (long pl = 0; pl < planes; pl++) {
        const float v = g[pl] / (float)HW;
        float *o = out + pl * HW;
#pragma omp simd
        for (size_t j = 0; j < HW; j++) o[j] = v;
    }
}

// ----------------------------------------------------------------------------
// linear: y = x w^T + b. x (N, K), w (M, K), b (M), y (N, M)

static void fast_linear_forward(Backend *be, const Tensor *x, const Tensor *w, const Tensor *b,
                                Tensor *y) {
    plain(x);
    plain(w);
    plain(b);
    out(y);
    const int N = x->n, K = x->c * x->h * x->w, M = w->n;
    if ((size_t)w->numel != (size_t)M * K || y->n != N || y->numel != (size_t)N * M ||
        (b && b->numel != (size_t)M))
        die("backend_cpu_fast.c: linear_forward: x (%d, %d), w (%d, %zu), y (%d, %d) do not fit",
            N, K, M, w->numel / (M ? M : 1), y->n, y->c);
    const float *xp = F(x), *wp = F(w), *bp = b ? F(b) : NULL;
    float *yp = F(y);
#pragma omp parallel for collapse(2) schedule(static) num_threads(NT(be)) if (w->numel >= PAR_MIN)
    for (int n = 0; n < N; n++)
        for (int m = 0; m < M; m++) {
            const float *xr = xp + (size_t)n * K, *wr = wp + (size_t)m * K;
            float s = 0;
#pragma omp simd reduction(+ : s)
            for (int j = 0; j < K; j++) s += xr[j] * wr[j];
            yp[(size_t)n * M + m] = s + (bp ? bp[m] : 0.0f);
        }
}

static void fast_linear_backward(Backend *be, const Tensor *x, const Tensor *w, const Tensor *dy,
                                 Tensor *dx, Tensor *dw, Tensor *db) {
    plain(x);
    plain(w);
    plain(dy);
    out(dx);
    out(dw);
    out(db);
    const int N = x->n, K = x->c * x->h * x->w, M = w->n;
    if ((size_t)w->numel != (size_t)M * K || dy->numel != (size_t)N * M ||
        (dx && dx->numel != x->numel) || (dw && dw->numel != w->numel) ||
        (db && db->numel != (size_t)M))
        die("backend_cpu_fast.c: linear_backward: x (%d, %d), w (%d, %d), dy (%d, %d) and the "
            "gradients do not fit", N, K, M, K, dy->n, dy->c);
    const float *xp = F(x), *wp = F(w), *g = F(dy);
    if (dx) {
        float *out = F(dx);
#pragma omp parallel for schedule(static) num_threads(NT(be)) if (w->numel >= PAR_MIN)
        for (int n = 0; n < N; n++) {
            float *o = out + (size_t)n * K;
            memset(o, 0, sizeof(float) * K);
            for (int m = 0; m < M; m++) {
                const float a = g[(size_t)n * M + m], *wr = wp + (size_t)m * K;
#pragma omp simd
                for (int j = 0; j < K; j++) o[j] += a * wr[j];
            }
        }
    }
    if (dw || db) {
        float *dwp = dw ? F(dw) : NULL, *dbp = db ? F(db) : NULL;
#pragma omp parallel for schedule(static) num_threads(NT(be)) if (w->numel >= PAR_MIN)
        for (int m = 0; m < M; m++) {
            float *o = dwp ? dwp + (size_t)m * K : NULL;
            if (o) memset(o, 0, sizeof(float) * K);
            float sb = 0;
            for (int n = 0; n < N; n++) {
                const float a = g[(size_t)n * M + m];
                sb += a;
                if (!o) continue;
                const float *xr = xp + (size_t)n * K;
#pragma omp simd
                for (int j = 0; j < K; j++) o[j] += a * xr[j];
            }
            if (dbp) dbp[m] = sb;
        }
    }
}

// ----------------------------------------------------------------------------
// Adam (torch.optim.Adam's single-tensor update). The scalars come from adam.h's adam_scalars
// (PyTorch's Python-double arithmetic), the element-wise expression is the reference's, so the
// results are bit-identical to backend_cpu.c.

static void fast_adam_update(Backend *be, Tensor *param, const Tensor *grad, Tensor *m, Tensor *v,
                             float lr, float beta1, float beta2, float eps, long step,
                             float inv_grad_scale) {
    plain(param);
    plain(grad);
    plain(m);
    plain(v);
    need_same_shape("adam_update grad", param, grad);
    need_same_shape("adam_update m", param, m);
    need_same_shape("adam_update v", param, v);
    const AdamScalars a = adam_scalars(lr, beta1, beta2, step);
    const float neg_step_size = -a.step_size, bc2_sqrt = a.bc2_sqrt;
    const float omb1 = a.one_minus_b1, omb2 = a.one_minus_b2;
    float *p = F(param), *mp = F(m), *vp = F(v);
    const float *gp = F(grad);
    size_t n = param->numel;
#pragma omp parallel for simd schedule(static) num_threads(NT(be)) if (parallel : n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float gi = gp[i] * inv_grad_scale;
        float mi = mp[i] * beta1 + omb1 * gi;
        float vi = vp[i] * beta2 + omb2 * gi * gi;
        mp[i] = mi;
        vp[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        p[i] = p[i] + neg_step_size * mi / denom;
    }
}

// ----------------------------------------------------------------------------
// host transfers and the loss: the reference's, on NCHW

static void fast_tensor_upload(Tensor *t, const float *src) {
    out(t);
    memcpy(t->data, src, t->numel * sizeof(float));
}

static void fast_tensor_download(const Tensor *t, float *dst) {
    plain(t);
    memcpy(dst, t->data, t->numel * sizeof(float));
}

static double fast_cross_entropy(Backend *be, const Tensor *logits, const int *labels,
                                 Tensor *dlogits, float grad_scale) {
    plain(logits);
    out(dlogits);
    return FS(be)->base_cross_entropy(be, logits, labels, dlogits, grad_scale);
}

// ----------------------------------------------------------------------------
// install

static int fast_threads(void) {
    const char *names[2] = {"PETS_THREADS", "OMP_NUM_THREADS"};
    for (int i = 0; i < 2; i++) {
        const char *e = getenv(names[i]);
        if (!e || !*e) continue;
        char *end;
        long v = strtol(e, &end, 10);
        if (*end == '\0' && v > 0 && v <= 4096) return (int)v;
        warn("%s=%s is not a positive thread count; ignoring it", names[i], e);
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void fast_destroy(Backend *be) {
    FastState *st = FS(be);
    void (*destroy)(Backend *) = st->base_destroy;
    be->priv = st->base_priv;
    be->destroy = destroy;
    cpu_conv_free(st->conv);
    free(st);
    if (destroy) destroy(be);
}

void cpu_fast_install(Backend *be) {
    const char *ref = getenv("PETS_CPU_REFERENCE");
    if (ref && strcmp(ref, "1") == 0) return;
#if !defined(CPU_FAST_AVX2) && defined(PETS_CPU_FAST_AVX2)
    if (cpu_simd() >= CPU_SIMD_AVX2) {
        cpu_fast_install_avx2(be);
        return;
    }
#endif
    if (be->destroy == fast_destroy) return; // installed already
    FastState *st = xcalloc(1, sizeof *st);
    int threads = st->threads = fast_threads();
    st->conv = cpu_conv_create(threads);
    st->base_priv = be->priv;
    st->base_destroy = be->destroy;
    be->priv = st;
    be->destroy = fast_destroy;

    st->base_cross_entropy = be->cross_entropy_forward_backward;
    be->tensor_upload = fast_tensor_upload;
    be->tensor_download = fast_tensor_download;
    be->cross_entropy_forward_backward = fast_cross_entropy;
    be->tensor_fill = fast_tensor_fill;
    be->tensor_copy = fast_tensor_copy;
    be->tensor_nonfinite = fast_tensor_nonfinite;
    be->conv2d_forward = fast_conv2d_forward;
    be->conv2d_backward = fast_conv2d_backward;
    be->conv_bias_act_forward = fast_conv_bias_act_forward;
    be->batchnorm_forward = fast_batchnorm_forward;
    be->batchnorm_backward = fast_batchnorm_backward;
    be->relu_forward = fast_relu_forward;
    be->relu_backward = fast_relu_backward;
    be->add_relu_forward = fast_add_relu_forward;
    be->add_forward = fast_add_forward;
    be->maxpool_forward = fast_maxpool_forward;
    be->maxpool_backward = fast_maxpool_backward;
    be->avgpool_forward = fast_avgpool_forward;
    be->avgpool_backward = fast_avgpool_backward;
    be->linear_forward = fast_linear_forward;
    be->linear_backward = fast_linear_backward;
    be->adam_update = fast_adam_update;

    snprintf(be->description, sizeof be->description, "CPU: %d thread%s, oneDNN %s", threads,
             threads == 1 ? "" : "s", cpu_conv_onednn_version());
    snprintf(be->kernels, sizeof be->kernels, "cpu-fast onednn %s", cpu_conv_onednn_version());
}
