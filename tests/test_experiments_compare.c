// tests/test_experiments_compare.c: compares a chapter program's per-epoch CSV with PyTorch's
// reference numbers (tests/fixtures/transfer/reference.csv, written by tests/ref_transfer.py):
//   test-experiments-compare REF.csv VARIANT INPUT OURS.csv N_VAL TRAIN_RTOL VAL_RTOL ACC_IMAGES [PLUS]
// For every epoch in OURS.csv (all of which must exist in the reference), train_loss must satisfy
// |ours - ref| <= 1e-6 + TRAIN_RTOL * |ref|, val_loss the same with VAL_RTOL, val_acc may differ
// by at most ACC_IMAGES images out of N_VAL, and the learning rate must be the same (relative
// 1e-6). Each tolerance is a comma-separated list, one value per epoch, the last one repeating
// ("2e-3,3e-2": 2e-3 for epoch 1, 3e-2 from epoch 2 on).
// With PLUS (another input of the reference, e.g. `ours`), each epoch's allowance grows by how
// far the reference's own PLUS run is from its INPUT run, |ref[PLUS] - ref[INPUT]| (losses and
// images): ours against PyTorch fed torchvision's pixels is held to the same-pixel tolerance plus
// what the other pixels alone change in PyTorch (the triangle inequality), not to a guess.
// Prints one line per epoch with both values and the differences; exits 1 on any mismatch.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXE 1000

typedef struct {
    double train_loss, val_loss, val_acc, lr;
    int present;
} Row;

static void fail_usage(void) {
    fprintf(stderr, "usage: test-experiments-compare REF.csv VARIANT INPUT OURS.csv N_VAL "
                    "TRAIN_RTOL VAL_RTOL ACC_IMAGES [PLUS] (each tolerance a list: one value per "
                    "epoch; PLUS: an input whose distance from INPUT in the reference is added)\n");
    exit(2);
}

// Value for epoch e (1-based) of a comma-separated list; the last value repeats.
static double per_epoch(const char *list, int e) {
    double v = 0;
    const char *p = list;
    for (int i = 1;; i++) {
        v = atof(p);
        const char *c = strchr(p, ',');
        if (i == e || !c) return v;
        p = c + 1;
    }
}

int main(int argc, char **argv) {
    if (argc != 9 && argc != 10) fail_usage();
    const char *variant = argv[2], *input = argv[3], *plus = argc == 10 ? argv[9] : NULL;
    int n_val = atoi(argv[5]);
    const char *train_rtol = argv[6], *val_rtol = argv[7], *acc_list = argv[8];
    const double atol = 1e-6;
    static Row ref[MAXE], ours[MAXE], other[MAXE];
    char line[1024];

    FILE *f = fopen(argv[1], "r");
    if (!f) fprintf(stderr, "%s: cannot open\n", argv[1]), exit(1);
    while (fgets(line, sizeof line, f)) {
        char v[64], in[64];
        int e;
        Row r = {0};
        if (sscanf(line, "%63[^,],%63[^,],%d,%lf,%lf,%lf,%lf", v, in, &e, &r.train_loss,
                   &r.val_loss, &r.val_acc, &r.lr) != 7)
            continue; // header
        if (strcmp(v, variant) || e < 1 || e >= MAXE) continue;
        r.present = 1;
        if (!strcmp(in, input)) ref[e] = r;
        if (plus && !strcmp(in, plus)) other[e] = r;
    }
    fclose(f);

    f = fopen(argv[4], "r");
    if (!f) fprintf(stderr, "%s: cannot open\n", argv[4]), exit(1);
    int epochs = 0, bad = 0;
    while (fgets(line, sizeof line, f)) {
        int e;
        double secs;
        Row r = {0};
        if (sscanf(line, "%d,%lf,%lf,%lf,%lf,%lf", &e, &r.train_loss, &r.val_loss, &r.val_acc,
                   &r.lr, &secs) != 6)
            continue;
        if (e < 1 || e >= MAXE) continue;
        r.present = 1;
        ours[e] = r;
        if (e > epochs) epochs = e;
    }
    fclose(f);
    if (epochs == 0) fprintf(stderr, "%s: no epochs\n", argv[4]), exit(1);

    printf("%s, %s inputs: ours vs PyTorch (rtol train loss %s, val loss %s; accuracy: %s of %d "
           "images; per epoch%s%s%s)\n", variant, input, train_rtol, val_rtol, acc_list, n_val,
           plus ? "; plus PyTorch's own difference between its " : "", plus ? plus : "",
           plus ? " and these inputs" : "");
    printf("epoch  train_loss ours / ref (diff)            val_loss ours / ref (diff)              val_acc ours / ref\n");
    for (int e = 1; e <= epochs; e++) {
        if (!ours[e].present) printf("%5d  missing in %s\n", e, argv[4]), bad = 1;
        else if (!ref[e].present) printf("%5d  missing in the reference\n", e), bad = 1;
        else if (plus && !other[e].present) printf("%5d  no %s row in the reference\n", e, plus), bad = 1;
        if (!ours[e].present || !ref[e].present || (plus && !other[e].present)) continue;
        const Row *a = &ours[e], *b = &ref[e], *o = &other[e];
        double dt = fabs(a->train_loss - b->train_loss), dv = fabs(a->val_loss - b->val_loss);
        double dacc = fabs(a->val_acc - b->val_acc) * n_val;
        double pt = plus ? fabs(o->train_loss - b->train_loss) : 0;
        double pv = plus ? fabs(o->val_loss - b->val_loss) : 0;
        double pa = plus ? fabs(o->val_acc - b->val_acc) * n_val : 0;
        int ok_t = dt <= atol + per_epoch(train_rtol, e) * fabs(b->train_loss) + pt;
        int ok_v = dv <= atol + per_epoch(val_rtol, e) * fabs(b->val_loss) + pv;
        int ok_a = dacc <= per_epoch(acc_list, e) + pa + 1e-6;
        int ok_l = fabs(a->lr - b->lr) <= 1e-6 * fabs(b->lr);
        printf("%5d  %.7f / %.7f (%.2e)%s  %.7f / %.7f (%.2e)%s  %.4f / %.4f (%.0f img)%s%s\n", e,
               a->train_loss, b->train_loss, dt, ok_t ? "" : " FAIL", a->val_loss, b->val_loss, dv,
               ok_v ? "" : " FAIL", a->val_acc, b->val_acc, dacc, ok_a ? "" : " FAIL",
               ok_l ? "" : " LR-MISMATCH");
        bad |= !(ok_t && ok_v && ok_a && ok_l);
    }
    printf("%s\n", bad ? "MISMATCH" : "match");
    return bad;
}
