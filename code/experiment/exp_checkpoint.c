// exp_checkpoint.c: the training chapters' checkpoints (see experiment.h): after every epoch,
// everything a run needs to continue as if it had never stopped, written atomically; --resume
// restores it after checking that it belongs to the same run.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "experiment/experiment.h"
#include "checkpoint/pth.h"

// ----------------------------------------------------------------------------
// checkpoints: a torch.save zip (pth_save) holding
//   model.<key>       the state-dict entries this mode changes (fc; BN buffers when BN trains;
//                     everything when fine-tuning), over the starting weights given again
//   adam.m.<key>, adam.v.<key>, adam.step, lr, plateau.*, scaler.*, rows (epochs, 5) float64,
//   config            uint8 text: what must match for a resume to continue the same run
//   device            uint8 text: the backend, its kernel table and the precision that computed
//                     (exp_device_id); a resume elsewhere could not end with identical numbers

static char *config_string(const Experiment *x) {
    const ExpArgs *a = &x->a;
    return xasprintf("name=%s mode=%s weights=%s seed=%llu keep_fc=%d batch=%d lr=%.9g limit=%d "
                     "data=%s,%s classes=%d",
                     x->name, x->mode, x->weights_sha[0] ? x->weights_sha : "random",
                     (unsigned long long)a->seed, a->keep_fc, a->batch_size, (double)a->lr,
                     a->limit, x->data_key[0], x->data_key[1], resnet34_num_classes(x->model));
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int is_bn_buffer(const char *key) {
    return ends_with(key, ".running_mean") || ends_with(key, ".running_var") ||
           ends_with(key, ".num_batches_tracked");
}

// Whether training changes this state-dict entry in this experiment.
static int changes(Experiment *x, const char *key) {
    if (is_bn_buffer(key)) return strcmp(x->mode, "cached-eval-bn") != 0;
    Param *p = resnet34_find_param(x->model, key);
    return p && p->kind == PARAM_WEIGHT && !p->frozen;
}

static void add_scalar_i64(StateDict *sd, const char *name, int64_t v) {
    sd_add(sd, name, PTH_I64, 0, NULL, &v);
}
static void add_scalar_f64(StateDict *sd, const char *name, double v) {
    sd_add(sd, name, PTH_F64, 0, NULL, &v);
}

static void add_param_state(StateDict *sd, const char *prefix, const Param *p, const Tensor *t) {
    float *host = xmalloc(t->numel * sizeof(float));
    t->be->tensor_download(t, host);
    char *name = xasprintf("%s%s", prefix, p->name);
    sd_add(sd, name, PTH_F32, p->ndim, p->shape, host);
    free(name);
    free(host);
}

void exp_checkpoint(Experiment *x, const Adam *opt, const Plateau *p, const GradScaler *s) {
    exp_write_csv(x);
    StateDict model = {0}, ck = {0};
    if (strcmp(x->mode, "cached-eval-bn") == 0) { // only trainable weights change (the fc)
        for (int i = 0; i < resnet34_num_params(x->model); i++) {
            Param *q = resnet34_param(x->model, i);
            if (changes(x, q->name)) add_param_state(&ck, "model.", q, q->value);
        }
    } else { // BatchNorm buffers change too, num_batches_tracked included: the whole state dict
        resnet34_to_state(x->model, &model);
        for (int i = 0; i < model.n; i++) {
            const PthTensor *t = &model.t[i];
            if (!changes(x, t->name)) continue;
            char *name = xasprintf("model.%s", t->name);
            sd_add(&ck, name, t->dtype, t->ndim, t->shape, t->data);
            free(name);
        }
        sd_free(&model);
    }
    for (int i = 0; i < resnet34_num_params(x->model); i++) {
        Param *q = resnet34_param(x->model, i);
        if (q->adam_m) add_param_state(&ck, "adam.m.", q, q->adam_m);
        if (q->adam_v) add_param_state(&ck, "adam.v.", q, q->adam_v);
    }
    add_scalar_i64(&ck, "adam.step", opt->step);
    add_scalar_f64(&ck, "lr", opt->lr);
    add_scalar_f64(&ck, "plateau.best", p->best);
    add_scalar_i64(&ck, "plateau.num_bad_epochs", p->num_bad_epochs);
    add_scalar_i64(&ck, "plateau.cooldown_counter", p->cooldown_counter);
    add_scalar_i64(&ck, "plateau.last_epoch", p->last_epoch);
    add_scalar_f64(&ck, "scaler.scale", s->scale);
    add_scalar_i64(&ck, "scaler.good_steps", s->good_steps);
    int64_t shape[2] = {x->n_rows, 5};
    sd_add(&ck, "rows", PTH_F64, 2, shape, x->rows);
    char *cfg = config_string(x);
    int64_t len = (int64_t)strlen(cfg);
    sd_add(&ck, "config", PTH_U8, 1, &len, cfg);
    free(cfg);
    char *dev = exp_device_id(x);
    len = (int64_t)strlen(dev);
    sd_add(&ck, "device", PTH_U8, 1, &len, dev);
    free(dev);
    char err[1024];
    char *path = exp_out_path(x, ".ckpt");
    if (pth_save(path, &ck, NULL, err, sizeof err))
        die("%s (written atomically: the previous checkpoint is left as it was)", err);
    free(path);
    sd_free(&ck);
    exp_note_saved(x, x->n_rows);
}

static const PthTensor *need(const StateDict *sd, const char *path, const char *name, PthDType dt,
                             size_t numel) {
    const PthTensor *t = sd_find(sd, name);
    if (!t || t->dtype != dt || t->numel != numel)
        die("%s: not a checkpoint of this program (entry '%s' missing or mis-shaped); delete it "
            "or run without --resume", path, name);
    return t;
}

static int64_t get_i64(const StateDict *sd, const char *path, const char *name) {
    return *(const int64_t *)need(sd, path, name, PTH_I64, 1)->data;
}
static double get_f64(const StateDict *sd, const char *path, const char *name) {
    return *(const double *)need(sd, path, name, PTH_F64, 1)->data;
}

int exp_resume(Experiment *x, Adam *opt, Plateau *p, GradScaler *s) {
    if (!x->a.resume) return 0;
    char err[1024];
    char *path = exp_out_path(x, ".ckpt");
    if (!file_exists(path)) {
        printf("--resume: no checkpoint %s yet, starting from the first epoch\n", path);
        free(path);
        return 0;
    }
    StateDict ck;
    if (pth_load(path, &ck, err, sizeof err)) die("%s (delete it to start over)", err);
    // the head first, so that a checkpoint of another task is refused by its shapes
    const int classes = resnet34_num_classes(x->model);
    const PthTensor *w = sd_find(&ck, "model.fc.weight");
    if (w && (w->ndim != 2 || w->shape[0] != classes || w->shape[1] != RESNET34_FEATURES))
        die("%s: the checkpoint's head is fc.weight (%lld, %lld), this run needs (%d, %d): it "
            "comes from a model with another number of classes; delete it or use another --results",
            path, (long long)w->shape[0], (long long)(w->ndim > 1 ? w->shape[1] : 0), classes,
            RESNET34_FEATURES);
    // the device and precision: the promise of --resume is the uninterrupted run's numbers
    const PthTensor *d = sd_find(&ck, "device");
    char *dev = exp_device_id(x);
    if (!d || d->dtype != PTH_U8 || d->numel != strlen(dev) || memcmp(d->data, dev, d->numel) != 0) {
        char *was = d && d->dtype == PTH_U8 ? xasprintf("%.*s", (int)d->numel, (const char *)d->data)
                                            : xstrdup("an unrecorded device (an older checkpoint)");
        die("%s: this checkpoint was computed on %s, this run computes on %s: a resumed run would "
            "not give the numbers of an uninterrupted one. Resume with the checkpoint's --device "
            "and --precision (and PETS_CPU_REFERENCE as it was), or run without --resume to start "
            "over", path, was, dev);
    }
    free(dev);
    const PthTensor *c = sd_find(&ck, "config");
    char *cfg = config_string(x);
    if (!c || c->dtype != PTH_U8 || c->numel != strlen(cfg) || memcmp(c->data, cfg, c->numel) != 0)
        die("%s: this checkpoint belongs to a run with other settings (weights, data, seed, batch "
            "size, lr, --keep-fc or --limit differ):\n  checkpoint: %.*s\n  this run:   %s\n"
            "rerun with the same options, or without --resume to start over",
            path, c && c->dtype == PTH_U8 ? (int)c->numel : 1, c && c->dtype == PTH_U8 ? (const char *)c->data : "?", cfg);
    free(cfg);
    // model: the checkpoint's entries over the starting weights, loaded as one state dict
    StateDict model = {0};
    resnet34_to_state(x->model, &model);
    for (int i = 0; i < ck.n; i++) {
        const PthTensor *t = &ck.t[i];
        if (strncmp(t->name, "model.", 6) != 0) continue;
        PthTensor *dst = NULL;
        for (int j = 0; j < model.n; j++)
            if (strcmp(model.t[j].name, t->name + 6) == 0) dst = &model.t[j];
        if (!dst || dst->dtype != t->dtype || dst->numel != t->numel)
            die("%s: entry '%s' does not fit the model; delete the checkpoint to start over", path,
                t->name);
        memcpy(dst->data, t->data, t->numel * pth_dtype_size(t->dtype));
    }
    if (resnet34_load_state(x->model, &model, 1, err, sizeof err)) die("%s: %s", path, err);
    sd_free(&model);
    // Adam moments, created as adam_step would and filled from the file
    for (int i = 0; i < resnet34_num_params(x->model); i++) {
        Param *q = resnet34_param(x->model, i);
        Tensor **mv[2] = {&q->adam_m, &q->adam_v};
        const char *pre[2] = {"adam.m.", "adam.v."};
        for (int k = 0; k < 2; k++) {
            char *name = xasprintf("%s%s", pre[k], q->name);
            const PthTensor *t = sd_find(&ck, name);
            if (t) {
                if (q->kind != PARAM_WEIGHT || q->frozen || t->dtype != PTH_F32 ||
                    t->numel != q->value->numel)
                    die("%s: entry '%s' does not fit the model", path, name);
                Tensor *v = q->value;
                if (!*mv[k]) *mv[k] = v->be->tensor_new(v->be, v->n, v->c, v->h, v->w);
                v->be->tensor_upload(*mv[k], t->data);
            }
            free(name);
        }
    }
    opt->step = get_i64(&ck, path, "adam.step");
    opt->lr = (float)get_f64(&ck, path, "lr");
    p->best = get_f64(&ck, path, "plateau.best");
    p->num_bad_epochs = (int)get_i64(&ck, path, "plateau.num_bad_epochs");
    p->cooldown_counter = (int)get_i64(&ck, path, "plateau.cooldown_counter");
    p->last_epoch = get_i64(&ck, path, "plateau.last_epoch");
    s->scale = (float)get_f64(&ck, path, "scaler.scale");
    s->good_steps = (int)get_i64(&ck, path, "scaler.good_steps");
    const PthTensor *rows = sd_find(&ck, "rows");
    if (!rows || rows->dtype != PTH_F64 || rows->ndim != 2 || rows->shape[1] != 5 ||
        rows->shape[0] < 0 || rows->shape[0] > 100000)
        die("%s: entry 'rows' missing or mis-shaped; delete the checkpoint to start over", path);
    int n = (int)rows->shape[0];
    if (n > x->a.epochs)
        die("%s: the checkpoint already holds %d epochs, more than --epochs %d; pass --epochs %d "
            "or more", path, n, x->a.epochs, n);
    x->rows = xrealloc(x->rows, (size_t)(n > 0 ? n : 1) * sizeof(ExpRow));
    memcpy(x->rows, rows->data, (size_t)n * sizeof(ExpRow));
    x->n_rows = n;
    x->resumed_from = n;
    sd_free(&ck);
    exp_note_saved(x, n);
    printf("--resume: continuing %s after epoch %d of %d (lr %g)\n", path, n, x->a.epochs,
           (double)opt->lr);
    for (int i = 0; i < n; i++) // the log so far, as it was printed
        printf("Epoch: %2d/%d | Epoch Duration: %.3f sec | Val Loss: %.5f | Val Acc: %.3f |\n",
               i + 1, x->a.epochs, x->rows[i].seconds, x->rows[i].val_loss, x->rows[i].val_acc);
    free(path);
    return n;
}


void exp_reset_adam(ResNet34 *m) {
    for (int i = 0; i < resnet34_num_params(m); i++) {
        Param *q = resnet34_param(m, i);
        if (q->adam_m) q->adam_m->be->tensor_fill(q->adam_m, 0.0f);
        if (q->adam_v) q->adam_v->be->tensor_fill(q->adam_v, 0.0f);
    }
}
