// test_resnet34.c: the whole ResNet34 against PyTorch (torchvision 0.14's resnet34), llm.c style.
// tests/ref_resnet34.py builds the network from a deterministic formula and records what PyTorch
// computes; here the C model is built from the same formula (bit-identical weights and inputs) and
// every result is compared with |got - ref| <= atol + rtol |ref|:
//   logits and pooled features, the summed and mean cross-entropy, the gradient of every trainable
//   parameter (in full or as checksums + sampled elements), the batch-norm running statistics after
//   the step, num_batches_tracked, torchvision's state-dict keys and shapes, and the losses of 5
//   Adam steps; for a fully trainable network in train mode (and its gradients in eval mode), for
//   a frozen backbone in eval and in train mode (only fc gets gradients), and a 224x224 eval
//   forward with a 1000-way head. The fused eval path (batch norm folded into the convolutions,
//   relu and residual add fused: resnet34_set_fused) is checked against PyTorch in every eval-mode
//   case, and against the unfused path in every case, also after a train-mode step has moved the
//   running statistics (the folded weights must follow).
// Usage: test-resnet34 FIXTURE_DIR [CASE...]   (PETS_CPU_REFERENCE=1 checks the naive kernels)
#include "test_resnet34_util.h"
#include "nn/train.h"
#include "check.h"

// Tolerances. atol is relative to the scale of the tensor compared (its largest |value|, or the
// root mean square for sampled gradients), since values range over orders of magnitude.
#define TOL_LOGITS_A 1e-4  // x max|logits|
#define TOL_LOGITS_R 1e-3
#define TOL_LOSS_R 1e-5
#define TOL_GRAD_A 5e-4    // x max|grad| of the tensor (x 4 rms for sampled elements)
#define TOL_GRAD_R 2e-3
#define TOL_GSUM 2e-4      // |sum - ref| <= TOL_GSUM sum|g|; sum|g| and sum g^2 relative
#define TOL_STATS_A 1e-5   // running statistics: x max|ref|
#define TOL_STATS_R 1e-4
#define TOL_ADAM_A 1e-3    // Adam losses (5 steps compound small differences)
#define TOL_ADAM_R 2e-3

enum { K_LOGITS, K_FEATURES, K_LOSS, K_GRAD_FULL, K_GRAD_SUMS, K_GRAD_SAMPLES, K_STATS, K_ADAM, K_INIT, K_FUSED, NKIND };
static ErrStat stats[NKIND] = {
    {.kind = "logits"}, {.kind = "features"}, {.kind = "loss"}, {.kind = "grad (full)"},
    {.kind = "grad checksums"}, {.kind = "grad samples"}, {.kind = "running stats"},
    {.kind = "adam losses"}, {.kind = "init checksums"}, {.kind = "fused vs unfused"},
};

static void fail(const char *fmt, const char *a) {
    fprintf(stderr, "FAIL: ");
    fprintf(stderr, fmt, a);
    fputc('\n', stderr);
    failures++;
}

static double max_abs(const FxRecord *r) {
    double m = 0;
    for (size_t i = 0; i < r->count; i++) m = fmax(m, fabs(fx_get(r, i)));
    return m;
}

static void compare_array(int kind, const char *what, const float *got, const FxRecord *ref,
                          double atol_scale, double rtol) {
    double atol = atol_scale * max_abs(ref);
    for (size_t i = 0; i < ref->count; i++) err_check(&stats[kind], what, i, got[i], fx_get(ref, i), atol, rtol);
}

static float *download(const Tensor *t) {
    float *v = xmalloc(t->numel * sizeof(float));
    t->be->tensor_download(t, v);
    return v;
}

static double max_abs_f(const float *v, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(v[i]));
    return m;
}

// An eval-mode forward of x on the fused path and on the unfused one: both against the fixture
// when fx is given (an eval-mode case), and against each other always, within the same tolerances.
static void check_fused(ResNet34 *m, const float *x, int n, int h, int w, int k, const Fixture *fx) {
    const size_t nl = (size_t)n * k, nf = (size_t)n * 512;
    float *out[2][2]; // [fused][logits, features]
    resnet34_keep_activations(m, 0);
    for (int f = 0; f < 2; f++) {
        resnet34_set_fused(m, f);
        resnet34_forward(m, x, n, h, w, 0);
        out[f][0] = xmalloc(nl * sizeof(float));
        out[f][1] = xmalloc(nf * sizeof(float));
        resnet34_logits(m, out[f][0]);
        resnet34_features(m, out[f][1]);
    }
    resnet34_set_fused(m, 1);
    if (fx) {
        compare_array(K_LOGITS, "fused logits", out[1][0], fx_need(fx, "logits", FX_F32, nl), TOL_LOGITS_A, TOL_LOGITS_R);
        compare_array(K_FEATURES, "fused features", out[1][1], fx_need(fx, "features", FX_F32, nf), TOL_LOGITS_A, TOL_LOGITS_R);
    }
    const size_t len[2] = {nl, nf};
    const char *what[2] = {"fused - unfused logits", "fused - unfused features"};
    for (int j = 0; j < 2; j++) {
        const double scale = max_abs_f(out[0][j], len[j]);
        double d = 0;
        for (size_t i = 0; i < len[j]; i++) {
            d = fmax(d, fabs(out[1][j][i] - out[0][j][i]));
            err_check(&stats[K_FUSED], what[j], i, out[1][j][i], out[0][j][i], TOL_LOGITS_A * scale, TOL_LOGITS_R);
        }
        printf("  %s: max |diff| %.3g = %.3g x max|unfused|\n", what[j], d, scale > 0 ? d / scale : 0.0);
    }
    for (int f = 0; f < 2; f++) free(out[f][0]), free(out[f][1]);
}

// torchvision's keys, order and shapes; num_batches_tracked after the step.
static void check_state_dict(ResNet34 *m, const Fixture *fx, int64_t nbt_expected) {
    const FxRecord *keys = fx_need(fx, "state_dict_keys", FX_BYTES, 0);
    const FxRecord *shapes = fx_need(fx, "state_dict_shapes", FX_I64, 0);
    StateDict sd = {0};
    resnet34_to_state(m, &sd);
    const char *p = keys->data, *end = p + keys->count;
    size_t si = 0;
    int i = 0;
    for (; p < end; i++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)len, p);
        p += len + 1;
        if (i >= sd.n) {
            fail("state dict: torchvision has key '%s' past the end of ours", name);
            break;
        }
        if (strcmp(sd.t[i].name, name) != 0) {
            fprintf(stderr, "FAIL: state dict key %d: ours '%s', torchvision '%s'\n", i, sd.t[i].name, name);
            failures++;
            break;
        }
        int ndim = (int)fx_get(shapes, si++);
        int ok = ndim == sd.t[i].ndim;
        for (int d = 0; d < ndim; d++) ok &= (int64_t)fx_get(shapes, si++) == sd.t[i].shape[d];
        if (!ok) fail("state dict: shape of '%s' differs from torchvision's", name);
        if (ends_with(name, "num_batches_tracked")) {
            if (sd.t[i].dtype != PTH_I64 || *(const int64_t *)sd.t[i].data != nbt_expected)
                fail("state dict: '%s' is not the expected int64 count", name);
        }
    }
    if (i != sd.n) fail("state dict: %s", "ours has a different number of keys than torchvision's");
    sd_free(&sd);
}

static void run_case(Backend *be, const char *dir, const char *tag) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s.bin", dir, tag);
    Fixture fx;
    fx_load(&fx, path);
    const FxRecord *cfg = fx_need(&fx, "config", FX_I64, 8);
    const uint64_t seed = (uint64_t)fx_get(cfg, 0);
    const int n = (int)fx_get(cfg, 1), h = (int)fx_get(cfg, 2), w = (int)fx_get(cfg, 3);
    const int k = (int)fx_get(cfg, 4), bn_train = (int)fx_get(cfg, 5), frozen = (int)fx_get(cfg, 6);
    const int adam_steps = (int)fx_get(cfg, 7);
    printf("%s: batch %d x 3 x %d x %d, %d classes, %s, %s\n", tag, n, h, w, k,
           bn_train ? "train mode" : "eval mode", frozen ? "frozen backbone" : "all trainable");
    double t0 = now_seconds();

    ResNet34 *m = resnet34_create(be, k);
    fx_init_model(m, seed);
    // the formula reproduces PyTorch's weights and inputs exactly (sums in float64)
    const FxRecord *ic = fx_need(&fx, "init_checksums", FX_F64, 2 * (size_t)resnet34_num_params(m));
    for (int t = 0; t < resnet34_num_params(m); t++) {
        Param *p = resnet34_param(m, t);
        float *v = download(p->value);
        double s = 0, ss = 0;
        for (size_t i = 0; i < p->value->numel; i++) s += v[i], ss += (double)v[i] * v[i];
        free(v);
        err_check(&stats[K_INIT], p->name, 0, s, fx_get(ic, 2 * t), 1e-9 * sqrt(ss), 1e-9);
        err_check(&stats[K_INIT], p->name, 1, ss, fx_get(ic, 2 * t + 1), 0, 1e-9);
    }
    float *x = fx_input(seed, n, h, w);
    const FxRecord *xc = fx_need(&fx, "input_checksum", FX_F64, 2);
    double xs = 0, xss = 0;
    for (size_t i = 0; i < (size_t)n * 3 * h * w; i++) xs += x[i], xss += (double)x[i] * x[i];
    err_check(&stats[K_INIT], "input", 0, xs, fx_get(xc, 0), 1e-9 * sqrt(xss), 1e-9);
    err_check(&stats[K_INIT], "input", 1, xss, fx_get(xc, 1), 0, 1e-9);
    int *labels = xmalloc((size_t)n * sizeof(int));
    fx_labels(seed, n, k, labels);
    const FxRecord *lr = fx_need(&fx, "labels", FX_I64, (size_t)n);
    for (int i = 0; i < n; i++)
        if (labels[i] != (int)fx_get(lr, (size_t)i)) fail("labels differ from the fixture's (%s)", tag);

    if (frozen) resnet34_freeze_backbone(m, 1);
    if (bn_train) check_fused(m, x, n, h, w, k, NULL); // folds before the running stats move
    if (!bn_train && !frozen) resnet34_keep_activations(m, 1); // backward through eval mode
    resnet34_forward(m, x, n, h, w, bn_train);
    float *logits = xmalloc((size_t)n * k * sizeof(float)), *feat = xmalloc((size_t)n * 512 * sizeof(float));
    resnet34_logits(m, logits);
    resnet34_features(m, feat);
    compare_array(K_LOGITS, "logits", logits, fx_need(&fx, "logits", FX_F32, (size_t)n * k), TOL_LOGITS_A, TOL_LOGITS_R);
    compare_array(K_FEATURES, "features", feat, fx_need(&fx, "features", FX_F32, (size_t)n * 512), TOL_LOGITS_A, TOL_LOGITS_R);
    const int grads = fx_find(&fx, "num_batches_tracked") != NULL;
    double loss = resnet34_loss(m, labels, 0, grads, 1.0f, NULL);
    err_check(&stats[K_LOSS], "loss_sum", 0, loss, fx_get(fx_need(&fx, "loss_sum", FX_F64, 1), 0), 0, TOL_LOSS_R);
    err_check(&stats[K_LOSS], "loss_mean", 0, loss / n, fx_get(fx_need(&fx, "loss_mean", FX_F64, 1), 0), 0, TOL_LOSS_R);

    if (grads) {
        // every parameter: a trainable one has a reference gradient, a frozen one has no gradient
        for (int t = 0; t < resnet34_num_params(m); t++) {
            Param *p = resnet34_param(m, t);
            char key[128];
            if (p->kind == PARAM_BUFFER) {
                snprintf(key, sizeof(key), "after:%s", p->name);
                float *v = download(p->value);
                compare_array(K_STATS, p->name, v, fx_need(&fx, key, FX_F32, p->value->numel), TOL_STATS_A, TOL_STATS_R);
                free(v);
                continue;
            }
            snprintf(key, sizeof(key), "grad:%s", p->name);
            const FxRecord *full = fx_find(&fx, key);
            snprintf(key, sizeof(key), "gsum:%s", p->name);
            const FxRecord *sums = fx_find(&fx, key);
            if (!full && !sums) {
                if (p->grad) fail("%s has a gradient but PyTorch computes none", p->name);
                continue;
            }
            if (!p->grad) {
                fail("%s has no gradient but PyTorch computes one", p->name);
                continue;
            }
            float *g = download(p->grad);
            const size_t numel = p->grad->numel;
            if (full) {
                if (full->count != numel) die("fixture gradient of %s has the wrong size", p->name);
                compare_array(K_GRAD_FULL, p->name, g, full, TOL_GRAD_A, TOL_GRAD_R);
            } else {
                if (sums->count != 3 + 32) die("fixture checksums of %s have the wrong size", p->name);
                double s = 0, sa = 0, ss = 0;
                for (size_t i = 0; i < numel; i++) s += g[i], sa += fabs(g[i]), ss += (double)g[i] * g[i];
                const double rsa = fx_get(sums, 1), rss = fx_get(sums, 2), rms = sqrt(rss / numel);
                err_check(&stats[K_GRAD_SUMS], p->name, 0, s, fx_get(sums, 0), TOL_GSUM * rsa, 0);
                err_check(&stats[K_GRAD_SUMS], p->name, 1, sa, rsa, 0, TOL_GSUM);
                err_check(&stats[K_GRAD_SUMS], p->name, 2, ss, rss, 0, 2 * TOL_GSUM);
                for (int j = 0; j < 32; j++) {
                    size_t idx = fx_sample_index(t, j, numel);
                    err_check(&stats[K_GRAD_SAMPLES], p->name, idx, g[idx], fx_get(sums, 3 + (size_t)j),
                              TOL_GRAD_A * 4 * rms, TOL_GRAD_R);
                }
            }
            free(g);
        }
        check_state_dict(m, &fx, (int64_t)fx_get(fx_need(&fx, "num_batches_tracked", FX_I64, 1), 0));
    } else {
        check_state_dict(m, &fx, 0);
    }
    check_fused(m, x, n, h, w, k, bn_train ? NULL : &fx);
    resnet34_free(m);

    if (adam_steps) {
        const FxRecord *ref = fx_need(&fx, "adam_losses", FX_F64, (size_t)adam_steps);
        m = resnet34_create(be, k);
        fx_init_model(m, seed);
        if (frozen) resnet34_freeze_backbone(m, 1);
        Adam opt;
        adam_init(&opt, 1e-3f);
        printf("  adam losses:");
        for (int s = 0; s < adam_steps; s++) {
            resnet34_forward(m, x, n, h, w, bn_train);
            double l = resnet34_loss(m, labels, 0, 1, 1.0f, NULL);
            adam_step(&opt, m, 1.0f);
            printf(" %.5f (ref %.5f)", l, fx_get(ref, (size_t)s));
            err_check(&stats[K_ADAM], tag, (size_t)s, l, fx_get(ref, (size_t)s), TOL_ADAM_A, TOL_ADAM_R);
        }
        printf("\n");
        resnet34_free(m);
    }
    printf("  %.1f s\n", now_seconds() - t0);
    free(x);
    free(labels);
    free(logits);
    free(feat);
    fx_free(&fx);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FIXTURE_DIR [CASE...]\n", argv[0]);
        return 2;
    }
    char err[256];
    Backend *be = backend_open("cpu", PREC_FP32, 1, err, sizeof(err));
    if (!be) die("%s", err);
    printf("backend: %s\n", be->description);
    static const char *all[] = {"train64", "eval64_trainable", "frozen64_eval", "frozen64_train", "eval224"};
    // PETS_TEST_QUICK=1 (make sanitize, where the naive reference kernels run ~15x slower) with
    // PETS_CPU_REFERENCE=1: the first case only.
    const char *quick = getenv("PETS_TEST_QUICK"), *ref = getenv("PETS_CPU_REFERENCE");
    if (argc == 2 && quick && !strcmp(quick, "1") && ref && !strcmp(ref, "1")) {
        printf("SKIP: PETS_TEST_QUICK=1 with the reference kernels: case train64 only, not "
               "eval64_trainable, frozen64_eval, frozen64_train, eval224\n");
        run_case(be, argv[1], all[0]);
    } else if (argc > 2) {
        for (int i = 2; i < argc; i++) run_case(be, argv[1], argv[i]);
    } else {
        for (size_t i = 0; i < sizeof(all) / sizeof(*all); i++) run_case(be, argv[1], all[i]);
    }
    printf("worst errors (tolerance: |err| <= atol + rtol |ref|; err/tol > 1 fails):\n");
    for (int i = 0; i < NKIND; i++) {
        err_report(&stats[i]);
        failures += stats[i].failed > 0;
    }
    backend_close(be);
    return check_exit("all values within tolerance");
}
