// runfiles.h: reading what a training chapter (04-feature-extraction, 05-fine-tuning) wrote about
// one run, for chapter 6 to compare the runs:
//   <name>.csv              epoch,train_loss,val_loss,val_acc,lr,seconds (one line per epoch)
//   <name>.predictions.csv  index,name,label,pred,prob_pred,prob_label[,label_name,pred_name]
//                           (the final model on every validation image)
// Every line is checked; a malformed one is an error naming the file and line.
#ifndef RUNFILES_H
#define RUNFILES_H

#include <stddef.h>

#include "data/dataset.h"

#define RUN_NAME_MAX 96 // bytes of a class name, NUL included

typedef struct {
    double epoch, train_loss, val_loss, val_acc, lr, seconds;
} RunEpoch;

typedef struct {
    int index, label, pred; // label and pred: 0..36
    double prob_pred;       // softmax probability of the predicted class
    char name[128];         // image name, "Abyssinian_201"
} RunPred;

// Reads a run's epoch log into a new array *ep of *n rows (epochs 1, 2, ... in order).
// Returns 0, or -1 with "path:line: what was expected" in err.
int run_read_epochs(const char *path, RunEpoch **ep, int *n, char *err, size_t errlen);

// Reads a run's predictions into a new array *pr of *n rows. Class names found in the file (or,
// in files without name columns, derived from the image names as torchvision does) are stored in
// names[label] where still empty, with ',', '"' and '\' replaced by spaces (CSV and gnuplot safe).
// Returns 0, or -1 with "path:line: what was expected" in err.
int run_read_predictions(const char *path, RunPred **pr, int *n,
                         char names[PETS_NUM_CLASSES][RUN_NAME_MAX], char *err, size_t errlen);

#endif // RUNFILES_H
