// cpu_conv_dnnl.h: 2-d convolutions (forward, backward data, backward weights) on plain NCHW
// float32 buffers, computed by oneDNN's blocked-layout (nChw16c) kernels. The fast CPU backend
// (backend_cpu_fast.c) uses it for conv2d_forward / conv2d_backward.
//
// Tensors stay NCHW at the boundary: each call reorders its inputs into the layouts oneDNN's
// fastest kernels want, runs the primitive, and reorders the result back (a few percent of the
// conv time; see tests/test_cpu_fast.c --bench). Primitive creation is expensive (JIT code
// generation), so primitives and reorders are cached per shape (N, C, H, W, K, R, S, stride, pad).
#ifndef CPU_CONV_DNNL_H
#define CPU_CONV_DNNL_H

#include <stddef.h>

typedef struct CpuConv CpuConv;

typedef struct {
    int n, c, h, w;   // input x (N, C, H, W)
    int k, r, s;      // weight (K, C, R, S)
    int p, q;         // output y (N, K, P, Q)
    int stride, pad;  // same in both spatial dimensions
} ConvShape;

// A convolution cache whose oneDNN kernels run on `threads` OpenMP threads (set for the duration
// of each call below; the caller's OpenMP default is left as it was). Caches share nothing.
CpuConv *cpu_conv_create(int threads);
void cpu_conv_free(CpuConv *cc);

// y = conv(x, w). x (N, C, H, W), w (K, C, R, S), y (N, K, P, Q), all NCHW float32.
void cpu_conv_forward(CpuConv *cc, const ConvShape *sh, const float *x, const float *w, float *y);
// dx = conv_transpose(dy, w) and dw = correlation(x, dy); either output may be NULL (skipped).
void cpu_conv_backward(CpuConv *cc, const ConvShape *sh, const float *x, const float *w,
                       const float *dy, float *dx, float *dw);

// -- fused inference (eval mode) -------------------------------------------------------------
// Activations of the fused path may live in oneDNN's blocked layout nChw<B>c (B = 16 where the
// effective ISA has AVX-512, else 8): channel blocks of B interleaved per pixel. Same size as
// NCHW when C is a multiple of B (the only case used).
int cpu_conv_block(const CpuConv *cc);

// y = act(conv(x, w) + bias [+ y]): a forward_inference convolution with bias and the post-ops
// sum (dst += what y held: the residual, already in y in y's layout) when sum, relu when relu.
// x_blocked / y_blocked: whether x / y are in the blocked layout (else NCHW). bias (K). w (K, C,
// R, S): in the blocked weight layout (cpu_conv_relayout with weights = 1) when
// cpu_conv_fused_weights_blocked says so for these arguments, else OIHW (reordered per call).
int cpu_conv_fused_weights_blocked(CpuConv *cc, const ConvShape *sh, int x_blocked,
                                   int y_blocked, int sum, int relu);
void cpu_conv_fused_forward(CpuConv *cc, const ConvShape *sh, const float *x, int x_blocked,
                            const float *w, const float *bias, float *y, int y_blocked, int sum,
                            int relu);
// Reorders a (N, C, H, W) activation (weights = 0) between NCHW and the blocked layout, or a
// (K, C, R, S) weight (weights = 1) between OIHW and the blocked weight layout, in place
// (to_blocked = 1: NCHW/OIHW -> blocked), or from src into a different buffer dst when dst != src.
void cpu_conv_relayout(CpuConv *cc, int n, int c, int h, int w, const float *src, float *dst,
                       int to_blocked, int weights);

// The version of the oneDNN library this program runs on, from dnnl_version() at run time:
// "3.7.2" (built against the same major version: 2.x and 3.x differ in soname).
const char *cpu_conv_onednn_version(void);

// oneDNN's effective CPU ISA (dnnl_get_effective_cpu_isa) as a name ("avx2", "avx512_core_amx",
// ...), and whether it computes bf16 natively (avx512_core_bf16 or AMX).
const char *cpu_conv_isa(int *native_bf16);

// Name of the oneDNN implementation used for a shape ("jit:avx512_core", ...), for benchmarks.
const char *cpu_conv_impl(CpuConv *cc, const ConvShape *sh, int which); // 0 fwd, 1 bwd_d, 2 bwd_w

#endif // CPU_CONV_DNNL_H
