// backend_cuda.cu: the cuDNN + CUDA runtime backend, implementing the layer table of backend.h
// on an NVIDIA GPU. The CPU backend (backend_cpu.c) is its specification: the same arguments,
// the same semantics (NaN propagation, max-pool tie rule, overwrite-not-accumulate, NULL
// gradients skipped), checked by tests/test_cuda_backend.c on random inputs.
//
// Storage: every tensor keeps an fp32 NCHW copy in GPU memory (master weights, optimizer state,
// batch-norm statistics, activations). With --precision fp16 the convolutions and the fc layer
// run the way PyTorch's autocast runs them: inputs and weights cast to fp16 (NHWC, the tensor
// cores' layout; a weight KCRS becomes KRSC), fp32 accumulation, fp16 outputs cast back to fp32
// NCHW; batch norm, the loss and Adam stay in fp32. The fp16 copy of a tensor (a weight, or an activation
// that feeds a convolution) is cached with the tensor and remade only when the tensor changed:
// every write through this backend (upload, fill, copy, Adam, any layer output) bumps the
// tensor's version, and a copy is reused only while its version matches.
// Algorithms come from cuDNN's heuristics, cached per shape; one workspace grows only when needed;
// PETS_DETERMINISTIC=1 restricts the choice to deterministic algorithms. Every CUDA, cuDNN and
// cuBLAS call is checked, and a failure names the file and line. All work runs on one stream;
// every read back to the host synchronises that stream first.
//
// cuDNN 9 still ships the "legacy" convolution and batch-norm API used here (cudnn_cnn, cudnn_ops);
// it is marked deprecated for a future major version, not removed.
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "nn/backend.h"
#include "core/common.h"
#include "nn/adam.h"
}

// ----------------------------------------------------------------------------
// error checking: every failure names the file, the line and the call

#define CUDA_CHECK(call) cuda_check((call), #call, __FILE__, __LINE__)
#define CUDNN_CHECK(call) cudnn_check((call), #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(call) cublas_check((call), #call, __FILE__, __LINE__)
#define KERNEL_CHECK() cuda_check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

static void cuda_check(cudaError_t e, const char *what, const char *file, int line) {
    if (e != cudaSuccess)
        backend_fail("%s:%d: %s failed: %s", file, line, what, cudaGetErrorString(e));
}
static void cudnn_check(cudnnStatus_t s, const char *what, const char *file, int line) {
    if (s == CUDNN_STATUS_SUCCESS) return;
    char detail[512] = "";
    cudnnGetLastErrorString(detail, sizeof detail);
    backend_fail("%s:%d: %s failed: %s%s%s", file, line, what, cudnnGetErrorString(s),
                 detail[0] ? ": " : "", detail);
}
static void cublas_check(cublasStatus_t s, const char *what, const char *file, int line) {
    if (s != CUBLAS_STATUS_SUCCESS)
        backend_fail("%s:%d: %s failed: %s", file, line, what, cublasGetStatusString(s));
}

// ----------------------------------------------------------------------------
// backend state

typedef struct {
    int dir;                       // 0 forward, 1 backward data, 2 backward filter
    int n, c, h, w, k, r, s, p, q, stride, pad;
    int half;                      // fp16 NHWC tensor-core math, else fp32 NCHW FMA math
    int deterministic;
} ConvKey;                         // ints only: compared with memcmp (no padding)

typedef struct {
    ConvKey key;
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    int algo;                      // cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t
    size_t workspace;              // bytes the algorithm needs
} ConvPlan;

typedef struct {
    int n, c, h, w;
    cudnnTensorDescriptor_t x, p;  // x: (N, C, H, W) fp32 NCHW; p: (1, C, 1, 1) parameters
} BnDesc;

typedef struct {
    cudnnHandle_t cudnn;
    cublasHandle_t cublas;
    cudaStream_t stream;
    void *workspace;
    size_t workspace_size;
    ConvPlan *plans;
    int n_plans, cap_plans;
    BnDesc *bns;
    int n_bns, cap_bns;
    int deterministic;
    int *labels;                   // device copy of the labels of a batch
    double *row_loss;              // (N) per-row losses
    size_t labels_cap, row_loss_cap; // bytes
    int *flag;                     // device flag for tensor_nonfinite
    float *scratch;                // (2 C) dweight/dbias sink for frozen batch-norm parameters
    size_t scratch_cap;
    __half *half_dy, *half_out;    // fp16 staging: a convolution's dy, and its output
    size_t half_dy_cap, half_out_cap;
} CudaCtx;

typedef struct {
    __half *h16;           // fp16 NHWC (KRSC for a weight) copy, made on demand in fp16 mode
    size_t h16_cap;
    uint64_t version;      // bumped by every write to the tensor through this backend
    uint64_t h16_version;  // version the fp16 copy was made from (0: none)
} CuTensor;

static CudaCtx *ctx_of(Backend *be) { return (CudaCtx *)be->priv; }
static CuTensor *cut(const Tensor *t) { return (CuTensor *)t->priv; }
static float *F(const Tensor *t) { return (float *)t->data; }
static void touch(const Tensor *t) { cut(t)->version++; }

// Blocks for a grid-stride loop over n elements (the loop covers any n; the cap only bounds the
// launch).
static int blocks_for(size_t n, int threads) {
    size_t b = (n + (size_t)threads - 1) / (size_t)threads;
    const size_t cap = (size_t)65535 * 16;
    return (int)(b > cap ? cap : b);
}

// Device buffer of at least `need` bytes, reallocated only to grow. The stream is drained first
// so that no queued kernel still uses the old buffer when it is freed.
static void *grow(CudaCtx *c, void *p, size_t *cap, size_t need) {
    if (need <= *cap) return p;
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    if (p) CUDA_CHECK(cudaFree(p));
    void *q = NULL;
    cudaError_t e = cudaMalloc(&q, need);
    if (e != cudaSuccess)
        backend_fail("backend_cuda: out of GPU memory allocating a %.1f MiB buffer (%s): use a "
                     "smaller --batch", need / 1048576.0, cudaGetErrorString(e));
    *cap = need;
    return q;
}

static void ensure_workspace(CudaCtx *c, size_t bytes) {
    c->workspace = grow(c, c->workspace, &c->workspace_size, bytes);
}

static void check_same_shape(const char *op, const Tensor *a, const Tensor *b) {
    if (a->n != b->n || a->c != b->c || a->h != b->h || a->w != b->w)
        die("backend_cuda: %s: shape (%d, %d, %d, %d) does not match (%d, %d, %d, %d)", op, a->n,
            a->c, a->h, a->w, b->n, b->c, b->h, b->w);
}

// cuDNN's 4-d descriptors index with 32-bit integers.
static void check_cudnn_size(const char *op, const Tensor *t) {
    if (t->numel > (size_t)INT_MAX)
        die("backend_cuda: %s: tensor (%d, %d, %d, %d) has %zu elements, more than cuDNN's 4-d "
            "descriptors address (2^31 - 1): use a smaller --batch", op, t->n, t->c, t->h, t->w,
            t->numel);
}

// ----------------------------------------------------------------------------
// element-wise kernels (grid-stride loops, 64-bit indices), with backend_cpu.c's NaN rules

#define GRID_LOOP(i, n) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

__global__ void k_fill(float *x, float v, size_t n) { GRID_LOOP(i, n) x[i] = v; }
// relu: NaN passes through (x > 0 || isnan(x)), as torch.relu does.
__global__ void k_relu(const float *x, float *y, size_t n) {
    GRID_LOOP(i, n) {
        float v = x[i];
        y[i] = (v > 0.f || isnan(v)) ? v : 0.f;
    }
}
// dx = 0 where y <= 0, else dy (a NaN y passes dy). dx may be dy.
__global__ void k_relu_bwd(const float *y, const float *dy, float *dx, size_t n) {
    GRID_LOOP(i, n) dx[i] = y[i] <= 0.f ? 0.f : dy[i];
}
__global__ void k_add_relu(const float *a, const float *b, float *y, size_t n) {
    GRID_LOOP(i, n) {
        float v = a[i] + b[i];
        y[i] = (v > 0.f || isnan(v)) ? v : 0.f;
    }
}
__global__ void k_add(const float *a, const float *b, float *y, size_t n) {
    GRID_LOOP(i, n) y[i] = a[i] + b[i];
}
__global__ void k_nonfinite(const float *x, size_t n, int *flag) {
    GRID_LOOP(i, n) if (!isfinite(x[i])) *flag = 1;
}

// ----------------------------------------------------------------------------
// layout conversions for fp16 convolutions: per sample, the (C, S) matrix of an NCHW tensor
// (S = H W) is transposed to (S, C), NHWC, through a 32 x 32 tile in shared memory so that both
// the reads and the writes are coalesced. A weight (K, C, R, S) -> (K, R, S, C) is the same
// transform with N = K.

#define TILE 32
#define TILE_ROWS 8

// (N, C, S) fp32 -> (N, S, C) fp16
__global__ void k_nchw_to_nhwc_half(const float *__restrict__ src, __half *__restrict__ dst, int N,
                                    int C, int S) {
    __shared__ float tile[TILE][TILE + 1];
    const int s0 = blockIdx.x * TILE, c0 = blockIdx.y * TILE;
    const size_t plane = (size_t)C * S;
    for (size_t n = blockIdx.z; n < (size_t)N; n += gridDim.z) {
        const float *sp = src + n * plane;
        __half *dp = dst + n * plane;
        for (int j = threadIdx.y; j < TILE; j += TILE_ROWS) {
            int c = c0 + j, s = s0 + threadIdx.x;
            if (c < C && s < S) tile[j][threadIdx.x] = sp[(size_t)c * S + s];
        }
        __syncthreads();
        for (int j = threadIdx.y; j < TILE; j += TILE_ROWS) {
            int s = s0 + j, c = c0 + threadIdx.x;
            if (c < C && s < S) dp[(size_t)s * C + c] = __float2half_rn(tile[threadIdx.x][j]);
        }
        __syncthreads();
    }
}

// (N, S, C) fp16 -> (N, C, S) fp32
__global__ void k_nhwc_half_to_nchw(const __half *__restrict__ src, float *__restrict__ dst, int N,
                                    int C, int S) {
    __shared__ float tile[TILE][TILE + 1];
    const int s0 = blockIdx.x * TILE, c0 = blockIdx.y * TILE;
    const size_t plane = (size_t)C * S;
    for (size_t n = blockIdx.z; n < (size_t)N; n += gridDim.z) {
        const __half *sp = src + n * plane;
        float *dp = dst + n * plane;
        for (int j = threadIdx.y; j < TILE; j += TILE_ROWS) {
            int s = s0 + j, c = c0 + threadIdx.x;
            if (c < C && s < S) tile[j][threadIdx.x] = __half2float(sp[(size_t)s * C + c]);
        }
        __syncthreads();
        for (int j = threadIdx.y; j < TILE; j += TILE_ROWS) {
            int c = c0 + j, s = s0 + threadIdx.x;
            if (c < C && s < S) dp[(size_t)c * S + s] = tile[threadIdx.x][j];
        }
        __syncthreads();
    }
}

static dim3 transpose_grid(const Tensor *t) {
    const int S = t->h * t->w;
    const unsigned cy = (unsigned)((t->c + TILE - 1) / TILE);
    if (cy > 65535u) die("backend_cuda: %d channels are too many for the layout conversion", t->c);
    return dim3((unsigned)((S + TILE - 1) / TILE), cy, (unsigned)(t->n < 65535 ? t->n : 65535));
}

// t (NCHW fp32) -> dst (NHWC fp16)
static void to_nhwc_half(CudaCtx *c, const Tensor *t, __half *dst) {
    if (!t->numel) return;
    k_nchw_to_nhwc_half<<<transpose_grid(t), dim3(TILE, TILE_ROWS), 0, c->stream>>>(
        F(t), dst, t->n, t->c, t->h * t->w);
    KERNEL_CHECK();
}

// src (NHWC fp16, t's shape) -> t (NCHW fp32)
static void from_nhwc_half(CudaCtx *c, const __half *src, Tensor *t) {
    if (!t->numel) return;
    k_nhwc_half_to_nchw<<<transpose_grid(t), dim3(TILE, TILE_ROWS), 0, c->stream>>>(
        src, F(t), t->n, t->c, t->h * t->w);
    KERNEL_CHECK();
}

// ----------------------------------------------------------------------------
// pooling

// Index (into one H x W plane) of the window's maximum, exactly as backend_cpu.c's
// maxpool_argmax: the first maximum in row-major order; a NaN wins (the last NaN of the window,
// since every NaN replaces the current best); an all -inf window gives its first element.
__device__ int pool_argmax(const float *xp, int H, int W, int p, int q, int k, int stride, int pad) {
    int h0 = p * stride - pad, w0 = q * stride - pad;
    int h1 = h0 + k < H ? h0 + k : H, w1 = w0 + k < W ? w0 + k : W;
    if (h0 < 0) h0 = 0;
    if (w0 < 0) w0 = 0;
    int best = h0 * W + w0;
    float bestv = -INFINITY;
    for (int ih = h0; ih < h1; ih++) {
        for (int iw = w0; iw < w1; iw++) {
            float v = xp[ih * W + iw];
            if (v > bestv || isnan(v)) {
                bestv = v;
                best = ih * W + iw;
            }
        }
    }
    return best;
}
__global__ void k_maxpool_fwd(const float *x, float *y, size_t NC, int H, int W, int P, int Q, int k,
                              int stride, int pad) {
    const size_t total = NC * P * Q;
    GRID_LOOP(i, total) {
        int q = (int)(i % Q), p = (int)((i / Q) % P);
        size_t nc = i / ((size_t)P * Q);
        const float *xp = x + nc * H * W;
        y[i] = xp[pool_argmax(xp, H, W, p, q, k, stride, pad)];
    }
}
// Backward as a gather: each input element sums, in window order (p, then q), the gradients of
// the windows whose maximum it is: the CPU's sum order, no atomics, deterministic.
__global__ void k_maxpool_bwd(const float *x, const float *dy, float *dx, size_t NC, int H, int W,
                              int P, int Q, int k, int stride, int pad) {
    const size_t total = NC * H * W;
    GRID_LOOP(i, total) {
        int iw = (int)(i % W), ih = (int)((i / W) % H);
        size_t nc = i / ((size_t)H * W);
        const float *xp = x + nc * H * W;
        float g = 0.f;
        // windows p with p stride - pad <= ih <= p stride - pad + k - 1
        int lo = ih + pad - k + 1, p0 = lo <= 0 ? 0 : (lo + stride - 1) / stride;
        int p1 = (ih + pad) / stride;
        if (p1 > P - 1) p1 = P - 1;
        int lq = iw + pad - k + 1, q0 = lq <= 0 ? 0 : (lq + stride - 1) / stride;
        int q1 = (iw + pad) / stride;
        if (q1 > Q - 1) q1 = Q - 1;
        for (int p = p0; p <= p1; p++)
            for (int q = q0; q <= q1; q++)
                if (pool_argmax(xp, H, W, p, q, k, stride, pad) == ih * W + iw)
                    g += dy[(nc * P + p) * Q + q];
        dx[i] = g;
    }
}

// Adaptive average pool to 1x1 and its gradient, with the CPU's float64 arithmetic.
__global__ void k_avgpool_fwd(const float *x, float *y, size_t NC, int HW) {
    GRID_LOOP(i, NC) {
        const float *xp = x + i * HW;
        double s = 0.0;
        for (int j = 0; j < HW; j++) s += xp[j];
        y[i] = (float)(s / (double)HW);
    }
}
__global__ void k_avgpool_bwd(const float *dy, float *dx, size_t total, int HW) {
    GRID_LOOP(i, total) dx[i] = (float)(dy[i / HW] / (double)HW);
}

// ----------------------------------------------------------------------------
// linear-layer helpers: y += b (per column), db = column sums of dy (float64 sums)

__global__ void k_add_bias(float *y, const float *b, size_t total, int M) {
    GRID_LOOP(i, total) y[i] += b[i % M];
}
__global__ void k_col_sum(const float *dy, float *db, int N, int M) {
    GRID_LOOP(j, (size_t)M) {
        double s = 0.0;
        for (int i = 0; i < N; i++) s += dy[(size_t)i * M + j];
        db[j] = (float)s;
    }
}

// fp16 linear layer (autocast): the bias cast to fp16 and broadcast into the output, which the
// product then accumulates into (beta 1, as PyTorch's addmm); casts; fp16 column sums.
__global__ void k_bias_to_half(const float *b, __half *y, size_t total, int M) {
    GRID_LOOP(i, total) y[i] = __float2half_rn(b[i % M]);
}
__global__ void k_half_to_float(const __half *x, float *y, size_t n) {
    GRID_LOOP(i, n) y[i] = __half2float(x[i]);
}
__global__ void k_float_to_half(const float *x, __half *y, size_t n) {
    GRID_LOOP(i, n) y[i] = __float2half_rn(x[i]);
}
__global__ void k_col_sum_half(const __half *dy, float *db, int N, int M) {
    GRID_LOOP(j, (size_t)M) {
        double s = 0.0;
        for (int i = 0; i < N; i++) s += (double)__half2float(dy[(size_t)i * M + j]);
        db[j] = __half2float(__float2half_rn((float)s));
    }
}

// ----------------------------------------------------------------------------
// batch norm: parameter gradients by our own reduction (used where cuDNN would need a dx we do
// not want, and for the eval-mode backward, which cuDNN lacks). One block of 256 threads per
// channel c, float64 sums as backend_cpu.c. With the channel's mean m and inverse std r (saved
// batch statistics in training mode; running statistics, r = 1 / sqrt(var + eps), in eval mode):
//   dbias = sum dy, dweight = sum dy (x - m) r;  eval mode: dx = dy * (float)(gamma r).
#define BN_THREADS 256
__global__ void k_bn_bwd_params(const float *x, const float *dy, const float *gamma,
                                const float *mean, const float *stat, int stat_is_var, float eps,
                                float *dx, float *dweight, float *dbias, int N, int C, int HW) {
    const int c = blockIdx.x;
    const double m = mean[c];
    const double r = stat_is_var ? 1.0 / sqrt((double)stat[c] + (double)eps) : (double)stat[c];
    const float scale = (float)((double)gamma[c] * r);
    double s_dy = 0.0, s_dyx = 0.0;
    const size_t count = (size_t)N * HW;
    for (size_t idx = threadIdx.x; idx < count; idx += BN_THREADS) {
        size_t n = idx / HW, s = idx % HW;
        size_t off = (n * C + c) * HW + s;
        float g = dy[off];
        s_dy += g;
        s_dyx += g * ((x[off] - m) * r);
        if (dx) dx[off] = g * scale;
    }
    __shared__ double sh_a[BN_THREADS], sh_b[BN_THREADS];
    sh_a[threadIdx.x] = s_dy;
    sh_b[threadIdx.x] = s_dyx;
    __syncthreads();
    for (int st = BN_THREADS / 2; st > 0; st >>= 1) {
        if ((int)threadIdx.x < st) {
            sh_a[threadIdx.x] += sh_a[threadIdx.x + st];
            sh_b[threadIdx.x] += sh_b[threadIdx.x + st];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        if (dbias) dbias[c] = (float)sh_a[0];
        if (dweight) dweight[c] = (float)sh_b[0];
    }
}

// ----------------------------------------------------------------------------
// softmax cross-entropy, one block per row, float64 as backend_cpu.c:
// loss_i = logsumexp(z_i) - z_i[label], dz = (float)(scale * (softmax(z_i) - onehot)).
#define CE_THREADS 128
__global__ void k_cross_entropy(const float *z, const int *labels, double *row_loss, float *dz,
                                float scale, int M) {
    const int row = blockIdx.x;
    const float *zr = z + (size_t)row * M;
    __shared__ double sh[CE_THREADS];
    double mx = -INFINITY;
    for (int j = threadIdx.x; j < M; j += CE_THREADS)
        if (zr[j] > mx) mx = zr[j];
    sh[threadIdx.x] = mx;
    __syncthreads();
    for (int st = CE_THREADS / 2; st > 0; st >>= 1) {
        if ((int)threadIdx.x < st && sh[threadIdx.x + st] > sh[threadIdx.x])
            sh[threadIdx.x] = sh[threadIdx.x + st];
        __syncthreads();
    }
    mx = sh[0];
    __syncthreads();
    double se = 0.0;
    for (int j = threadIdx.x; j < M; j += CE_THREADS) se += exp((double)zr[j] - mx);
    sh[threadIdx.x] = se;
    __syncthreads();
    for (int st = CE_THREADS / 2; st > 0; st >>= 1) {
        if ((int)threadIdx.x < st) sh[threadIdx.x] += sh[threadIdx.x + st];
        __syncthreads();
    }
    const double lse = mx + log(sh[0]);
    const int label = labels[row];
    if (threadIdx.x == 0) row_loss[row] = lse - (double)zr[label];
    if (dz)
        for (int j = threadIdx.x; j < M; j += CE_THREADS)
            dz[(size_t)row * M + j] =
                (float)((double)scale * (exp((double)zr[j] - lse) - (j == label ? 1.0 : 0.0)));
}

// ----------------------------------------------------------------------------
// torch.optim.Adam, single-tensor path, with the scalars PyTorch computes in double
// (adam.h's adam_scalars). Explicitly rounded operations (no fused multiply-add contraction), in
// backend_cpu.c's order, so the update is bit-identical to the CPU's:
//   m = b1 m + (1-b1) g;  v = b2 v + ((1-b2) g) g;  p = p + (-step_size m) / (sqrt(v) / bc2 + eps)
__global__ void k_adam(float *p, const float *g, float *m, float *v, size_t n, float b1, float b2,
                       float omb1, float omb2, float eps, float neg_step_size, float bc2_sqrt,
                       float inv_scale) {
    GRID_LOOP(i, n) {
        float gi = __fmul_rn(g[i], inv_scale);
        float mi = __fadd_rn(__fmul_rn(m[i], b1), __fmul_rn(omb1, gi));
        float vi = __fadd_rn(__fmul_rn(v[i], b2), __fmul_rn(__fmul_rn(omb2, gi), gi));
        m[i] = mi;
        v[i] = vi;
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
        p[i] = __fadd_rn(p[i], __fdiv_rn(__fmul_rn(neg_step_size, mi), denom));
    }
}

#define LAUNCH(kernel, n, ...)                                                                    \
    do {                                                                                          \
        size_t n_ = (n);                                                                          \
        if (n_) {                                                                                 \
            kernel<<<blocks_for(n_, 256), 256, 0, ctx_of(be)->stream>>>(__VA_ARGS__);            \
            KERNEL_CHECK();                                                                       \
        }                                                                                         \
    } while (0)

// ----------------------------------------------------------------------------
// tensors

static Tensor *tensor_new(Backend *be, int n, int c, int h, int w) {
    if (n <= 0 || c <= 0 || h <= 0 || w <= 0)
        die("backend_cuda: tensor_new: bad shape (%d, %d, %d, %d)", n, c, h, w);
    size_t numel = (size_t)n, bytes;
    if (size_mul(numel, (size_t)c, &numel) || size_mul(numel, (size_t)h, &numel) ||
        size_mul(numel, (size_t)w, &numel) || size_mul(numel, sizeof(float), &bytes))
        die("backend_cuda: tensor_new: shape (%d, %d, %d, %d) overflows", n, c, h, w);
    Tensor *t = (Tensor *)xcalloc(1, sizeof(Tensor));
    t->n = n, t->c = c, t->h = h, t->w = w;
    t->numel = numel;
    t->cap_n = n;
    t->be = be;
    t->priv = xcalloc(1, sizeof(CuTensor));
    cut(t)->version = 1;
    cudaError_t e = cudaMalloc(&t->data, bytes);
    if (e != cudaSuccess)
        backend_fail("backend_cuda: out of GPU memory allocating a (%d, %d, %d, %d) tensor "
                     "(%.1f MiB): %s; use a smaller --batch", n, c, h, w, bytes / 1048576.0,
                     cudaGetErrorString(e));
    CUDA_CHECK(cudaMemsetAsync(t->data, 0, bytes, ctx_of(be)->stream));
    return t;
}

static void tensor_free(Tensor *t) {
    if (!t) return;
    CUDA_CHECK(cudaStreamSynchronize(ctx_of(t->be)->stream));
    CUDA_CHECK(cudaFree(t->data));
    if (cut(t)->h16) CUDA_CHECK(cudaFree(cut(t)->h16));
    free(t->priv);
    free(t);
}

// src may be any host memory: from pageable memory cudaMemcpyAsync returns once src has been
// staged, so the caller may reuse it at once.
static void tensor_upload(Tensor *t, const float *src) {
    CUDA_CHECK(cudaMemcpyAsync(t->data, src, t->numel * sizeof(float), cudaMemcpyHostToDevice,
                               ctx_of(t->be)->stream));
    touch(t);
}

static void tensor_download(const Tensor *t, float *dst) {
    CUDA_CHECK(cudaMemcpyAsync(dst, t->data, t->numel * sizeof(float), cudaMemcpyDeviceToHost,
                               ctx_of(t->be)->stream));
    CUDA_CHECK(cudaStreamSynchronize(ctx_of(t->be)->stream));
}

static void tensor_fill(Tensor *t, float value) {
    Backend *be = t->be;
    if (value == 0.f && !signbit(value))
        CUDA_CHECK(cudaMemsetAsync(t->data, 0, t->numel * sizeof(float), ctx_of(be)->stream));
    else
        LAUNCH(k_fill, t->numel, F(t), value, t->numel);
    touch(t);
}

static void tensor_copy(Tensor *dst, const Tensor *src) {
    check_same_shape("tensor_copy", dst, src);
    if (dst != src)
        CUDA_CHECK(cudaMemcpyAsync(dst->data, src->data, src->numel * sizeof(float),
                                   cudaMemcpyDeviceToDevice, ctx_of(dst->be)->stream));
    touch(dst);
}

static int tensor_nonfinite(const Tensor *t) {
    Backend *be = t->be;
    CudaCtx *c = ctx_of(be);
    int h = 0;
    CUDA_CHECK(cudaMemsetAsync(c->flag, 0, sizeof(int), c->stream));
    LAUNCH(k_nonfinite, t->numel, F(t), t->numel, c->flag);
    CUDA_CHECK(cudaMemcpyAsync(&h, c->flag, sizeof(int), cudaMemcpyDeviceToHost, c->stream));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    return h;
}

// GradScaler's check over every gradient: one flag, all the kernels queued, one read back (one
// host synchronisation per step instead of one per parameter).
static int tensors_nonfinite(Backend *be, Tensor *const *ts, int count) {
    CudaCtx *c = ctx_of(be);
    int h = 0;
    CUDA_CHECK(cudaMemsetAsync(c->flag, 0, sizeof(int), c->stream));
    for (int i = 0; i < count; i++)
        if (ts[i]) LAUNCH(k_nonfinite, ts[i]->numel, F(ts[i]), ts[i]->numel, c->flag);
    CUDA_CHECK(cudaMemcpyAsync(&h, c->flag, sizeof(int), cudaMemcpyDeviceToHost, c->stream));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    return h;
}

// A view of the first n samples: same memory; the fp16 copy is remade (its layout follows n).
static void tensor_set_batch(Tensor *t, int n) {
    backend_set_batch_shape(t, n);
    touch(t);
}

// The fp16 NHWC (KRSC for a weight) copy of t, cached with t: remade only when t has been
// written since the copy was made.
static const __half *half_copy(Backend *be, const Tensor *t) {
    CudaCtx *c = ctx_of(be);
    CuTensor *p = cut(t);
    if (p->h16 && p->h16_version == p->version) return p->h16;
    p->h16 = (__half *)grow(c, p->h16, &p->h16_cap, t->numel * sizeof(__half));
    to_nhwc_half(c, t, p->h16);
    p->h16_version = p->version;
    return p->h16;
}

// ----------------------------------------------------------------------------
// convolution: plans (descriptors + algorithm) cached per shape, direction and math

static void conv_check(const Tensor *x, const Tensor *w, const Tensor *y, int stride, int pad) {
    if (stride < 1 || pad < 0 || x->h + 2 * pad < w->h || x->w + 2 * pad < w->w || w->c != x->c ||
        y->n != x->n || y->c != w->n || y->h != (x->h + 2 * pad - w->h) / stride + 1 ||
        y->w != (x->w + 2 * pad - w->w) / stride + 1)
        die("backend_cuda: conv2d: x (%d, %d, %d, %d), w (%d, %d, %d, %d), y (%d, %d, %d, %d) do "
            "not fit stride %d pad %d", x->n, x->c, x->h, x->w, w->n, w->c, w->h, w->w, y->n, y->c,
            y->h, y->w, stride, pad);
    check_cudnn_size("conv2d x", x);
    check_cudnn_size("conv2d y", y);
}

// The first algorithm of cuDNN's heuristic ranking that it can run here: status success,
// deterministic if asked, a workspace size cuDNN confirms for these descriptors, within the limit.
#define PICK_ALGO(PerfT, COUNT, GetFn, SizeFn, AlgoT, ...)                                        \
    do {                                                                                          \
        PerfT perf[COUNT];                                                                        \
        int found = 0;                                                                            \
        CUDNN_CHECK(GetFn(c->cudnn, __VA_ARGS__, COUNT, &found, perf));                           \
        for (int i = 0; i < found && pl->algo < 0; i++) {                                         \
            if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;                                 \
            if (c->deterministic && perf[i].determinism != CUDNN_DETERMINISTIC) continue;         \
            size_t ws = 0;                                                                        \
            if (SizeFn(c->cudnn, __VA_ARGS__, (AlgoT)perf[i].algo, &ws) != CUDNN_STATUS_SUCCESS)  \
                continue;                                                                         \
            if (ws > ws_limit) continue;                                                          \
            pl->algo = (int)perf[i].algo;                                                         \
            pl->workspace = ws;                                                                   \
        }                                                                                         \
    } while (0)

static ConvPlan *conv_plan(Backend *be, int dir, const Tensor *x, const Tensor *w, const Tensor *y,
                           int stride, int pad) {
    CudaCtx *c = ctx_of(be);
    const int half = be->precision == PREC_FP16;
    ConvKey key = {dir,  x->n, x->c,   x->h, x->w, w->n, w->h,
                   w->w, y->h, y->w,   stride, pad, half, c->deterministic};
    for (int i = 0; i < c->n_plans; i++)
        if (!memcmp(&c->plans[i].key, &key, sizeof key)) return &c->plans[i];
    if (c->n_plans == c->cap_plans) {
        c->cap_plans = c->cap_plans ? 2 * c->cap_plans : 64;
        c->plans = (ConvPlan *)xrealloc(c->plans, (size_t)c->cap_plans * sizeof(ConvPlan));
    }
    ConvPlan *pl = &c->plans[c->n_plans++];
    memset(pl, 0, sizeof *pl);
    pl->key = key;
    pl->algo = -1;
    const cudnnDataType_t dt = half ? CUDNN_DATA_HALF : CUDNN_DATA_FLOAT;
    const cudnnTensorFormat_t fmt = half ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&pl->x));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&pl->y));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&pl->w));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&pl->conv));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(pl->x, fmt, dt, x->n, x->c, x->h, x->w));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(pl->y, fmt, dt, y->n, y->c, y->h, y->w));
    // NHWC filter format = (K, R, S, C) memory order, what half_copy makes of a weight
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(pl->w, dt, fmt, w->n, w->c, w->h, w->w));
    // fp32 accumulation in both modes (fp16: PSEUDO_HALF, as autocast)
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(pl->conv, pad, pad, stride, stride, 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    // fp16: tensor cores; fp32: true fp32 arithmetic (FMA only, no TF32) so results match the CPU.
    CUDNN_CHECK(cudnnSetConvolutionMathType(pl->conv, half ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH));

    const size_t ws_limit = (size_t)2 << 30;
    if (dir == 0)
        PICK_ALGO(cudnnConvolutionFwdAlgoPerf_t, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                  cudnnGetConvolutionForwardAlgorithm_v7, cudnnGetConvolutionForwardWorkspaceSize,
                  cudnnConvolutionFwdAlgo_t, pl->x, pl->w, pl->conv, pl->y);
    else if (dir == 1)
        PICK_ALGO(cudnnConvolutionBwdDataAlgoPerf_t, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                  cudnnGetConvolutionBackwardDataAlgorithm_v7,
                  cudnnGetConvolutionBackwardDataWorkspaceSize, cudnnConvolutionBwdDataAlgo_t,
                  pl->w, pl->y, pl->conv, pl->x);
    else
        PICK_ALGO(cudnnConvolutionBwdFilterAlgoPerf_t, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                  cudnnGetConvolutionBackwardFilterAlgorithm_v7,
                  cudnnGetConvolutionBackwardFilterWorkspaceSize, cudnnConvolutionBwdFilterAlgo_t,
                  pl->x, pl->y, pl->conv, pl->w);
    if (pl->algo < 0)
        backend_fail("%s:%d: cuDNN offers no %s%s algorithm for conv x (%d, %d, %d, %d), "
                     "w (%d, %d, %d, %d) stride %d pad %d%s", __FILE__, __LINE__, c->deterministic ? "deterministic " : "",
            dir == 0 ? "forward" : dir == 1 ? "backward-data" : "backward-filter", x->n, x->c,
            x->h, x->w, w->n, w->c, w->h, w->w, stride, pad,
            c->deterministic ? " (unset PETS_DETERMINISTIC to allow any)" : "");
    return pl;
}
#undef PICK_ALGO

static void conv2d_forward(Backend *be, const Tensor *x, const Tensor *w, Tensor *y, int stride,
                           int pad) {
    CudaCtx *c = ctx_of(be);
    conv_check(x, w, y, stride, pad);
    ConvPlan *pl = conv_plan(be, 0, x, w, y, stride, pad);
    ensure_workspace(c, pl->workspace);
    const float one = 1.f, zero = 0.f;
    if (be->precision == PREC_FP16) {
        const __half *xh = half_copy(be, x), *wh = half_copy(be, w);
        c->half_out = (__half *)grow(c, c->half_out, &c->half_out_cap, y->numel * sizeof(__half));
        CUDNN_CHECK(cudnnConvolutionForward(c->cudnn, &one, pl->x, xh, pl->w, wh, pl->conv,
                                            (cudnnConvolutionFwdAlgo_t)pl->algo, c->workspace,
                                            pl->workspace, &zero, pl->y, c->half_out));
        from_nhwc_half(c, c->half_out, y);
    } else {
        CUDNN_CHECK(cudnnConvolutionForward(c->cudnn, &one, pl->x, x->data, pl->w, w->data, pl->conv,
                                            (cudnnConvolutionFwdAlgo_t)pl->algo, c->workspace,
                                            pl->workspace, &zero, pl->y, y->data));
    }
    touch(y);
}

static void conv2d_backward(Backend *be, const Tensor *x, const Tensor *w, const Tensor *dy,
                            Tensor *dx, Tensor *dw, int stride, int pad) {
    CudaCtx *c = ctx_of(be);
    conv_check(x, w, dy, stride, pad);
    if (dx) check_same_shape("conv2d_backward dx", dx, x);
    if (dw) check_same_shape("conv2d_backward dw", dw, w);
    if (!dx && !dw) return;
    const float one = 1.f, zero = 0.f;
    const int half = be->precision == PREC_FP16;
    const void *dyp = dy->data;
    if (half) {
        c->half_dy = (__half *)grow(c, c->half_dy, &c->half_dy_cap, dy->numel * sizeof(__half));
        to_nhwc_half(c, dy, c->half_dy);
        dyp = c->half_dy;
    }
    if (dx) {
        ConvPlan *pl = conv_plan(be, 1, x, w, dy, stride, pad);
        ensure_workspace(c, pl->workspace);
        if (half) {
            const __half *wh = half_copy(be, w);
            c->half_out = (__half *)grow(c, c->half_out, &c->half_out_cap, dx->numel * sizeof(__half));
            CUDNN_CHECK(cudnnConvolutionBackwardData(c->cudnn, &one, pl->w, wh, pl->y, dyp, pl->conv,
                                                     (cudnnConvolutionBwdDataAlgo_t)pl->algo,
                                                     c->workspace, pl->workspace, &zero, pl->x,
                                                     c->half_out));
            from_nhwc_half(c, c->half_out, dx);
        } else {
            CUDNN_CHECK(cudnnConvolutionBackwardData(c->cudnn, &one, pl->w, w->data, pl->y, dyp,
                                                     pl->conv, (cudnnConvolutionBwdDataAlgo_t)pl->algo,
                                                     c->workspace, pl->workspace, &zero, pl->x,
                                                     dx->data));
        }
        touch(dx);
    }
    if (dw) {
        ConvPlan *pl = conv_plan(be, 2, x, w, dy, stride, pad);
        ensure_workspace(c, pl->workspace);
        if (half) {
            const __half *xh = half_copy(be, x);
            c->half_out = (__half *)grow(c, c->half_out, &c->half_out_cap, dw->numel * sizeof(__half));
            CUDNN_CHECK(cudnnConvolutionBackwardFilter(c->cudnn, &one, pl->x, xh, pl->y, dyp, pl->conv,
                                                       (cudnnConvolutionBwdFilterAlgo_t)pl->algo,
                                                       c->workspace, pl->workspace, &zero, pl->w,
                                                       c->half_out));
            from_nhwc_half(c, c->half_out, dw);  // KRSC fp16 -> KCRS fp32
        } else {
            CUDNN_CHECK(cudnnConvolutionBackwardFilter(c->cudnn, &one, pl->x, x->data, pl->y, dyp,
                                                       pl->conv, (cudnnConvolutionBwdFilterAlgo_t)pl->algo,
                                                       c->workspace, pl->workspace, &zero, pl->w,
                                                       dw->data));
        }
        touch(dw);
    }
}

// ----------------------------------------------------------------------------
// batch norm (fp32 NCHW, cuDNN spatial mode). cuDNN's conventions are PyTorch's: the batch is
// normalised with the biased variance, the running variance is updated with the unbiased one,
// running = (1 - factor) running + factor batch with factor = momentum, and the "saved inverse
// variance" is 1 / sqrt(var + eps), our save_invstd.

static const BnDesc *bn_desc(CudaCtx *c, const Tensor *x) {
    for (int i = 0; i < c->n_bns; i++) {
        const BnDesc *d = &c->bns[i];
        if (d->n == x->n && d->c == x->c && d->h == x->h && d->w == x->w) return d;
    }
    check_cudnn_size("batchnorm x", x);
    if (c->n_bns == c->cap_bns) {
        c->cap_bns = c->cap_bns ? 2 * c->cap_bns : 32;
        c->bns = (BnDesc *)xrealloc(c->bns, (size_t)c->cap_bns * sizeof(BnDesc));
    }
    BnDesc *d = &c->bns[c->n_bns++];
    d->n = x->n, d->c = x->c, d->h = x->h, d->w = x->w;
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&d->x));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&d->p));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(d->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, x->n, x->c, x->h, x->w));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(d->p, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, x->c, 1, 1));
    return d;
}

static void bn_check(const Tensor *x, const BatchNorm *bn) {
    if (bn->weight->numel != (size_t)x->c || bn->bias->numel != (size_t)x->c ||
        bn->running_mean->numel != (size_t)x->c || bn->running_var->numel != (size_t)x->c)
        die("backend_cuda: batchnorm: parameters do not have %d channels", x->c);
}

static void batchnorm_forward(Backend *be, const Tensor *x, BatchNorm *bn, Tensor *y, int training) {
    CudaCtx *c = ctx_of(be);
    bn_check(x, bn);
    check_same_shape("batchnorm_forward", x, y);
    const float one = 1.f, zero = 0.f;
    const BnDesc *d = bn_desc(c, x);
    if (training) {
        if ((size_t)x->n * x->h * x->w < 2)
            die("backend_cuda: batchnorm in training mode needs more than 1 value per channel "
                "(got input (%d, %d, %d, %d))", x->n, x->c, x->h, x->w);
        if (!bn->save_mean || !bn->save_invstd || bn->save_mean->numel != (size_t)x->c ||
            bn->save_invstd->numel != (size_t)x->c)
            die("backend_cuda: batchnorm_forward(training) needs save_mean and save_invstd "
                "tensors of %d values", x->c);
        CUDNN_CHECK(cudnnBatchNormalizationForwardTraining(
            c->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, d->x, x->data, d->x, y->data, d->p,
            bn->weight->data, bn->bias->data, (double)bn->momentum, bn->running_mean->data,
            bn->running_var->data, (double)bn->eps, bn->save_mean->data, bn->save_invstd->data));
        bn->num_batches_tracked++;
        touch(bn->running_mean), touch(bn->running_var);
        touch(bn->save_mean), touch(bn->save_invstd);
    } else {
        CUDNN_CHECK(cudnnBatchNormalizationForwardInference(
            c->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, d->x, x->data, d->x, y->data, d->p,
            bn->weight->data, bn->bias->data, bn->running_mean->data, bn->running_var->data,
            (double)bn->eps));
    }
    touch(y);
}

static void batchnorm_backward(Backend *be, const Tensor *x, BatchNorm *bn, const Tensor *dy,
                               Tensor *dx, int training) {
    CudaCtx *c = ctx_of(be);
    bn_check(x, bn);
    check_same_shape("batchnorm_backward", x, dy);
    if (dx) check_same_shape("batchnorm_backward dx", x, dx);
    if (bn->dweight && bn->dweight->numel != (size_t)x->c) die("backend_cuda: batchnorm dweight is not (%d)", x->c);
    if (bn->dbias && bn->dbias->numel != (size_t)x->c) die("backend_cuda: batchnorm dbias is not (%d)", x->c);
    if (!dx && !bn->dweight && !bn->dbias) return;
    if (training && (!bn->save_mean || !bn->save_invstd))
        die("backend_cuda: batchnorm_backward(training) needs the save_mean and save_invstd of "
            "the forward");
    if (!training || !dx) {
        // eval mode (cuDNN has no backward for it), or training mode with only the parameter
        // gradients wanted (cuDNN would want a full-size dx): our reduction kernel.
        k_bn_bwd_params<<<x->c, BN_THREADS, 0, c->stream>>>(
            F(x), F(dy), F(bn->weight), training ? F(bn->save_mean) : F(bn->running_mean),
            training ? F(bn->save_invstd) : F(bn->running_var), !training, bn->eps,
            training ? NULL : (dx ? F(dx) : NULL), bn->dweight ? F(bn->dweight) : NULL,
            bn->dbias ? F(bn->dbias) : NULL, x->n, x->c, x->h * x->w);
        KERNEL_CHECK();
    } else {
        // cuDNN always writes dweight and dbias: point the ones not wanted at scratch memory.
        c->scratch = (float *)grow(c, c->scratch, &c->scratch_cap, 2 * (size_t)x->c * sizeof(float));
        float *dw = bn->dweight ? F(bn->dweight) : c->scratch;
        float *db = bn->dbias ? F(bn->dbias) : c->scratch + x->c;
        const float one = 1.f, zero = 0.f;
        const BnDesc *d = bn_desc(c, x);
        CUDNN_CHECK(cudnnBatchNormalizationBackward(
            c->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, &one, &zero, d->x, x->data, d->x,
            dy->data, d->x, dx->data, d->p, bn->weight->data, dw, db, (double)bn->eps,
            bn->save_mean->data, bn->save_invstd->data));
    }
    if (dx) touch(dx);
    if (bn->dweight) touch(bn->dweight);
    if (bn->dbias) touch(bn->dbias);
}

// ----------------------------------------------------------------------------
// activations, pooling, residual add

static void relu_forward(Backend *be, const Tensor *x, Tensor *y) {
    check_same_shape("relu_forward", x, y);
    LAUNCH(k_relu, x->numel, F(x), F(y), x->numel);
    touch(y);
}
static void relu_backward(Backend *be, const Tensor *y, const Tensor *dy, Tensor *dx) {
    check_same_shape("relu_backward", y, dy);
    check_same_shape("relu_backward", y, dx);
    LAUNCH(k_relu_bwd, y->numel, F(y), F(dy), F(dx), y->numel);
    touch(dx);
}
static void add_relu_forward(Backend *be, const Tensor *a, const Tensor *b, Tensor *y) {
    check_same_shape("add_relu_forward", a, b);
    check_same_shape("add_relu_forward", a, y);
    LAUNCH(k_add_relu, a->numel, F(a), F(b), F(y), a->numel);
    touch(y);
}
static void add_forward(Backend *be, const Tensor *a, const Tensor *b, Tensor *y) {
    check_same_shape("add_forward", a, b);
    check_same_shape("add_forward", a, y);
    LAUNCH(k_add, a->numel, F(a), F(b), F(y), a->numel);
    touch(y);
}

static void maxpool_check(const Tensor *x, const Tensor *y, int k, int stride, int pad) {
    if (k < 1 || stride < 1 || pad < 0 || pad * 2 > k || x->h + 2 * pad < k || x->w + 2 * pad < k ||
        y->n != x->n || y->c != x->c || y->h != (x->h + 2 * pad - k) / stride + 1 ||
        y->w != (x->w + 2 * pad - k) / stride + 1)
        die("backend_cuda: maxpool: x (%d, %d, %d, %d) and y (%d, %d, %d, %d) do not fit k %d "
            "stride %d pad %d", x->n, x->c, x->h, x->w, y->n, y->c, y->h, y->w, k, stride, pad);
}
static void maxpool_forward(Backend *be, const Tensor *x, Tensor *y, int k, int stride, int pad) {
    maxpool_check(x, y, k, stride, pad);
    LAUNCH(k_maxpool_fwd, y->numel, F(x), F(y), (size_t)x->n * x->c, x->h, x->w, y->h, y->w, k,
           stride, pad);
    touch(y);
}
static void maxpool_backward(Backend *be, const Tensor *x, const Tensor *dy, Tensor *dx, int k,
                             int stride, int pad) {
    maxpool_check(x, dy, k, stride, pad);
    check_same_shape("maxpool_backward dx", x, dx);
    LAUNCH(k_maxpool_bwd, x->numel, F(x), F(dy), F(dx), (size_t)x->n * x->c, x->h, x->w, dy->h,
           dy->w, k, stride, pad);
    touch(dx);
}
static void avgpool_forward(Backend *be, const Tensor *x, Tensor *y) {
    if (y->n != x->n || y->c != x->c || y->h != 1 || y->w != 1)
        die("backend_cuda: avgpool_forward: y must be (%d, %d, 1, 1)", x->n, x->c);
    LAUNCH(k_avgpool_fwd, (size_t)x->n * x->c, F(x), F(y), (size_t)x->n * x->c, x->h * x->w);
    touch(y);
}
static void avgpool_backward(Backend *be, const Tensor *dy, Tensor *dx) {
    if (dy->n != dx->n || dy->c != dx->c || dy->h != 1 || dy->w != 1)
        die("backend_cuda: avgpool_backward: dy must be (%d, %d, 1, 1)", dx->n, dx->c);
    LAUNCH(k_avgpool_bwd, dx->numel, F(dy), F(dx), dx->numel, dx->h * dx->w);
    touch(dx);
}

// ----------------------------------------------------------------------------
// linear layer (cuBLAS), loss, optimizer
//
// fp32: cublasSgemm, true fp32 (no TF32). fp16: as autocast runs nn.Linear: x, w and the bias cast
// to fp16, cublasGemmEx with fp16 inputs and outputs and fp32 accumulation (CUBLAS_COMPUTE_32F);
// the gradients the same way from dy cast to fp16, each rounded to fp16 (so a loss scale too
// large for fp16 gives inf there, and GradScaler skips the step as PyTorch's does), then stored
// as fp32 (the master weights' gradients).
//
// cuBLAS is column-major: a row-major (R, C) matrix is a column-major (C, R) one, its transpose.
//   y (N, M) = x (N, K) w^T      <=>  y^T (M, N) = w (M, K) x^T (K, N)
//   dx (N, K) = dy (N, M) w      <=>  dx^T (K, N) = w^T (K, M) dy^T (M, N)
//   dw (M, K) = dy^T (M, N) x    <=>  dw^T (K, M) = x^T (K, N) dy (N, M)

static void linear_shapes(const char *op, const Tensor *x, const Tensor *w, const Tensor *out,
                          int *N, int *K, int *M) {
    *N = x->n, *M = w->n;
    const size_t k = x->numel / (size_t)x->n;
    if (k > (size_t)INT_MAX || w->numel != (size_t)*M * k || out->n != *N ||
        out->numel != (size_t)*N * *M)
        die("backend_cuda: %s: x (%d, %zu), w (%d, %zu), out (%d, %zu) do not fit", op, x->n, k,
            w->n, w->numel / (size_t)w->n, out->n, out->numel / (size_t)out->n);
    *K = (int)k;
}

static void linear_forward(Backend *be, const Tensor *x, const Tensor *w, const Tensor *b, Tensor *y) {
    CudaCtx *c = ctx_of(be);
    int N, K, M;
    linear_shapes("linear_forward", x, w, y, &N, &K, &M);
    if (b && b->numel != (size_t)M) die("backend_cuda: linear_forward: bias has %zu values, not %d", b->numel, M);
    const float one = 1.f, zero = 0.f;
    if (be->precision == PREC_FP16) {
        // (N, K, 1, 1) and (M, K, 1, 1): their NHWC fp16 copies are the row-major matrices
        const __half *xh = half_copy(be, x), *wh = half_copy(be, w);
        c->half_out = (__half *)grow(c, c->half_out, &c->half_out_cap, y->numel * sizeof(__half));
        if (b) LAUNCH(k_bias_to_half, y->numel, F(b), c->half_out, y->numel, M);
        const float beta = b ? 1.f : 0.f;
        CUBLAS_CHECK(cublasGemmEx(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, M, N, K, &one, wh, CUDA_R_16F,
                                  K, xh, CUDA_R_16F, K, &beta, c->half_out, CUDA_R_16F, M,
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        LAUNCH(k_half_to_float, y->numel, c->half_out, F(y), y->numel);
    } else {
        CUBLAS_CHECK(cublasSgemm(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, M, N, K, &one, F(w), K, F(x),
                                 K, &zero, F(y), M));
        if (b) LAUNCH(k_add_bias, (size_t)N * M, F(y), F(b), (size_t)N * M, M);
    }
    touch(y);
}

// out = A B (column-major, cuBLAS's view) from fp16 operands with fp32 accumulation, rounded to
// fp16, then stored as out's fp32 values.
static void gemm_half_to(Backend *be, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                         int k, const __half *A, int lda, const __half *B, int ldb, Tensor *out) {
    CudaCtx *c = ctx_of(be);
    const float one = 1.f, zero = 0.f;
    c->half_out = (__half *)grow(c, c->half_out, &c->half_out_cap, out->numel * sizeof(__half));
    CUBLAS_CHECK(cublasGemmEx(c->cublas, ta, tb, m, n, k, &one, A, CUDA_R_16F, lda, B, CUDA_R_16F,
                              ldb, &zero, c->half_out, CUDA_R_16F, m, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
    LAUNCH(k_half_to_float, out->numel, c->half_out, F(out), out->numel);
    touch(out);
}

// The fp16 backward (see above): dx = dy w, dw = dy^T x, db = column sums of dy, all from fp16
// operands, each result rounded to fp16.
static void linear_backward_half(Backend *be, const Tensor *x, const Tensor *w, const Tensor *dy,
                                 Tensor *dx, Tensor *dw, Tensor *db, int N, int K, int M) {
    CudaCtx *c = ctx_of(be);
    c->half_dy = (__half *)grow(c, c->half_dy, &c->half_dy_cap, dy->numel * sizeof(__half));
    LAUNCH(k_float_to_half, dy->numel, F(dy), c->half_dy, dy->numel);
    if (dx) // dx^T (K, N) = w^T (K, M) dy^T (M, N)
        gemm_half_to(be, CUBLAS_OP_N, CUBLAS_OP_N, K, N, M, half_copy(be, w), K, c->half_dy, M, dx);
    if (dw) // dw^T (K, M) = x^T (K, N) dy (N, M)
        gemm_half_to(be, CUBLAS_OP_N, CUBLAS_OP_T, K, M, N, half_copy(be, x), K, c->half_dy, M, dw);
    if (db) {
        LAUNCH(k_col_sum_half, (size_t)M, c->half_dy, F(db), N, M);
        touch(db);
    }
}

static void linear_backward(Backend *be, const Tensor *x, const Tensor *w, const Tensor *dy,
                            Tensor *dx, Tensor *dw, Tensor *db) {
    CudaCtx *c = ctx_of(be);
    int N, K, M;
    linear_shapes("linear_backward", x, w, dy, &N, &K, &M);
    if (dx && dx->numel != x->numel) die("backend_cuda: linear_backward: dx does not match x");
    if (dw && dw->numel != w->numel) die("backend_cuda: linear_backward: dw does not match w");
    if (db && db->numel != (size_t)M) die("backend_cuda: linear_backward: db is not (%d)", M);
    if (be->precision == PREC_FP16) {
        linear_backward_half(be, x, w, dy, dx, dw, db, N, K, M);
        return;
    }
    const float one = 1.f, zero = 0.f;
    if (dx) {
        CUBLAS_CHECK(cublasSgemm(c->cublas, CUBLAS_OP_N, CUBLAS_OP_N, K, N, M, &one, F(w), K, F(dy),
                                 M, &zero, F(dx), K));
        touch(dx);
    }
    if (dw) {
        CUBLAS_CHECK(cublasSgemm(c->cublas, CUBLAS_OP_N, CUBLAS_OP_T, K, M, N, &one, F(x), K, F(dy),
                                 M, &zero, F(dw), K));
        touch(dw);
    }
    if (db) {
        LAUNCH(k_col_sum, (size_t)M, F(dy), F(db), N, M);
        touch(db);
    }
}

static double cross_entropy_forward_backward(Backend *be, const Tensor *logits, const int *labels,
                                             Tensor *dlogits, float grad_scale) {
    CudaCtx *c = ctx_of(be);
    const int N = logits->n;
    const size_t m = logits->numel / (size_t)N;
    if (m > (size_t)INT_MAX) die("backend_cuda: cross_entropy: %zu classes are too many", m);
    const int M = (int)m;
    if (dlogits) check_same_shape("cross_entropy dlogits", logits, dlogits);
    for (int i = 0; i < N; i++)
        if (labels[i] < 0 || labels[i] >= M)
            die("backend_cuda: cross_entropy: label %d of sample %d is outside [0, %d)", labels[i],
                i, M);
    c->labels = (int *)grow(c, c->labels, &c->labels_cap, (size_t)N * sizeof(int));
    c->row_loss = (double *)grow(c, c->row_loss, &c->row_loss_cap, (size_t)N * sizeof(double));
    CUDA_CHECK(cudaMemcpyAsync(c->labels, labels, (size_t)N * sizeof(int), cudaMemcpyHostToDevice,
                               c->stream));
    k_cross_entropy<<<N, CE_THREADS, 0, c->stream>>>(F(logits), c->labels, c->row_loss,
                                                     dlogits ? F(dlogits) : NULL, grad_scale, M);
    KERNEL_CHECK();
    double *host = (double *)xmalloc((size_t)N * sizeof(double));
    CUDA_CHECK(cudaMemcpyAsync(host, c->row_loss, (size_t)N * sizeof(double), cudaMemcpyDeviceToHost,
                               c->stream));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    double sum = 0.0;
    for (int i = 0; i < N; i++) sum += host[i];
    free(host);
    if (dlogits) touch(dlogits);
    return sum;
}

static void adam_update(Backend *be, Tensor *param, const Tensor *grad, Tensor *m, Tensor *v,
                        float lr, float beta1, float beta2, float eps, long step,
                        float inv_grad_scale) {
    check_same_shape("adam_update grad", param, grad);
    check_same_shape("adam_update m", param, m);
    check_same_shape("adam_update v", param, v);
    const AdamScalars a = adam_scalars(lr, beta1, beta2, step);
    LAUNCH(k_adam, param->numel, F(param), F(grad), F(m), F(v), param->numel, beta1, beta2,
           a.one_minus_b1, a.one_minus_b2, eps, -a.step_size, a.bc2_sqrt, inv_grad_scale);
    touch(param), touch(m), touch(v);  // param: its cached fp16 copy is stale now
}

// ----------------------------------------------------------------------------
// lifetime

static void synchronize(Backend *be) { CUDA_CHECK(cudaStreamSynchronize(ctx_of(be)->stream)); }

// Frees what a (possibly half-built) context holds. Errors are ignored: this also runs on the
// failure paths of backend_cuda_create.
static void ctx_free(CudaCtx *c) {
    if (c->stream) cudaStreamSynchronize(c->stream);
    for (int i = 0; i < c->n_plans; i++) {
        cudnnDestroyTensorDescriptor(c->plans[i].x);
        cudnnDestroyTensorDescriptor(c->plans[i].y);
        cudnnDestroyFilterDescriptor(c->plans[i].w);
        cudnnDestroyConvolutionDescriptor(c->plans[i].conv);
    }
    free(c->plans);
    for (int i = 0; i < c->n_bns; i++) {
        cudnnDestroyTensorDescriptor(c->bns[i].x);
        cudnnDestroyTensorDescriptor(c->bns[i].p);
    }
    free(c->bns);
    void *bufs[] = {c->workspace, c->labels, c->row_loss, c->flag, c->scratch, c->half_dy, c->half_out};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) cudaFree(bufs[i]);
    if (c->cublas) cublasDestroy(c->cublas);
    if (c->cudnn) cudnnDestroy(c->cudnn);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

static void destroy(Backend *be) {
    ctx_free(ctx_of(be));
    free(be);
}

// Why cudaGetDeviceCount failed, in words a user can act on.
static void no_gpu_reason(cudaError_t e, char *buf, size_t len) {
    int drv = 0;
    cudaDriverGetVersion(&drv);
    cudaGetLastError();
    if (e == cudaSuccess)
        snprintf(buf, len, "the NVIDIA driver sees no GPU (check nvidia-smi and CUDA_VISIBLE_DEVICES)");
    else if (drv == 0)
        snprintf(buf, len, "no NVIDIA driver on this machine (libcuda.so.1 not found; "
                 "cudaGetDeviceCount: %s)", cudaGetErrorString(e));
    else if (drv < CUDART_VERSION)
        snprintf(buf, len, "the NVIDIA driver supports CUDA %d.%d, this build needs %d.%d: update "
                 "the driver", drv / 1000, drv % 1000 / 10, CUDART_VERSION / 1000,
                 CUDART_VERSION % 1000 / 10);
    else
        snprintf(buf, len, "cudaGetDeviceCount: %s", cudaGetErrorString(e));
}

extern "C" int backend_cuda_device_available(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    cudaGetLastError(); // clear the "no device" error
    return e == cudaSuccess && n >= 1;
}

extern "C" Backend *backend_cuda_device_create(Precision precision, char *err, size_t errlen) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n < 1) {
        char why[256];
        no_gpu_reason(e, why, sizeof why);
        set_err(err, errlen, "--device cuda: no usable CUDA GPU: %s; use --device cpu or auto", why);
        return NULL;
    }
    cudaDeviceProp prop;
    if ((e = cudaSetDevice(0)) != cudaSuccess || (e = cudaGetDeviceProperties(&prop, 0)) != cudaSuccess) {
        set_err(err, errlen, "--device cuda: the GPU cannot be opened: %s", cudaGetErrorString(e));
        cudaGetLastError();
        return NULL;
    }
    if (precision == PREC_FP16 && prop.major < 7) {
        set_err(err, errlen, "--precision fp16 needs tensor cores (compute capability 7.0+); %s is "
                "%d.%d: use --precision fp32", prop.name, prop.major, prop.minor);
        return NULL;
    }
    Backend *be = (Backend *)xcalloc(1, sizeof(Backend));
    CudaCtx *c = (CudaCtx *)xcalloc(1, sizeof(CudaCtx));
    be->priv = c;
    const char *det = getenv("PETS_DETERMINISTIC");
    c->deterministic = det && det[0] == '1';
#define SOFT(cond, ...)                                                                           \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            set_err(err, errlen, __VA_ARGS__);                                                    \
            cudaGetLastError();                                                                   \
            ctx_free(c);                                                                          \
            free(be);                                                                             \
            return NULL;                                                                          \
        }                                                                                         \
    } while (0)
    SOFT((e = cudaStreamCreate(&c->stream)) == cudaSuccess, "--device cuda: cudaStreamCreate: %s",
         cudaGetErrorString(e));
    SOFT((e = cudaMalloc(&c->flag, sizeof(int))) == cudaSuccess, "--device cuda: cudaMalloc: %s",
         cudaGetErrorString(e));
    // One tiny kernel: a build without code for this GPU fails here, with advice, not later.
    k_fill<<<1, 32, 0, c->stream>>>((float *)c->flag, 0.f, 1);
    e = cudaGetLastError();
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    SOFT(e == cudaSuccess, "--device cuda: cannot run kernels on %s (compute capability %d.%d): %s%s",
         prop.name, prop.major, prop.minor, cudaGetErrorString(e),
         e == cudaErrorNoKernelImageForDevice || e == cudaErrorInvalidPtx
             ? "; rebuild with -DCMAKE_CUDA_ARCHITECTURES=<this GPU's, e.g. 90 for an H100>" : "");
    cudnnStatus_t s = cudnnCreate(&c->cudnn);
    SOFT(s == CUDNN_STATUS_SUCCESS, "--device cuda: cuDNN could not start (%s); is libcudnn %d "
         "installed and on the library path?", cudnnGetErrorString(s), CUDNN_MAJOR);
    SOFT(cudnnGetVersion() / 10000 == CUDNN_MAJOR, "--device cuda: libcudnn is version %zu, this "
         "build needs major version %d", cudnnGetVersion(), CUDNN_MAJOR);
    SOFT((s = cudnnSetStream(c->cudnn, c->stream)) == CUDNN_STATUS_SUCCESS, "--device cuda: "
         "cudnnSetStream: %s", cudnnGetErrorString(s));
    cublasStatus_t bs = cublasCreate(&c->cublas);
    SOFT(bs == CUBLAS_STATUS_SUCCESS, "--device cuda: cuBLAS could not start (%s)",
         cublasGetStatusString(bs));
    SOFT((bs = cublasSetStream(c->cublas, c->stream)) == CUBLAS_STATUS_SUCCESS,
         "--device cuda: cublasSetStream: %s", cublasGetStatusString(bs));
    // fp32 products without reduced-precision (TF32) shortcuts: the fc layer matches the CPU.
    SOFT((bs = cublasSetMathMode(c->cublas, CUBLAS_DEFAULT_MATH)) == CUBLAS_STATUS_SUCCESS,
         "--device cuda: cublasSetMathMode: %s", cublasGetStatusString(bs));
#undef SOFT

    be->name = "cuda";
    be->device = DEVICE_CUDA;
    be->precision = precision;
    const size_t v = cudnnGetVersion();
    char desc[512];
    snprintf(desc, sizeof desc, "CUDA: %.60s (sm_%d%d), cuDNN %zu.%zu.%zu, %s%s", prop.name,
             prop.major, prop.minor, v / 10000, v % 10000 / 100, v % 100,
             precision == PREC_FP16 ? "fp16 mixed precision" : "fp32",
             c->deterministic ? ", deterministic" : "");
    snprintf(be->description, sizeof be->description, "%.127s", desc);
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
    return be;
}
