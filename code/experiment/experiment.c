// experiment.c: the shared machinery of the training chapters (see experiment.h): command line,
// set-up, the epoch log and the result files. Caches and batch sources are in exp_data.c,
// checkpoints in exp_checkpoint.c.
#define _GNU_SOURCE
#include "experiment/experiment.h"

#include <errno.h>
#include <glob.h>
#include <signal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/common.h"
#include "checkpoint/pth.h"
#include "core/sha256.h"
#include "experiment/results.h"
#include "nn/selfcheck.h"

// SHA-256 of torchvision's resnet34-b627a593.pth (data/checksums.sha256): only this file makes a
// run "pretrained"; any other checkpoint, or --weights random, is reported as such everywhere.
static const char IMAGENET_SHA256[] =
    "b627a593bcbe140c234610266fe4f8ae95ea42fc881d091c9b6052e6b1d0590f";

// ----------------------------------------------------------------------------
// command line

static void usage(const ExpArgs *d, const char *prog, const char *about, unsigned extra) {
    printf("%s\n\nUsage: %s [options]\n\nOptions:\n", about, prog);
    printf("  --root DIR            Oxford-IIIT Pet root with images/ and annotations/\n"
           "                        (default %s)\n", d->root);
    printf("  --weights PATH|random starting checkpoint (default %s;\n"
           "                        `make data` downloads it); `random`: a seeded randomly\n"
           "                        initialised network (its results say so)\n", d->weights);
    printf("  --keep-fc             keep the checkpoint's 37-way fc instead of a new nn.Linear(512, 37)\n");
    printf("  --epochs N            epochs to train (default %d; 0 only prepares the caches)\n",
           d->epochs);
    printf("  --batch-size N        images per batch (default %d)\n", d->batch_size);
    printf("  --lr X                Adam learning rate (default %g)\n", (double)d->lr);
    printf("  --seed N              seeds the new head, the shuffling and `--weights random`\n"
           "                        (default %llu)\n", (unsigned long long)d->seed);
    printf("  --device D            auto, cpu or cuda (default %s: the GPU if there is one)\n",
           d->device);
    printf("  --precision P         auto, fp32, fp16 or bf16 (default auto: the tutorial's mixed\n"
           "                        precision where the device runs it natively, fp16 autocast on\n"
           "                        cuda; float32 on the CPU, where bf16 is not implemented yet)\n");
    printf("  --no-self-check       trust the GPU without first comparing its logits with the CPU's\n"
           "                        on a small test input\n");
    printf("  --results DIR         where results go (default %s)\n", d->results);
    printf("  --cache DIR           where the image and feature caches go (default <results>/cache)\n");
    printf("  --resume              continue from <results>/<name>.ckpt (written after every epoch);\n"
           "                        the run ends with exactly the numbers of an uninterrupted one\n");
    printf("  --limit N             use only N evenly spaced images of each split (quick checks, CI)\n");
    if (extra & EXP_OPT_BN_TRAIN)
        printf("  --bn-train            the tutorial's exact PyTorch behaviour: the frozen backbone runs\n"
               "                        in train mode (batch statistics; running statistics drift),\n"
               "                        every epoch, nothing cached\n");
    printf("  -h, --help            this help\n");
}

static long parse_long(const char *opt, const char *v, long lo, long hi) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "error: %s expects an integer in %ld..%ld, got '%s'\n", opt, lo, hi, v);
        exit(2);
    }
    return x;
}

void exp_parse_args(ExpArgs *a, int argc, char **argv, const char *about, unsigned extra) {
    ExpArgs d = *a;
    a->default_lr = d.lr;
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i], *val = NULL;
        char name[64];
        const char *eq = strchr(opt, '=');
        if (eq && strncmp(opt, "--", 2) == 0 && (size_t)(eq - opt) < sizeof name) {
            memcpy(name, opt, (size_t)(eq - opt));
            name[eq - opt] = 0;
            opt = name;
            val = eq + 1;
        }
#define FLAG(s) (strcmp(opt, s) == 0)
#define VALUE()                                                                                  \
    (val ? val : (i + 1 < argc ? argv[++i]                                                       \
                               : (fprintf(stderr, "error: %s needs a value (see --help)\n", opt), \
                                  exit(2), "")))
        if (FLAG("-h") || FLAG("--help")) usage(&d, argv[0], about, extra), exit(0);
        else if (FLAG("--root")) a->root = VALUE();
        else if (FLAG("--weights")) a->weights = VALUE();
        else if (FLAG("--device")) a->device = VALUE();
        else if (FLAG("--results")) a->results = VALUE();
        else if (FLAG("--cache")) a->cache = VALUE();
        else if (FLAG("--precision")) a->precision = VALUE();
        else if (FLAG("--epochs")) a->epochs = (int)parse_long(opt, VALUE(), 0, 100000);
        else if (FLAG("--batch-size")) a->batch_size = (int)parse_long(opt, VALUE(), 1, 4096);
        else if (FLAG("--limit")) a->limit = (int)parse_long(opt, VALUE(), 1, 1 << 30);
        else if (FLAG("--seed")) {
            const char *v = VALUE();
            char *end;
            errno = 0;
            a->seed = strtoull(v, &end, 0);
            if (errno || end == v || *end || *v == '-') {
                fprintf(stderr, "error: --seed expects a non-negative integer, got '%s'\n", v);
                exit(2);
            }
        } else if (FLAG("--lr")) {
            const char *v = VALUE();
            char *end;
            double x = strtod(v, &end);
            if (end == v || *end || !(x > 0) || !isfinite((float)x)) {
                fprintf(stderr, "error: --lr expects a positive finite number, got '%s'\n", v);
                exit(2);
            }
            a->lr = (float)x;
        } else if (FLAG("--keep-fc") && !val) a->keep_fc = 1;
        else if (FLAG("--resume") && !val) a->resume = 1;
        else if (FLAG("--no-self-check") && !val) a->no_self_check = 1;
        else if (FLAG("--bn-train") && !val && (extra & EXP_OPT_BN_TRAIN)) a->bn_train = 1;
        else {
            fprintf(stderr, "error: unknown option '%s' (see %s --help)\n", argv[i], argv[0]);
            exit(2);
        }
#undef FLAG
#undef VALUE
    }
    if (a->precision && strcmp(a->precision, "auto") != 0 && strcmp(a->precision, "fp16") != 0 &&
        strcmp(a->precision, "fp32") != 0 && strcmp(a->precision, "bf16") != 0) {
        fprintf(stderr, "error: --precision must be auto, fp32, fp16 or bf16, got '%s'\n", a->precision);
        exit(2);
    }
}

// ----------------------------------------------------------------------------
// set-up

// Keeps `limit` evenly spaced items (i * n / limit) at the front of the split, in order.
static void limit_split(PetSplit *ds, int limit) {
    if (limit <= 0 || limit >= ds->n) return;
    for (int i = 0; i < limit; i++) {
        int j = (int)((long long)i * ds->n / limit); // j >= i, increasing
        PetItem t = ds->items[i];
        ds->items[i] = ds->items[j];
        ds->items[j] = t;
    }
    ds->n = limit;
    memset(ds->class_count, 0, sizeof ds->class_count);
    for (int i = 0; i < limit; i++) ds->class_count[ds->items[i].label]++;
}

// What a split's cached contents depend on: its annotation file, and each listed image's name,
// label, size and modification time (a re-extracted or edited image invalidates the caches).
static void split_key(const PetSplit *ds, char key[65]) {
    Sha256 h;
    sha256_init(&h);
    char *ann = xasprintf("%s/annotations/%s.txt", ds->root, ds->split);
    size_t n = 0;
    uint8_t *buf = read_file(ann, &n, 0, NULL, 0);
    sha256_update(&h, ds->split, strlen(ds->split) + 1);
    if (buf) sha256_update(&h, buf, n);
    free(buf);
    free(ann);
    for (int i = 0; i < ds->n; i++) {
        struct stat st;
        memset(&st, 0, sizeof st);
        stat(ds->items[i].path, &st);
        char line[512];
        int len = snprintf(line, sizeof line, "%s %d %lld %lld.%09ld\n", ds->items[i].name,
                           ds->items[i].label, (long long)st.st_size, (long long)st.st_mtim.tv_sec,
                           st.st_mtim.tv_nsec);
        sha256_update(&h, line, (size_t)len);
    }
    sha256_final_hex(&h, key);
}

static void load_weights(Experiment *x) {
    const ExpArgs *a = &x->a;
    char err[1024];
    int classes = resnet34_num_classes(x->model);
    if (strcmp(a->weights, "random") == 0) {
        resnet34_init_random(x->model, a->seed);
        x->weights_sha[0] = 0;
        x->weights_pretrained = 0;
        printf("weights: random initialisation (seed %llu): NOT the ImageNet weights; results "
               "are labelled so\n", (unsigned long long)a->seed);
        return;
    }
    if (!file_exists(a->weights))
        die("%s: weights file not found. Run `make data` to download torchvision's ImageNet "
            "weights (resnet34-b627a593.pth), or pass --weights random for a randomly initialised "
            "backbone (not pretrained; for tests)", a->weights);
    size_t n = 0;
    uint8_t *buf = read_file(a->weights, &n, 0, err, sizeof err);
    if (!buf) die("%s", err);
    Sha256 h;
    sha256_init(&h);
    sha256_update(&h, buf, n);
    sha256_final_hex(&h, x->weights_sha);
    x->weights_pretrained = strcmp(x->weights_sha, IMAGENET_SHA256) == 0;
    StateDict sd = {0};
    if (pth_load_mem(buf, n, a->weights, &sd, err, sizeof err)) die("%s", err);
    free(buf);
    if (a->keep_fc) { // the head must already have our number of classes
        const PthTensor *w = sd_find(&sd, "fc.weight"), *b = sd_find(&sd, "fc.bias");
        if (!w || !b) die("%s: --keep-fc, but the checkpoint has no fc.weight / fc.bias", a->weights);
        if (w->ndim != 2 || w->shape[0] != classes || w->shape[1] != RESNET34_FEATURES ||
            b->ndim != 1 || b->shape[0] != classes)
            die("%s: --keep-fc needs a %d-class head, fc.weight (%d, %d) and fc.bias (%d), but the "
                "checkpoint has fc.weight (%lld, %lld) and fc.bias (%lld): it was trained for "
                "another number of classes; drop --keep-fc to start a new head",
                a->weights, classes, classes, RESNET34_FEATURES, classes, (long long)w->shape[0],
                (long long)(w->ndim > 1 ? w->shape[1] : 0), (long long)b->shape[0]);
    }
    if (resnet34_load_state(x->model, &sd, a->keep_fc, err, sizeof err))
        die("%s: %s", a->weights, err);
    sd_free(&sd);
    // region: new-head
    // The tutorial's `model.fc = nn.Linear(512, 37)`: a new head, nn.Linear's default init.
    if (!a->keep_fc) resnet34_reset_fc(x->model, a->seed);
    // endregion
    printf("weights: %s (%s)%s\n", a->weights,
           x->weights_pretrained ? "torchvision's ImageNet weights" : "NOT the ImageNet weights",
           a->keep_fc ? ", its fc kept" : ", new 512->37 head");
}

// A run killed while writing (kill -9, power loss) leaves "<file>.tmp.<pid>" behind: remove
// those of this experiment whose writer no longer exists.
static void remove_stale_temporaries(const Experiment *x) {
    char *patterns[2] = {xasprintf("%s/%s.*.tmp.*", x->a.results, x->name),
                         xasprintf("%s/*.tmp.*", x->a.cache)};
    for (int k = 0; k < 2; k++) {
        glob_t g;
        if (glob(patterns[k], 0, NULL, &g) == 0) {
            for (size_t i = 0; i < g.gl_pathc; i++) {
                const char *dot = strrchr(g.gl_pathv[i], '.');
                long pid = dot ? strtol(dot + 1, NULL, 10) : 0;
                if (pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH &&
                    unlink(g.gl_pathv[i]) == 0)
                    printf("removed %s, left by an interrupted run\n", g.gl_pathv[i]);
            }
            globfree(&g);
        }
        free(patterns[k]);
    }
}

// Ctrl-C or kill: say what is saved and how to continue. The message is prepared outside the
// handler (exp_note_saved), which only write()s it: async-signal-safe.
static char interrupt_msg[1024] = "\ninterrupted before the first checkpoint; nothing to resume\n";

static void on_interrupt(int sig) {
    ssize_t rc = write(2, interrupt_msg, strlen(interrupt_msg));
    (void)rc;
    _exit(128 + sig);
}

void exp_note_interrupt(const char *msg) { snprintf(interrupt_msg, sizeof interrupt_msg, "\n%s\n", msg); }

void exp_note_saved(const Experiment *x, int epochs_saved) {
    snprintf(interrupt_msg, sizeof interrupt_msg,
             "\ninterrupted: %d of %d epochs are saved in %s/%s.ckpt; run the same command with "
             "--resume to continue\n", epochs_saved, x->a.epochs, x->a.results, x->name);
}

void exp_setup(Experiment *x, const ExpArgs *a, const char *chapter, const char *name,
               const char *mode) {
    memset(x, 0, sizeof *x);
    x->t_start = now_seconds();
    x->a = *a;
    x->chapter = chapter;
    x->name = xstrdup(name ? name : chapter);
    x->mode = mode;
    x->cache_status = "none";
    if (!x->a.cache) x->a.cache = x->cache_default = xasprintf("%s/cache", a->results);
    char err[1024];
    PetSplit *sp[2] = {&x->train, &x->val};
    const char *splits[2] = {"trainval", "test"};
    int *all[2] = {&x->train_n_all, &x->val_n_all};
    for (int s = 0; s < 2; s++) {
        if (pets_open(a->root, splits[s], sp[s], err, sizeof err)) die("%s", err);
        *all[s] = sp[s]->n;
        limit_split(sp[s], a->limit);
        split_key(sp[s], x->data_key[s]);
    }
    printf("%s: %d training images (trainval), %d validation images (test)%s\n", x->name,
           x->train.n, x->val.n, a->limit ? " (--limit)" : "");

    // --precision auto (the default): the tutorial's autocast where the device runs it natively
    x->be = backend_open_precision(a->device, a->precision, 0, err, sizeof err);
    if (!x->be) die("%s", err);
    x->precision = x->be->precision;

    x->model = resnet34_create(x->be, PETS_NUM_CLASSES);
    load_weights(x);
    if (!resnet34_trust_gpu(x->model, a->device, a->no_self_check)) {
        // --device auto and the GPU failed its self-check (resnet34_trust_gpu said why)
        x->be = backend_open_precision("cpu", "auto", 0, err, sizeof err);
        if (!x->be) die("%s", err);
        x->precision = x->be->precision;
        x->model = resnet34_create(x->be, PETS_NUM_CLASSES);
        load_weights(x);
    }
    x->val_logits = xcalloc((size_t)x->val.n * PETS_NUM_CLASSES, sizeof(float));
    x->val_seen = xcalloc((size_t)x->val.n, 1);
    remove_stale_temporaries(x);
    signal(SIGINT, on_interrupt);
    signal(SIGTERM, on_interrupt);
}

void exp_close(Experiment *x) {
    resnet34_free(x->model);
    backend_close(x->be);
    x->train.n = x->train_n_all;
    x->val.n = x->val_n_all;
    pets_free(&x->train);
    pets_free(&x->val);
    free(x->rows);
    free(x->val_logits);
    free(x->val_seen);
    free(x->name);
    free(x->cache_default);
}

// ----------------------------------------------------------------------------
// epoch log

void exp_log_epoch(Experiment *x, int epoch, ExpRow row) {
    // region: epoch-line
    printf("Epoch: %2d/%d | Epoch Duration: %.3f sec | Val Loss: %.5f | Val Acc: %.3f |\n",
           epoch + 1, x->a.epochs, row.seconds, row.val_loss, row.val_acc);
    // endregion
    fflush(stdout);
    x->rows = xrealloc(x->rows, (size_t)(x->n_rows + 1) * sizeof(ExpRow));
    x->rows[x->n_rows++] = row;
}

char *exp_out_path(const Experiment *x, const char *suffix) {
    return xasprintf("%s/%s%s", x->a.results, x->name, suffix);
}

void exp_write_csv(Experiment *x) {
    char err[1024];
    char *path = exp_out_path(x, ".csv");
    AtomicFile af;
    FILE *f = afile_open(&af, path, err, sizeof err);
    if (!f) die("%s", err);
    fprintf(f, "epoch,train_loss,val_loss,val_acc,lr,seconds\n");
    for (int i = 0; i < x->n_rows; i++) {
        const ExpRow *r = &x->rows[i];
        fprintf(f, "%d,%.9g,%.9g,%.9g,%.6g,%.3f\n", i + 1, r->train_loss, r->val_loss, r->val_acc,
                r->lr, r->seconds);
    }
    if (afile_commit(&af, err, sizeof err)) die("%s", err);
    free(path);
}

// ----------------------------------------------------------------------------
// results

static void write_predictions(Experiment *x) {
    char err[1024];
    char *path = exp_out_path(x, ".predictions.csv");
    AtomicFile af;
    FILE *f = afile_open(&af, path, err, sizeof err);
    if (!f) die("%s", err);
    const int k = resnet34_num_classes(x->model);
    fprintf(f, "index,name,label,pred,prob_pred,prob_label,label_name,pred_name\n");
    for (int i = 0; i < x->val.n; i++) {
        if (!x->val_seen[i]) continue; // an image that could not be decoded
        const float *z = x->val_logits + (size_t)i * PETS_NUM_CLASSES;
        int pred = 0;
        for (int j = 1; j < k; j++)
            if (z[j] > z[pred]) pred = j;
        double sum = 0;
        for (int j = 0; j < k; j++) sum += exp((double)z[j] - (double)z[pred]);
        int label = x->val.items[i].label;
        fprintf(f, "%d,%s,%d,%d,%.6f,%.6f,%s,%s\n", i, x->val.items[i].name, label, pred, 1.0 / sum,
                exp((double)z[label] - (double)z[pred]) / sum, pets_class_name(&x->val, label),
                pets_class_name(&x->val, pred));
    }
    if (afile_commit(&af, err, sizeof err)) die("%s", err);
    free(path);
}

// A float learning rate as the decimal it was meant to be (1e-3f prints as 0.001).
static double round6(double v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.6g", v);
    return strtod(buf, NULL);
}

// <name>.json: the run's settings and summary; `model` is the final .pth, NULL when there is none
// (a diverged run).
static void write_json(Experiment *x, const char *model_path) {
    char err[1024];
    // summary over the epochs
    const ExpRow *last = &x->rows[x->n_rows - 1];
    int best = 0, reductions = 0;
    double epoch_seconds = 0;
    for (int i = 0; i < x->n_rows; i++) {
        if (x->rows[i].val_acc > x->rows[best].val_acc) best = i;
        if (i > 0 && x->rows[i].lr < x->rows[i - 1].lr) reductions++;
        epoch_seconds += x->rows[i].seconds;
    }
    int correct = 0, seen = 0;
    for (int i = 0; i < x->val.n; i++) {
        if (!x->val_seen[i]) continue;
        const float *z = x->val_logits + (size_t)i * PETS_NUM_CLASSES;
        int pred = 0;
        for (int j = 1; j < resnet34_num_classes(x->model); j++)
            if (z[j] > z[pred]) pred = j;
        correct += pred == x->val.items[i].label;
        seen++;
    }
    int present = 0;
    for (int c = 0; c < PETS_NUM_CLASSES; c++) present += x->train.class_count[c] > 0;

    char *path = exp_out_path(x, ".json");
    Results res;
    results_init(&res);
    char *csv = exp_out_path(x, ".csv"), *pred = exp_out_path(x, ".predictions.csv");
    results_str(&res, "chapter", x->chapter);
    results_str(&res, "name", x->name);
    results_str(&res, "mode", x->mode);
    results_str(&res, "device", x->be->name);
    results_str(&res, "device_description", x->be->description);
    results_str(&res, "precision", x->precision == PREC_FP16 ? "fp16" : "fp32");
    results_str(&res, "precision_requested", x->be->prec_info.requested);
    results_str(&res, "precision_choice", x->be->prec_info.choice);
    results_str(&res, "weights", x->a.weights);
    results_int(&res, "weights_pretrained", x->weights_pretrained);
    results_str(&res, "weights_sha256", x->weights_sha[0] ? x->weights_sha : "random");
    results_int(&res, "keep_fc", x->a.keep_fc);
    results_uint(&res, "seed", x->a.seed);
    results_str(&res, "root", x->a.root);
    results_int(&res, "limit", x->a.limit);
    results_int(&res, "num_classes", resnet34_num_classes(x->model));
    results_int(&res, "classes_present", present);
    results_int(&res, "train_images", x->train.n - x->failed[0]);
    results_int(&res, "val_images", x->val.n - x->failed[1]);
    results_int(&res, "train_failed", x->failed[0]);
    results_int(&res, "val_failed", x->failed[1]);
    results_int(&res, "batch_size", x->a.batch_size);
    results_str(&res, "optimizer", "Adam");
    results_str(&res, "loss", "CrossEntropyLoss(reduction='sum')");
    results_str(&res, "scheduler", "ReduceLROnPlateau(factor=0.1, patience=2) on val loss");
    results_num(&res, "lr_initial", round6(x->a.lr));
    results_num(&res, "lr_final", round6(last->lr));
    results_int(&res, "lr_reductions", reductions);
    results_int(&res, "epochs", x->n_rows);
    results_int(&res, "resumed_from_epoch", x->resumed_from);
    results_num(&res, "final_train_loss", last->train_loss);
    results_num(&res, "final_val_loss", last->val_loss);
    results_num(&res, "final_val_acc", last->val_acc);
    results_int(&res, "final_val_correct", correct);
    results_int(&res, "final_val_count", seen);
    results_num(&res, "first_val_acc", x->rows[0].val_acc);
    results_num(&res, "best_val_acc", x->rows[best].val_acc);
    results_int(&res, "best_epoch", best + 1);
    results_num(&res, "seconds_setup", x->setup_seconds);
    results_num(&res, "seconds_features", x->feature_seconds);
    results_num(&res, "seconds_epochs", epoch_seconds);
    results_num(&res, "seconds_per_epoch", epoch_seconds / x->n_rows);
    results_num(&res, "seconds_total", x->setup_seconds + epoch_seconds);
    results_num(&res, "seconds_wall", now_seconds() - x->t_start);
    results_str(&res, "cache", x->cache_status);
    results_str(&res, "csv", csv);
    results_str(&res, "predictions", model_path ? pred : "");
    results_str(&res, "model", model_path ? model_path : "");
    results_str(&res, "status", x->diverged_epoch ? "diverged" : "complete");
    if (x->diverged_epoch) {
        results_int(&res, "diverged_epoch", x->diverged_epoch);
        results_str(&res, "diverged_why", x->diverged_why);
    }
    if (results_write(&res, path, err, sizeof err)) die("%s", err);
    results_free(&res);
    if (model_path) printf("results: %s, %s, %s, %s\n", csv, pred, model_path, path);
    else printf("results: %s, %s (no model: the run diverged)\n", csv, path);
    free(csv);
    free(pred);
    free(path);
}

void exp_finish(Experiment *x) {
    char err[1024];
    // the final model first (the largest file, so a full disk shows before the small ones are
    // replaced): a torchvision state dict with the 37-way fc
    char *model_path = exp_out_path(x, ".pth");
    StateDict sd = {0};
    resnet34_to_state(x->model, &sd);
    if (pth_save(model_path, &sd, x->name, err, sizeof err))
        die("%s (written atomically: the previous %s is left as it was)", err, model_path);
    sd_free(&sd);
    write_predictions(x);
    exp_write_csv(x);
    write_json(x, model_path);
    free(model_path);
}

// ----------------------------------------------------------------------------
// divergence

int exp_diverged(Precision precision, double train_loss, double val_loss, int batches, long steps,
                 char *why, size_t whylen) {
    if (precision == PREC_FP16) { // overflow is the GradScaler's to handle, unless it never ends
        if (batches > 0 && steps == 0) {
            snprintf(why, whylen, "the GradScaler skipped all %d steps of the epoch (every "
                     "gradient overflowed; training loss %g)", batches, train_loss);
            return 1;
        }
        return 0;
    }
    if (!isfinite(train_loss) || !isfinite(val_loss)) {
        double v = isfinite(train_loss) ? val_loss : train_loss;
        snprintf(why, whylen, "the %s loss is %s", isfinite(train_loss) ? "validation" : "training",
                 isnan(v) ? "nan" : v > 0 ? "inf" : "-inf");
        return 1;
    }
    return 0;
}

void exp_check_divergence(Experiment *x, int epoch, int batches, long steps) {
    const ExpRow *r = &x->rows[x->n_rows - 1];
    if (!exp_diverged(x->precision, r->train_loss, r->val_loss, batches, steps, x->diverged_why,
                      sizeof x->diverged_why))
        return;
    x->diverged_epoch = epoch + 1;
    fflush(stdout);
    fprintf(stderr, "error: training diverged in epoch %d of %d: %s at --lr %g. The run stops "
            "here; try a lower --lr (the default is %g).\n", epoch + 1, x->a.epochs, x->diverged_why,
            (double)x->a.lr, (double)x->a.default_lr);
    // no model is presented as trained: a previous run's .pth and predictions go too
    const char *stale[2] = {".pth", ".predictions.csv"};
    for (int k = 0; k < 2; k++) {
        char *p = exp_out_path(x, stale[k]);
        if (unlink(p) == 0) fprintf(stderr, "removed %s, left by an earlier run\n", p);
        free(p);
    }
    exp_write_csv(x);
    write_json(x, NULL);
    exit(3);
}
