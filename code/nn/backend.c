// backend.c: choosing the compute backend at run time (--device cpu | cuda | auto).
// The CPU backend is always built. The cuDNN backend is compiled in when CMake found CUDA and
// cuDNN (code/nn/cuda.cmake defines PETS_HAVE_CUDA and adds backend_cuda.cu, which provides
// backend_cuda_create and backend_cuda_available); otherwise both are stubs here that say so.
#include <stdio.h>
#include <string.h>

#include "nn/backend.h"
#include "core/common.h"

#ifndef PETS_HAVE_CUDA
int backend_cuda_available(void) { return 0; }

Backend *backend_cuda_create(Precision precision, char *err, size_t errlen) {
    (void)precision;
    set_err(err, errlen, "this build has no CUDA backend (CUDA and cuDNN were not found when it was "
                         "configured; see cmake's \"cuDNN backend\" line)");
    return NULL;
}
#endif

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
