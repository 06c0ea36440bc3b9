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

static void test_good(const char *dir) {
    char *p = xasprintf("%s/good.csv", dir);
    char *text = xasprintf("%s1,2.5,1.25,0.5,0.001,10.5\n2,1.5,1,0.75,0.001,9\n", EPOCH_HEADER);
    write_text(p, text);
    RunEpoch *ep = NULL;
    int n = 0;
    char err[512] = "";
    CHECK(run_read_epochs(p, &ep, &n, err, sizeof err) == 0, "good epoch log refused: %s", err);
    CHECK(n == 2 && ep && ep[1].epoch == 2 && ep[1].val_acc == 0.75 && ep[0].seconds == 10.5,
          "epoch log read back wrong (n %d)", n);
    free(ep);
    free(text);
    free(p);

    p = xasprintf("%s/good.predictions.csv", dir);
    text = xasprintf("%s0,Abyssinian_201,0,0,0.9,0.9,Abyssinian,Abyssinian\n"
                     "1,Bengal_7,5,0,0.5,0.25,Bengal,Abyssinian\n", PRED_HEADER);
    write_text(p, text);
    RunPred *pr = NULL;
    char names[PETS_NUM_CLASSES][RUN_NAME_MAX];
    memset(names, 0, sizeof names);
    CHECK(run_read_predictions(p, &pr, &n, names, err, sizeof err) == 0,
          "good predictions refused: %s", err);
    CHECK(n == 2 && pr && pr[1].index == 1 && pr[1].label == 5 && pr[1].prob_pred == 0.5 &&
          !strcmp(pr[1].name, "Bengal_7") && !strcmp(names[5], "Bengal"),
          "predictions read back wrong (n %d)", n);
    free(pr);
    free(text);
    free(p);
}

// Good rows, then a bad one: an error naming the line, and no rows returned.
static void test_bad_after_good(const char *dir) {
    char *p = xasprintf("%s/bad.csv", dir);
    char *text = xasprintf("%s1,2.5,1.25,0.5,0.001,10.5\n2,1\n", EPOCH_HEADER);
    write_text(p, text);
    RunEpoch *ep = (RunEpoch *)&ep;
    int n = -1;
    char err[512] = "";
    CHECK(run_read_epochs(p, &ep, &n, err, sizeof err) == -1, "a bad line 3 was accepted");
    CHECK(strstr(err, "bad.csv:3:") != NULL, "error '%s' does not name bad.csv:3", err);
    CHECK(ep == NULL && n == 0, "an error returned %d rows (%p): they leak", n, (void *)ep);
    free(text);
    free(p);

    p = xasprintf("%s/bad.predictions.csv", dir);
    text = xasprintf("%s0,Abyssinian_201,0,0,0.9,0.9,Abyssinian,Abyssinian\n0,x,99,0,1,1,a,b\n",
                     PRED_HEADER);
    write_text(p, text);
    RunPred *pr = (RunPred *)&pr;
    char names[PETS_NUM_CLASSES][RUN_NAME_MAX];
    memset(names, 0, sizeof names);
    CHECK(run_read_predictions(p, &pr, &n, names, err, sizeof err) == -1, "label 99 accepted");
    CHECK(strstr(err, "bad.predictions.csv:3:") != NULL, "error '%s' does not name line 3", err);
    CHECK(pr == NULL && n == 0, "an error returned %d rows (%p): they leak", n, (void *)pr);
    free(text);
    free(p);
}

// An index that is a finite number but no int: refused with the line.
static void test_huge_index(const char *dir) {
    char *p = xasprintf("%s/huge.predictions.csv", dir);
    char *text = xasprintf("%s1e300,Abyssinian_201,0,0,0.9,0.9,Abyssinian,Abyssinian\n", PRED_HEADER);
    write_text(p, text);
    RunPred *pr = NULL;
    int n = 0;
    char names[PETS_NUM_CLASSES][RUN_NAME_MAX];
    memset(names, 0, sizeof names);
    char err[512] = "";
    CHECK(run_read_predictions(p, &pr, &n, names, err, sizeof err) == -1, "index 1e300 accepted");
    CHECK(strstr(err, "huge.predictions.csv:2:") != NULL, "error '%s' does not name line 2", err);
    free(pr);
    free(text);
    free(p);
}

int main(int argc, char **argv) {
    if (argc != 2) die("usage: test-runfiles TMP_DIR");
    fresh_dir(argv[1]);
    test_good(argv[1]);
    test_bad_after_good(argv[1]);
    test_huge_index(argv[1]);
    return check_exit("runfiles: epoch logs and predictions read; bad files refused cleanly");
}
