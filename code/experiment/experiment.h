// experiment.h: what the two training chapters (04-feature-extraction, 05-fine-tuning) share, so
// that each chapter program keeps only the tutorial's own steps (freeze, train, validate, step the
// scheduler) and reads top to bottom:
// - the command line every training program takes (--root, --weights, --epochs, ...);
// - setting up: the datasets, the device, the starting model (ImageNet weights, a checkpoint whose
//   fc is kept, or a seeded random network), with clear errors for a missing weights file or a
//   checkpoint with another number of classes;
// - on-disk caches keyed on what their contents depend on (SHA-256 of the weights file, the split's
//   annotation file, each image's name, label, size and mtime, the preprocessing version) and on
//   what computed them (the build, stb_image, the backend's kernel table with oneDNN's version,
//   the precision): the uint8 224x224 crops of every image, and the 512-d features of a frozen
//   backbone; each file carries a checksum of its contents, checked on open;
// - batch sources (decoded images, cached crops or cached features; in order or shuffled by
//   loader_permutation(seed, epoch)) with failed images left out of every batch and reported;
// - the per-epoch log line in the tutorial's format, the results (CSV, flat JSON, validation
//   predictions, the final model as a torchvision state dict), all written atomically;
// - checkpoints written atomically after every epoch, from which --resume continues a run and
//   ends with exactly the numbers of an uninterrupted one.
#ifndef EXPERIMENT_H
#define EXPERIMENT_H

#include <stdint.h>

#include "nn/backend.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "nn/resnet34.h"
#include "nn/train.h"

// Version of the preprocessing whose output the caches hold (preprocess.h). Bump it whenever
// preprocess.c changes what it computes: every cache built before becomes stale and is rebuilt.
#define EXP_PREP_VERSION 1

// The identity of this build (build_id.c, generated at build time by build_id.cmake): a SHA-256
// of the sources that compute what the caches hold, the compiler and its flags; and stb_image's
// (the SHA-256 of stb_image.h and its Debian package version).
extern const char PETS_BUILD_ID[];
extern const char PETS_STB_ID[];

// ----------------------------------------------------------------------------
// command line

typedef struct {
    const char *root;     // dataset root (default data/oxford-iiit-pet)
    const char *weights;  // checkpoint path or "random"
    const char *device;   // auto | cpu | cuda
    const char *results;  // output folder (default results)
    const char *cache;    // cache folder (default <results>/cache)
    int epochs, batch_size;
    float lr;
    float default_lr;      // the program's default --lr (set by exp_parse_args, for messages)
    uint64_t seed;
    const char *precision; // auto | fp32 | fp16 | bf16; NULL = auto (fp16 on cuda, fp32 on cpu)
    int keep_fc;           // keep the checkpoint's fc instead of a new nn.Linear(512, 37)
    int resume;            // continue from <results>/<name>.ckpt
    int no_self_check;     // trust the GPU without the self-check (nn/selfcheck.h)
    int bn_train;          // 04 only: the tutorial's model.train() behaviour
    int limit;             // use only this many evenly spaced images of each split (0 = all)
} ExpArgs;

enum { EXP_OPT_BN_TRAIN = 1 };

// Parses argv into *a (whose fields hold the program's defaults on entry). --help prints
// `about`, the options and their defaults, and exits 0; a bad option exits 2 with a message.
void exp_parse_args(ExpArgs *a, int argc, char **argv, const char *about, unsigned extra_options);

// ----------------------------------------------------------------------------
// one experiment

typedef struct {
    double train_loss, val_loss, val_acc, lr, seconds; // losses are sums / samples, as the tutorial
} ExpRow;

typedef struct {
    ExpArgs a;
    const char *chapter;   // "04-feature-extraction"
    char *name;            // output base name: chapter, plus "-bn-train" for that variant
    const char *mode;      // "cached-eval-bn", "bn-train" or "fine-tune"
    Backend *be;
    Precision precision;
    ResNet34 *model;
    PetSplit train, val;
    int train_n_all, val_n_all; // split sizes before --limit
    char weights_sha[65];       // SHA-256 of the weights file ("" for random)
    int weights_pretrained;     // 1 only for torchvision's ImageNet file
    char data_key[2][65];       // per split (0 train, 1 val): annotations + file list + stats
    int failed[2];              // images of each split that could not be decoded
    ExpRow *rows;               // (n_rows) every epoch so far, resumed ones included
    int n_rows;
    int resumed_from;           // epochs done before this invocation
    float *val_logits;          // (val.n, classes) of the last validation pass
    uint8_t *val_seen;          // (val.n) 1 where val_logits holds a prediction
    double t_start, setup_seconds, feature_seconds;
    const char *cache_status;   // "hit", "built" or "none"
    int diverged_epoch;         // 1-based epoch at which training diverged (0 = it did not)
    char diverged_why[256];     // what showed it
    char *cache_default;        // a.cache when exp_setup made it (<results>/cache); exp_close frees it
} Experiment;

// Opens the splits (with --limit), the device and the starting model; prints what it uses.
// `mode` names the variant for the JSON; `name` the output files (NULL = chapter).
void exp_setup(Experiment *x, const ExpArgs *a, const char *chapter, const char *name,
               const char *mode);
void exp_close(Experiment *x);

// ----------------------------------------------------------------------------
// caches: mapped read-only, rebuilt (atomically) when missing, stale or damaged

typedef struct {
    int n;                 // items of the split
    size_t sample_bytes;   // 224*224*3 for crops, 512*4 for features
    const uint8_t *ok;     // (n) 1 if the image was decoded
    const int32_t *label;  // (n)
    const uint8_t *data;   // (n, sample_bytes)
    void *map;
    size_t map_len;
    char *path;
} Cache;

// The uint8 (224, 224, 3) center crops of every image of split s (0 train, 1 val), decoded once
// on all cores. Shared by every chapter and variant (the key does not depend on weights).
void exp_image_cache(Experiment *x, int s, Cache *c);
// Opens the cache file `path` if it exists, matches key/kind/n and its contents match their
// checksum; returns 0 on success. A damaged file is reported (warning) and refused.
int cache_open(Cache *c, const char *path, uint32_t kind, const char *key, const PetSplit *ds,
               size_t sample_bytes);
void cache_close(Cache *c);
// What computes on this run's backend, for keys and checkpoints: "cpu (cpu-fast onednn 3.0.0 ...)
// fp32". Heap string.
char *exp_device_id(const Experiment *x);
// Path and key of the feature cache of split s for this experiment's weights and device; the
// caller computes the features when cache_open fails, then writes them with cache_write.
char *exp_feature_cache_path(Experiment *x, int s, char key[65]);
int cache_write(const char *path, uint32_t kind, const char *key, const PetSplit *ds,
                const uint8_t *ok, size_t sample_bytes, const void *data, char *err, size_t errlen);
// The (n, 512) pooled features of split s from the frozen backbone in eval mode, computed once
// (one pass, decoding on all cores) and cached under that key; *ok (n) flags decoded images.
// Both arrays are the caller's to free. Chapters 04 and 07 share the cache.
float *exp_feature_cache(Experiment *x, int s, uint8_t **ok);
enum { CACHE_KIND_CROPS = 1, CACHE_KIND_FEATURES = 2 };
// Counts the images of split s whose ok flag is 0 into x->failed[s] and lists them (warning).
void exp_report_failed(Experiment *x, int s, const uint8_t *ok, const char *from);

// ----------------------------------------------------------------------------
// batches: float inputs with their labels, failed images left out

typedef struct {
    int n;              // samples in this batch
    const float *x;     // (n, 3, 224, 224) images or (n, 512) features
    const int *label;   // (n)
    const int *index;   // (n) item index within the split
} XBatch;

typedef struct Source Source;
// Images of split s: from the crop cache when `crops` is given, else decoded from the JPEGs.
Source *source_images(Experiment *x, int s, const Cache *crops);
// Rows of a features array (n, 512) with per-item ok flags (failed ones are counted, listed).
Source *source_features(Experiment *x, int s, const float *features, const uint8_t *ok);
// Starts a pass: shuffled with loader_permutation(seed, epoch) when epoch >= 0, in order
// otherwise. A non-NULL label shows a progress bar (or plain lines) while it runs.
void source_start(Source *src, int epoch, const char *label);
int source_next(Source *src, XBatch *b); // 0 at the end of the pass
int source_count(const Source *src);     // usable samples per pass
// Restricts every later pass to items[0..n) (indices into the split; copied), as if the split
// held only those: shuffles permute them with the seed, source_count counts them.
void source_subset(Source *src, const int *items, int n);
void source_free(Source *src);

// Keeps the logits of a validation batch (from the last forward) for the predictions file.
void exp_keep_logits(Experiment *x, const XBatch *b);

// ----------------------------------------------------------------------------
// per-epoch log, checkpoints, results

// Prints the tutorial's line and appends the row (epoch = 0-based index).
void exp_log_epoch(Experiment *x, int epoch, ExpRow row);
// Saves the run's state after the epochs logged so far (model weights that change, Adam moments,
// scheduler, scaler, rows) to <results>/<name>.ckpt atomically, and rewrites the CSV.
void exp_checkpoint(Experiment *x, const Adam *opt, const Plateau *p, const GradScaler *s);
// Updates the message printed on Ctrl-C / SIGTERM (how many epochs are saved, how to resume).
void exp_note_saved(const Experiment *x, int epochs_saved);
// Zeroes Adam's moments of every parameter (a new optimizer on the same model).
void exp_reset_adam(ResNet34 *m);
// Sets that message to msg (a program whose progress is saved otherwise than in a checkpoint).
void exp_note_interrupt(const char *msg);
// With --resume, restores a checkpoint of the same configuration; returns the epochs it holds
// (0 without --resume or without a checkpoint).
int exp_resume(Experiment *x, Adam *opt, Plateau *p, GradScaler *s);
// "<results>/<name><suffix>" (heap string).
char *exp_out_path(const Experiment *x, const char *suffix);
// Writes <results>/<name>.csv (atomically) from the rows so far.
void exp_write_csv(Experiment *x);
// Writes <name>.csv, <name>.predictions.csv, <name>.pth and <name>.json (in that order; the JSON
// last, so that its presence means a complete run).
void exp_finish(Experiment *x);

// ----------------------------------------------------------------------------
// divergence

// Whether an epoch shows that training diverged: in fp32 a non-finite training or validation
// loss; in fp16 an epoch of `batches` steps of which the GradScaler skipped every one (Adam took
// `steps` = 0), since skipped steps are how fp16 overflow is normally handled. Returns 1 and says
// why in `why` when it did.
int exp_diverged(Precision precision, double train_loss, double val_loss, int batches, long steps,
                 char *why, size_t whylen);
// After the epoch's row is logged: when exp_diverged says so, stops the run with a clear message
// (the epoch, the loss, try a lower --lr), writes the CSV and a JSON marked "status": "diverged",
// writes no .pth (and removes a previous run's .pth and predictions, which would otherwise pass for
// this run's), and exits with status 3. The last checkpoint (of the epoch before) is kept.
void exp_check_divergence(Experiment *x, int epoch, int batches, long steps);

#endif // EXPERIMENT_H
