// tests/test_runfiles.c: the readers of a run's files that 06-comparison uses
// (code/experiment/runfiles.c), on inputs the fuzzer (tests/fuzz/fuzz_runfiles.c) found:
//   - a good epoch log and predictions file read back exactly;
//   - a file that goes bad after good rows returns an error and nothing else (no array left
//     allocated: under `make sanitize` a leak fails the test, and the pointer must be NULL);
//   - numbers that do not fit an int (index 1e300) are refused, not converted (undefined
//     behaviour that UBSan reports).
// usage: test-runfiles TMP_DIR
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "experiment/runfiles.h"
#include "check.h"
static const char EPOCH_HEADER[] = "epoch,train_loss,val_loss,val_acc,lr,seconds\n";
static const char PRED_HEADER[] = "index,name,label,pred,prob_pred,prob_label,label_name,pred_name\n";
static const char PRED_ROW[] = "0,Abyssinian_201,0,0,0.9,0.9,Abyssinian,Abyssinian\n";

// Writes DIR/NAME holding HEADER then ROWS; returns the path (the caller frees it).
static char *put_file(const char *dir, const char *name, const char *header, const char *rows) {
    char *p = xasprintf("%s/%s", dir, name);
    char *text = xasprintf("%s%s", header, rows);
    write_text(p, text);
    free(text);
    return p;
}

// run_read_epochs on DIR/NAME (HEADER + ROWS); *ep and *n are what it returned.
static int read_epochs(const char *dir, const char *name, const char *rows, RunEpoch **ep, int *n,
                       char *err, size_t errlen) {
    char *p = put_file(dir, name, EPOCH_HEADER, rows);
    int rc = run_read_epochs(p, ep, n, err, errlen);
    free(p);
    return rc;
}

// run_read_predictions on DIR/NAME (HEADER + ROWS), with the class names filled in NAMES.
static int read_preds(const char *dir, const char *name, const char *rows, RunPred **pr, int *n,
                      char names[PETS_NUM_CLASSES][RUN_NAME_MAX], char *err, size_t errlen) {
    char *p = put_file(dir, name, PRED_HEADER, rows);
    memset(names, 0, sizeof(char[PETS_NUM_CLASSES][RUN_NAME_MAX]));
    int rc = run_read_predictions(p, pr, n, names, err, errlen);
    free(p);
    return rc;
}

static void test_good(const char *dir) {
    RunEpoch *ep = NULL;
    int n = 0;
    char err[512] = "";
    CHECK(read_epochs(dir, "good.csv", "1,2.5,1.25,0.5,0.001,10.5\n2,1.5,1,0.75,0.001,9\n", &ep, &n,
                      err, sizeof err) == 0,
          "good epoch log refused: %s", err);
    CHECK(n == 2 && ep && ep[1].epoch == 2 && ep[1].val_acc == 0.75 && ep[0].seconds == 10.5,
          "epoch log read back wrong (n %d)", n);
    free(ep);

    RunPred *pr = NULL;
    char names[PETS_NUM_CLASSES][RUN_NAME_MAX];
    char *rows = xasprintf("%s1,Bengal_7,5,0,0.5,0.25,Bengal,Abyssinian\n", PRED_ROW);
    CHECK(read_preds(dir, "good.predictions.csv", rows, &pr, &n, names, err, sizeof err) == 0,
          "good predictions refused: %s", err);
    CHECK(n == 2 && pr && pr[1].index == 1 && pr[1].label == 5 && pr[1].prob_pred == 0.5 &&
              !strcmp(pr[1].name, "Bengal_7") && !strcmp(names[5], "Bengal"),
          "predictions read back wrong (n %d)", n);
    free(pr);
    free(rows);
}

// Good rows, then a bad one: an error naming the line, and no rows returned.
static void test_bad_after_good(const char *dir) {
    RunEpoch *ep = (RunEpoch *)&ep;
    int n = -1;
    char err[512] = "";
    CHECK(read_epochs(dir, "bad.csv", "1,2.5,1.25,0.5,0.001,10.5\n2,1\n", &ep, &n, err, sizeof err) == -1,
          "a bad line 3 was accepted");
    CHECK(strstr(err, "bad.csv:3:") != NULL, "error '%s' does not name bad.csv:3", err);
    CHECK(ep == NULL && n == 0, "an error returned %d rows (%p): they leak", n, (void *)ep);

    RunPred *pr = (RunPred *)&pr;
    char names[PETS_NUM_CLASSES][RUN_NAME_MAX];
    char *rows = xasprintf("%s0,x,99,0,1,1,a,b\n", PRED_ROW);
    n = -1;
    CHECK(read_preds(dir, "bad.predictions.csv", rows, &pr, &n, names, err, sizeof err) == -1,
          "label 99 accepted");
    CHECK(strstr(err, "bad.predictions.csv:3:") != NULL, "error '%s' does not name line 3", err);
    CHECK(pr == NULL && n == 0, "an error returned %d rows (%p): they leak", n, (void *)pr);
    free(rows);
}

// An index that is a finite number but no int: refused with the line.
static void test_huge_index(const char *dir) {
    RunPred *pr = NULL;
    int n = 0;
    char names[PETS_NUM_CLASSES][RUN_NAME_MAX];
    char err[512] = "";
    CHECK(read_preds(dir, "huge.predictions.csv", "1e300,Abyssinian_201,0,0,0.9,0.9,Abyssinian,Abyssinian\n",
                     &pr, &n, names, err, sizeof err) == -1,
          "index 1e300 accepted");
    CHECK(strstr(err, "huge.predictions.csv:2:") != NULL, "error '%s' does not name line 2", err);
    free(pr);
}

int main(int argc, char **argv) {
    if (argc != 2) die("usage: test-runfiles TMP_DIR");
    fresh_dir(argv[1]);
    test_good(argv[1]);
    test_bad_after_good(argv[1]);
    test_huge_index(argv[1]);
    return check_exit("runfiles: epoch logs and predictions read; bad files refused cleanly");
}
