// selfcheck.c: the GPU self-check (selfcheck.h): the loaded network on one fixed small input, on
// its own backend and on the CPU backend, logits compared.
#include "nn/selfcheck.h"

#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

enum { SC_N = 1, SC_H = 64, SC_W = 64 };

// A fixed input in the range of normalized images, the same on every run.
static void self_check_input(float *x, size_t n) {
    uint64_t s = 0x5e1fc4ec;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(s >> 40) / (double)(1ull << 24) * 4.0 - 2.0);
    }
}

// The CPU's logits for m's weights on x (into out, classes values).
static int cpu_logits(ResNet34 *m, const float *x, float *out, char *msg, size_t len) {
    char err[256];
    Backend *cpu = backend_cpu_create(PREC_FP32, err, sizeof err);
    if (!cpu) {
        snprintf(msg, len, "the CPU reference could not start: %s", err);
        return -1;
    }
    ResNet34 *ref = resnet34_create(cpu, resnet34_num_classes(m));
    size_t cap = 0;
    float *buf = NULL;
    for (int i = 0; i < resnet34_num_params(m); i++) {
        Tensor *src = resnet34_param(m, i)->value, *dst = resnet34_param(ref, i)->value;
        if (src->numel > cap) cap = src->numel, buf = xrealloc(buf, cap * sizeof(float));
        src->be->tensor_download(src, buf);
        cpu->tensor_upload(dst, buf);
    }
    free(buf);
    resnet34_forward(ref, x, SC_N, SC_H, SC_W, 0);
    resnet34_logits(ref, out);
    resnet34_free(ref);
    backend_close(cpu);
    return 0;
}

SelfCheck resnet34_self_check(ResNet34 *m, char *msg, size_t len) {
    const int k = resnet34_num_classes(m);
    const size_t nx = (size_t)SC_N * 3 * SC_H * SC_W;
    float *x = xmalloc(nx * sizeof(float));
    float *gpu = xcalloc((size_t)SC_N * k, sizeof(float)), *ref = xcalloc((size_t)SC_N * k, sizeof(float));
    self_check_input(x, nx);
    Backend *be = resnet34_param(m, 0)->value->be;
    char failure[512] = "";
    jmp_buf jb;
    SelfCheck result = SELF_CHECK_OK;
    if (setjmp(jb) == 0) {
        backend_trap(&jb, failure, sizeof failure);
        resnet34_forward(m, x, SC_N, SC_H, SC_W, 0);
        resnet34_logits(m, gpu);
        backend_trap(NULL, NULL, 0);
    } else { // a GPU call failed (backend_fail jumped here)
        backend_trap(NULL, NULL, 0);
        snprintf(msg, len, "running the network on %s failed: %s", be->description, failure);
        result = SELF_CHECK_ERROR;
    }
    if (result == SELF_CHECK_OK && cpu_logits(m, x, ref, msg, len) != 0) result = SELF_CHECK_ERROR;
    if (result == SELF_CHECK_OK) {
        // |gpu - cpu| <= atol * max(1, max |cpu|) + rtol |cpu|
        const int half = be->precision == PREC_FP16;
        // fp16: the logits themselves are fp16 (spacing 1/32 at 32..64), and every layer rounds
        const double atol = half ? 1e-2 : 1e-3, rtol = half ? 1e-2 : 1e-3;
        double amax = 1.0, worst = -1.0;
        for (int j = 0; j < SC_N * k; j++) amax = fmax(amax, fabs(ref[j]));
        int bad = 0, at = 0;
        for (int j = 0; j < SC_N * k; j++) {
            double d = fabs((double)gpu[j] - ref[j]);
            if (isnan(d)) d = INFINITY;
            if (d > worst) worst = d, at = j;
            if (!(d <= atol * amax + rtol * fabs(ref[j]))) bad++;
        }
        snprintf(msg, len, "largest logit difference %.3g (class %d: GPU %.6g, CPU %.6g), allowed "
                 "%.2g x %.3g + %.2g x |CPU| in %s", worst, at % k, (double)gpu[at],
                 (double)ref[at], atol, amax, rtol, half ? "fp16" : "fp32");
        if (bad) {
            snprintf(msg, len, "%d of %d logits differ between %s and the CPU reference on a "
                     "1x3x%dx%d test input: largest difference %.4g at class %d (GPU %.6g, CPU "
                     "%.6g), allowed %.2g x %.3g + %.2g x |CPU| in %s", bad, SC_N * k,
                     be->description, SC_H, SC_W, worst, at % k, (double)gpu[at], (double)ref[at],
                     atol, amax, rtol, half ? "fp16" : "fp32");
            result = SELF_CHECK_MISMATCH;
        }
    }
    free(x);
    free(gpu);
    free(ref);
    return result;
}

// The network of the last GPU that failed with an error (see below).
static ResNet34 *volatile abandoned_after_error;

int resnet34_trust_gpu(ResNet34 *m, const char *device, int skip) {
    Backend *be = resnet34_param(m, 0)->value->be;
    if (be->device == DEVICE_CPU || skip) return 1;
    char msg[1024] = "";
    SelfCheck r = resnet34_self_check(m, msg, sizeof msg);
    if (r == SELF_CHECK_OK) return 1;
    static const char *report =
        "Please report this (with this message, the output of nvidia-smi and of `cmake` at "
        "configure time) as an issue of the project";
    if (device && strcmp(device, "cuda") == 0)
        die("--device cuda: the GPU self-check failed: %s. %s; --device cpu runs on the CPU, "
            "--no-self-check skips the check (results on this GPU may then be wrong)", msg, report);
    warn("--device %s: the GPU self-check failed: %s. Using the CPU instead. %s; "
         "--no-self-check skips the check", device ? device : "auto", msg, report);
    if (r == SELF_CHECK_MISMATCH) {
        resnet34_free(m);
        backend_close(be);
    } else {
        // SELF_CHECK_ERROR: the GPU's state is unknown, so nothing of it is freed; its memory is
        // left to the process's end, on purpose (held here, so leak checkers see it as kept)
        abandoned_after_error = m;
    }
    return 0;
}
