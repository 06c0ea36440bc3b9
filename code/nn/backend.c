// backend.c: choosing the compute backend at run time (--device cpu | cuda | auto).
// The CPU backend is always built. The cuDNN backend is compiled in when CMake found CUDA and
// cuDNN (code/nn/cuda.cmake defines PETS_HAVE_CUDA and adds backend_cuda.cu, which provides
// backend_cuda_device_create and backend_cuda_device_available); otherwise both are stubs here
// that say so. With PETS_CUDA_STANDIN=1 (tests) "the GPU" is the CPU stand-in of
// backend_standin.c instead. Also the helpers every backend shares: tensor_set_batch's shape
// bookkeeping and backend_fail, the failure path that the GPU self-check can trap.
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "core/common.h"
#ifdef PETS_HAVE_CPU_FAST
#include "nn/cpu_conv_dnnl.h"
#endif

// ----------------------------------------------------------------------------
// helpers for backends

void backend_set_batch_shape(Tensor *t, int n) {
    if (n < 1 || n > t->cap_n)
        die("%s: tensor_set_batch: %d samples, but the tensor (%d, %d, %d, %d) holds %d", t->be->name,
            n, t->n, t->c, t->h, t->w, t->cap_n);
    t->n = n;
    t->numel = (size_t)n * (size_t)t->c * (size_t)t->h * (size_t)t->w;
}

static _Thread_local jmp_buf *g_trap;
static _Thread_local char *g_trap_msg;
static _Thread_local size_t g_trap_len;

void backend_trap(jmp_buf *jb, char *msg, size_t len) {
    g_trap = jb;
    g_trap_msg = msg;
    g_trap_len = len;
}

void backend_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (g_trap) {
        jmp_buf *jb = g_trap;
        g_trap = NULL; // one jump per arming
        vsnprintf(g_trap_msg, g_trap_len, fmt, ap);
        va_end(ap);
        longjmp(*jb, 1);
    }
    char buf[1024];
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    die("%s", buf);
}

// ----------------------------------------------------------------------------
// the GPU: the device, or its stand-in

#ifndef PETS_HAVE_CUDA
int backend_cuda_device_available(void) { return 0; }

Backend *backend_cuda_device_create(Precision precision, char *err, size_t errlen) {
    (void)precision;
    set_err(err, errlen, "this build has no CUDA backend (CUDA and cuDNN were not found when it was "
                         "configured; see cmake's \"cuDNN backend\" line)");
    return NULL;
}
#endif

int backend_cuda_available(void) {
    return backend_standin_enabled() || backend_cuda_device_available();
}

Backend *backend_cuda_create(Precision precision, char *err, size_t errlen) {
    if (backend_standin_enabled()) return backend_standin_create(precision, err, errlen);
    return backend_cuda_device_create(precision, err, errlen);
}

// ----------------------------------------------------------------------------
// --device

static Backend *open_cpu(Precision precision, int quiet, char *err, size_t errlen) {
    if (precision != PREC_FP32 && !quiet)
        warn("fp16 mixed precision is a GPU feature; the CPU computes in fp32");
    return backend_cpu_create(PREC_FP32, err, errlen);
}

static Backend *open_device(const char *device, Precision precision, int quiet, char *err,
                            size_t errlen) {
    Backend *be = NULL;
    char sub[256] = "";
    if (strcmp(device, "cpu") == 0) {
        be = open_cpu(precision, quiet, sub, sizeof(sub));
        if (!be) set_err(err, errlen, "--device cpu: %s", sub);
    } else if (strcmp(device, "cuda") == 0) {
        be = backend_cuda_create(precision, sub, sizeof(sub));
        if (!be) {
            const char *prefix = strncmp(sub, "--device cuda", 13) == 0 ? "" : "--device cuda: ";
            set_err(err, errlen, "%s%s", prefix, sub);
        }
    } else if (strcmp(device, "auto") == 0) {
        if (backend_cuda_available()) {
            be = backend_cuda_create(precision, sub, sizeof(sub));
            if (!be && !quiet) warn("--device auto: the GPU is not usable (%s); using the CPU", sub);
        }
        if (!be) {
            be = open_cpu(precision, quiet, sub, sizeof(sub));
            if (!be) set_err(err, errlen, "--device auto: %s", sub);
        }
    } else {
        set_err(err, errlen, "unknown --device '%s' (use cpu, cuda or auto)", device);
        return NULL;
    }
    return be;
}

Backend *backend_open(const char *device, Precision precision, int quiet, char *err, size_t errlen) {
    if (!device) device = "auto";
    Backend *be = open_device(device, precision, quiet, err, errlen);
    if (be && !quiet) fprintf(stderr, "device: %s\n", be->description);
    return be;
}

// oneDNN's CPU ISA name and whether it has native bf16.
static const char *cpu_isa(int *bf16) {
#ifdef PETS_HAVE_CPU_FAST
    return cpu_conv_isa(bf16);
#else
    *bf16 = 0;
    return "unknown (built without oneDNN)";
#endif
}

Backend *backend_open_precision(const char *device, const char *precision, int quiet, char *err,
                                size_t errlen) {
    if (!device) device = "auto";
    if (!precision) precision = "auto";
    const int gpu = strcmp(device, "cuda") == 0 || (strcmp(device, "auto") == 0 && backend_cuda_available());
    int bf16 = 0;
    const char *isa = cpu_isa(&bf16);
    Precision p = PREC_FP32;
    const char *note = "";
    if (strcmp(precision, "fp32") == 0) {
        p = PREC_FP32;
    } else if (strcmp(precision, "fp16") == 0) {
        p = PREC_FP16;
    } else if (strcmp(precision, "auto") == 0) {
        p = gpu ? PREC_FP16 : PREC_FP32;
        if (!gpu && bf16) note = " (bf16 capable, not yet implemented)";
    } else if (strcmp(precision, "bf16") == 0) {
        if (gpu)
            set_err(err, errlen, "--precision bf16: the CUDA backend's mixed precision is fp16 "
                                 "(--precision fp16 or auto); bf16 is for CPUs with native bf16");
        else if (!bf16)
            set_err(err, errlen, "--precision bf16: this CPU has no native bf16 (oneDNN ISA: %s), "
                                 "and bf16 is not emulated; use --precision fp32 or auto", isa);
        else
            set_err(err, errlen, "--precision bf16: not implemented yet (this CPU has native bf16: "
                                 "oneDNN ISA %s); use --precision fp32 or auto", isa);
        return NULL;
    } else {
        set_err(err, errlen, "unknown --precision '%s' (use auto, fp32, fp16 or bf16)", precision);
        return NULL;
    }
    Backend *be = open_device(device, p, quiet, err, errlen);
    if (!be) return NULL;
    PrecisionInfo *pi = &be->prec_info;
    snprintf(pi->requested, sizeof pi->requested, "%s", precision);
    if (be->precision == PREC_FP16)
        snprintf(pi->choice, sizeof pi->choice, "float16 mixed precision (autocast)");
    else
        snprintf(pi->choice, sizeof pi->choice, "float32%s", be->device == DEVICE_CPU ? note : "");
    if (!quiet)
        fprintf(stderr, "device: %s; precision %s (--precision %s)\n", be->description, pi->choice,
                pi->requested);
    return be;
}

void backend_close(Backend *be) {
    if (be) be->destroy(be);
}
