// test_resnet34_model.c: the ResNet34 model's behaviour beyond PyTorch parity (test_resnet34.c):
// - freezing: frozen weights get no gradient, running statistics still update in train mode, and
//   the gradients of what stays trainable are those of the fully trainable network (backward
//   stopping early changes nothing above the stop);
// - activation reuse: repeated forwards, changing batch sizes and eval after train give the same
//   results; forward_head reproduces the logits from features; mean = 1 divides the gradients by
//   N; loss_scale scales them and an overflow is reported by resnet34_grads_nonfinite;
// - initialisation: torchvision's distributions, determinism per seed, reset_fc;
// - checkpoints: state-dict round trips (in memory and through pth_save/pth_load), optional
//   num_batches_tracked, and clear refusals of missing, unexpected, mis-shaped and other-head keys
//   that leave the model untouched.
#define _POSIX_C_SOURCE 200809L
#include <unistd.h>

#include "checkpoint/pth.h"
#include "test_resnet34_util.h"
#include "check.h"

enum { N = 3, H = 32, W = 32, K = 10 };

static float *download(const Tensor *t) {
    float *v = xmalloc(t->numel * sizeof(float));
    t->be->tensor_download(t, v);
    return v;
}

// max |a - b| / (max |b| + tiny)
static double rel_diff(const float *a, const float *b, size_t n) {
    double md = 0, mb = 1e-30;
    for (size_t i = 0; i < n; i++) md = fmax(md, fabs((double)a[i] - b[i])), mb = fmax(mb, fabs(b[i]));
    return md / mb;
}

static double tensor_rel_diff(const Tensor *a, const float *b) {
    float *v = download(a);
    double d = rel_diff(v, b, a->numel);
    free(v);
    return d;
}

static ResNet34 *model(Backend *be, int k, uint64_t seed) {
    ResNet34 *m = resnet34_create(be, k);
    fx_init_model(m, seed);
    return m;
}

// The gradients of all trainable weights, concatenated (NULL entries for frozen ones).
static float **grads_of(ResNet34 *m) {
    float **g = xcalloc((size_t)resnet34_num_params(m), sizeof(float *));
    for (int i = 0; i < resnet34_num_params(m); i++) {
        Param *p = resnet34_param(m, i);
        if (p->grad) g[i] = download(p->grad);
    }
    return g;
}

static void free_grads(ResNet34 *m, float **g) {
    for (int i = 0; i < resnet34_num_params(m); i++) free(g[i]);
    free(g);
}

static int is_at_or_above(const char *name, const char *first) {
    // parameters in state-dict order from `first` on: layer4.* and fc.*, say
    static const char *order[] = {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"};
    int a = -1, b = -1;
    for (int i = 0; i < 7; i++) {
        if (strncmp(name, order[i], strlen(order[i])) == 0 && name[strlen(order[i])] == '.') a = i;
        if (strcmp(first, order[i]) == 0) b = i;
    }
    return a >= b;
}

static void test_freezing(Backend *be, const float *x, const int *labels) {
    ResNet34 *full = model(be, K, 7);
    resnet34_forward(full, x, N, H, W, 1);
    resnet34_loss(full, labels, 0, 1, 1.0f, NULL);
    float **gf = grads_of(full);
    for (int i = 0; i < resnet34_num_params(full); i++)
        CHECK((resnet34_param(full, i)->kind == PARAM_WEIGHT) == (gf[i] != NULL), "%s: gradient presence", resnet34_param(full, i)->name);

    // train only `first` and above: their gradients equal the full network's, the rest get none
    const char *firsts[] = {"fc", "layer4", "layer2", "bn1"};
    for (int f = 0; f < 4; f++) {
        ResNet34 *m = model(be, K, 7);
        for (int i = 0; i < resnet34_num_params(m); i++) {
            Param *p = resnet34_param(m, i);
            if (p->kind == PARAM_WEIGHT) p->frozen = !is_at_or_above(p->name, firsts[f]);
        }
        if (strcmp(firsts[f], "fc") == 0) resnet34_freeze_backbone(m, 1);
        resnet34_forward(m, x, N, H, W, 1);
        resnet34_loss(m, labels, 0, 1, 1.0f, NULL);
        double worst = 0;
        for (int i = 0; i < resnet34_num_params(m); i++) {
            Param *p = resnet34_param(m, i);
            if (p->kind != PARAM_WEIGHT) {
                // running statistics update in train mode whether or not the layer is frozen
                Param *q = resnet34_param(full, i);
                float *v = download(q->value);
                CHECK(tensor_rel_diff(p->value, v) < 1e-6, "frozen %s: running statistic %s differs", firsts[f], p->name);
                free(v);
                continue;
            }
            if (p->frozen) {
                CHECK(p->grad == NULL, "frozen %s has a gradient (training from %s)", p->name, firsts[f]);
                continue;
            }
            if (!p->grad) {
                CHECK(0, "trainable %s has no gradient (training from %s)", p->name, firsts[f]);
                continue;
            }
            worst = fmax(worst, tensor_rel_diff(p->grad, gf[i]));
        }
        CHECK(worst < 1e-5, "training from %s: gradients differ from the full network's by %g", firsts[f], worst);
        printf("train from %-6s: trainable gradients equal the full network's (worst rel diff %.2g)\n", firsts[f], worst);
        resnet34_free(m);
    }
    // unfreezing brings the gradients back
    ResNet34 *m = model(be, K, 7);
    resnet34_freeze_backbone(m, 1);
    resnet34_freeze_backbone(m, 0);
    resnet34_forward(m, x, N, H, W, 1);
    resnet34_loss(m, labels, 0, 1, 1.0f, NULL);
    CHECK(resnet34_find_param(m, "conv1.weight")->grad != NULL, "unfrozen conv1 has no gradient");
    CHECK(tensor_rel_diff(resnet34_find_param(m, "conv1.weight")->grad, gf[0]) < 1e-5, "conv1 gradient after unfreezing");
    resnet34_free(m);
    free_grads(full, gf);
    resnet34_free(full);
}

static void test_reuse(Backend *be, const float *x, const int *labels) {
    ResNet34 *m = model(be, K, 9);
    float l1[N * K], l2[N * K], l3[N * K], f1[N * 512];
    resnet34_forward(m, x, N, H, W, 0);
    resnet34_logits(m, l1);
    resnet34_features(m, f1);
    // a training step in between, then eval again: the same logits (running stats restored)
    ResNet34 *ref = model(be, K, 9);
    resnet34_forward(m, x, N, H, W, 1);
    resnet34_loss(m, labels, 0, 1, 1.0f, NULL);
    fx_init_model(m, 9);
    resnet34_forward(m, x, N, H, W, 0);
    resnet34_logits(m, l2);
    CHECK(rel_diff(l2, l1, N * K) == 0, "eval logits changed after a training step on the same weights");
    // a smaller batch: its logits are the first rows of the bigger batch's (eval is per sample)
    resnet34_forward(m, x, 2, H, W, 0);
    resnet34_logits(m, l3);
    CHECK(rel_diff(l3, l1, 2 * K) < 1e-6, "batch of 2 vs batch of 3: logits differ by %g", rel_diff(l3, l1, 2 * K));
    resnet34_forward(m, x, N, H, W, 0);
    resnet34_logits(m, l3);
    CHECK(rel_diff(l3, l1, N * K) == 0, "logits changed after a batch-size change");
    // the head alone from cached features
    resnet34_forward_head(m, f1, N);
    resnet34_logits(m, l3);
    CHECK(rel_diff(l3, l1, N * K) < 1e-6, "forward_head logits differ by %g", rel_diff(l3, l1, N * K));
    // correct count = argmax agreement
    int correct = -1, expect = 0;
    for (int i = 0; i < N; i++) {
        int best = 0;
        for (int j = 1; j < K; j++)
            if (l1[i * K + j] > l1[i * K + best]) best = j;
        expect += best == labels[i];
    }
    resnet34_forward(m, x, N, H, W, 0);
    double loss = resnet34_loss(m, labels, 0, 0, 1.0f, &correct);
    CHECK(correct == expect, "correct %d, expected %d", correct, expect);
    CHECK(loss > 0 && isfinite(loss), "loss %g", loss);

    // mean = 1 divides the gradients by N; loss_scale multiplies them
    resnet34_freeze_backbone(m, 1);
    Param *fcw = resnet34_find_param(m, "fc.weight");
    resnet34_forward(m, x, N, H, W, 0);
    double ls = resnet34_loss(m, labels, 0, 1, 1.0f, NULL);
    float *gsum = download(fcw->grad);
    resnet34_forward(m, x, N, H, W, 0);
    double lm = resnet34_loss(m, labels, 1, 1, 1.0f, NULL);
    CHECK(lm == ls, "resnet34_loss returns the summed loss whatever the reduction (%g vs %g)", lm, ls);
    float *gmean = download(fcw->grad);
    for (size_t i = 0; i < fcw->grad->numel; i++) gmean[i] *= N;
    CHECK(rel_diff(gmean, gsum, fcw->grad->numel) < 1e-6, "mean gradients x N differ from sum gradients");
    resnet34_forward(m, x, N, H, W, 0);
    resnet34_loss(m, labels, 0, 1, 1024.0f, NULL);
    float *gscaled = download(fcw->grad);
    for (size_t i = 0; i < fcw->grad->numel; i++) gscaled[i] /= 1024.0f;
    CHECK(rel_diff(gscaled, gsum, fcw->grad->numel) < 1e-6, "loss_scale 1024 does not scale the gradients");
    CHECK(!resnet34_grads_nonfinite(m), "finite gradients reported non-finite");
    resnet34_freeze_backbone(m, 0);
    resnet34_forward(m, x, N, H, W, 1);
    resnet34_loss(m, labels, 0, 1, 3e38f, NULL);
    CHECK(resnet34_grads_nonfinite(m), "loss_scale 3e38 must overflow the gradients and be reported");
    free(gsum), free(gmean), free(gscaled);
    resnet34_free(ref);
    resnet34_free(m);
}

static double stddev(const Param *p, double *maxabs, double *mean) {
    float *v = download(p->value);
    double s = 0, ss = 0, mx = 0;
    for (size_t i = 0; i < p->value->numel; i++) s += v[i], ss += (double)v[i] * v[i], mx = fmax(mx, fabs(v[i]));
    free(v);
    double n = (double)p->value->numel;
    if (maxabs) *maxabs = mx;
    if (mean) *mean = s / n;
    return sqrt(ss / n - (s / n) * (s / n));
}

static void test_init(Backend *be) {
    ResNet34 *m = resnet34_create(be, 37), *m2 = resnet34_create(be, 37);
    resnet34_init_random(m, 42);
    resnet34_init_random(m2, 42);
    const char *convs[] = {"conv1.weight", "layer1.0.conv1.weight", "layer3.0.downsample.0.weight", "layer4.2.conv2.weight"};
    for (int i = 0; i < 4; i++) {
        Param *p = resnet34_find_param(m, convs[i]);
        double mean, sd = stddev(p, NULL, &mean);
        double expect = sqrt(2.0 / (double)(p->shape[0] * p->shape[2] * p->shape[3])); // fan_out
        CHECK(fabs(sd / expect - 1) < 0.05 && fabs(mean) < 0.1 * expect, "%s: std %g, expected %g (kaiming_normal fan_out)", convs[i], sd, expect);
    }
    double mx, mean;
    double sd = stddev(resnet34_find_param(m, "fc.weight"), &mx, &mean);
    double bound = 1 / sqrt(512.0);
    CHECK(mx <= bound && mx > 0.99 * bound && fabs(sd / (bound / sqrt(3.0)) - 1) < 0.05, "fc.weight: max %g std %g, expected U(+-%g)", mx, sd, bound);
    stddev(resnet34_find_param(m, "fc.bias"), &mx, NULL);
    CHECK(mx <= bound, "fc.bias max %g > %g", mx, bound);
    sd = stddev(resnet34_find_param(m, "layer2.1.bn1.weight"), NULL, &mean);
    CHECK(sd == 0 && mean == 1, "bn weight must be 1");
    sd = stddev(resnet34_find_param(m, "layer2.1.bn1.bias"), NULL, &mean);
    CHECK(sd == 0 && mean == 0, "bn bias must be 0");
    sd = stddev(resnet34_find_param(m, "bn1.running_var"), NULL, &mean);
    CHECK(sd == 0 && mean == 1, "running_var must be 1");
    for (int i = 0; i < resnet34_num_params(m); i++) {
        float *a = download(resnet34_param(m, i)->value), *b = download(resnet34_param(m2, i)->value);
        CHECK(memcmp(a, b, resnet34_param(m, i)->value->numel * 4) == 0, "init_random is not deterministic (%s)", resnet34_param(m, i)->name);
        free(a), free(b);
    }
    // reset_fc changes fc only
    float *c1 = download(resnet34_find_param(m, "layer1.0.conv1.weight")->value);
    float *f1 = download(resnet34_find_param(m, "fc.weight")->value);
    resnet34_reset_fc(m, 5);
    float *f2 = download(resnet34_find_param(m, "fc.weight")->value);
    CHECK(rel_diff(f2, f1, 37 * 512) > 0.1, "reset_fc did not change fc.weight");
    CHECK(tensor_rel_diff(resnet34_find_param(m, "layer1.0.conv1.weight")->value, c1) == 0, "reset_fc touched the backbone");
    resnet34_reset_fc(m2, 5);
    CHECK(tensor_rel_diff(resnet34_find_param(m2, "fc.weight")->value, f2) == 0, "reset_fc is not deterministic");
    free(c1), free(f1), free(f2);
    resnet34_free(m);
    resnet34_free(m2);
}

static int sd_remove(StateDict *sd, const char *name) {
    for (int i = 0; i < sd->n; i++) {
        if (strcmp(sd->t[i].name, name) == 0) {
            free(sd->t[i].name);
            free(sd->t[i].data);
            memmove(&sd->t[i], &sd->t[i + 1], (size_t)(sd->n - i - 1) * sizeof(PthTensor));
            sd->n--;
            return 1;
        }
    }
    return 0;
}

static void test_checkpoints(Backend *be, const float *x) {
    char err[512];
    ResNet34 *a = model(be, K, 11);
    // give the counters a value
    int labels[N] = {1, 2, 3};
    resnet34_forward(a, x, N, H, W, 1);
    resnet34_loss(a, labels, 0, 0, 1.0f, NULL);
    StateDict sd = {0};
    resnet34_to_state(a, &sd);
    CHECK(sd.n == 218, "torchvision's resnet34 state dict has 218 entries, ours %d", sd.n);
    const PthTensor *nbt = sd_find(&sd, "layer3.0.downsample.1.num_batches_tracked");
    CHECK(nbt && nbt->dtype == PTH_I64 && nbt->ndim == 0 && *(int64_t *)nbt->data == 1, "num_batches_tracked after one train forward");

    // in-memory round trip, then through a .pth file
    ResNet34 *b = model(be, K, 12);
    CHECK(resnet34_load_state(b, &sd, 1, err, sizeof(err)) == 0, "load_state: %s", err);
    char path[] = "/tmp/test-resnet34-model-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    close(fd);
    CHECK(pth_save(path, &sd, "archive", err, sizeof(err)) == 0, "pth_save: %s", err);
    StateDict sd2 = {0};
    CHECK(pth_load(path, &sd2, err, sizeof(err)) == 0, "pth_load: %s", err);
    unlink(path);
    ResNet34 *c = model(be, K, 13);
    CHECK(resnet34_load_state(c, &sd2, 1, err, sizeof(err)) == 0, "load_state from file: %s", err);
    float la[N * K], lc[N * K];
    resnet34_forward(a, x, N, H, W, 0);
    resnet34_logits(a, la);
    resnet34_forward(c, x, N, H, W, 0);
    resnet34_logits(c, lc);
    CHECK(rel_diff(lc, la, N * K) == 0, "logits after a .pth round trip differ");
    StateDict sd3 = {0};
    resnet34_to_state(c, &sd3);
    CHECK(*(int64_t *)sd_find(&sd3, "bn1.num_batches_tracked")->data == 1, "num_batches_tracked not loaded");
    sd_free(&sd3);

    // without num_batches_tracked: accepted, counters 0
    StateDict s = {0};
    resnet34_to_state(a, &s);
    for (int i = s.n - 1; i >= 0; i--)
        if (ends_with(s.t[i].name, "num_batches_tracked")) sd_remove(&s, s.t[i].name);
    CHECK(s.n == 182, "182 entries without the counters, got %d", s.n);
    CHECK(resnet34_load_state(c, &s, 1, err, sizeof(err)) == 0, "load without num_batches_tracked: %s", err);
    resnet34_to_state(c, &sd3);
    CHECK(*(int64_t *)sd_find(&sd3, "bn1.num_batches_tracked")->data == 0, "num_batches_tracked absent must load as 0");
    sd_free(&sd3);
    sd_free(&s);

    // refusals, each naming the key (and both shapes), leaving the model as it was
    float before[N * K], after[N * K];
    resnet34_forward(c, x, N, H, W, 0);
    resnet34_logits(c, before);
    ResNet34 *other = model(be, K, 99);  // a state dict with other values, damaged below
    resnet34_to_state(other, &s);
    sd_remove(&s, "layer2.1.bn1.running_var");
    CHECK(resnet34_load_state(c, &s, 1, err, sizeof(err)) != 0 && strstr(err, "layer2.1.bn1.running_var"), "missing key: %s", err);
    printf("missing key:    %s\n", err);
    sd_free(&s);
    resnet34_to_state(other, &s);
    for (int i = 0; i < s.n; i++)
        if (strcmp(s.t[i].name, "layer1.0.conv1.weight") == 0) s.t[i].shape[1] = 32, s.t[i].numel /= 2;
    CHECK(resnet34_load_state(c, &s, 1, err, sizeof(err)) != 0 && strstr(err, "layer1.0.conv1.weight") &&
              strstr(err, "[64, 32, 3, 3]") && strstr(err, "[64, 64, 3, 3]"), "wrong shape: %s", err);
    printf("wrong shape:    %s\n", err);
    sd_free(&s);
    resnet34_to_state(other, &s);
    int64_t shp[1] = {3};
    float three[3] = {0};
    sd_add(&s, "layer5.0.conv1.weight", PTH_F32, 1, shp, three);
    CHECK(resnet34_load_state(c, &s, 1, err, sizeof(err)) != 0 && strstr(err, "layer5.0.conv1.weight"), "unexpected key: %s", err);
    printf("unexpected key: %s\n", err);
    sd_free(&s);
    resnet34_forward(c, x, N, H, W, 0);
    resnet34_logits(c, after);
    CHECK(rel_diff(after, before, N * K) == 0, "a refused checkpoint changed the model");

    // another head: refused naming the fc shapes unless load_fc = 0
    ResNet34 *imagenet = model(be, 1000, 21);
    resnet34_to_state(imagenet, &s);
    CHECK(resnet34_load_state(c, &s, 1, err, sizeof(err)) != 0 && strstr(err, "fc.weight") && strstr(err, "[1000, 512]") &&
              strstr(err, "[10, 512]"), "other head: %s", err);
    printf("other head:     %s\n", err);
    float *fc_before = download(resnet34_find_param(c, "fc.weight")->value);
    CHECK(resnet34_load_state(c, &s, 0, err, sizeof(err)) == 0, "load_fc = 0: %s", err);
    CHECK(tensor_rel_diff(resnet34_find_param(c, "fc.weight")->value, fc_before) == 0, "load_fc = 0 changed fc");
    float *w_in = download(resnet34_find_param(imagenet, "layer4.2.conv2.weight")->value);
    CHECK(tensor_rel_diff(resnet34_find_param(c, "layer4.2.conv2.weight")->value, w_in) == 0, "load_fc = 0 did not load the backbone");
    free(fc_before), free(w_in);
    sd_free(&s);
    // a non-float tensor under a weight's name
    resnet34_to_state(other, &s);
    for (int i = 0; i < s.n; i++)
        if (strcmp(s.t[i].name, "bn1.bias") == 0) s.t[i].dtype = PTH_I32;
    CHECK(resnet34_load_state(c, &s, 1, err, sizeof(err)) != 0 && strstr(err, "bn1.bias"), "integer weight: %s", err);
    sd_free(&s);

    sd_free(&sd);
    sd_free(&sd2);
    resnet34_free(a), resnet34_free(b), resnet34_free(c), resnet34_free(other), resnet34_free(imagenet);
}

int main(void) {
    char err[256];
    Backend *be = backend_open("cpu", PREC_FP32, 1, err, sizeof(err));
    if (!be) die("%s", err);
    float *x = fx_input(5, N, H, W);
    int labels[N];
    fx_labels(5, N, K, labels);
    test_freezing(be, x, labels);
    test_reuse(be, x, labels);
    test_init(be);
    test_checkpoints(be, x);
    free(x);
    backend_close(be);
    return check_exit("all model checks passed");
}
