// 07-data-efficiency.c: Chapter 7, how much data transfer learning needs.
// The tutorial motivates transfer learning by small datasets; this chapter measures it. For k in
// {1, 2, 5, 10, 20, 50, all} training images per breed, drawn from trainval stratified by breed
// with a seed, and for several seeds per k, it trains
//   fe  feature extraction: a new 512 -> 37 head on the frozen backbone's cached features
//       (chapter 4's cache; after chapter 4 these runs take seconds on a CPU);
//   ft  fine-tuning: every weight, from the same starting weights (chapter 5's crop cache);
// and evaluates two classifiers that need no training, on the same cached features:
//   prototype  nearest class mean;   knn1, knn5  k-nearest neighbours, cosine similarity.
// Every run is evaluated on the whole test split.
//
// Outputs (under --results): 07-data-efficiency.csv (one row per method, k and seed, rewritten
// atomically after every run: a rerun skips the runs it holds), 07-data-efficiency.summary.csv
// (mean and spread per method and k, for the figure), 07-data-efficiency.subsets.csv (the images
// of every subset) and 07-data-efficiency.json.
#define _GNU_SOURCE // strtok_r
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "data/preprocess.h"
#include "experiment/experiment.h"
#include "experiment/few_shot.h"
#include "experiment/results.h"
#include "nn/adam.h"

static const char ABOUT[] =
    "07-data-efficiency: feature extraction against fine-tuning, and two baselines without\n"
    "training (nearest class mean, k-nearest neighbours), by images per breed.\n\n"
    "Chapter options: --per-class LIST (images per breed, default 1,2,5,10,20,50,all), --methods\n"
    "LIST (of fe, ft, prototype, knn; default all four), --ft-max-k K|all (fine-tune only up to K\n"
    "images per breed; default all), --seeds N (runs per k, seeds --seed.. --seed+N-1; default 3).\n"
    "--epochs N trains every fe and ft run exactly N epochs instead of the epoch rule (quick\n"
    "checks); --lr is not used (each method keeps its chapter's rate); a rerun always resumes.";

// region: epoch-rule
// Each method keeps its chapter's optimizer, loss and batch size: Adam, CrossEntropyLoss('sum'),
// batches of 32; learning rate 1e-3 for the head alone (04), 1e-4 for every weight (05). Two
// things change:
// - Length. 30 (04) or 10 (05) epochs of 37 images are 60 or 20 optimizer steps, too few for a
//   head that starts from random: on small subsets the run would be judged before it learned.
//   So a run takes its chapter's epochs, or more, enough for a minimum number of steps: for
//   feature extraction the 3450 steps of chapter 4's full run (30 epochs of 115 batches; a head
//   step costs microseconds), for fine-tuning 100 steps (each costs a forward and backward of
//   the whole network: 100 steps of one image per breed are about one full-data epoch of work).
// - No scheduler. ReduceLROnPlateau watches the test loss every epoch (the tutorial has no
//   other validation split); here the test split is looked at once, after training, so nothing
//   of it steers a run, and a fine-tuning run does not pay a full test pass per epoch.
#define FE_LR 1e-3f
#define FE_EPOCHS 30
#define FE_MIN_STEPS 3450
#define FT_LR 1e-4f
#define FT_EPOCHS 10
#define FT_MIN_STEPS 100
// endregion

enum { M_PROTOTYPE, M_KNN1, M_KNN5, M_FE, M_FT, N_METHODS };
static const char *const METHOD[N_METHODS] = {"prototype", "knn1", "knn5", "fe", "ft"};

typedef struct {
    Experiment x;
    float *features[2];    // (n, 512) per split, from 04's feature cache
    uint8_t *ok[2];        // (n) decoded images
    int *labels[2];        // (n) per split
    Cache crops[2];        // 05's crop cache (fine-tuning)
    Source *head[2], *images[2]; // batch sources: features (fe), crops (ft); 0 train, 1 test
    StateDict start;       // the starting weights, restored before every fine-tuning run
    Progress progress;     // over the whole sweep, in units of estimated work
    long work_done;
} Sweep;

// Estimated work of a run (one unit ~ one image through the backbone), for the sweep's ETA.
static long work_of(int method, int n, int epochs, int n_test) {
    if (method == M_FT) return 3L * epochs * n + n_test;
    if (method == M_FE) return 1 + (long)epochs * n / 200;
    return 1 + (long)n * n_test / 100000;
}

// One pass over the test split in eval mode: accuracy, and the mean cross-entropy in *loss.
static double evaluate(Sweep *w, Source *test, int head_only, double *loss) {
    ResNet34 *model = w->x.model;
    double sum = 0;
    int correct = 0, seen = 0;
    XBatch b;
    source_start(test, -1, NULL);
    while (source_next(test, &b)) {
        if (head_only) resnet34_forward_head(model, b.x, b.n);
        else resnet34_forward(model, b.x, b.n, PREP_CROP, PREP_CROP, /*bn_train=*/0);
        int c = 0;
        sum += resnet34_loss(model, b.label, /*mean=*/0, /*backward=*/0, 1.0f, &c);
        correct += c;
        seen += b.n;
    }
    *loss = seen ? sum / seen : NAN;
    return seen ? (double)correct / seen : 0.0;
}

// region: train-run
// One training run (fe or ft) on the subset items[0..n): a new head from the run's seed; for
// fine-tuning also the starting backbone again, with every weight trainable. Adam starts empty.
static double train_run(Sweep *w, int method, const int *items, int n, int epochs, FsRow *row) {
    Experiment *x = &w->x;
    ResNet34 *model = x->model;
    char err[1024];
    const int ft = method == M_FT;
    if (ft && resnet34_load_state(model, &w->start, /*load_fc=*/0, err, sizeof err))
        die("restoring the starting weights: %s", err);
    resnet34_reset_fc(model, x->a.seed); // the tutorial's nn.Linear(512, 37)
    exp_reset_adam(model);
    resnet34_freeze_backbone(model, !ft);
    Source *train = ft ? w->images[0] : w->head[0];
    source_subset(train, items, n);
    Adam optimizer;
    adam_init(&optimizer, ft ? FT_LR : FE_LR);
    GradScaler scaler;
    scaler_init(&scaler, x->precision == PREC_FP16);
    for (int epoch = 0; epoch < epochs; epoch++) {
        XBatch b;
        source_start(train, epoch, NULL); // shuffled with the run's seed
        while (source_next(train, &b)) {
            if (ft) resnet34_forward(model, b.x, b.n, PREP_CROP, PREP_CROP, /*bn_train=*/1);
            else resnet34_forward_head(model, b.x, b.n);
            train_step(model, &optimizer, &scaler, b.label);
            row->steps++;
        }
        if (ft) progress_update(&w->progress, w->work_done + 3L * (epoch + 1) * n);
    }
    return evaluate(w, ft ? w->images[1] : w->head[1], !ft, &row->loss);
}
// endregion

// region: baselines
static double baseline_run(Sweep *w, int method, const int *items, int n) {
    const PetSplit *test = &w->x.val;
    if (method == M_PROTOTYPE)
        return fs_prototype_accuracy(w->features[0], w->labels[0], items, n, w->features[1],
                                     w->labels[1], w->ok[1], test->n, RESNET34_FEATURES,
                                     PETS_NUM_CLASSES);
    return fs_knn_accuracy(w->features[0], w->labels[0], items, n, w->features[1], w->labels[1],
                           w->ok[1], test->n, RESNET34_FEATURES, PETS_NUM_CLASSES,
                           method == M_KNN1 ? 1 : 5);
}
// endregion

// What the numbers of a run depend on besides (method, k, seed): a run in the CSV with another
// configuration is not reused.

static void parse_methods(const char *list, int use[N_METHODS]) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (strcmp(t, "knn") == 0) use[M_KNN1] = use[M_KNN5] = 1;
        else if (strcmp(t, "fe") == 0) use[M_FE] = 1;
        else if (strcmp(t, "ft") == 0) use[M_FT] = 1;
        else if (strcmp(t, "prototype") == 0) use[M_PROTOTYPE] = 1;
        else fs_bad_option("--methods: unknown method '%s' (expected fe, ft, prototype, knn)", t);
    }
}

// region: results
// The JSON: what ran, mean and spread per method and k, and the answers: the smallest k at which
// fe (ft) reaches 90% of its own accuracy with all images, and the k where ft overtakes fe.
static void write_results(const Experiment *x, const FsRow *rows, int n, const int *ks, int nk,
                          int classes, int kept, const char *ft_max, int seeds) {
    char err[1024], key[96], kn[16];
    Results r;
    results_init(&r);
    results_str(&r, "chapter", x->chapter);
    results_str(&r, "weights", x->a.weights);
    results_int(&r, "weights_pretrained", x->weights_pretrained);
    results_str(&r, "device", x->be->name);
    results_str(&r, "precision", x->precision == PREC_FP16 ? "fp16" : "fp32");
    results_str(&r, "root", x->a.root), results_int(&r, "limit", x->a.limit);
    results_int(&r, "seeds", seeds), results_int(&r, "seed", (long long)x->a.seed);
    results_str(&r, "ft_max_k", ft_max ? ft_max : "all");
    results_int(&r, "classes", classes);
    results_int(&r, "train_images_all", x->train.n - x->failed[0]);
    results_int(&r, "test_images", x->val.n - x->failed[1]);
    results_num(&r, "fe_lr", float_as_decimal(FE_LR));
    results_num(&r, "ft_lr", float_as_decimal(FT_LR));
    results_int(&r, "fe_min_epochs", FE_EPOCHS), results_int(&r, "fe_min_steps", FE_MIN_STEPS);
    results_int(&r, "ft_min_epochs", FT_EPOCHS), results_int(&r, "ft_min_steps", FT_MIN_STEPS);
    results_int(&r, "epochs_override", x->a.epochs);
    results_int(&r, "runs", n), results_int(&r, "runs_reused", kept);
    for (int m = 0; m < N_METHODS; m++) {
        int kmax = -1;
        double seconds = 0, runs = 0;
        for (int i = 0; i < n; i++)
            if (strcmp(rows[i].method, METHOD[m]) == 0) seconds += rows[i].seconds, runs++;
        for (int i = 0; i < nk; i++) {
            FsStat st;
            if (!fs_stat(rows, n, METHOD[m], ks[i], classes, &st)) continue;
            kmax = ks[i];
            fs_k_name(ks[i], kn, sizeof kn);
            const char *what[4] = {"acc_mean", "acc_std", "images_per_class", "runs"};
            double v[4] = {st.mean, st.std, st.images_per_class, st.runs};
            for (int j = 0; j < 4; j++) {
                snprintf(key, sizeof key, "%s_k%s_%s", METHOD[m], kn, what[j]);
                results_num(&r, key, v[j]);
            }
        }
        snprintf(key, sizeof key, "%s_seconds", METHOD[m]);
        results_num(&r, key, seconds);
        snprintf(key, sizeof key, "%s_seconds_per_run", METHOD[m]);
        results_num(&r, key, runs ? seconds / runs : NAN);
        snprintf(key, sizeof key, "%s_largest_k", METHOD[m]); // the largest k run, its accuracy
        if (kmax >= 0) fs_k_name(kmax, kn, sizeof kn);
        results_str(&r, key, kmax >= 0 ? kn : "none");
        FsStat st;
        fs_stat(rows, n, METHOD[m], kmax, classes, &st);
        snprintf(key, sizeof key, "%s_kmax_acc_mean", METHOD[m]);
        results_num(&r, key, kmax >= 0 ? st.mean : NAN);
        snprintf(key, sizeof key, "%s_kmax_acc_std", METHOD[m]);
        results_num(&r, key, kmax >= 0 ? st.std : NAN);
    }
    const char *names[2] = {"fe", "ft"};
    for (int j = 0; j < 2; j++) {
        int k = fs_k_reaching(rows, n, names[j], ks, nk, 0.9, classes);
        fs_k_name(k, kn, sizeof kn);
        snprintf(key, sizeof key, "%s_k90", names[j]);
        results_str(&r, key, k < 0 ? "not measured (no run with all images)" : kn);
    }
    int k = fs_k_overtakes(rows, n, "ft", "fe", ks, nk, classes);
    fs_k_name(k, kn, sizeof kn);
    results_str(&r, "ft_overtakes_fe_k", k < 0 ? "none measured" : kn);
    char *path = exp_out_path(x, ".summary.csv");
    if (fs_write_summary(path, rows, n, METHOD, N_METHODS, ks, nk, classes, err, sizeof err))
        die("%s", err);
    free(path);
    path = exp_out_path(x, ".json");
    if (results_write(&r, path, err, sizeof err)) die("%s", err);
    results_free(&r);
    free(path);
}
// endregion

typedef struct {
    int m, k, epochs, n;
    long long seed;
} Run;

// region: inputs
// The features of chapter 4's cache (the same key: weights, data, device, precision) for fe and
// the baselines; chapter 5's crop cache for fine-tuning; the starting weights. Returns the number
// of breeds the training split holds.
static int open_inputs(Sweep *w, const int *use) {
    Experiment *x = &w->x;
    for (int s = 0; s < 2; s++) {
        const PetSplit *ds = s ? &x->val : &x->train;
        w->labels[s] = xmalloc((size_t)ds->n * sizeof(int));
        for (int i = 0; i < ds->n; i++) w->labels[s][i] = ds->items[i].label;
        if (use[M_FE] || use[M_PROTOTYPE] || use[M_KNN1]) {
            w->features[s] = exp_feature_cache(x, s, &w->ok[s]);
            w->head[s] = source_features(x, s, w->features[s], w->ok[s]);
        }
        if (use[M_FT]) {
            exp_image_cache(x, s, &w->crops[s]);
            w->images[s] = source_images(x, s, &w->crops[s]);
            if (!w->ok[s]) {
                w->ok[s] = xmalloc((size_t)ds->n);
                memcpy(w->ok[s], w->crops[s].ok, (size_t)ds->n);
            }
        }
    }
    resnet34_to_state(x->model, &w->start);
    int classes = 0;
    for (int c = 0; c < PETS_NUM_CLASSES; c++) classes += x->train.class_count[c] > 0;
    return classes;
}
// endregion

static void close_inputs(Sweep *w) {
    for (int s = 0; s < 2; s++) {
        source_free(w->head[s]);
        source_free(w->images[s]);
        if (w->crops[s].map) cache_close(&w->crops[s]);
        free(w->features[s]);
        free(w->ok[s]);
        free(w->labels[s]);
    }
    sd_free(&w->start);
}

int main(int argc, char **argv) {
    // region: options
    const char *per_class = fs_take_option(&argc, argv, "--per-class");
    const char *methods = fs_take_option(&argc, argv, "--methods");
    const char *ft_max = fs_take_option(&argc, argv, "--ft-max-k");
    const char *seeds_opt = fs_take_option(&argc, argv, "--seeds");
    ExpArgs a = {.root = "data/oxford-iiit-pet", .weights = "data/weights/resnet34-b627a593.pth",
                 .device = "auto", .results = "results", .epochs = 0, .batch_size = 32, .seed = 0};
    exp_parse_args(&a, argc, argv, ABOUT, 0);
    int ks[32];
    int nk = fs_parse_ks("--per-class", per_class ? per_class : "1,2,5,10,20,50,all", ks, 32);
    int use[N_METHODS] = {0}, ft_max_k = 0, seeds = seeds_opt ? atoi(seeds_opt) : 3;
    parse_methods(methods ? methods : "fe,ft,prototype,knn", use);
    if (ft_max && strcmp(ft_max, "all") != 0 && (ft_max_k = atoi(ft_max)) < 1)
        fs_bad_option("--ft-max-k expects a positive integer or all, got '%s'", ft_max);
    if (seeds < 1 || seeds > 1000) fs_bad_option("--seeds expects 1..1000, got '%s'", seeds_opt);
    if (a.lr != 0) fs_bad_option("--lr: chapter 07 keeps the rates of chapters 04 and 05");
    // endregion

    Sweep w = {0};
    Experiment *x = &w.x;
    exp_setup(x, &a, "07-data-efficiency", NULL, "data-efficiency");
    char config[17], err[1024];
    fs_config_key(x, config);

    int classes = open_inputs(&w, use);

    // region: plan
    // Every (k, seed, method), k ascending. A run that the CSV holds with this configuration is
    // kept as it is: an interrupted sweep goes on where it stopped.
    char *csv = exp_out_path(x, ".csv");
    FsRow *old, *rows = xcalloc((size_t)nk * seeds * N_METHODS, sizeof(FsRow));
    uint8_t *filled = xcalloc((size_t)nk * seeds * N_METHODS, 1);
    Run *plan = xmalloc((size_t)nk * seeds * N_METHODS * sizeof(Run));
    int n_old, n_plan = 0, kept = 0, *items = xmalloc((size_t)x->train.n * sizeof(int));
    if (fs_read_rows(csv, &old, &n_old, err, sizeof err)) die("%s", err);
    long total = 0;
    for (int ki = 0; ki < nk; ki++)
        for (int si = 0; si < seeds; si++)
            for (int m = 0; m < N_METHODS; m++) {
                if (!use[m] || (m == M_FT && ft_max_k && (ks[ki] == 0 || ks[ki] > ft_max_k)))
                    continue;
                Run *r = &plan[n_plan];
                *r = (Run){m, ks[ki], 0, 0, (long long)a.seed + si};
                r->n = fs_subset(&x->train, w.ok[0], r->k, (uint64_t)r->seed, items);
                if (m == M_FE) r->epochs = fs_epochs(r->n, a.batch_size, FE_EPOCHS, FE_MIN_STEPS);
                if (m == M_FT) r->epochs = fs_epochs(r->n, a.batch_size, FT_EPOCHS, FT_MIN_STEPS);
                if (a.epochs && r->epochs) r->epochs = a.epochs; // --epochs: quick checks
                const FsRow *done = fs_find(old, n_old, METHOD[m], r->k, r->seed, config);
                if (done) rows[n_plan] = *done, filled[n_plan] = 1, kept++;
                else total += work_of(m, r->n, r->epochs, x->val.n);
                n_plan++;
            }
    char *subsets = exp_out_path(x, ".subsets.csv");
    if (fs_write_subsets(subsets, &x->train, w.ok[0], ks, nk, (long long)a.seed, seeds, err, sizeof err))
        die("%s", err);
    free(subsets);
    // endregion

    // region: sweep
    printf("sweep: %d runs, %d done before\n", n_plan, kept);
    char *note = xasprintf("interrupted: the runs finished so far are saved in %s; run the same "
                           "command again to go on from there", csv);
    if (total > 0) progress_start(&w.progress, "sweep", "work", total);
    for (int i = 0; i < n_plan; i++) {
        const Run *run = &plan[i];
        FsRow *row = &rows[i];
        if (filled[i]) continue;
        double t0 = now_seconds();
        fs_subset(&x->train, w.ok[0], run->k, (uint64_t)run->seed, items);
        *row = (FsRow){.per_class = run->k, .seed = run->seed, .train_images = run->n,
                       .epochs = run->epochs, .loss = NAN};
        snprintf(row->method, sizeof row->method, "%s", METHOD[run->m]);
        memcpy(row->config, config, sizeof config);
        x->a.seed = (uint64_t)run->seed; // the new head and the shuffles of this run
        if (run->m == M_FE || run->m == M_FT)
            row->accuracy = train_run(&w, run->m, items, run->n, run->epochs, row);
        else
            row->accuracy = baseline_run(&w, run->m, items, run->n);
        row->test_images = source_count(run->m == M_FT ? w.images[1] : w.head[1]);
        row->seconds = now_seconds() - t0;
        filled[i] = 1; // on disk at once (atomically): the CSV is the sweep's checkpoint
        if (fs_write_rows(csv, rows, filled, n_plan, err, sizeof err)) die("%s", err);
        exp_note_interrupt(note);
        w.work_done += work_of(run->m, run->n, run->epochs, x->val.n);
        progress_update(&w.progress, w.work_done);
        char kn[16];
        fs_k_name(run->k, kn, sizeof kn);
        printf("%-9s k=%-3s seed %lld: %4d images, %5d steps, test accuracy %.4f (%.1f s)\n",
               row->method, kn, run->seed, run->n, row->steps, row->accuracy, row->seconds);
    }
    if (total > 0) progress_finish(&w.progress);
    x->a.seed = a.seed;
    // the planned runs only, in order
    if (fs_write_rows(csv, rows, filled, n_plan, err, sizeof err)) die("%s", err);
    // endregion

    write_results(x, rows, n_plan, ks, nk, classes, kept, ft_max, seeds);
    printf("results: %s, %s/07-data-efficiency.{summary.csv,json}\n", csv, a.results);

    close_inputs(&w);
    free(items);
    free(plan);
    free(rows);
    free(filled);
    free(old);
    free(csv);
    free(note);
    exp_close(x);
    return 0;
}
