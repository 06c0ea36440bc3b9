// backend_cuda.cu: the cuDNN + CUDA runtime backend, implementing the layer table of backend.h
// on an NVIDIA GPU. The CPU backend (backend_cpu.c) is its specification: the same arguments,
// the same semantics, checked by tests/test_cuda_backend.c on random inputs.
//
// Storage: every tensor keeps an fp32 NCHW copy in GPU memory (master weights, optimizer state,
// batch-norm statistics, activations). With --precision fp16 the convolutions run the way
// PyTorch's autocast runs them: inputs and weights cast to fp16 (NHWC, the tensor cores' layout),
// fp32 accumulation, fp16 outputs cast back; batch norm, the loss and Adam stay in fp32. The fp16
// copy of a weight is cached and remade only when the weight changes (after an Adam step).
// Algorithms come from cuDNN's heuristics, cached per shape; one workspace grows only when needed;
// PETS_DETERMINISTIC=1 restricts the choice to deterministic algorithms. Every CUDA, cuDNN and
// cuBLAS call is checked, and a failure names the file and line.
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "backend.h"
#include "common.h"
#include "train.h"
}

// ----------------------------------------------------------------------------
// error checking

#define CUDA_CHECK(call) cuda_check((call), #call, __FILE__, __LINE__)
#define CUDNN_CHECK(call) cudnn_check((call), #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(call) cublas_check((call), #call, __FILE__, __LINE__)
#define KERNEL_CHECK() cuda_check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

static void cuda_check(cudaError_t e, const char *what, const char *file, int line) {
    if (e != cudaSuccess) die("%s:%d: %s failed: %s", file, line, what, cudaGetErrorString(e));
}
static void cudnn_check(cudnnStatus_t s, const char *what, const char *file, int line) {
    if (s != CUDNN_STATUS_SUCCESS) die("%s:%d: %s failed: %s", file, line, what, cudnnGetErrorString(s));
}
static void cublas_check(cublasStatus_t s, const char *what, const char *file, int line) {
    if (s != CUBLAS_STATUS_SUCCESS) die("%s:%d: %s failed: cuBLAS status %d", file, line, what, (int)s);
}

// ----------------------------------------------------------------------------
// backend state

typedef struct {
    int dir;                       // 0 forward, 1 backward data, 2 backward filter
    int n, c, h, w, k, r, s, stride, pad;
    int half;
} ConvKey;

typedef struct {
    ConvKey key;
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    int algo;                      // cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t
    size_t workspace;
} ConvPlan;

typedef struct {
    cudnnHandle_t cudnn;
    cublasHandle_t cublas;
    cudaStream_t stream;
    void *workspace;
    size_t workspace_size;
    ConvPlan *plans;
    int n_plans, cap_plans;
    int deterministic;
    int *labels;                   // device copy of the labels of a batch
    int labels_cap;
    float *row_loss;               // (N) per-row losses
    int row_loss_cap;
    int *flag;                     // device flag for tensor_nonfinite
    float *scratch;                // per-channel scratch for frozen batch-norm gradients
    size_t scratch_cap;
    __half *half_a, *half_b, *half_c; // fp16 staging buffers for convolutions
    size_t half_a_cap, half_b_cap, half_c_cap;
} CudaCtx;

typedef struct {
    __half *h16;           // fp16 KRSC copy of a weight (fp16 mode)
    size_t h16_cap;
    uint64_t version;      // bumped by every host-visible write (upload, fill, copy, Adam)
    uint64_t h16_version;  // version the fp16 copy was made from
} CuTensor;

static CudaCtx *ctx_of(Backend *be) { return (CudaCtx *)be->priv; }
static CuTensor *cut(const Tensor *t) { return (CuTensor *)t->priv; }
static float *F(const Tensor *t) { return (float *)t->data; }
static int blocks_for(size_t n, int threads) {
    size_t b = (n + (size_t)threads - 1) / (size_t)threads;
    return (int)(b > 65535u * 16u ? 65535u * 16u : b);
}

static void *grow(void *p, size_t *cap, size_t need) {
    if (need <= *cap) return p;
    if (p) CUDA_CHECK(cudaFree(p));
    void *q = NULL;
    CUDA_CHECK(cudaMalloc(&q, need));
    *cap = need;
    return q;
}

static void ensure_workspace(CudaCtx *c, size_t bytes) {
    if (bytes <= c->workspace_size) return;
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    c->workspace = grow(c->workspace, &c->workspace_size, bytes);
}

// ----------------------------------------------------------------------------
// element-wise kernels (grid-stride loops)

#define GRID_LOOP(i, n) for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

__global__ void k_fill(float *x, float v, size_t n) { GRID_LOOP(i, n) x[i] = v; }
__global__ void k_relu(const float *x, float *y, size_t n) { GRID_LOOP(i, n) y[i] = x[i] > 0.f ? x[i] : 0.f; }
__global__ void k_relu_bwd(const float *y, const float *dy, float *dx, size_t n) {
    GRID_LOOP(i, n) dx[i] = y[i] > 0.f ? dy[i] : 0.f;
}
__global__ void k_add_relu(const float *a, const float *b, float *y, size_t n) {
    GRID_LOOP(i, n) {
        float v = a[i] + b[i];
        y[i] = v > 0.f ? v : 0.f;
    }
}
__global__ void k_add(const float *a, const float *b, float *y, size_t n) {
    GRID_LOOP(i, n) y[i] = a[i] + b[i];
}
__global__ void k_nonfinite(const float *x, size_t n, int *flag) {
    GRID_LOOP(i, n) if (!isfinite(x[i])) *flag = 1;
}

// NCHW fp32 <-> NHWC fp16 (activations), and KCRS fp32 -> KRSC fp16 (weights: same transform).
__global__ void k_nchw_to_nhwc_half(const float *src, __half *dst, int n, int c, int hw) {
    size_t total = (size_t)n * c * hw;
    GRID_LOOP(i, total) {
        int ci = (int)(i % c);
        size_t p = i / c;
        int s = (int)(p % hw);
        int ni = (int)(p / hw);
        dst[i] = __float2half(src[((size_t)ni * c + ci) * hw + s]);
    }
}
__global__ void k_nhwc_half_to_nchw(const __half *src, float *dst, int n, int c, int hw) {
    size_t total = (size_t)n * c * hw;
    GRID_LOOP(i, total) {
        int s = (int)(i % hw);
        size_t p = i / hw;
        int ci = (int)(p % c);
        int ni = (int)(p / c);
        dst[i] = __half2float(src[((size_t)ni * hw + s) * c + ci]);
    }
}

// Max pool: forward takes the first maximum of each window in row-major order (PyTorch's rule);
// backward gathers, for each input element, the gradients of the windows whose first maximum
// it is, so the result does not depend on thread order.
__device__ int pool_argmax(const float *xp, int H, int W, int oh, int ow, int k, int stride, int pad) {
    int best = -1;
    float bv = 0.f;
    for (int i = 0; i < k; i++) {
        int ih = oh * stride - pad + i;
        if (ih < 0 || ih >= H) continue;
        for (int j = 0; j < k; j++) {
            int iw = ow * stride - pad + j;
            if (iw < 0 || iw >= W) continue;
            float v = xp[ih * W + iw];
            if (best < 0 || v > bv || isnan(v)) {
                bv = v;
                best = ih * W + iw;
                if (isnan(v)) return best;
            }
        }
    }
    return best;
}
__global__ void k_maxpool_fwd(const float *x, float *y, int NC, int H, int W, int P, int Q, int k,
                              int stride, int pad) {
    size_t total = (size_t)NC * P * Q;
    GRID_LOOP(i, total) {
        int q = (int)(i % Q), p = (int)((i / Q) % P);
        size_t nc = i / ((size_t)P * Q);
        const float *xp = x + nc * H * W;
        int a = pool_argmax(xp, H, W, p, q, k, stride, pad);
        y[i] = a >= 0 ? xp[a] : -INFINITY;
    }
}
__global__ void k_maxpool_bwd(const float *x, const float *dy, float *dx, int NC, int H, int W,
                              int P, int Q, int k, int stride, int pad) {
    size_t total = (size_t)NC * H * W;
    GRID_LOOP(i, total) {
        int iw = (int)(i % W), ih = (int)((i / W) % H);
        size_t nc = i / ((size_t)H * W);
        const float *xp = x + nc * H * W;
        float g = 0.f;
        // windows p with p*stride - pad <= ih <= p*stride - pad + k - 1
        int p0 = (ih + pad - k + 1 + stride - 1) / stride; if (ih + pad - k + 1 < 0) p0 = 0;
        int p1 = (ih + pad) / stride; if (p1 > P - 1) p1 = P - 1;
        int q0 = (iw + pad - k + 1 + stride - 1) / stride; if (iw + pad - k + 1 < 0) q0 = 0;
        int q1 = (iw + pad) / stride; if (q1 > Q - 1) q1 = Q - 1;
        for (int p = p0; p <= p1; p++)
            for (int q = q0; q <= q1; q++)
                if (pool_argmax(xp, H, W, p, q, k, stride, pad) == ih * W + iw)
                    g += dy[(nc * P + p) * Q + q];
        dx[i] = g;
    }
}

// Adaptive average pool to 1x1 and its gradient.
__global__ void k_avgpool_fwd(const float *x, float *y, int NC, int HW) {
    GRID_LOOP(i, (size_t)NC) {
        const float *xp = x + i * HW;
        float s = 0.f;
        for (int j = 0; j < HW; j++) s += xp[j];
        y[i] = s / (float)HW;
    }
}
__global__ void k_avgpool_bwd(const float *dy, float *dx, int NC, int HW) {
    size_t total = (size_t)NC * HW;
    GRID_LOOP(i, total) dx[i] = dy[i / HW] / (float)HW;
}

// Linear layer helpers: y += b (per column), db = column sums of dy.
__global__ void k_add_bias(float *y, const float *b, int N, int M) {
    size_t total = (size_t)N * M;
    GRID_LOOP(i, total) y[i] += b[i % M];
}
__global__ void k_col_sum(const float *dy, float *db, int N, int M) {
    GRID_LOOP(j, (size_t)M) {
        float s = 0.f;
        for (int i = 0; i < N; i++) s += dy[(size_t)i * M + j];
        db[j] = s;
    }
}

// Batch norm in eval mode, backward: dx = dy * w / sqrt(rv + eps); per-channel dweight and dbias.
// One block per channel.
__global__ void k_bn_eval_bwd(const float *x, const float *dy, const float *w, const float *rm,
                              const float *rv, float eps, float *dx, float *dw, float *db, int N,
                              int C, int HW) {
    int c = blockIdx.x;
    float inv = rsqrtf(rv[c] + eps);
    float scale = w[c] * inv;
    float s_dy = 0.f, s_dyx = 0.f;
    for (int idx = threadIdx.x; idx < N * HW; idx += blockDim.x) {
        int n = idx / HW, s = idx % HW;
        size_t off = ((size_t)n * C + c) * HW + s;
        float g = dy[off];
        if (dx) dx[off] = g * scale;
        s_dy += g;
        s_dyx += g * (x[off] - rm[c]) * inv;
    }
    __shared__ float sh_a[256], sh_b[256];
    sh_a[threadIdx.x] = s_dy;
    sh_b[threadIdx.x] = s_dyx;
    __syncthreads();
    for (int st = blockDim.x / 2; st > 0; st >>= 1) {
        if ((int)threadIdx.x < st) {
            sh_a[threadIdx.x] += sh_a[threadIdx.x + st];
            sh_b[threadIdx.x] += sh_b[threadIdx.x + st];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        if (db) db[c] = sh_a[0];
        if (dw) dw[c] = sh_b[0];
    }
}

// Softmax cross-entropy, one block (256 threads) per row: loss_i = logsumexp(z_i) - z_i[label],
// dz = scale * (softmax(z_i) - onehot).
__global__ void k_cross_entropy(const float *z, const int *labels, float *row_loss, float *dz,
                                float scale, int M) {
    int row = blockIdx.x;
    const float *zr = z + (size_t)row * M;
    __shared__ float sh[256];
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < M; j += blockDim.x) mx = fmaxf(mx, zr[j]);
    sh[threadIdx.x] = mx;
    __syncthreads();
    for (int st = blockDim.x / 2; st > 0; st >>= 1) {
        if ((int)threadIdx.x < st) sh[threadIdx.x] = fmaxf(sh[threadIdx.x], sh[threadIdx.x + st]);
        __syncthreads();
    }
    mx = sh[0];
    __syncthreads();
    float se = 0.f;
    for (int j = threadIdx.x; j < M; j += blockDim.x) se += expf(zr[j] - mx);
    sh[threadIdx.x] = se;
    __syncthreads();
    for (int st = blockDim.x / 2; st > 0; st >>= 1) {
        if ((int)threadIdx.x < st) sh[threadIdx.x] += sh[threadIdx.x + st];
        __syncthreads();
    }
    float lse = mx + logf(sh[0]);
    int label = labels[row];
    if (threadIdx.x == 0) row_loss[row] = lse - zr[label];
    if (dz)
        for (int j = threadIdx.x; j < M; j += blockDim.x)
            dz[(size_t)row * M + j] = scale * (expf(zr[j] - lse) - (j == label ? 1.f : 0.f));
}

// torch.optim.Adam, single-tensor path, with the scalars PyTorch computes in double
// (train.h's adam_scalars): 1 - beta, lr / (1 - b1^t), sqrt(1 - b2^t).
__global__ void k_adam(float *p, const float *g, float *m, float *v, size_t n, float b1, float b2,
                       float omb1, float omb2, float eps, float step_size, float bc2_sqrt,
                       float inv_scale) {
    GRID_LOOP(i, n) {
        float gi = g[i] * inv_scale;
        float mi = m[i] * b1 + omb1 * gi;
        float vi = v[i] * b2 + omb2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] -= step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
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
    Tensor *t = (Tensor *)xcalloc(1, sizeof(Tensor));
    t->n = n, t->c = c, t->h = h, t->w = w;
    t->numel = (size_t)n * c * h * w;
    t->be = be;
    t->priv = xcalloc(1, sizeof(CuTensor));
    cut(t)->version = 1;
    CUDA_CHECK(cudaMalloc(&t->data, t->numel * sizeof(float) + 1));
    CUDA_CHECK(cudaMemsetAsync(t->data, 0, t->numel * sizeof(float), ctx_of(be)->stream));
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

static void touch(const Tensor *t) { cut(t)->version++; }

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
    if (value == 0.f)
        CUDA_CHECK(cudaMemsetAsync(t->data, 0, t->numel * sizeof(float), ctx_of(be)->stream));
    else
        LAUNCH(k_fill, t->numel, F(t), value, t->numel);
    touch(t);
}

static void tensor_copy(Tensor *dst, const Tensor *src) {
    if (dst->numel != src->numel) die("cuda tensor_copy: %zu elements into %zu", src->numel, dst->numel);
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

// fp16 NHWC copy of an activation into a staging buffer.
static __half *to_half(Backend *be, const Tensor *t, __half **buf, size_t *cap) {
    *buf = (__half *)grow(*buf, cap, t->numel * sizeof(__half) + 2);
    LAUNCH(k_nchw_to_nhwc_half, t->numel, F(t), *buf, t->n, t->c, t->h * t->w);
    return *buf;
}

// fp16 KRSC copy of a weight, remade only when the weight has changed.
static __half *weight_half(Backend *be, const Tensor *w) {
    CuTensor *p = cut(w);
    if (p->h16 && p->h16_version == p->version) return p->h16;
    p->h16 = (__half *)grow(p->h16, &p->h16_cap, w->numel * sizeof(__half) + 2);
    LAUNCH(k_nchw_to_nhwc_half, w->numel, F(w), p->h16, w->n, w->c, w->h * w->w);
    p->h16_version = p->version;
    return p->h16;
}

// ----------------------------------------------------------------------------
// convolution: plans (descriptors + algorithm) cached per shape and direction

static ConvPlan *conv_plan(Backend *be, int dir, const Tensor *x, const Tensor *w, int P, int Q,
                           int stride, int pad) {
    CudaCtx *c = ctx_of(be);
    int half = be->precision == PREC_FP16;
    ConvKey key = {dir, x->n, x->c, x->h, x->w, w->n, w->h, w->w, stride, pad, half};
    for (int i = 0; i < c->n_plans; i++)
        if (!memcmp(&c->plans[i].key, &key, sizeof key)) return &c->plans[i];
    if (c->n_plans == c->cap_plans) {
        c->cap_plans = c->cap_plans ? 2 * c->cap_plans : 64;
        c->plans = (ConvPlan *)xrealloc(c->plans, (size_t)c->cap_plans * sizeof(ConvPlan));
    }
    ConvPlan *pl = &c->plans[c->n_plans++];
    memset(pl, 0, sizeof *pl);
    pl->key = key;
    cudnnDataType_t dt = half ? CUDNN_DATA_HALF : CUDNN_DATA_FLOAT;
    cudnnTensorFormat_t fmt = half ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&pl->x));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&pl->y));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&pl->w));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&pl->conv));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(pl->x, fmt, dt, x->n, x->c, x->h, x->w));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(pl->y, fmt, dt, x->n, w->n, P, Q));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(pl->w, dt, fmt, w->n, w->c, w->h, w->w));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(pl->conv, pad, pad, stride, stride, 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    // fp16: tensor cores; fp32: true fp32 arithmetic (no TF32) so results match the CPU.
    CUDNN_CHECK(cudnnSetConvolutionMathType(pl->conv, half ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH));

    const size_t ws_limit = (size_t)2 << 30;
    int found = 0;
#define PICK(PerfT, GetFn, ...)                                                                   \
    do {                                                                                          \
        PerfT perf[16];                                                                           \
        CUDNN_CHECK(GetFn(c->cudnn, __VA_ARGS__, 16, &found, perf));                              \
        pl->algo = -1;                                                                            \
        for (int i = 0; i < found; i++) {                                                         \
            if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].memory > ws_limit) continue;    \
            if (c->deterministic && perf[i].determinism != CUDNN_DETERMINISTIC) continue;         \
            pl->algo = (int)perf[i].algo;                                                         \
            pl->workspace = perf[i].memory;                                                       \
            break;                                                                                \
        }                                                                                         \
    } while (0)
    if (dir == 0)
        PICK(cudnnConvolutionFwdAlgoPerf_t, cudnnGetConvolutionForwardAlgorithm_v7, pl->x, pl->w,
             pl->conv, pl->y);
    else if (dir == 1)
        PICK(cudnnConvolutionBwdDataAlgoPerf_t, cudnnGetConvolutionBackwardDataAlgorithm_v7, pl->w,
             pl->y, pl->conv, pl->x);
    else
        PICK(cudnnConvolutionBwdFilterAlgoPerf_t, cudnnGetConvolutionBackwardFilterAlgorithm_v7,
             pl->x, pl->y, pl->conv, pl->w);
#undef PICK
    if (pl->algo < 0)
        die("%s:%d: cuDNN offers no %salgorithm for conv %s of x (%d, %d, %d, %d), w (%d, %d, %d, %d)",
            __FILE__, __LINE__, c->deterministic ? "deterministic " : "",
            dir == 0 ? "forward" : dir == 1 ? "backward-data" : "backward-filter", x->n, x->c, x->h,
            x->w, w->n, w->c, w->h, w->w);
    return pl;
}

static void conv2d_forward(Backend *be, const Tensor *x, const Tensor *w, Tensor *y, int stride,
                           int pad) {
    CudaCtx *c = ctx_of(be);
    ConvPlan *pl = conv_plan(be, 0, x, w, y->h, y->w, stride, pad);
    ensure_workspace(c, pl->workspace);
    const float one = 1.f, zero = 0.f;
    if (be->precision == PREC_FP16) {
        __half *xh = to_half(be, x, &c->half_a, &c->half_a_cap);
        __half *wh = weight_half(be, w);
        c->half_c = (__half *)grow(c->half_c, &c->half_c_cap, y->numel * sizeof(__half) + 2);
        CUDNN_CHECK(cudnnConvolutionForward(c->cudnn, &one, pl->x, xh, pl->w, wh, pl->conv,
                                            (cudnnConvolutionFwdAlgo_t)pl->algo, c->workspace,
                                            pl->workspace, &zero, pl->y, c->half_c));
        LAUNCH(k_nhwc_half_to_nchw, y->numel, c->half_c, F(y), y->n, y->c, y->h * y->w);
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
    const float one = 1.f, zero = 0.f;
    int half = be->precision == PREC_FP16;
    const void *dyp = dy->data;
    if (half) dyp = to_half(be, dy, &c->half_b, &c->half_b_cap);
    if (dx) {
        ConvPlan *pl = conv_plan(be, 1, x, w, dy->h, dy->w, stride, pad);
        ensure_workspace(c, pl->workspace);
        if (half) {
            c->half_c = (__half *)grow(c->half_c, &c->half_c_cap, dx->numel * sizeof(__half) + 2);
            CUDNN_CHECK(cudnnConvolutionBackwardData(c->cudnn, &one, pl->w, weight_half(be, w), pl->y,
                                                     dyp, pl->conv, (cudnnConvolutionBwdDataAlgo_t)pl->algo,
                                                     c->workspace, pl->workspace, &zero, pl->x, c->half_c));
            LAUNCH(k_nhwc_half_to_nchw, dx->numel, c->half_c, F(dx), dx->n, dx->c, dx->h * dx->w);
        } else {
            CUDNN_CHECK(cudnnConvolutionBackwardData(c->cudnn, &one, pl->w, w->data, pl->y, dyp,
                                                     pl->conv, (cudnnConvolutionBwdDataAlgo_t)pl->algo,
                                                     c->workspace, pl->workspace, &zero, pl->x, dx->data));
        }
        touch(dx);
    }
    if (dw) {
        ConvPlan *pl = conv_plan(be, 2, x, w, dy->h, dy->w, stride, pad);
        ensure_workspace(c, pl->workspace);
        if (half) {
            __half *xh = to_half(be, x, &c->half_a, &c->half_a_cap);
            c->half_c = (__half *)grow(c->half_c, &c->half_c_cap, dw->numel * sizeof(__half) + 2);
            CUDNN_CHECK(cudnnConvolutionBackwardFilter(c->cudnn, &one, pl->x, xh, pl->y, dyp, pl->conv,
                                                       (cudnnConvolutionBwdFilterAlgo_t)pl->algo,
                                                       c->workspace, pl->workspace, &zero, pl->w, c->half_c));
            LAUNCH(k_nhwc_half_to_nchw, dw->numel, c->half_c, F(dw), dw->n, dw->c, dw->h * dw->w);
        } else {
            CUDNN_CHECK(cudnnConvolutionBackwardFilter(c->cudnn, &one, pl->x, x->data, pl->y, dyp,
                                                       pl->conv, (cudnnConvolutionBwdFilterAlgo_t)pl->algo,
                                                       c->workspace, pl->workspace, &zero, pl->w, dw->data));
        }
        touch(dw);
    }
}

// ----------------------------------------------------------------------------
// batch norm (fp32, cuDNN spatial mode; eval-mode backward by our own kernel)

typedef struct {
    cudnnTensorDescriptor_t x, p;
} BnDesc;

static BnDesc bn_desc(const Tensor *x) {
    BnDesc d;
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&d.x));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&d.p));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(d.x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, x->n, x->c, x->h, x->w));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(d.p, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, x->c, 1, 1));
    return d;
}
static void bn_desc_free(BnDesc d) {
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(d.x));
    CUDNN_CHECK(cudnnDestroyTensorDescriptor(d.p));
}

static void batchnorm_forward(Backend *be, const Tensor *x, BatchNorm *bn, Tensor *y, int training) {
    CudaCtx *c = ctx_of(be);
    const float one = 1.f, zero = 0.f;
    BnDesc d = bn_desc(x);
    if (training) {
        // cuDNN updates the running variance with the unbiased batch variance, as PyTorch does.
        CUDNN_CHECK(cudnnBatchNormalizationForwardTraining(
            c->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, d.x, x->data, d.x, y->data, d.p,
            bn->weight->data, bn->bias->data, bn->momentum, bn->running_mean->data,
            bn->running_var->data, bn->eps, bn->save_mean->data, bn->save_invstd->data));
        bn->num_batches_tracked++;
        touch(bn->running_mean), touch(bn->running_var);
    } else {
        CUDNN_CHECK(cudnnBatchNormalizationForwardInference(
            c->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, d.x, x->data, d.x, y->data, d.p,
            bn->weight->data, bn->bias->data, bn->running_mean->data, bn->running_var->data, bn->eps));
    }
    bn_desc_free(d);
    touch(y);
}

static void batchnorm_backward(Backend *be, const Tensor *x, BatchNorm *bn, const Tensor *dy,
                               Tensor *dx, int training) {
    CudaCtx *c = ctx_of(be);
    if (!training) {
        k_bn_eval_bwd<<<x->c, 256, 0, c->stream>>>(
            F(x), F(dy), F(bn->weight), F(bn->running_mean), F(bn->running_var), bn->eps,
            dx ? F(dx) : NULL, bn->dweight ? F(bn->dweight) : NULL, bn->dbias ? F(bn->dbias) : NULL,
            x->n, x->c, x->h * x->w);
        KERNEL_CHECK();
    } else {
        // cuDNN always writes dx, dweight and dbias: point the ones not wanted at scratch memory.
        size_t need = (2 * (size_t)x->c + (dx ? 0 : x->numel)) * sizeof(float);
        c->scratch = (float *)grow(c->scratch, &c->scratch_cap, need);
        float *dw = bn->dweight ? F(bn->dweight) : c->scratch;
        float *db = bn->dbias ? F(bn->dbias) : c->scratch + x->c;
        float *dxp = dx ? F(dx) : c->scratch + 2 * x->c;
        const float one = 1.f, zero = 0.f;
        BnDesc d = bn_desc(x);
        CUDNN_CHECK(cudnnBatchNormalizationBackward(
            c->cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, &one, &zero, d.x, x->data, d.x, dy->data,
            d.x, dxp, d.p, bn->weight->data, dw, db, bn->eps, bn->save_mean->data,
            bn->save_invstd->data));
        bn_desc_free(d);
    }
    if (dx) touch(dx);
    if (bn->dweight) touch(bn->dweight);
    if (bn->dbias) touch(bn->dbias);
}

// ----------------------------------------------------------------------------
// activations, pooling, residual add

static void relu_forward(Backend *be, const Tensor *x, Tensor *y) {
    LAUNCH(k_relu, x->numel, F(x), F(y), x->numel);
    touch(y);
}
static void relu_backward(Backend *be, const Tensor *y, const Tensor *dy, Tensor *dx) {
    LAUNCH(k_relu_bwd, y->numel, F(y), F(dy), F(dx), y->numel);
    touch(dx);
}
static void add_relu_forward(Backend *be, const Tensor *a, const Tensor *b, Tensor *y) {
    LAUNCH(k_add_relu, a->numel, F(a), F(b), F(y), a->numel);
    touch(y);
}
static void add_forward(Backend *be, const Tensor *a, const Tensor *b, Tensor *y) {
    LAUNCH(k_add, a->numel, F(a), F(b), F(y), a->numel);
    touch(y);
}
static void maxpool_forward(Backend *be, const Tensor *x, Tensor *y, int k, int stride, int pad) {
    LAUNCH(k_maxpool_fwd, y->numel, F(x), F(y), x->n * x->c, x->h, x->w, y->h, y->w, k, stride, pad);
    touch(y);
}
static void maxpool_backward(Backend *be, const Tensor *x, const Tensor *dy, Tensor *dx, int k,
                             int stride, int pad) {
    LAUNCH(k_maxpool_bwd, x->numel, F(x), F(dy), F(dx), x->n * x->c, x->h, x->w, dy->h, dy->w, k,
           stride, pad);
    touch(dx);
}
static void avgpool_forward(Backend *be, const Tensor *x, Tensor *y) {
    LAUNCH(k_avgpool_fwd, (size_t)x->n * x->c, F(x), F(y), x->n * x->c, x->h * x->w);
    touch(y);
}
static void avgpool_backward(Backend *be, const Tensor *dy, Tensor *dx) {
    LAUNCH(k_avgpool_bwd, dx->numel, F(dy), F(dx), dx->n * dx->c, dx->h * dx->w);
    touch(dx);
}

// ----------------------------------------------------------------------------
// linear layer (cuBLAS, fp32), loss, optimizer

// Row-major y (N, M) = x (N, K) w^T (M, K) is column-major y^T = w x^T.
static void linear_forward(Backend *be, const Tensor *x, const Tensor *w, const Tensor *b, Tensor *y) {
    CudaCtx *c = ctx_of(be);
    int N = x->n, K = x->c * x->h * x->w, M = w->n;
    const float one = 1.f, zero = 0.f;
    CUBLAS_CHECK(cublasSgemm(c->cublas, CUBLAS_OP_T, CUBLAS_OP_N, M, N, K, &one, F(w), K, F(x), K,
                             &zero, F(y), M));
    if (b) LAUNCH(k_add_bias, (size_t)N * M, F(y), F(b), N, M);
    touch(y);
}

static void linear_backward(Backend *be, const Tensor *x, const Tensor *w, const Tensor *dy,
                            Tensor *dx, Tensor *dw, Tensor *db) {
    CudaCtx *c = ctx_of(be);
    int N = x->n, K = x->c * x->h * x->w, M = w->n;
    const float one = 1.f, zero = 0.f;
    if (dx) {  // dx (N, K) = dy (N, M) w (M, K)
        CUBLAS_CHECK(cublasSgemm(c->cublas, CUBLAS_OP_N, CUBLAS_OP_N, K, N, M, &one, F(w), K, F(dy),
                                 M, &zero, F(dx), K));
        touch(dx);
    }
    if (dw) {  // dw (M, K) = dy^T (M, N) x (N, K)
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
    int N = logits->n, M = logits->c * logits->h * logits->w;
    for (int i = 0; i < N; i++)
        if (labels[i] < 0 || labels[i] >= M) die("cross entropy: label %d of sample %d is outside 0..%d", labels[i], i, M - 1);
    if (N > c->labels_cap) {
        if (c->labels) CUDA_CHECK(cudaFree(c->labels));
        if (c->row_loss) CUDA_CHECK(cudaFree(c->row_loss));
        CUDA_CHECK(cudaMalloc(&c->labels, (size_t)N * sizeof(int)));
        CUDA_CHECK(cudaMalloc(&c->row_loss, (size_t)N * sizeof(float)));
        c->labels_cap = c->row_loss_cap = N;
    }
    CUDA_CHECK(cudaMemcpyAsync(c->labels, labels, (size_t)N * sizeof(int), cudaMemcpyHostToDevice, c->stream));
    k_cross_entropy<<<N, 256, 0, c->stream>>>(F(logits), c->labels, c->row_loss,
                                              dlogits ? F(dlogits) : NULL, grad_scale, M);
    KERNEL_CHECK();
    float *host = (float *)xmalloc((size_t)N * sizeof(float));
    CUDA_CHECK(cudaMemcpyAsync(host, c->row_loss, (size_t)N * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    double sum = 0;
    for (int i = 0; i < N; i++) sum += host[i];
    free(host);
    if (dlogits) touch(dlogits);
    return sum;
}

static void adam_update(Backend *be, Tensor *param, const Tensor *grad, Tensor *m, Tensor *v,
                        float lr, float beta1, float beta2, float eps, long step,
                        float inv_grad_scale) {
    AdamScalars a = adam_scalars(lr, beta1, beta2, step);
    LAUNCH(k_adam, param->numel, F(param), F(grad), F(m), F(v), param->numel, beta1, beta2,
           a.one_minus_b1, a.one_minus_b2, eps, a.step_size, a.bc2_sqrt, inv_grad_scale);
    touch(param), touch(m), touch(v);
}

// ----------------------------------------------------------------------------
// lifetime

static void synchronize(Backend *be) { CUDA_CHECK(cudaStreamSynchronize(ctx_of(be)->stream)); }

static void destroy(Backend *be) {
    CudaCtx *c = ctx_of(be);
    cudaStreamSynchronize(c->stream);
    for (int i = 0; i < c->n_plans; i++) {
        cudnnDestroyTensorDescriptor(c->plans[i].x);
        cudnnDestroyTensorDescriptor(c->plans[i].y);
        cudnnDestroyFilterDescriptor(c->plans[i].w);
        cudnnDestroyConvolutionDescriptor(c->plans[i].conv);
    }
    free(c->plans);
    void *bufs[] = {c->workspace, c->labels, c->row_loss, c->flag, c->scratch, c->half_a, c->half_b, c->half_c};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) cudaFree(bufs[i]);
    cublasDestroy(c->cublas);
    cudnnDestroy(c->cudnn);
    cudaStreamDestroy(c->stream);
    free(c);
    free(be);
}

extern "C" int backend_cuda_available(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
        cudaGetLastError(); // clear the sticky "no device" error
        return 0;
    }
    return 1;
}

extern "C" Backend *backend_cuda_create(Precision precision, char *err, size_t errlen) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n < 1) {
        set_err(err, errlen, "--device cuda: no usable CUDA GPU (cudaGetDeviceCount: %s); use --device cpu or auto",
                e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        cudaGetLastError();
        return NULL;
    }
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    CUDA_CHECK(cudaSetDevice(0));
    if (precision == PREC_FP16 && prop.major < 7) {
        set_err(err, errlen, "--precision fp16 needs tensor cores (compute capability 7.0+); %s is %d.%d: use --precision fp32",
                prop.name, prop.major, prop.minor);
        return NULL;
    }
    Backend *be = (Backend *)xcalloc(1, sizeof(Backend));
    CudaCtx *c = (CudaCtx *)xcalloc(1, sizeof(CudaCtx));
    be->priv = c;
    be->name = "cuda";
    be->device = DEVICE_CUDA;
    be->precision = precision;
    const char *det = getenv("PETS_DETERMINISTIC");
    c->deterministic = det && det[0] == '1';
    CUDA_CHECK(cudaStreamCreate(&c->stream));
    cudnnStatus_t s = cudnnCreate(&c->cudnn);
    if (s != CUDNN_STATUS_SUCCESS) {
        set_err(err, errlen, "--device cuda: cuDNN could not start (%s); is libcudnn 9 installed and on the library path?",
                cudnnGetErrorString(s));
        cudaStreamDestroy(c->stream);
        free(c);
        free(be);
        return NULL;
    }
    CUDNN_CHECK(cudnnSetStream(c->cudnn, c->stream));
    CUBLAS_CHECK(cublasCreate(&c->cublas));
    CUBLAS_CHECK(cublasSetStream(c->cublas, c->stream));
    CUDA_CHECK(cudaMalloc(&c->flag, sizeof(int)));
    snprintf(be->description, sizeof be->description, "CUDA: %.60s, cuDNN %zu, %s%s", prop.name,
             cudnnGetVersion(), precision == PREC_FP16 ? "fp16 mixed precision" : "fp32",
             c->deterministic ? ", deterministic" : "");

    be->tensor_new = tensor_new;
    be->tensor_free = tensor_free;
    be->tensor_upload = tensor_upload;
    be->tensor_download = tensor_download;
    be->tensor_fill = tensor_fill;
    be->tensor_copy = tensor_copy;
    be->tensor_nonfinite = tensor_nonfinite;
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
