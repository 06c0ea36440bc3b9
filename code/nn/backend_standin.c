// backend_standin.c: the CPU stand-in for the GPU backend (backend_standin.h): the CPU backend's
// table with the entries where backend_cuda.cu differs replaced, in the way cpu_fast_install
// replaces kernels. Tests only; never chosen unless PETS_CUDA_STANDIN=1.
#include "nn/backend_standin.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

typedef struct {
    Backend cpu;               // the CPU backend's table as it was built (the kernels we wrap)
    BackendStandinStats stats;
    int fault_relu, fault_error;
} Standin;

static Standin *st(Backend *be) { return (Standin *)be->wrapper; }

int backend_standin_enabled(void) {
    const char *e = getenv("PETS_CUDA_STANDIN");
    return e && strcmp(e, "1") == 0;
}

BackendStandinStats *backend_standin_stats(Backend *be) {
    return be && be->name && strcmp(be->name, "cuda-standin") == 0 ? &st(be)->stats : NULL;
}

// ----------------------------------------------------------------------------
// fp16 rounding (IEEE binary16: 1 sign, 5 exponent, 10 fraction bits)

float round_to_half(float x) {
    if (isnan(x) || isinf(x)) return x;
    float a = fabsf(x);
    if (a >= 65520.0f) return copysignf(INFINITY, x); // rounds past the largest half, 65504
    // the spacing of halves near a: 2^(e - 10) for normal halves (e >= -14), 2^-24 below
    int e;
    frexpf(a, &e); // a = m 2^e, m in [0.5, 1): the leading bit is 2^(e-1)
    int lsb = (e - 1 >= -14 ? e - 1 : -14) - 10;
    float q = ldexpf(a, -lsb);   // exact: a scaled so that the half's last bit is 1
    float r = nearbyintf(q);     // round to nearest even (the default rounding mode)
    return copysignf(ldexpf(r, lsb), x);
}

static void round_tensor(Tensor *t) {
    float *p = (float *)t->data;
    for (size_t i = 0; i < t->numel; i++) p[i] = round_to_half(p[i]);
}

// An fp16-rounded copy of t (a CPU tensor of the stand-in), freed with tmp_free.
static Tensor *half_copy(Backend *be, const Tensor *t) {
    Tensor *h = st(be)->cpu.tensor_new(be, t->n, t->c, t->h, t->w);
    memcpy(h->data, t->data, t->numel * sizeof(float));
    round_tensor(h);
    return h;
}
static void tmp_free(Backend *be, Tensor *t) {
    if (t) st(be)->cpu.tensor_free(t);
}

// ----------------------------------------------------------------------------
// counted entries

static Tensor *sd_tensor_new(Backend *be, int n, int c, int h, int w) {
    st(be)->stats.allocs++;
    return st(be)->cpu.tensor_new(be, n, c, h, w);
}
static void sd_tensor_download(const Tensor *t, float *dst) {
    st(t->be)->stats.syncs++;
    st(t->be)->cpu.tensor_download(t, dst);
}
static int sd_tensor_nonfinite(const Tensor *t) {
    st(t->be)->stats.syncs++;
    return st(t->be)->cpu.tensor_nonfinite(t);
}
// As backend_cuda.cu: every tensor checked, one read back.
static int sd_tensors_nonfinite(Backend *be, Tensor *const *ts, int count) {
    st(be)->stats.syncs++;
    int bad = 0;
    for (int i = 0; i < count; i++)
        if (ts[i] && st(be)->cpu.tensor_nonfinite(ts[i])) bad = 1;
    return bad;
}
static double sd_cross_entropy(Backend *be, const Tensor *logits, const int *labels,
                               Tensor *dlogits, float grad_scale) {
    st(be)->stats.syncs++;
    return st(be)->cpu.cross_entropy_forward_backward(be, logits, labels, dlogits, grad_scale);
}
static void sd_synchronize(Backend *be) { st(be)->stats.syncs++; }

// ----------------------------------------------------------------------------
// fp16 layers: operands rounded to fp16, the CPU's fp32 product, result rounded to fp16

static void sd_conv2d_forward(Backend *be, const Tensor *x, const Tensor *w, Tensor *y, int stride,
                              int pad) {
    if (st(be)->fault_error)
        backend_fail("backend_standin: cudnnConvolutionForward failed: "
                     "CUDNN_STATUS_EXECUTION_FAILED (planted by PETS_STANDIN_FAULT=error)");
    if (be->precision != PREC_FP16) {
        st(be)->cpu.conv2d_forward(be, x, w, y, stride, pad);
        return;
    }
    Tensor *xh = half_copy(be, x), *wh = half_copy(be, w);
    st(be)->cpu.conv2d_forward(be, xh, wh, y, stride, pad);
    round_tensor(y);
    tmp_free(be, xh), tmp_free(be, wh);
}

static void sd_conv2d_backward(Backend *be, const Tensor *x, const Tensor *w, const Tensor *dy,
                               Tensor *dx, Tensor *dw, int stride, int pad) {
    if (be->precision != PREC_FP16) {
        st(be)->cpu.conv2d_backward(be, x, w, dy, dx, dw, stride, pad);
        return;
    }
    Tensor *xh = half_copy(be, x), *wh = half_copy(be, w), *dyh = half_copy(be, dy);
    st(be)->cpu.conv2d_backward(be, xh, wh, dyh, dx, dw, stride, pad);
    if (dx) round_tensor(dx);
    if (dw) round_tensor(dw);
    tmp_free(be, xh), tmp_free(be, wh), tmp_free(be, dyh);
}

static void sd_linear_forward(Backend *be, const Tensor *x, const Tensor *w, const Tensor *b,
                              Tensor *y) {
    if (be->precision != PREC_FP16) {
        st(be)->cpu.linear_forward(be, x, w, b, y);
        return;
    }
    Tensor *xh = half_copy(be, x), *wh = half_copy(be, w), *bh = b ? half_copy(be, b) : NULL;
    st(be)->cpu.linear_forward(be, xh, wh, bh, y);
    round_tensor(y);
    tmp_free(be, xh), tmp_free(be, wh), tmp_free(be, bh);
}

static void sd_linear_backward(Backend *be, const Tensor *x, const Tensor *w, const Tensor *dy,
                               Tensor *dx, Tensor *dw, Tensor *db) {
    if (be->precision != PREC_FP16) {
        st(be)->cpu.linear_backward(be, x, w, dy, dx, dw, db);
        return;
    }
    Tensor *xh = half_copy(be, x), *wh = half_copy(be, w), *dyh = half_copy(be, dy);
    st(be)->cpu.linear_backward(be, xh, wh, dyh, dx, dw, db);
    if (dx) round_tensor(dx);
    if (dw) round_tensor(dw);
    if (db) round_tensor(db);
    tmp_free(be, xh), tmp_free(be, wh), tmp_free(be, dyh);
}

// The planted wrong kernel: a ReLU that lets a quarter of each negative input through.
static void sd_relu_forward(Backend *be, const Tensor *x, Tensor *y) {
    if (!st(be)->fault_relu) {
        st(be)->cpu.relu_forward(be, x, y);
        return;
    }
    const float *xp = (const float *)x->data;
    float *yp = (float *)y->data;
    for (size_t i = 0; i < y->numel; i++) yp[i] = xp[i] < 0.f ? 0.25f * xp[i] : xp[i];
}

// ----------------------------------------------------------------------------
// lifetime

static void sd_destroy(Backend *be) {
    Standin *s = st(be);
    be->wrapper = NULL;
    void (*destroy)(Backend *) = s->cpu.destroy;
    free(s);
    destroy(be);
}

Backend *backend_standin_create(Precision precision, char *err, size_t errlen) {
    Backend *be = backend_cpu_create(PREC_FP32, err, errlen);
    if (!be) return NULL;
    Standin *s = xcalloc(1, sizeof(Standin));
    s->cpu = *be;
    const char *fault = getenv("PETS_STANDIN_FAULT");
    if (fault && *fault) {
        if (!strcmp(fault, "relu")) s->fault_relu = 1;
        else if (!strcmp(fault, "error")) s->fault_error = 1;
        else die("PETS_STANDIN_FAULT=%s: use relu or error", fault);
    }
    be->wrapper = s;
    be->name = "cuda-standin";
    be->device = DEVICE_CUDA;
    be->precision = precision;
    snprintf(be->description, sizeof be->description, "CUDA stand-in on the CPU (tests), %s%s",
             precision == PREC_FP16 ? "fp16 mixed precision" : "fp32",
             s->fault_relu ? ", planted fault: relu" : s->fault_error ? ", planted fault: error" : "");
    be->tensor_new = sd_tensor_new;
    be->tensor_download = sd_tensor_download;
    be->tensor_nonfinite = sd_tensor_nonfinite;
    be->tensors_nonfinite = sd_tensors_nonfinite;
    be->cross_entropy_forward_backward = sd_cross_entropy;
    be->synchronize = sd_synchronize;
    be->conv2d_forward = sd_conv2d_forward;
    be->conv2d_backward = sd_conv2d_backward;
    be->linear_forward = sd_linear_forward;
    be->linear_backward = sd_linear_backward;
    be->relu_forward = sd_relu_forward;
    // backend_cuda.cu has no fused eval op: resnet34.c takes the unfused path there, and so here
    be->conv_bias_act_forward = NULL;
    be->destroy = sd_destroy;
    return be;
}
