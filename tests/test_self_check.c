// test_self_check.c: the GPU self-check (nn/selfcheck.h) on the CPU stand-in of the GPU
// (PETS_CUDA_STANDIN=1, nn/backend_standin.h):
// - a sound "GPU" passes, in fp32 and in fp16 (autocast rounding within the fp16 tolerance), and
//   costs under a second of this machine's time;
// - a planted wrong kernel (PETS_STANDIN_FAULT=relu: a ReLU that leaks) is caught: the message
//   says which logits differed and by how much; --device auto falls back (returns 0), and
//   --no-self-check (skip) trusts it anyway;
// - a planted GPU error (PETS_STANDIN_FAULT=error: a failing convolution) is caught as an error,
//   not a crash, with the failing call in the message; auto falls back.
// What --device cuda does (stops, exit status 1) is checked through the programs by
// tests/test_self_check.sh.
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "nn/selfcheck.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static ResNet34 *model_on_standin(Precision p, const char *fault) {
    if (fault) setenv("PETS_STANDIN_FAULT", fault, 1);
    else unsetenv("PETS_STANDIN_FAULT");
    char err[256];
    Backend *be = backend_open("cuda", p, 1, err, sizeof err);
    if (!be) die("%s", err);
    ResNet34 *m = resnet34_create(be, 37);
    resnet34_init_random(m, 11);
    return m;
}

static void release(ResNet34 *m) {
    Backend *be = resnet34_param(m, 0)->value->be;
    resnet34_free(m);
    backend_close(be);
}

int main(void) {
    setenv("PETS_CUDA_STANDIN", "1", 1);
    char msg[1024];
    // sound
    for (int half = 0; half < 2; half++) {
        ResNet34 *m = model_on_standin(half ? PREC_FP16 : PREC_FP32, NULL);
        double t0 = now(), c0 = cpu_now();
        msg[0] = 0;
        SelfCheck r = resnet34_self_check(m, msg, sizeof msg);
        double wall = now() - t0, cpu = cpu_now() - c0;
        printf("sound stand-in, %s: %s: %s (%.2f s wall, %.2f s CPU)\n", half ? "fp16" : "fp32",
               r == SELF_CHECK_OK ? "passes" : "FAILS", msg, wall, cpu);
        CHECK(r == SELF_CHECK_OK, "a sound GPU failed the self-check in %s: %s",
              half ? "fp16" : "fp32", msg);
        // CPU time, not wall time: this machine's cores are shared with other jobs
        CHECK(cpu < 1.0 * 2, "the self-check took %.2f s of CPU (2 threads), more than a second", cpu);
        CHECK(resnet34_trust_gpu(m, "cuda", 0) == 1, "a sound GPU was not trusted");
        release(m);
    }
    // a wrong kernel
    for (int half = 0; half < 2; half++) {
        ResNet34 *m = model_on_standin(half ? PREC_FP16 : PREC_FP32, "relu");
        msg[0] = 0;
        SelfCheck r = resnet34_self_check(m, msg, sizeof msg);
        printf("planted wrong ReLU, %s: %s\n", half ? "fp16" : "fp32", msg);
        CHECK(r == SELF_CHECK_MISMATCH, "a leaking ReLU passed the self-check (%s)",
              half ? "fp16" : "fp32");
        CHECK(strstr(msg, "logits differ") && strstr(msg, "largest difference") &&
              strstr(msg, "CUDA stand-in"), "the message does not say what differed: %s", msg);
        CHECK(resnet34_trust_gpu(m, "auto", 1) == 1, "--no-self-check must trust the GPU");
        CHECK(resnet34_trust_gpu(m, "auto", 0) == 0, "--device auto must fall back to the CPU");
        // (m and its backend were released by the fallback)
    }
    // a GPU error
    {
        ResNet34 *m = model_on_standin(PREC_FP32, "error");
        msg[0] = 0;
        SelfCheck r = resnet34_self_check(m, msg, sizeof msg);
        printf("planted GPU error: %s\n", msg);
        CHECK(r == SELF_CHECK_ERROR, "a failing convolution was not reported as an error (%d)", (int)r);
        CHECK(strstr(msg, "CUDNN_STATUS_EXECUTION_FAILED") != NULL, "the message lacks the failing call: %s", msg);
        CHECK(resnet34_trust_gpu(m, "auto", 0) == 0, "--device auto must fall back after a GPU error");
        // (m is abandoned, as after a real CUDA error)
    }
    unsetenv("PETS_STANDIN_FAULT");
    return check_exit("self-check checks passed");
}
