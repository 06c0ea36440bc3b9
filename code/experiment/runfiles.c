// runfiles.c: the readers of runfiles.h (a run's epoch log and validation predictions).
#define _GNU_SOURCE
#include "experiment/runfiles.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

#define K PETS_NUM_CLASSES

// Splits a CSV line in place at commas; returns the number of fields (at most max).
static int split_csv(char *line, char **field, int max) {
    int n = 0;
    line[strcspn(line, "\r\n")] = 0;
    for (char *p = line; n < max;) {
        field[n++] = p;
        if (!(p = strchr(p, ','))) break;
        *p++ = 0;
    }
    return n;
}

static int parse_num(const char *s, double *v) {
    char *end;
    *v = strtod(s, &end);
    return end != s && *end == 0 && isfinite(*v);
}

// Keeps the first name seen for a class, without the characters a CSV or gnuplot would trip on.
static void set_name(char names[K][RUN_NAME_MAX], int c, const char *name) {
    if (names[c][0]) return;
    snprintf(names[c], RUN_NAME_MAX, "%s", name);
    for (char *q = names[c]; *q; q++)
        if (*q == ',' || *q == '"' || *q == '\\' || (unsigned char)*q < 0x20) *q = ' ';
}

static FILE *open_log(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f)
        set_err(err, errlen, "%s: cannot open (%s); rerun the chapter program that writes it", path,
                strerror(errno));
    return f;
}

// region: read-epochs
int run_read_epochs(const char *path, RunEpoch **ep, int *n, char *err, size_t errlen) {
    FILE *f = open_log(path, err, errlen);
    if (!f) return -1;
    char line[4096], *fld[8] = {0};
    int lineno = 0, cap = 0, rc = 0;
    *ep = NULL, *n = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        int nf = split_csv(line, fld, 8);
        if (lineno == 1) { // the header
            if (nf != 6 || strcmp(fld[0], "epoch") || strcmp(fld[3], "val_acc") || strcmp(fld[5], "seconds"))
                rc = set_err(err, errlen, "%s:1: expected the header "
                             "epoch,train_loss,val_loss,val_acc,lr,seconds", path);
            continue;
        }
        double v[6];
        int ok = nf == 6;
        for (int i = 0; ok && i < 6; i++) ok = parse_num(fld[i], &v[i]);
        if (!ok || v[0] != *n + 1) {
            rc = set_err(err, errlen, "%s:%d: expected epoch %d and 5 numbers separated by commas",
                         path, lineno, *n + 1);
            break;
        }
        if (*n == cap) *ep = xrealloc(*ep, (size_t)(cap = 2 * cap + 16) * sizeof(RunEpoch));
        (*ep)[(*n)++] = (RunEpoch){v[0], v[1], v[2], v[3], v[4], v[5]};
    }
    fclose(f);
    if (rc == 0 && *n == 0) rc = set_err(err, errlen, "%s: no epochs; rerun the chapter program", path);
    if (rc) free(*ep), *ep = NULL, *n = 0; // nothing is returned with an error
    return rc;
}
// endregion

int run_read_predictions(const char *path, RunPred **pr, int *n, char names[K][RUN_NAME_MAX],
                         char *err, size_t errlen) {
    FILE *f = open_log(path, err, errlen);
    if (!f) return -1;
    char line[4096], *fld[10] = {0};
    int lineno = 0, cap = 0, with_names = 0, rc = 0;
    *pr = NULL, *n = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        int nf = split_csv(line, fld, 10);
        if (lineno == 1) { // the header; the name columns are optional
            if (nf < 6 || strcmp(fld[0], "index") || strcmp(fld[2], "label") || strcmp(fld[4], "prob_pred"))
                rc = set_err(err, errlen, "%s:1: expected the header "
                             "index,name,label,pred,prob_pred,prob_label", path);
            with_names = nf >= 8 && !strcmp(fld[6], "label_name") && !strcmp(fld[7], "pred_name");
            continue;
        }
        double v[6];
        int ok = nf == (with_names ? 8 : 6) && strlen(fld[1]) < sizeof(*pr)->name;
        for (int i = 0; ok && i < 6; i++) ok = i == 1 || parse_num(fld[i], &v[i]);
        ok = ok && v[0] >= 0 && v[0] <= INT_MAX && v[0] == (int)v[0] && v[2] >= 0 && v[2] < K && v[3] >= 0 && v[3] < K && v[2] == (int)v[2] &&
             v[3] == (int)v[3] && v[4] >= 0 && v[4] <= 1;
        if (!ok) {
            rc = set_err(err, errlen, "%s:%d: expected index,name,label,pred,prob_pred,prob_label%s "
                         "(a whole index >= 0, labels 0..%d, probabilities in [0, 1])", path, lineno,
                         with_names ? ",label_name,pred_name" : "", K - 1);
            break;
        }
        if (*n == cap) *pr = xrealloc(*pr, (size_t)(cap = 2 * cap + 64) * sizeof(RunPred));
        RunPred *p = &(*pr)[(*n)++];
        *p = (RunPred){(int)v[0], (int)v[2], (int)v[3], v[4], ""};
        strcpy(p->name, fld[1]);
        if (with_names) { // the breed names as the chapter program knew them
            set_name(names, p->label, fld[6]);
            set_name(names, p->pred, fld[7]);
        } else if (!names[p->label][0]) {
            char breed[RUN_NAME_MAX];
            pets_class_name_from_image(p->name, breed, sizeof breed);
            set_name(names, p->label, breed);
        }
    }
    fclose(f);
    if (rc == 0 && *n == 0) rc = set_err(err, errlen, "%s: no predictions; rerun the chapter program", path);
    if (rc) free(*pr), *pr = NULL, *n = 0;
    return rc;
}
