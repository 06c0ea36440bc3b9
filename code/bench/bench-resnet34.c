// bench-resnet34.c: how fast the ResNet34 core runs, for `make bench` (tests/bench-resnet34.sh runs
// it beside PyTorch's tests/bench_resnet34.py and prints the ratios). Two measurements on
// synthetic data, each in a fresh child process so that its peak memory is its own:
//   eval:  forward in eval mode (running BN statistics), logits copied back to the host;
//   train: one full training step: forward in train mode, softmax cross-entropy (sum),
//          backward through every layer, Adam over all weights.
// It prints images per second, the achieved GFLOP/s (convolution and fc multiply-adds counted
// exactly from the architecture, 2 FLOPs each), peak RSS, and that as a fraction of this
// machine's FMA peak, measured by a short vector FMA loop on the same threads, and the version
// of the oneDNN library the CPU convolutions ran on (onednn_version=, from dnnl_version()).
//
//   build/bench-resnet34 [--batch 32] [--iters 5] [--threads N] [--size 224]
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nn/backend.h"
#include "core/common.h"
#include "core/cpu.h"
#include "nn/cpu_conv_dnnl.h"
#include "nn/resnet34.h"
#include "core/rng.h"
#include "nn/selfcheck.h"
#include "nn/train.h"

typedef struct {
    int batch, iters, warmup, threads, size, classes;
    const char *device, *precision, *only;
    int peak; // measure the FMA peak
    int no_self_check; // time the GPU without the self-check
} Options;

static void usage(FILE *f) {
    fprintf(f,
        "usage: bench-resnet34 [options]\n"
        "Times ResNet34 eval forward and a full training step (forward, backward, Adam) on\n"
        "synthetic data, and prints key=value lines (images/s, GFLOP/s, peak RSS).\n"
        "  --batch N        images per batch (default 32)\n"
        "  --iters N        timed iterations per measurement (default 5)\n"
        "  --warmup N       untimed iterations first (default 1)\n"
        "  --threads N      CPU threads (default: every online core; sets PETS_THREADS)\n"
        "  --size S         input S x S (default 224)\n"
        "  --classes K      classes of the head (default 1000, as torchvision's resnet34())\n"
        "  --only eval|train  run one measurement only\n"
        "  --device cpu|cuda|auto  (default cpu)\n"
        "  --precision auto|fp32|fp16|bf16  (default auto: fp16 on cuda, float32 on the CPU)\n"
        "  --no-peak        skip the FMA peak measurement\n"
        "  --no-self-check  time the GPU without first checking its logits against the CPU\n"
        "  --help\n");
}

static int parse_int(const char *opt, const char *s, int lo, int hi) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        die("%s %s: expected an integer in [%d, %d]", opt, s, lo, hi);
    return (int)v;
}

// ----------------------------------------------------------------------------
// FLOPs: multiply-adds of every convolution and of fc, from torchvision's ResNet34 layout.

typedef struct {
    double fwd;        // forward multiply-adds per image
    double first_conv; // of conv1 (its input gradient is never needed)
} Macs;

static double conv_macs(int cin, int cout, int k, int stride, int pad, int *h, int *w) {
    *h = (*h + 2 * pad - k) / stride + 1;
    *w = (*w + 2 * pad - k) / stride + 1;
    return (double)*h * *w * cout * cin * k * k;
}

static Macs resnet34_macs(int size, int classes) {
    Macs r = {0, 0};
    int h = size, w = size;
    r.first_conv = conv_macs(3, 64, 7, 2, 3, &h, &w);
    r.fwd = r.first_conv;
    h = (h + 2 - 3) / 2 + 1; // maxpool 3x3 / 2, pad 1
    w = (w + 2 - 3) / 2 + 1;
    const int blocks[4] = {3, 4, 6, 3}, widths[4] = {64, 128, 256, 512};
    int cin = 64;
    for (int s = 0; s < 4; s++) {
        for (int b = 0; b < blocks[s]; b++) {
            int stride = (s > 0 && b == 0) ? 2 : 1, width = widths[s];
            int h1 = h, w1 = w;
            r.fwd += conv_macs(cin, width, 3, stride, 1, &h1, &w1); // conv1
            int h2 = h1, w2 = w1;
            r.fwd += conv_macs(width, width, 3, 1, 1, &h2, &w2); // conv2
            if (stride != 1 || cin != width) {                   // downsample 1x1
                int hd = h, wd = w;
                r.fwd += conv_macs(cin, width, 1, stride, 0, &hd, &wd);
            }
            h = h2, w = w2, cin = width;
        }
    }
    r.fwd += (double)RESNET34_FEATURES * classes; // fc
    return r;
}

// ----------------------------------------------------------------------------
// The FMA peak: independent chains of vector FMAs per thread (enough to fill both FMA pipes).

// ISO C (-std=c11) does not contract a * b + c into an FMA, so the loop uses intrinsics: the
// widest FMA this CPU has, chosen at run time (core/cpu.h): AVX-512 (16 lanes), else AVX2 FMA
// (8 lanes), else scalar. Each variant is compiled with its own target attribute.
#define PEAK_CHAINS 12       // independent chains: enough to cover FMA latency x pipes
#define PEAK_ITERS 100000000L

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
__attribute__((target("avx512f"))) static void *peak_worker_avx512(void *arg) {
    __m512 acc[PEAK_CHAINS], a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-7f);
    for (int c = 0; c < PEAK_CHAINS; c++) acc[c] = _mm512_set1_ps((float)c);
    for (long it = 0; it < PEAK_ITERS; it++)
        for (int c = 0; c < PEAK_CHAINS; c++) acc[c] = _mm512_fmadd_ps(acc[c], a, b);
    float s = 0;
    for (int c = 0; c < PEAK_CHAINS; c++) s += _mm512_reduce_add_ps(acc[c]);
    *(float *)arg = s;
    return NULL;
}
__attribute__((target("avx2,fma"))) static void *peak_worker_avx2(void *arg) {
    __m256 acc[PEAK_CHAINS], a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-7f);
    for (int c = 0; c < PEAK_CHAINS; c++) acc[c] = _mm256_set1_ps((float)c);
    for (long it = 0; it < PEAK_ITERS; it++)
        for (int c = 0; c < PEAK_CHAINS; c++) acc[c] = _mm256_fmadd_ps(acc[c], a, b);
    float f[8], s = 0;
    for (int c = 0; c < PEAK_CHAINS; c++) {
        _mm256_storeu_ps(f, acc[c]);
        for (int l = 0; l < 8; l++) s += f[l];
    }
    *(float *)arg = s;
    return NULL;
}
#endif
static void *peak_worker_scalar(void *arg) { // no FMA unit: the peak of scalar code
    float acc[PEAK_CHAINS], a = 0.999f, b = 1e-7f;
    for (int c = 0; c < PEAK_CHAINS; c++) acc[c] = (float)c;
    for (long it = 0; it < PEAK_ITERS; it++)
        for (int c = 0; c < PEAK_CHAINS; c++) acc[c] = acc[c] * a + b;
    float s = 0;
    for (int c = 0; c < PEAK_CHAINS; c++) s += acc[c];
    *(float *)arg = s;
    return NULL;
}

static double fma_peak_gflops(int threads) {
    void *(*worker)(void *) = peak_worker_scalar;
    int lanes = 1;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    CpuSimd simd = cpu_simd();
    if (simd >= CPU_SIMD_AVX512) worker = peak_worker_avx512, lanes = 16;
    else if (simd >= CPU_SIMD_AVX2) worker = peak_worker_avx2, lanes = 8;
#endif
    pthread_t *t = xmalloc(sizeof(pthread_t) * (size_t)threads);
    float *sink = xcalloc((size_t)threads, sizeof(float));
    double t0 = now_seconds();
    for (int i = 0; i < threads; i++)
        if (pthread_create(&t[i], NULL, worker, &sink[i])) die("pthread_create failed");
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    double dt = now_seconds() - t0;
    free(t);
    free(sink);
    return (double)threads * PEAK_ITERS * PEAK_CHAINS * lanes * 2 / dt / 1e9;
}

// ----------------------------------------------------------------------------
// One measurement, run in a child process. Returns images per second.

static double peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0; // Linux reports KiB
}

// The benchmark's network: random weights (seed 1) on the device the options name.
static ResNet34 *open_model(const Options *o, Backend **be) {
    char err[512];
    *be = backend_open_precision(o->device, o->precision, 1, err, sizeof err);
    if (!*be) die("%s", err);
    ResNet34 *m = resnet34_create(*be, o->classes);
    resnet34_init_random(m, 1);
    return m;
}

static double run_phase(const Options *o, int train, double *rss_mib) {
    Backend *be;
    ResNet34 *m = open_model(o, &be);
    // what --precision resolved to, said once (by the first measurement's process)
    if (!train || (o->only && !strcmp(o->only, "train"))) {
        printf("precision=%s\nprecision_choice=%s\n", be->precision == PREC_FP16 ? "fp16" : "fp32",
               be->prec_info.choice);
        fflush(stdout);
    }
    size_t per = (size_t)3 * o->size * o->size;
    float *x = xmalloc(sizeof(float) * per * o->batch);
    float *logits = xmalloc(sizeof(float) * (size_t)o->classes * o->batch);
    int *labels = xmalloc(sizeof(int) * o->batch);
    Rng rng;
    rng_seed(&rng, 7);
    for (size_t i = 0; i < per * o->batch; i++) x[i] = (float)rng_normal(&rng);
    for (int i = 0; i < o->batch; i++) labels[i] = (int)(rng_u64(&rng) % (uint64_t)o->classes);
    Adam opt;
    adam_init(&opt, 1e-4f);

    double t0 = 0;
    for (int it = 0; it < o->warmup + o->iters; it++) {
        if (it == o->warmup) {
            be->synchronize(be);
            t0 = now_seconds();
        }
        if (train) {
            resnet34_forward(m, x, o->batch, o->size, o->size, 1);
            resnet34_loss(m, labels, 0, 1, 1.0f, NULL);
            adam_step(&opt, m, 1.0f);
        } else {
            resnet34_forward(m, x, o->batch, o->size, o->size, 0);
            resnet34_logits(m, logits);
        }
    }
    be->synchronize(be);
    double dt = now_seconds() - t0;
    *rss_mib = peak_rss_mib();
    free(x);
    free(logits);
    free(labels);
    resnet34_free(m);
    backend_close(be);
    return (double)o->batch * o->iters / dt;
}

// The GPU self-check (nn/selfcheck.h) on the benchmark's network, in a child of its own so that
// the CPU copy it makes counts in no measurement's peak RSS. Returns 0 when the device may be
// timed, 1 when --device auto fell back to the CPU; --device cuda stops on a failure.
static int self_check(const Options *o) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        Backend *be;
        ResNet34 *m = open_model(o, &be);
        if (!resnet34_trust_gpu(m, o->device, 0)) _exit(10);
        resnet34_free(m);
        backend_close(be);
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 10) return 1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) exit(1); // the child said why
    return 0;
}

// Runs a measurement in a child (a fresh process: its own peak RSS, no thread pool shared with
// the parent) and reads its images/s back through a pipe.
static int measure(const Options *o, int train, double *img_s, double *rss) {
    int fd[2];
    if (pipe(fd)) die("pipe: %s", strerror(errno));
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        close(fd[0]);
        double r[2];
        r[0] = run_phase(o, train, &r[1]);
        if (write(fd[1], r, sizeof r) != (ssize_t)sizeof r) _exit(3);
        _exit(0);
    }
    close(fd[1]);
    double r[2];
    ssize_t got = read(fd[0], r, sizeof r);
    close(fd[0]);
    int status;
    waitpid(pid, &status, 0);
    if (got != (ssize_t)sizeof r || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "error: the %s measurement failed (child status %d)\n",
                train ? "train" : "eval", status);
        return -1;
    }
    *img_s = r[0];
    *rss = r[1];
    return 0;
}

int main(int argc, char **argv) {
    Options o = {.batch = 32, .iters = 5, .warmup = 1, .size = 224, .classes = 1000,
                 .device = "cpu", .precision = "auto", .only = NULL, .peak = 1};
    o.threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (o.threads < 1) o.threads = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--no-peak")) {
            o.peak = 0;
            continue;
        }
        if (!strcmp(a, "--no-self-check")) {
            o.no_self_check = 1;
            continue;
        }
        if (i + 1 >= argc) die("%s: unknown option or missing value (see --help)", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--batch")) o.batch = parse_int(a, v, 1, 4096);
        else if (!strcmp(a, "--iters")) o.iters = parse_int(a, v, 1, 100000);
        else if (!strcmp(a, "--warmup")) o.warmup = parse_int(a, v, 0, 100000);
        else if (!strcmp(a, "--threads")) o.threads = parse_int(a, v, 1, 4096);
        else if (!strcmp(a, "--size")) o.size = parse_int(a, v, 32, 4096);
        else if (!strcmp(a, "--classes")) o.classes = parse_int(a, v, 1, 100000);
        else if (!strcmp(a, "--device")) o.device = v;
        else if (!strcmp(a, "--precision")) o.precision = v;
        else if (!strcmp(a, "--only")) {
            if (strcmp(v, "eval") && strcmp(v, "train")) die("--only %s: eval or train", v);
            o.only = v;
        } else die("unknown option %s (see --help)", a);
    }
    // The CPU backend reads its thread count from PETS_THREADS (OpenMP from OMP_NUM_THREADS).
    char nthreads[16];
    snprintf(nthreads, sizeof nthreads, "%d", o.threads);
    setenv("PETS_THREADS", nthreads, 1);
    setenv("OMP_NUM_THREADS", nthreads, 1);

    if (strcmp(o.device, "cpu") && !o.no_self_check && self_check(&o)) {
        o.device = "cpu"; // --device auto, and the GPU failed its self-check (said why above)
        o.precision = "fp32";
    }

    Macs macs = resnet34_macs(o.size, o.classes);
    double fwd_flop = 2 * macs.fwd;
    // training: forward + weight gradients (same multiply-adds as forward) + input gradients of
    // every layer but conv1 (PyTorch does not compute the gradient of the input image either)
    double train_flop = 2 * (3 * macs.fwd - macs.first_conv);
    printf("# bench-resnet34: batch %d, %dx%d, %d classes, %d timed iterations after %d warm-up, "
           "%d threads, device %s %s\n",
           o.batch, o.size, o.size, o.classes, o.iters, o.warmup, o.threads, o.device, o.precision);
    // The oneDNN the CPU convolutions run on (2.x on Debian 12, 3.x on Debian 13), at run time.
    printf("onednn_version=%s\n", cpu_conv_onednn_version());
    printf("resnet34_forward_gflop_per_img=%.4f\n", fwd_flop / 1e9);
    printf("resnet34_train_gflop_per_img=%.4f\n", train_flop / 1e9);

    int failed = 0;
    double eval_s = 0, train_s = 0, rss;
    if (!o.only || !strcmp(o.only, "eval")) {
        if (measure(&o, 0, &eval_s, &rss) == 0) {
            printf("resnet34_eval_img_per_s=%.2f\n", eval_s);
            printf("resnet34_eval_gflop_per_s=%.1f\n", eval_s * fwd_flop / 1e9);
            printf("resnet34_eval_peak_rss_mib=%.0f\n", rss);
        } else failed = 1;
    }
    if (!o.only || !strcmp(o.only, "train")) {
        if (measure(&o, 1, &train_s, &rss) == 0) {
            printf("resnet34_train_img_per_s=%.2f\n", train_s);
            printf("resnet34_train_gflop_per_s=%.1f\n", train_s * train_flop / 1e9);
            printf("resnet34_train_peak_rss_mib=%.0f\n", rss);
        } else failed = 1;
    }
    if (o.peak && !strcmp(o.device, "cpu")) {
        double peak = fma_peak_gflops(o.threads);
        printf("cpu_fma_peak_gflop_per_s=%.1f\ncpu_simd=%s\n", peak, cpu_simd_name(cpu_simd()));
        if (eval_s > 0) printf("resnet34_eval_fraction_of_peak=%.3f\n", eval_s * fwd_flop / 1e9 / peak);
        if (train_s > 0)
            printf("resnet34_train_fraction_of_peak=%.3f\n", train_s * train_flop / 1e9 / peak);
    }
    return failed;
}
