// few_shot.h: what chapter 07 (data efficiency) adds to the experiment machinery:
// - stratified, seeded subsets of a split (k images per class);
// - the rule that sets the number of epochs of a run on a small subset;
// - the two classifiers that need no training, on cached features: nearest class mean
//   ("prototype") and k-nearest neighbours (cosine similarity);
// - the sweep's table of runs (results/07-data-efficiency.csv): written atomically after every
//   run, read back so that an interrupted sweep skips what it finished; summaries per method and
//   k (mean, spread) for the JSON and the figure.
#ifndef FEW_SHOT_H
#define FEW_SHOT_H

#include <stddef.h>
#include <stdint.h>

#include "data/dataset.h"
#include "experiment/experiment.h"

// ----------------------------------------------------------------------------
// subsets and the epoch rule

// Writes into items (room for ds->n) the indices, ascending, of per_class images of every class
// of ds (all its images when per_class <= 0 or when a class has fewer), leaving out those whose
// ok flag is 0 (ok may be NULL). Each class's images are shuffled with a generator seeded by
// (seed, class) and the first per_class taken: the same seed gives the same images, and the
// subset for k is contained in the subset for any larger k. Returns the number of items.
int fs_subset(const PetSplit *ds, const uint8_t *ok, int per_class, uint64_t seed, int *items);

// Writes "per_class,seed,name" for the subset of every k > 0 of ks and seed of seed0 ..
// seed0+seeds-1 (atomically): which images each run trained on.
int fs_write_subsets(const char *path, const PetSplit *ds, const uint8_t *ok, const int *ks, int nk,
                     long long seed0, int seeds, char *err, size_t errlen);

// Epochs of a run on n images: at least min_epochs, and enough for at least min_steps optimizer
// steps of batch_size images (ceil(n / batch_size) steps per epoch).
int fs_epochs(int n, int batch_size, int min_epochs, int min_steps);

// ----------------------------------------------------------------------------
// classifiers without training, on features (rows of dim floats)

// Top-1 accuracy on the test rows whose test_ok is 1 (test_ok may be NULL) of the nearest class
// mean: the mean feature of each class over the training items (train_f rows items[0..n)),
// a test row goes to the class whose mean is nearest in Euclidean distance (lowest class first
// on a tie; classes without training items are never chosen).
double fs_prototype_accuracy(const float *train_f, const int *train_label, const int *items, int n,
                             const float *test_f, const int *test_label, const uint8_t *test_ok,
                             int n_test, int dim, int classes);

// Top-1 accuracy of k-nearest neighbours with cosine similarity: the k training items most
// similar to a test row (k is cut to n) vote; a tied vote goes to the class with the larger sum
// of similarities, then to the lower class index.
double fs_knn_accuracy(const float *train_f, const int *train_label, const int *items, int n,
                       const float *test_f, const int *test_label, const uint8_t *test_ok,
                       int n_test, int dim, int classes, int k);

// ----------------------------------------------------------------------------
// the table of runs

#define FS_METHOD_MAX 16
typedef struct {
    char method[FS_METHOD_MAX]; // fe, ft, prototype, knn1, knn5
    int per_class;              // images per class asked for; 0 = all
    long long seed;
    int train_images, test_images, epochs, steps;
    double accuracy, loss, seconds; // loss: mean test cross-entropy, NaN for the baselines
    char config[17];            // hash of what the numbers depend on (weights, data, device, ...)
} FsRow;

// Reads the rows of path into *rows (*n); a missing file is 0 rows. Returns 0, or -1 with
// "path:line: what was expected" in err.
int fs_read_rows(const char *path, FsRow **rows, int *n, char *err, size_t errlen);
// Writes the rows to path atomically (the header line first), only those whose keep flag is 1
// when keep is not NULL. Returns 0 or -1 with err.
int fs_write_rows(const char *path, const FsRow *rows, const uint8_t *keep, int n, char *err,
                  size_t errlen);
// The row of (method, per_class, seed, config), or NULL.
const FsRow *fs_find(const FsRow *rows, int n, const char *method, int per_class, long long seed,
                     const char *config);

typedef struct {
    int runs;
    double mean, std, min, max;  // of the accuracy over the runs (std: n - 1 in the divisor; 0 for one run)
    double images_per_class;     // mean training images per class present
} FsStat;
// Statistics of the rows of (method, per_class); returns the number of runs (0: none).
int fs_stat(const FsRow *rows, int n, const char *method, int per_class, int classes, FsStat *s);

// Writes per (method, k) with runs: method,k,per_breed,runs,acc_mean,acc_std,
// acc_min,acc_max (atomically; the figure and the chapter's table read it).
int fs_write_summary(const char *path, const FsRow *rows, int n, const char *const *methods,
                     int n_methods, const int *ks, int nk, int classes, char *err, size_t errlen);

// The smallest k of ks (ascending, 0 = all last) at which method's mean accuracy reaches
// frac x its mean accuracy with all images; -1 if the method has no run with all images.
int fs_k_reaching(const FsRow *rows, int n, const char *method, const int *ks, int nk,
                  double frac, int classes);
// The smallest k of ks where method a's mean accuracy exceeds method b's (both measured); -1 if
// none.
int fs_k_overtakes(const FsRow *rows, int n, const char *a, const char *b, const int *ks, int nk,
                   int classes);

// ----------------------------------------------------------------------------
// command line

// A bad option: prints "error: <message> (see --help)" and exits 2, as exp_parse_args does.
__attribute__((noreturn, format(printf, 1, 2))) void fs_bad_option(const char *fmt, ...);
// Removes "--name VALUE" or "--name=VALUE" from argv (argc updated) and returns VALUE, or NULL
// when the option is absent (a missing value exits 2 with a message).
char *fs_take_option(int *argc, char **argv, const char *name);
// "5" for 5 images per class, "all" for 0 (as the CSV, the JSON keys and --per-class write k).
void fs_k_name(int k, char *out, size_t len);
// Parses a comma-separated list of per-class counts ("1,2,5,all"; all = 0) into ks (ascending,
// all last, no duplicates); returns the count, or exits 2 with a message naming opt.
int fs_parse_ks(const char *opt, const char *list, int *ks, int max);

// The 16 hex digits that name a sweep's configuration (weights, data, device, precision, --limit,
// --epochs, batch size): a CSV row made under another one is not reused.
void fs_config_key(const Experiment *x, char out[17]);

#endif // FEW_SHOT_H
