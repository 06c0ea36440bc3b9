// tests/test_few_shot.c: unit tests of chapter 07's helpers (code/experiment/few_shot.c).
//   test-few-shot TMPDIR
// - stratified seeded subsets: k per class (fewer when a class has fewer), failed images left
//   out, ascending, the same seed gives the same items, another seed other items, k inside k';
// - the epoch rule;
// - the prototype and k-NN baselines: hand-made cases whose answers are worked out in the
//   comments, then random features against a direct computation written here independently
//   (every class mean / every similarity sorted with qsort);
// - the run table: CSV round trip, a bad header or line names path:line, a missing file is empty;
//   statistics (mean, sample std), the k reaching 90% and the k where ft overtakes fe;
// - the command-line helpers.
#define _GNU_SOURCE // M_PI
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/common.h"
#include "experiment/few_shot.h"
#include "core/rng.h"

// ----------------------------------------------------------------------------
// subsets

static void make_split(PetSplit *ds, int n, const int *labels) {
    memset(ds, 0, sizeof *ds);
    ds->n = n;
    ds->items = xcalloc((size_t)n, sizeof(PetItem));
    for (int i = 0; i < n; i++) ds->items[i].label = labels[i], ds->class_count[labels[i]]++;
}

static void test_subset(void) {
    // 3 classes: class 0 has 10 images, class 4 has 3, class 9 has 7; images 1 and 2 failed
    int labels[20];
    for (int i = 0; i < 20; i++) labels[i] = i < 10 ? 0 : i < 13 ? 4 : 9;
    uint8_t ok[20];
    memset(ok, 1, sizeof ok);
    ok[1] = ok[2] = 0;
    PetSplit ds;
    make_split(&ds, 20, labels);
    int a[20], b[20], c[20], big[20];
    for (int k = 1; k <= 9; k++) {
        int n = fs_subset(&ds, ok, k, 42, a);
        int want = (k < 8 ? k : 8) + (k < 3 ? k : 3) + (k < 7 ? k : 7);
        CHECK(n == want, "k=%d: %d items, expected %d", k, n, want);
        int count[PETS_NUM_CLASSES] = {0};
        for (int i = 0; i < n; i++) {
            CHECK(ok[a[i]], "k=%d: failed image %d in the subset", k, a[i]);
            CHECK(i == 0 || a[i] > a[i - 1], "k=%d: not ascending", k);
            count[labels[a[i]]]++;
        }
        CHECK(count[0] == (k < 8 ? k : 8) && count[4] == (k < 3 ? k : 3) && count[9] == (k < 7 ? k : 7),
              "k=%d: per class %d %d %d", k, count[0], count[4], count[9]);
        int n2 = fs_subset(&ds, ok, k, 42, b);
        CHECK(n2 == n && memcmp(a, b, (size_t)n * sizeof(int)) == 0, "k=%d: same seed, other items", k);
        int nb = fs_subset(&ds, ok, k + 1, 42, big); // nested: k's items are among k+1's
        for (int i = 0; i < n; i++) {
            int found = 0;
            for (int j = 0; j < nb; j++) found |= big[j] == a[i];
            CHECK(found, "k=%d: item %d not in the subset of k+1", k, a[i]);
        }
    }
    int differ = 0;
    for (uint64_t s = 1; s <= 5; s++) {
        int n = fs_subset(&ds, ok, 2, s, c), n0 = fs_subset(&ds, ok, 2, 0, a);
        differ += n != n0 || memcmp(a, c, (size_t)n * sizeof(int)) != 0;
    }
    CHECK(differ >= 4, "only %d of 5 other seeds drew other images", differ);
    int n = fs_subset(&ds, ok, 0, 7, a); // all
    CHECK(n == 18, "all: %d items, expected the 18 decoded", n);
    n = fs_subset(&ds, NULL, 0, 7, a);
    CHECK(n == 20, "all without ok flags: %d", n);
    free(ds.items);

    CHECK(fs_epochs(37, 32, 30, 3450) == 1725, "fe k=1: %d", fs_epochs(37, 32, 30, 3450));
    CHECK(fs_epochs(3680, 32, 30, 3450) == 30, "fe all: %d", fs_epochs(3680, 32, 30, 3450));
    CHECK(fs_epochs(1850, 32, 30, 3450) == 60, "fe k=50: %d", fs_epochs(1850, 32, 30, 3450));
    CHECK(fs_epochs(37, 32, 10, 100) == 50, "ft k=1: %d", fs_epochs(37, 32, 10, 100));
    CHECK(fs_epochs(3680, 32, 10, 100) == 10, "ft all: %d", fs_epochs(3680, 32, 10, 100));
}

// ----------------------------------------------------------------------------
// baselines: hand-made cases

static void test_baselines_by_hand(void) {
    // 2-d features. Training: class 0 at (0,0) and (2,0) (mean (1,0)); class 1 at (0,4)
    // (mean (0,4)); class 2 at (10,0), left out of the subset (items 0, 1, 2 only).
    const float train[] = {0, 0, 2, 0, 0, 4, 10, 0};
    const int tl[] = {0, 0, 1, 2};
    const int items[] = {0, 1, 2};
    // Test points and their nearest mean: (1,1) -> 0; (0,3) -> 1; (9,0) -> 0 (class 2 is not in
    // the subset); (0.5,2.6): distance^2 to (1,0) 0.25+6.76 = 7.01, to (0,4) 0.25+1.96 = 2.21 -> 1.
    const float test[] = {1, 1, 0, 3, 9, 0, 0.5f, 2.6f};
    const int lab[] = {0, 1, 2, 0};
    double acc = fs_prototype_accuracy(train, tl, items, 3, test, lab, NULL, 4, 2, 3);
    CHECK(acc == 0.5, "prototype: %g, expected 2/4 (rows 0 and 1 right)", acc);
    const uint8_t ok[] = {1, 1, 0, 1}; // leave out row 2: 2 of 3
    acc = fs_prototype_accuracy(train, tl, items, 3, test, lab, ok, 4, 2, 3);
    CHECK(fabs(acc - 2.0 / 3) < 1e-12, "prototype with ok flags: %g, expected 2/3", acc);

    // Cosine k-NN. Training directions: items 0,1 class 0 at angles 0 and 10 degrees (long
    // vectors), item 2 class 1 at 90 degrees, item 3 class 1 at 45 degrees, item 4 class 2 at
    // 50 degrees (short).
    float tr[10];
    const double deg[] = {0, 10, 90, 45, 50}, len[] = {100, 50, 1, 1, 0.01};
    for (int i = 0; i < 5; i++)
        tr[2 * i] = (float)(len[i] * cos(deg[i] * M_PI / 180)), tr[2 * i + 1] = (float)(len[i] * sin(deg[i] * M_PI / 180));
    const int tl2[] = {0, 0, 1, 1, 2};
    const int all[] = {0, 1, 2, 3, 4};
    // query at 48 degrees: nearest by angle is item 4 (2 deg, class 2) though it is the farthest
    // in Euclidean terms; 1-NN -> 2. 3-NN: items 4 (2), 3 (3), 1 (38 deg): votes 2:1, 1:1, 0:1,
    // a tie broken by the sum of similarities: class 2 cos 2 > class 1 cos 3 -> 2.
    // 5-NN: class 0 two votes (0, 1), class 1 two (3, 2), class 2 one: tie between 0 and 1;
    // sums: class 0 cos48 + cos38 = 0.669 + 0.788 = 1.457; class 1 cos3 + cos42 = 0.999 + 0.743
    // = 1.742 -> 1.
    float q[2] = {(float)cos(48 * M_PI / 180), (float)sin(48 * M_PI / 180)};
    int want[6] = {0, 2, 0, 2, 0, 1};
    for (int k = 1; k <= 5; k += 2) {
        for (int label = 0; label < 3; label++) {
            acc = fs_knn_accuracy(tr, tl2, all, 5, q, &label, NULL, 1, 2, 3, k);
            CHECK(acc == (label == want[k]), "k-NN k=%d: class %d gets %g", k, label, acc);
        }
    }
    // k larger than the subset is cut to it: 9-NN over items 2 and 3 (both class 1)
    int one = 1;
    acc = fs_knn_accuracy(tr, tl2, all + 2, 2, q, &one, NULL, 1, 2, 3, 9);
    CHECK(acc == 1.0, "k-NN with k > n: %g", acc);
}

// ----------------------------------------------------------------------------
// baselines against a direct computation on random features

typedef struct {
    double s;
    int i;
} Sim;
static int by_sim(const void *a, const void *b) { // descending similarity, then lower index
    const Sim *x = a, *y = b;
    if (x->s != y->s) return x->s < y->s ? 1 : -1;
    return x->i - y->i;
}

static void test_baselines_random(void) {
    enum { DIM = 16, NTRAIN = 60, NTEST = 200, C = 5 };
    Rng r;
    rng_seed(&r, 7);
    float *train = xmalloc(NTRAIN * DIM * sizeof(float)), *test = xmalloc(NTEST * DIM * sizeof(float));
    int tl[NTRAIN], lab[NTEST], items[NTRAIN];
    for (int i = 0; i < NTRAIN; i++) tl[i] = i % C;
    for (int i = 0; i < NTEST; i++) lab[i] = (int)(rng_u64(&r) % C);
    // class c's features scatter around a direction of its own
    for (int i = 0; i < NTRAIN + NTEST; i++) {
        int c = i < NTRAIN ? tl[i] : lab[i - NTRAIN];
        float *f = i < NTRAIN ? train + i * DIM : test + (i - NTRAIN) * DIM;
        for (int d = 0; d < DIM; d++) f[d] = (float)((d % C == c ? 1.5 : 0) + rng_normal(&r));
    }
    int n = 0;
    for (int i = 0; i < NTRAIN; i++)
        if (i % 4 != 3) items[n++] = i; // a subset: every item but each fourth
    // prototype, directly
    double mean[C][DIM] = {{0}};
    int cnt[C] = {0};
    for (int j = 0; j < n; j++) {
        cnt[tl[items[j]]]++;
        for (int d = 0; d < DIM; d++) mean[tl[items[j]]][d] += train[items[j] * DIM + d];
    }
    int right = 0;
    for (int t = 0; t < NTEST; t++) {
        int best = 0;
        double bd = INFINITY;
        for (int c = 0; c < C; c++) {
            double d2 = 0;
            for (int d = 0; d < DIM; d++) {
                double e = test[t * DIM + d] - mean[c][d] / cnt[c];
                d2 += e * e;
            }
            if (d2 < bd) bd = d2, best = c;
        }
        right += best == lab[t];
    }
    double acc = fs_prototype_accuracy(train, tl, items, n, test, lab, NULL, NTEST, DIM, C);
    CHECK(acc == (double)right / NTEST, "prototype %g, direct %g", acc, (double)right / NTEST);
    CHECK(acc > 0.5, "prototype accuracy %g on separable classes", acc);
    // k-NN, directly: all similarities sorted
    for (int k = 1; k <= 7; k += 2) {
        right = 0;
        for (int t = 0; t < NTEST; t++) {
            Sim s[NTRAIN];
            double qn = 0;
            for (int d = 0; d < DIM; d++) qn += (double)test[t * DIM + d] * test[t * DIM + d];
            for (int j = 0; j < n; j++) {
                double dot = 0, fn = 0;
                for (int d = 0; d < DIM; d++) {
                    dot += (double)test[t * DIM + d] * train[items[j] * DIM + d];
                    fn += (double)train[items[j] * DIM + d] * train[items[j] * DIM + d];
                }
                s[j] = (Sim){dot / (sqrt(qn) * sqrt(fn)), j};
            }
            qsort(s, (size_t)n, sizeof(Sim), by_sim);
            double votes[C] = {0}, sums[C] = {0};
            for (int j = 0; j < k; j++) votes[tl[items[s[j].i]]]++, sums[tl[items[s[j].i]]] += s[j].s;
            int best = 0;
            for (int c = 1; c < C; c++)
                if (votes[c] > votes[best] || (votes[c] == votes[best] && sums[c] > sums[best])) best = c;
            right += best == lab[t];
        }
        acc = fs_knn_accuracy(train, tl, items, n, test, lab, NULL, NTEST, DIM, C, k);
        CHECK(acc == (double)right / NTEST, "%d-NN %g, direct %g", k, acc, (double)right / NTEST);
    }
    free(train);
    free(test);
}

// ----------------------------------------------------------------------------
// the run table

static FsRow row(const char *m, int k, long long seed, double acc) {
    FsRow r = {.per_class = k, .seed = seed, .train_images = k ? 3 * k : 300, .test_images = 298,
               .epochs = 2, .steps = 4, .accuracy = acc, .loss = strcmp(m, "knn1") ? 1.25 : NAN,
               .seconds = 0.5};
    snprintf(r.method, sizeof r.method, "%s", m);
    snprintf(r.config, sizeof r.config, "0123456789abcdef");
    return r;
}

static void test_table(const char *dir) {
    char *path = xasprintf("%s/runs.csv", dir), err[1024];
    FsRow rows[] = {row("fe", 1, 0, 0.5), row("fe", 1, 1, 0.7), row("fe", 1, 2, 0.6),
                    row("fe", 5, 0, 0.8), row("fe", 0, 0, 0.9), row("ft", 1, 0, 0.4),
                    row("ft", 5, 0, 0.85), row("knn1", 1, 0, 0.3)};
    const int n = (int)(sizeof rows / sizeof rows[0]);
    FsRow *back;
    int nb;
    CHECK(fs_read_rows(path, &back, &nb, err, sizeof err) == 0 && nb == 0, "missing file: %d rows", nb);
    CHECK(fs_write_rows(path, rows, NULL, n, err, sizeof err) == 0, "write: %s", err);
    CHECK(fs_read_rows(path, &back, &nb, err, sizeof err) == 0 && nb == n, "read back: %d rows %s", nb, err);
    for (int i = 0; i < nb && i < n; i++) {
        CHECK(!strcmp(back[i].method, rows[i].method) && back[i].per_class == rows[i].per_class &&
              back[i].seed == rows[i].seed && back[i].accuracy == rows[i].accuracy &&
              back[i].steps == 4 && !strcmp(back[i].config, rows[i].config) &&
              (isnan(rows[i].loss) ? isnan(back[i].loss) : back[i].loss == rows[i].loss),
              "row %d differs after the round trip", i);
    }
    CHECK(fs_find(back, nb, "fe", 5, 0, "0123456789abcdef") != NULL, "fs_find fe k=5");
    CHECK(fs_find(back, nb, "fe", 5, 0, "0123456789abcdee") == NULL, "fs_find: another config");
    CHECK(fs_find(back, nb, "fe", 5, 1, "0123456789abcdef") == NULL, "fs_find: another seed");
    free(back);
    const uint8_t keep[] = {0, 1, 0, 0, 1, 0, 0, 1}; // rows 1, 4 and 7 only
    CHECK(fs_write_rows(path, rows, keep, n, err, sizeof err) == 0, "write kept rows: %s", err);
    CHECK(fs_read_rows(path, &back, &nb, err, sizeof err) == 0 && nb == 3 && back[0].seed == 1 &&
          back[1].per_class == 0 && !strcmp(back[2].method, "knn1"), "kept rows: %d", nb);
    free(back);

    FsStat s;
    CHECK(fs_stat(rows, n, "fe", 1, 3, &s) == 3, "fe k=1 runs");
    CHECK(approx_eq(s.mean, 0.6, 1e-12, 0) && approx_eq(s.std, 0.1, 1e-12, 0) && s.min == 0.5 &&
          s.max == 0.7 && s.images_per_class == 1, "fe k=1: mean %g std %g", s.mean, s.std);
    CHECK(fs_stat(rows, n, "fe", 5, 3, &s) == 1 && s.std == 0, "one run: std %g", s.std);
    CHECK(fs_stat(rows, n, "ft", 2, 3, &s) == 0, "no run");
    const int ks[] = {1, 2, 5, 0};
    // fe: all 0.9, 90% = 0.81; k=1 0.6, k=5 0.8 < 0.81 -> all
    CHECK(fs_k_reaching(rows, n, "fe", ks, 4, 0.9, 3) == 0, "fe k90: %d", fs_k_reaching(rows, n, "fe", ks, 4, 0.9, 3));
    CHECK(fs_k_reaching(rows, n, "fe", ks, 4, 0.85, 3) == 5, "fe k85 (0.765)");
    CHECK(fs_k_reaching(rows, n, "ft", ks, 4, 0.9, 3) == -1, "ft has no run with all images");
    CHECK(fs_k_overtakes(rows, n, "ft", "fe", ks, 4, 3) == 5, "ft overtakes fe at 5");
    CHECK(fs_k_overtakes(rows, n, "knn1", "fe", ks, 4, 3) == -1, "knn1 never overtakes fe");

    // damaged files: path and line
    char *bad = xasprintf("%s/bad.csv", dir);
    write_text(bad, "method,k\n");
    CHECK(fs_read_rows(bad, &back, &nb, err, sizeof err) == -1 && strstr(err, "bad.csv:1:"),
          "bad header: %s", err);
    write_text(bad, "method,per_class,seed,train_images,test_images,epochs,steps,accuracy,loss,seconds,config\n"
                    "fe,1,0,3,298,2,4,0.5,1.2,0.1,0123456789abcdef\n"
                    "fe,1,0,3,298,2,4,0.5\n");
    CHECK(fs_read_rows(bad, &back, &nb, err, sizeof err) == -1 && strstr(err, "bad.csv:3:"),
          "short line: %s", err);
    free(bad);
    free(path);
}

static void test_options(void) {
    char *argv[] = {"prog", "--seeds", "4", "--root", "x", "--per-class=1,all", NULL};
    int argc = 6;
    CHECK(!strcmp(fs_take_option(&argc, argv, "--seeds"), "4") && argc == 4, "--seeds");
    CHECK(!strcmp(fs_take_option(&argc, argv, "--per-class"), "1,all") && argc == 3, "--per-class=");
    CHECK(fs_take_option(&argc, argv, "--methods") == NULL && argc == 3, "absent option");
    CHECK(!strcmp(argv[1], "--root") && !strcmp(argv[2], "x") && argv[3] == NULL, "rest of argv");
    int ks[8];
    int n = fs_parse_ks("--per-class", "all,50,1,5,5", ks, 8);
    CHECK(n == 4 && ks[0] == 1 && ks[1] == 5 && ks[2] == 50 && ks[3] == 0, "parse_ks: %d", n);
}

int main(int argc, char **argv) {
    if (argc != 2) die("usage: %s TMPDIR", argv[0]);
    fresh_dir(argv[1]);
    test_subset();
    test_baselines_by_hand();
    test_baselines_random();
    test_table(argv[1]);
    test_options();
    return check_exit("few-shot helpers: all checks passed");
}
