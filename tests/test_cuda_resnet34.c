// test_cuda_resnet34.c: the whole network on the cuDNN backend against the CPU backend: logits in
// eval and train mode, the gradient of every weight, the running statistics after a step, the
// losses of a few Adam steps; and, in fp16, GradScaler's dynamic loss scaling, including a step
// whose gradients overflow and must be skipped. Exits 77 (CTest: skipped) without a GPU.
//   usage: test-cuda-resnet34 [fp32|fp16]
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend.h"
#include "core/common.h"
#include "nn/resnet34.h"
#include "core/rng.h"
#include "nn/train.h"
#include "check.h"

static void compare(const char *what, const float *ref, const float *got, size_t n, double atol, double rtol) {
    double amax = 0, worst = 0;
    for (size_t i = 0; i < n; i++) amax = fmax(amax, fabs(ref[i]));
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)ref[i] - (double)got[i]);
        if (!approx_eq(got[i], ref[i], atol * (amax > 1 ? amax : 1), rtol)) bad++;
        if (d > worst || isnan(d)) worst = d;
    }
    if (bad || getenv("VERBOSE"))
        printf("%-40s max|ref| %.3e max|diff| %.3e %s\n", what, amax, worst, bad ? "FAIL" : "ok");
    if (bad) failures++;
}

static float *download(Tensor *t) {
    float *h = xmalloc(t->numel * sizeof(float));
    t->be->tensor_download(t, h);
    return h;
}

int main(int argc, char **argv) {
    const char *prec = argc > 1 ? argv[1] : "fp32";
    int half = strcmp(prec, "fp16") == 0;
    if (!backend_cuda_available()) {
        printf("SKIP: no usable CUDA GPU (or the cuDNN backend was not built)\n");
        return 77;
    }
    char err[512];
    Backend *cpu = backend_cpu_create(PREC_FP32, err, sizeof err);
    if (!cpu) die("%s", err);
    Backend *gpu = backend_cuda_create(half ? PREC_FP16 : PREC_FP32, err, sizeof err);
    if (!gpu) die("%s", err);
    printf("%s vs %s\n", gpu->description, cpu->description);
    double atol = half ? 3e-2 : 1e-4, rtol = half ? 5e-2 : 1e-3;

    // Same seeded weights on both devices, through a state dict.
    ResNet34 *mc = resnet34_create(cpu, 37), *mg = resnet34_create(gpu, 37);
    resnet34_init_random(mc, 7);
    StateDict sd = {0};
    resnet34_to_state(mc, &sd);
    if (resnet34_load_state(mg, &sd, 1, err, sizeof err)) die("%s", err);
    sd_free(&sd);

    int n = 4, h = 64, w = 64;
    float *x = xmalloc((size_t)n * 3 * h * w * sizeof(float));
    Rng r;
    rng_seed(&r, 11);
    for (size_t i = 0; i < (size_t)n * 3 * h * w; i++) x[i] = (float)rng_normal(&r);
    int labels[4] = {0, 5, 36, 5};

    // eval-mode logits
    float lc[4 * 37], lg[4 * 37];
    resnet34_forward(mc, x, n, h, w, 0), resnet34_logits(mc, lc);
    resnet34_forward(mg, x, n, h, w, 0), resnet34_logits(mg, lg);
    compare("eval logits", lc, lg, 4 * 37, atol, rtol);

    // train mode: logits, loss, every gradient, running statistics
    resnet34_forward(mc, x, n, h, w, 1), resnet34_logits(mc, lc);
    resnet34_forward(mg, x, n, h, w, 1), resnet34_logits(mg, lg);
    compare("train logits", lc, lg, 4 * 37, atol, rtol);
    // fp16 backward runs on a scaled loss, as with GradScaler: unscaled, the small gradients of
    // deep layers would fall into fp16's subnormal range and lose their precision. 256 is an
    // exact power of two (the CPU's gradients are exactly 256x), far from overflow here.
    const float gscale = half ? 256.f : 1.f;
    double loss_c = resnet34_loss(mc, labels, 0, 1, gscale, NULL);
    double loss_g = resnet34_loss(mg, labels, 0, 1, gscale, NULL);
    printf("train loss: cpu %.6f gpu %.6f\n", loss_c, loss_g);
    CHECK(approx_eq(loss_g, loss_c, 1e-4, half ? 2e-2 : 1e-4), "train loss: cpu %.6f gpu %.6f",
          loss_c, loss_g);
    for (int i = 0; i < resnet34_num_params(mc); i++) {
        Param *pc = resnet34_param(mc, i), *pg = resnet34_param(mg, i);
        Tensor *tc = pc->kind == PARAM_WEIGHT ? pc->grad : pc->value;
        Tensor *tg = pg->kind == PARAM_WEIGHT ? pg->grad : pg->value;
        if (!tc || !tg) continue;
        float *a = download(tc), *b = download(tg);
        char what[96];
        snprintf(what, sizeof what, "%s %s", pc->name, pc->kind == PARAM_WEIGHT ? "grad" : "");
        // gradients are sums over the batch: compare relative to each tensor's magnitude
        compare(what, a, b, tc->numel, half ? 5e-2 : 1e-3, half ? 1e-1 : 1e-2);
        free(a), free(b);
    }

    // a few Adam steps: losses follow each other, loosely. Adam moves every weight by about lr
    // whatever the size of its gradient, so gradients that differ only by rounding (the CPU's
    // reference and oneDNN kernels already do) take different paths: after 3 steps the two CPU
    // backends differ by 1% of the loss (5e-4 of the first loss). lr 1e-4 (at 1e-3 the net
    // memorises the 4 images in 2 steps and what is left is chaos); tolerances in part
    // relative to the first loss. A step not taken or a wrong update is far outside them.
    Adam oc, og;
    adam_init(&oc, 1e-4f), adam_init(&og, 1e-4f);
    const double loss_first = loss_c;
    if (resnet34_grads_nonfinite(mg)) {
        printf("fp16 gradients overflowed at loss scale %g: FAIL\n", gscale);
        failures++;
    }
    adam_step(&oc, mc, 1.f / gscale), adam_step(&og, mg, 1.f / gscale);
    for (int s = 0; s < 3; s++) {
        resnet34_forward(mc, x, n, h, w, 1);
        resnet34_forward(mg, x, n, h, w, 1);
        loss_c = resnet34_loss(mc, labels, 0, 1, gscale, NULL);
        loss_g = resnet34_loss(mg, labels, 0, 1, gscale, NULL);
        printf("adam step %d: loss cpu %.6f gpu %.6f\n", s + 2, loss_c, loss_g);
        CHECK(approx_eq(loss_g, loss_c, (half ? 2e-2 : 2e-3) * fabs(loss_first), half ? 1e-1 : 2e-2),
              "adam step %d: loss cpu %.6f gpu %.6f", s + 2, loss_c, loss_g);
        adam_step(&oc, mc, 1.f / gscale), adam_step(&og, mg, 1.f / gscale);
    }
    // the weights the GPU trained are the ones its forward uses (no stale fp16 weight copies):
    // the same weights on the CPU give the same eval logits
    {
        StateDict st = {0};
        resnet34_to_state(mg, &st);
        if (resnet34_load_state(mc, &st, 1, err, sizeof err)) die("%s", err);
        sd_free(&st);
        resnet34_forward(mc, x, n, h, w, 0), resnet34_logits(mc, lc);
        resnet34_forward(mg, x, n, h, w, 0), resnet34_logits(mg, lg);
        compare("eval logits after training", lc, lg, 4 * 37, atol, rtol);
    }

    if (half) {
        // GradScaler: a huge scale overflows fp16 gradients; the step is skipped, the scale halves.
        GradScaler sc;
        scaler_init(&sc, 1);
        sc.scale = 1e30f;
        Param *p0 = resnet34_find_param(mg, "fc.weight");
        float *before = download(p0->value);
        resnet34_forward(mg, x, n, h, w, 1);
        resnet34_loss(mg, labels, 0, 1, sc.scale, NULL);
        int bad = resnet34_grads_nonfinite(mg);
        int take = scaler_update(&sc, bad);
        if (take) adam_step(&og, mg, 1.f / sc.scale);
        float *after = download(p0->value);
        int unchanged = memcmp(before, after, p0->value->numel * sizeof(float)) == 0;
        printf("overflow step: nonfinite %d, taken %d, scale now %g, weights unchanged %d\n", bad,
               take, sc.scale, unchanged);
        if (!bad || take || sc.scale != 5e29f || !unchanged) failures++;
        // then GradScaler's loop from its default scale 65536: steps that overflow are skipped
        // and halve the scale (as in PyTorch, the first steps may), until one is taken; that
        // step moves the weights and leaves them finite.
        scaler_init(&sc, 1);
        int taken = 0, tries = 0;
        while (!taken && tries < 12) {
            float s0 = sc.scale, inv = 1.f / sc.scale;
            resnet34_forward(mg, x, n, h, w, 1);
            resnet34_loss(mg, labels, 0, 1, sc.scale, NULL);
            bad = resnet34_grads_nonfinite(mg);
            taken = scaler_update(&sc, bad);
            tries++;
            printf("step at scale %g: nonfinite %d, taken %d\n", s0, bad, taken);
            if (!taken && sc.scale != s0 * 0.5f) failures++;
            if (taken) adam_step(&og, mg, inv);
        }
        free(after);
        after = download(p0->value);
        int moved = memcmp(before, after, p0->value->numel * sizeof(float)) != 0, finite = 1;
        for (size_t i = 0; i < p0->value->numel; i++) finite &= isfinite(after[i]) != 0;
        printf("GradScaler: a step taken after %d tries, weights moved %d, finite %d\n", tries,
               moved, finite);
        if (!taken || !moved || !finite) failures++;
        free(before), free(after);
    }

    free(x);
    resnet34_free(mc), resnet34_free(mg);
    gpu->destroy(gpu), cpu->destroy(cpu);
    return check_exit("the network matches the CPU backend");
}
