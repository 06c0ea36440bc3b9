// fuzz_runfiles.c: libFuzzer target for the run-file readers 06-comparison uses (runfiles.c): a
// run's epoch log (<name>.csv) and its predictions (<name>.predictions.csv). The input is both:
// the same bytes are read as an epoch log and as a predictions file.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "experiment/runfiles.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *path = fuzz_write("run.csv", data, size);
    char err[512];
    RunEpoch *ep;
    int n;
    if (run_read_epochs(path, &ep, &n, err, sizeof err) == 0) {
        for (int i = 0; i < n; i++)
            if (ep[i].epoch != i + 1) __builtin_trap();
        free(ep);
    } else if (!err[0]) {
        __builtin_trap();
    }
    RunPred *pr;
    char names[PETS_NUM_CLASSES][RUN_NAME_MAX];
    memset(names, 0, sizeof names);
    if (run_read_predictions(path, &pr, &n, names, err, sizeof err) == 0) {
        for (int i = 0; i < n; i++)
            if (pr[i].label < 0 || pr[i].label >= PETS_NUM_CLASSES || pr[i].pred < 0 ||
                pr[i].pred >= PETS_NUM_CLASSES)
                __builtin_trap();
        for (int c = 0; c < PETS_NUM_CLASSES; c++)
            if (strnlen(names[c], RUN_NAME_MAX) == RUN_NAME_MAX) __builtin_trap();
        free(pr);
    } else if (!err[0]) {
        __builtin_trap();
    }
    free(path);
    return 0;
}
