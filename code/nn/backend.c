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
#include "nn/backend_standin.h"
#include "core/common.h"

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

Backend *backend_open(const char *device, Precision precision, int quiet, char *err, size_t errlen) {
    if (!device) device = "auto";
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
    if (be && !quiet) fprintf(stderr, "device: %s\n", be->description);
    return be;
}

void backend_close(Backend *be) {
    if (be) be->destroy(be);
}
