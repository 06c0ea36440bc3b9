// 06-comparison.c: chapter 6, feature extraction against fine-tuning.
//
// Reads what the training chapters wrote under --results and puts the runs side by side:
//   04-feature-extraction            (run "extract":  frozen backbone, BatchNorm in eval mode)
//   04-feature-extraction-bn-train   (run "bntrain":  the tutorial's model.train() behaviour)
//   05-fine-tuning                   (run "finetune": every weight trained)
// Of each run it needs <name>.csv (one line per epoch), <name>.json (the run's summary) and
// <name>.predictions.csv (the final model on every validation image). A run whose JSON is missing
// was not run: it is reported and skipped; at least one run must exist.
//
//   build/06-comparison [--results DIR] [--root DIR] [--figures DIR] [--font FILE.ttf]
//
// Writes, atomically, under --results: 06-comparison.json (flat summary), 06-comparison.csv (one
// row per run), 06-comparison.curves.dat (the epochs of every run, one gnuplot block per run),
// 06-comparison.per-class.csv (per-class accuracy of every run), and per run
// 06-comparison.confusion-<run>.csv (counts) and .dat (row fractions, for the heat map); under
// --figures, 06-most-wrong-<run>.png: the validation images the final model got wrong with the
// highest confidence, with their true and predicted breeds.
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "data/dataset.h"
#include "report/docgen.h"
#include "report/figure.h"
#include "experiment/results.h"
#include "experiment/runfiles.h"

#define K PETS_NUM_CLASSES
#define WRONG_COLS 4 // the most-confidently-wrong grid: 4 x 3 panels
#define WRONG_ROWS 3
#define PANEL_W 300
#define PANEL_H 300
#define TITLE_H 58 // two title lines: true breed, then prediction and its probability

static const struct {
    const char *id, *name, *title;
} RUNS[] = {
    {"extract", "04-feature-extraction", "feature extraction"},
    {"bntrain", "04-feature-extraction-bn-train", "feature extraction (BN in train mode)"},
    {"finetune", "05-fine-tuning", "fine-tuning"},
};
#define NRUNS 3

typedef struct {
    int present;
    FlatJson json;
    RunEpoch *ep;          // (n_ep) the CSV's rows
    int n_ep;
    RunPred *pr;           // (n_pr) the predictions file's rows
    int n_pr;
    int conf[K][K];        // [true][predicted] counts
    int per_class[K][2];   // [class] {correct, images}
    double final_acc, seconds_per_epoch, seconds_total;
    int weights_pretrained;
} Run;

static Run run[NRUNS];                   // in the order of RUNS
static char class_name[K][RUN_NAME_MAX]; // from the predictions files ("" = never seen)

static void usage(FILE *f) {
    fprintf(f,
            "usage: 06-comparison [--results DIR] [--root DIR] [--figures DIR] [--font FILE.ttf]\n"
            "Compares the runs of chapters 04 and 05 found in the results folder: a table, the\n"
            "curves per epoch, confusion matrices, per-class accuracy, the most confidently wrong\n"
            "validation images. Missing runs are skipped; at least one is needed.\n"
            "  --results DIR   where the runs' files are read and 06-comparison.* written (results)\n"
            "  --root DIR      dataset root for the images of the grid (default: each run's own)\n"
            "  --figures DIR   where 06-most-wrong-<run>.png is written (default figures)\n"
            "  --font FILE     TrueType font for the titles (default %s)\n",
            FIGURE_FONT_DEFAULT);
}

// ----------------------------------------------------------------------------
// step 1: the runs and their confusion matrices
// region: load-runs
// A run exists when its JSON does (the chapter programs write it last, after everything else).
static int load_runs(const char *results_dir) {
    char err[1024];
    int n_present = 0;
    for (int r = 0; r < NRUNS; r++) {
        char *json = xasprintf("%s/%s.json", results_dir, RUNS[r].name);
        if (!file_exists(json)) {
            printf("%-9s not found (%s): skipped\n", RUNS[r].id, json);
            free(json);
            continue;
        }
        if (flatjson_load(json, &run[r].json, err, sizeof err)) die("%s", err);
        char *csv = xasprintf("%s/%s.csv", results_dir, RUNS[r].name);
        char *pred = xasprintf("%s/%s.predictions.csv", results_dir, RUNS[r].name);
        if (run_read_epochs(csv, &run[r].ep, &run[r].n_ep, err, sizeof err) ||
            run_read_predictions(pred, &run[r].pr, &run[r].n_pr, class_name, err, sizeof err))
            die("%s", err);
        run[r].present = 1;
        for (int q = 0; q < r; q++)
            if (run[q].present && run[q].n_pr != run[r].n_pr)
                warn("%s and %s were validated on different images (%d and %d): compare with care",
                     RUNS[q].name, RUNS[r].name, run[q].n_pr, run[r].n_pr);
        n_present++;
        free(json), free(csv), free(pred);
    }
    if (!n_present)
        die("no run found in %s/: run build/04-feature-extraction and/or build/05-fine-tuning "
            "first (or pass --results DIR)", results_dir);
    return n_present;
}
// endregion

// region: confusion
// conf[t][p] counts the validation images of true class t that the final model called p;
// a class's accuracy is its diagonal entry over its row's sum. used[c]: class c occurs as a
// label or a prediction in some run.
static void count_confusion(int used[K]) {
    for (int r = 0; r < NRUNS; r++)
        for (int i = 0; run[r].present && i < run[r].n_pr; i++) {
            const RunPred *p = &run[r].pr[i];
            run[r].conf[p->label][p->pred]++;
            run[r].per_class[p->label][0] += p->pred == p->label;
            run[r].per_class[p->label][1]++;
            used[p->label] = used[p->pred] = 1;
        }
}
// endregion

// ----------------------------------------------------------------------------
// step 2: per run, the summary, the epochs, the confusion matrix, the most confidently wrong images
static double jnum(const Run *r, const char *dir, const char *name, const char *key) {
    const JsonEntry *e = flatjson_get(&r->json, key);
    if (!e || e->is_string) die("%s/%s.json: no number \"%s\"; rerun the chapter program", dir, name, key);
    return e->num;
}

static const char *jstr(const Run *r, const char *key) {
    const JsonEntry *e = flatjson_get(&r->json, key);
    return e && e->is_string ? e->text : "?";
}

// Sorts wrong predictions first by decreasing confidence.
static int by_confidence(const void *a, const void *b) {
    const RunPred *p = a, *q = b;
    int wp = p->pred != p->label, wq = q->pred != q->label;
    if (wp != wq) return wq - wp;
    return (q->prob_pred > p->prob_pred) - (q->prob_pred < p->prob_pred);
}

// The grid of the most confidently wrong validation images of one run.
static int draw_most_wrong(Run *r, const char *root, const Font *font, const char *path) {
    qsort(r->pr, r->n_pr, sizeof(RunPred), by_confidence);
    int shown = 0; // the mistakes come first
    while (shown < WRONG_COLS * WRONG_ROWS && shown < r->n_pr && r->pr[shown].pred != r->pr[shown].label)
        shown++;
    FigurePanel panel[WRONG_COLS * WRONG_ROWS];
    char *text[3 * WRONG_COLS * WRONG_ROWS]; // the panels' strings, owned here
    for (int p = 0; p < shown; p++) {
        const RunPred *w = &r->pr[p];
        panel[p].file = text[3 * p] = xasprintf("%s/images/%s.jpg", root, w->name);
        panel[p].title = text[3 * p + 1] = xasprintf("true: %s", class_name[w->label]);
        panel[p].subtitle = text[3 * p + 2] =
            xasprintf("predicted: %s (%.2f)", class_name[w->pred], w->prob_pred);
    }
    char err[1024];
    if (figure_grid(path, font, panel, shown, WRONG_COLS, PANEL_W, PANEL_H, TITLE_H,
                    "no validation image was misclassified",
                    "pass --root DIR to say where the images are", err, sizeof err))
        die("%s", err);
    for (int i = 0; i < 3 * shown; i++) free(text[i]);
    return shown;
}

// Run r in the JSON summary (keys "<id>_...") and in the table, and its grid of mistakes
// (06-most-wrong-<id>.png under `figures`, the images read from `images`).
static void summarize_run(int r, const char *results_dir, const char *images, const char *figures,
                          const Font *font, Results *res, FILE *table) {
    Run *R = &run[r];
    const char *id = RUNS[r].id;
    // region: summary
    const RunEpoch *last = &R->ep[R->n_ep - 1];
    int best = 0, reductions = 0, classes = 0, worst = -1, correct = 0;
    double seconds = 0, class_acc_sum = 0;
    for (int e = 0; e < R->n_ep; e++) {
        if (R->ep[e].val_acc > R->ep[best].val_acc) best = e;
        if (e > 0 && R->ep[e].lr < R->ep[e - 1].lr) reductions++;
        seconds += R->ep[e].seconds;
    }
    for (int c = 0; c < K; c++) {
        if (!R->per_class[c][1]) continue; // not in the validation set
        double acc = (double)R->per_class[c][0] / R->per_class[c][1];
        classes++;
        class_acc_sum += acc;
        correct += R->per_class[c][0];
        if (worst < 0 || acc < (double)R->per_class[worst][0] / R->per_class[worst][1]) worst = c;
    }
    double worst_acc = (double)R->per_class[worst][0] / R->per_class[worst][1];
    double pred_acc = (double)correct / R->n_pr;
    // endregion
    if (fabs(pred_acc - last->val_acc) > 0.5 / R->n_pr)
        warn("%s/%s: the predictions give accuracy %.4f but the last epoch of the CSV says %.4f: "
             "files of different runs? Rerun the chapter program", results_dir, RUNS[r].name,
             pred_acc, last->val_acc);
    // the CSV keeps milliseconds; the JSON has the exact sum (an epoch on cached features of a
    // small set can take less than a millisecond)
    const JsonEntry *exact = flatjson_get(&R->json, "seconds_epochs");
    if (exact && !exact->is_string) seconds = exact->num;
    double total = jnum(R, results_dir, RUNS[r].name, "seconds_total");
    R->weights_pretrained = (int)jnum(R, results_dir, RUNS[r].name, "weights_pretrained");
    R->final_acc = last->val_acc, R->seconds_per_epoch = seconds / R->n_ep, R->seconds_total = total;
    char *k = xstrdup("");
#define KEY(suffix) (free(k), k = xasprintf("%s_%s", id, suffix))
    results_str(res, KEY("method"), RUNS[r].title);
    results_str(res, KEY("mode"), jstr(R, "mode"));
    results_str(res, KEY("device"), jstr(R, "device"));
    results_str(res, KEY("precision"), jstr(R, "precision"));
    results_int(res, KEY("weights_pretrained"), R->weights_pretrained);
    results_int(res, KEY("epochs"), R->n_ep);
    results_num(res, KEY("first_val_acc"), R->ep[0].val_acc);
    results_num(res, KEY("final_val_acc"), last->val_acc);
    results_num(res, KEY("final_val_loss"), last->val_loss);
    results_num(res, KEY("final_train_loss"), last->train_loss);
    results_num(res, KEY("best_val_acc"), R->ep[best].val_acc);
    results_int(res, KEY("best_epoch"), best + 1);
    results_num(res, KEY("lr_initial"), R->ep[0].lr);
    results_num(res, KEY("lr_final"), last->lr);
    results_int(res, KEY("lr_reductions"), reductions);
    results_num(res, KEY("seconds_epochs"), seconds);
    results_num(res, KEY("seconds_per_epoch"), seconds / R->n_ep);
    results_num(res, KEY("seconds_total"), total);
    results_int(res, KEY("val_images"), R->n_pr);
    results_int(res, KEY("val_correct"), correct);
    results_int(res, KEY("val_wrong"), R->n_pr - correct);
    results_int(res, KEY("classes"), classes);
    results_num(res, KEY("mean_class_acc"), class_acc_sum / classes);
    results_str(res, KEY("worst_class"), class_name[worst]);
    results_num(res, KEY("worst_class_acc"), worst_acc);
    fprintf(table, "%s,%s,%d,%.4f,%.4f,%d,%.4f,%d,%.3f,%.3f,%.4f,%s,%.4f\n", id, RUNS[r].title,
            R->n_ep, last->val_acc, R->ep[best].val_acc, best + 1, last->val_loss, reductions,
            seconds / R->n_ep, total, class_acc_sum / classes, class_name[worst], worst_acc);
    char *png = xasprintf("%s/06-most-wrong-%s.png", figures, id);
    int shown = draw_most_wrong(R, images, font, png);
    results_str(res, KEY("most_wrong_figure"), png);
    results_int(res, KEY("most_wrong_shown"), shown);
    results_num(res, KEY("most_wrong_top_prob"), shown ? R->pr[0].prob_pred : 0.0);
    printf("%-9s %3d epochs  final val acc %.4f  best %.4f (epoch %d)  %.2f s/epoch  worst "
           "class %s (%.3f)  -> %s\n", id, R->n_ep, last->val_acc, R->ep[best].val_acc,
           best + 1, seconds / R->n_ep, class_name[worst], worst_acc, png);
    free(png), free(k);
#undef KEY
}

// Every run, in order: its keys in the JSON summary, its row of 06-comparison.csv, its block of
// 06-comparison.curves.dat (gnuplot index r), its confusion matrix and its grid of mistakes.
static void compare_runs(const int used[K], const char *results_dir, const char *root,
                         const char *figures, const Font *font, Results *res) {
    char err[1024];
    AtomicFile table_af, curves_af;
    char *table_path = xasprintf("%s/06-comparison.csv", results_dir);
    char *curves_path = xasprintf("%s/06-comparison.curves.dat", results_dir);
    FILE *table = afile_open(&table_af, table_path, err, sizeof err);
    FILE *curves = table ? afile_open(&curves_af, curves_path, err, sizeof err) : NULL;
    if (!curves) die("%s", err);
    fprintf(table, "run,method,epochs,final_val_acc,best_val_acc,best_epoch,final_val_loss,"
                   "lr_reductions,seconds_per_epoch,seconds_total,mean_class_acc,worst_class,"
                   "worst_class_acc\n");
    for (int r = 0; r < NRUNS; r++) {
        const Run *R = &run[r];
        char *key = xasprintf("%s_present", RUNS[r].id);
        results_int(res, key, R->present);
        free(key);
        if (!R->present) continue;
        summarize_run(r, results_dir, root ? root : jstr(R, "root"), figures, font, res, table);
        // The epochs as one gnuplot block, titled by its header line.
        fprintf(curves, "# %s: %s\n\"%s\" train_loss val_loss val_acc lr seconds\n", RUNS[r].id,
                RUNS[r].name, RUNS[r].title);
        for (int e = 0; e < R->n_ep; e++)
            fprintf(curves, "%g %.9g %.9g %.9g %.9g %.3f\n", R->ep[e].epoch, R->ep[e].train_loss,
                    R->ep[e].val_loss, R->ep[e].val_acc, R->ep[e].lr, R->ep[e].seconds);
        fprintf(curves, "\n\n");
        // The confusion matrix over the classes used: counts (csv), row fractions (dat).
        for (int frac = 0; frac < 2; frac++) {
            char *path = xasprintf("%s/06-comparison.confusion-%s.%s", results_dir, RUNS[r].id,
                                   frac ? "dat" : "csv");
            AtomicFile af;
            FILE *f = afile_open(&af, path, err, sizeof err);
            if (!f) die("%s", err);
            fprintf(f, "true class");
            for (int c = 0; c < K; c++)
                if (used[c]) fprintf(f, ",%s", class_name[c]);
            fputc('\n', f);
            for (int t = 0; t < K; t++) {
                if (!used[t]) continue;
                fprintf(f, "%s", class_name[t]);
                for (int c = 0; c < K; c++) {
                    if (!used[c]) continue;
                    if (frac) fprintf(f, ",%.6f", R->per_class[t][1] ? (double)R->conf[t][c] / R->per_class[t][1] : 0.0);
                    else fprintf(f, ",%d", R->conf[t][c]);
                }
                fputc('\n', f);
            }
            if (afile_commit(&af, err, sizeof err)) die("%s", err);
            free(path);
        }
    }
    if (afile_commit(&table_af, err, sizeof err) || afile_commit(&curves_af, err, sizeof err))
        die("%s", err);
    free(table_path), free(curves_path);
}

int main(int argc, char **argv) {
    const char *results_dir = "results", *root = NULL, *figures = "figures";
    const char *font_path = FIGURE_FONT_DEFAULT;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage(stdout), 0;
        else if (!strcmp(argv[i], "--results") && i + 1 < argc) results_dir = argv[++i];
        else if (!strcmp(argv[i], "--root") && i + 1 < argc) root = argv[++i];
        else if (!strcmp(argv[i], "--figures") && i + 1 < argc) figures = argv[++i];
        else if (!strcmp(argv[i], "--font") && i + 1 < argc) font_path = argv[++i];
        else return usage(stderr), fprintf(stderr, "error: unknown argument '%s'\n", argv[i]), 2;
    }
    char err[1024];
    Font *font = font_load(font_path, err, sizeof err);
    if (!font) die("%s", err);

    // step 1: the runs that exist, and their confusion matrices
    int n_present = load_runs(results_dir);
    int used[K] = {0}; // classes that occur as a label or a prediction in some run
    count_confusion(used);
    for (int c = 0; c < K; c++)
        if (used[c] && !class_name[c][0]) snprintf(class_name[c], sizeof class_name[0], "class %d", c + 1);

    // step 2: per run, its summary, epochs, confusion matrix and most confidently wrong images
    Results res;
    results_init(&res);
    compare_runs(used, results_dir, root, figures, font, &res);

    // step 3, side by side: the accuracy of every class in each run (the per-class figure's bars)
    char *pc_path = xasprintf("%s/06-comparison.per-class.csv", results_dir);
    AtomicFile pc_af;
    FILE *pc = afile_open(&pc_af, pc_path, err, sizeof err);
    if (!pc) die("%s", err);
    fprintf(pc, "class_id,class,images");
    for (int r = 0; r < NRUNS; r++)
        if (run[r].present) fprintf(pc, ",%s", RUNS[r].title);
    fputc('\n', pc);
    int classes = 0, val_images = 0;
    for (int c = 0; c < K; c++) {
        int images = 0;
        for (int r = 0; r < NRUNS && !images; r++) images = run[r].per_class[c][1];
        if (!images) continue;
        classes++;
        val_images += images;
        fprintf(pc, "%d,%s,%d", c + 1, class_name[c], images);
        for (int r = 0; r < NRUNS; r++)
            if (run[r].present)
                fprintf(pc, ",%.6f", run[r].per_class[c][1] ? (double)run[r].per_class[c][0] / run[r].per_class[c][1] : 0.0);
        fputc('\n', pc);
    }
    if (afile_commit(&pc_af, err, sizeof err)) die("%s", err);

    // region: compare
    // The two questions of the chapter: what does fine-tuning buy over feature extraction, and
    // what did the tutorial's BatchNorm drift change; both in accuracy and in time per epoch.
    const Run *fx = &run[0], *bn = &run[1], *ft = &run[2];
    if (fx->present && ft->present) {
        results_num(&res, "finetune_minus_extract_acc", ft->final_acc - fx->final_acc);
        results_num(&res, "finetune_over_extract_seconds_per_epoch",
                    ft->seconds_per_epoch / fx->seconds_per_epoch);
    }
    if (fx->present && bn->present) {
        results_num(&res, "bntrain_minus_extract_acc", bn->final_acc - fx->final_acc);
        results_num(&res, "bntrain_over_extract_seconds_per_epoch",
                    bn->seconds_per_epoch / fx->seconds_per_epoch);
        results_num(&res, "bntrain_over_extract_seconds_total", bn->seconds_total / fx->seconds_total);
    }
    // endregion
    char present_list[64] = "", missing_list[64] = "";
    int pretrained = 1; // 0 if any run used other weights
    for (int r = 0; r < NRUNS; r++) {
        char *list = run[r].present ? present_list : missing_list;
        snprintf(list + strlen(list), 32, "%s%s", list[0] ? " " : "", RUNS[r].id);
        if (run[r].present) pretrained &= run[r].weights_pretrained == 1;
    }
    results_int(&res, "runs", n_present);
    results_str(&res, "runs_present", present_list);
    results_str(&res, "runs_missing", missing_list[0] ? missing_list : "none");
    results_int(&res, "weights_pretrained", pretrained);
    results_int(&res, "classes", classes);
    results_int(&res, "val_images", val_images);
    char *json = xasprintf("%s/06-comparison.json", results_dir);
    if (results_write(&res, json, err, sizeof err)) die("%s", err);
    printf("wrote %s, %s/06-comparison.csv, %s/06-comparison.curves.dat, %s and the confusion "
           "matrices\n", json, results_dir, results_dir, pc_path);
    for (int r = 0; r < NRUNS; r++) {
        free(run[r].ep), free(run[r].pr);
        if (run[r].present) flatjson_free(&run[r].json);
    }
    results_free(&res), font_free(font), free(json), free(pc_path);
    return 0;
}
