// predict.c: run a ResNet34 on your own pictures. Loads a torchvision state dict (the ImageNet
// weights from `make data`, or a model that chapter 04 or 05 trained on the pets), preprocesses
// each image exactly as torchvision's ResNet34_Weights.IMAGENET1K_V1.transforms() does, and
// prints the top classes with their probabilities: ImageNet names for a 1000-way head, pet breeds
// for a 37-way one, "class N" otherwise. For tests and tools it also reads preprocessed tensors
// (--tensor) and writes raw logits and pooled features (--logits, --features).
//
//   build/predict --weights data/weights/resnet34-b627a593.pth cat.jpg dog.png
//   build/predict --weights results/04-feature-extraction.pth --top 3 pet.jpg
//   build/predict --weights random --seed 1 --tensor x.f32 --batch 2 --logits out.f32
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nn/backend.h"
#include "core/common.h"
#include "data/image.h"
#include "data/preprocess.h"
#include "checkpoint/pth.h"
#include "nn/resnet34.h"
#include "nn/selfcheck.h"

// Class names, generated at build time from data/imagenet_classes.txt and data/pets_classes.txt
// (tests/gen_class_names.py writes those from torchvision 0.14).
extern const char *const IMAGENET_CLASSES[1000];
extern const char *const PETS_CLASSES[37];

#define DEFAULT_WEIGHTS "data/weights/resnet34-b627a593.pth"
#define CHUNK 16 // images per forward pass: bounds memory whatever the number of inputs

static void usage(FILE *f) {
    fprintf(f,
        "usage: predict [options] IMAGE...\n"
        "       predict [options] --tensor FILE.f32 --batch N\n"
        "Runs a ResNet34 on images (JPEG, PNG, GIF) and prints the top classes with their\n"
        "probabilities: ImageNet names for a 1000-way head, Oxford-IIIT Pet breeds for a\n"
        "37-way head, \"class N\" otherwise.\n"
        "\n"
        "  --weights PATH|random  torchvision ResNet34 state dict (.pth); default\n"
        "                         " DEFAULT_WEIGHTS " (get it with `make data`).\n"
        "                         'random': a seeded randomly initialised network\n"
        "  --seed S               seed for --weights random (default 0)\n"
        "  --classes K            classes of the random network's head (default 1000)\n"
        "  --top K                classes printed per image (default 5)\n"
        "  --tensor FILE.f32      read N preprocessed images instead: N x 3x224x224 float32,\n"
        "                         CHW, little endian (what 03-preprocessing --dump writes)\n"
        "  --batch N              number of tensors in FILE.f32 (required with --tensor)\n"
        "  --logits OUT.f32       write the raw logits, N x classes float32\n"
        "  --features OUT.f32     write the pooled 512-d features, N x 512 float32\n"
        "  --device auto|cpu|cuda where to run (default auto: a usable GPU, else the CPU)\n"
        "  --precision P          auto, fp32, fp16 or bf16 (default auto: fp16 autocast on\n"
        "                         cuda, float32 on the CPU; as the training programs)\n"
        "  --no-self-check        trust the GPU without first comparing its logits with the\n"
        "                         CPU's on a small test input\n"
        "  --quiet                no device/weights lines on stderr\n"
        "  --help                 this text\n");
}

typedef struct {
    const char *weights, *tensor, *logits_out, *features_out, *device, *precision;
    uint64_t seed;
    int classes, top, batch, quiet, no_self_check;
    char **images;
    int nimages;
} Options;

static long parse_long(const char *opt, const char *s, long lo, long hi) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        die("%s %s: expected an integer in [%ld, %ld]", opt, s, lo, hi);
    return v;
}

static void parse_args(int argc, char **argv, Options *o) {
    *o = (Options){.weights = DEFAULT_WEIGHTS, .device = "auto", .precision = "auto",
                   .classes = 1000, .top = 5};
    o->images = xmalloc(sizeof(char *) * (size_t)(argc + 1));
    int classes_given = 0, seed_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "--no-self-check")) {
            o->no_self_check = 1;
            continue;
        }
        if (!strcmp(a, "--quiet")) {
            o->quiet = 1;
            continue;
        }
        if (!strcmp(a, "--")) { // everything after is an image path
            while (++i < argc) o->images[o->nimages++] = argv[i];
            break;
        }
        if (a[0] == '-' && a[1] == '-') {
            if (i + 1 >= argc) die("%s needs a value (see predict --help)", a);
            const char *v = argv[++i];
            if (!strcmp(a, "--weights")) o->weights = v;
            else if (!strcmp(a, "--seed")) {
                char *end;
                errno = 0;
                o->seed = strtoull(v, &end, 10);
                if (errno || end == v || *end || v[0] == '-')
                    die("--seed %s: expected a non-negative integer", v);
                seed_given = 1;
            } else if (!strcmp(a, "--classes")) {
                o->classes = (int)parse_long(a, v, 1, 100000);
                classes_given = 1;
            } else if (!strcmp(a, "--top")) o->top = (int)parse_long(a, v, 1, 100000);
            else if (!strcmp(a, "--tensor")) o->tensor = v;
            else if (!strcmp(a, "--batch")) o->batch = (int)parse_long(a, v, 1, 1 << 24);
            else if (!strcmp(a, "--logits")) o->logits_out = v;
            else if (!strcmp(a, "--features")) o->features_out = v;
            else if (!strcmp(a, "--device")) o->device = v;
            else if (!strcmp(a, "--precision")) o->precision = v;
            else die("unknown option %s (see predict --help)", a);
            continue;
        }
        o->images[o->nimages++] = argv[i];
    }
    int random = !strcmp(o->weights, "random");
    if (o->tensor && o->nimages) die("give either --tensor FILE or image files, not both");
    if (o->tensor && !o->batch) die("--tensor %s needs --batch N (the number of images in it)",
                                    o->tensor);
    if (o->batch && !o->tensor) die("--batch is for --tensor input; images are counted for you");
    if (!o->tensor && !o->nimages) {
        usage(stderr);
        die("no input: give image files or --tensor FILE --batch N");
    }
    if (!random && (classes_given || seed_given))
        die("--classes and --seed are for --weights random; a checkpoint brings its own head");
    if (strcmp(o->device, "auto") && strcmp(o->device, "cpu") && strcmp(o->device, "cuda"))
        die("--device %s: expected auto, cpu or cuda", o->device);
}

// ----------------------------------------------------------------------------
// the model

// Reads the checkpoint (before the device is opened, so that a bad file fails fast); returns
// the number of classes of its head. For --weights random, the requested classes.
static int read_weights(const Options *o, StateDict *sd) {
    char err[1024];
    if (!strcmp(o->weights, "random")) return o->classes;
    struct stat st;
    if (stat(o->weights, &st) != 0)
        die("%s: %s. `make data` downloads torchvision's ImageNet weights into data/weights/; "
            "chapters 04 and 05 write their trained pet models into results/; "
            "--weights random --seed S gives a randomly initialised network",
            o->weights, strerror(errno));
    if (pth_load(o->weights, sd, err, sizeof err)) die("%s", err);
    const PthTensor *fc = sd_find(sd, "fc.weight");
    if (!fc || fc->ndim != 2 || fc->shape[0] < 1 || fc->shape[0] > 100000 ||
        fc->shape[1] != RESNET34_FEATURES)
        die("%s: no fc.weight of shape (classes, 512): not a torchvision ResNet34 state dict",
            o->weights);
    return (int)fc->shape[0];
}

static ResNet34 *build_model(Backend *be, const Options *o, StateDict *sd, int classes) {
    char err[1024];
    ResNet34 *m = resnet34_create(be, classes);
    if (!strcmp(o->weights, "random")) {
        resnet34_init_random(m, o->seed);
        if (!o->quiet)
            fprintf(stderr, "weights: random (seed %llu, %d classes): predictions are "
                    "meaningless, for testing only\n", (unsigned long long)o->seed, classes);
        return m;
    }
    if (resnet34_load_state(m, sd, 1, err, sizeof err)) die("%s: %s", o->weights, err);
    if (!o->quiet) fprintf(stderr, "weights: %s (%d classes)\n", o->weights, classes);
    return m;
}

static const char *class_name(int classes, int k, char *buf, size_t n) {
    if (classes == 1000) return IMAGENET_CLASSES[k];
    if (classes == 37) return PETS_CLASSES[k];
    snprintf(buf, n, "class %d", k);
    return buf;
}

// Prints the `top` most probable classes of one row of logits (softmax in double).
static void print_top(const char *label, const float *logits, int classes, int top, int *order,
                      double *prob) {
    double mx = -INFINITY, sum = 0;
    for (int k = 0; k < classes; k++)
        if (logits[k] > mx) mx = logits[k];
    for (int k = 0; k < classes; k++) sum += prob[k] = exp((double)logits[k] - mx);
    for (int k = 0; k < classes; k++) prob[k] /= sum;
    if (top > classes) top = classes;
    // partial selection sort: highest probability first, ties by lower class index
    for (int k = 0; k < classes; k++) order[k] = k;
    for (int i = 0; i < top; i++) {
        int best = i;
        for (int j = i + 1; j < classes; j++) {
            double pj = prob[order[j]], pb = prob[order[best]];
            if (pj > pb || (pj == pb && order[j] < order[best]) || (isnan(pb) && !isnan(pj)))
                best = j;
        }
        int t = order[i];
        order[i] = order[best];
        order[best] = t;
    }
    printf("%s\n", label);
    char buf[32];
    for (int i = 0; i < top; i++)
        printf("  %6.2f%%  %s\n", 100.0 * prob[order[i]],
               class_name(classes, order[i], buf, sizeof buf));
}

// ----------------------------------------------------------------------------
// inputs: up to CHUNK images at a time, from image files or from the tensor file

typedef struct {
    FILE *tensor_file;
    long next, total; // inputs consumed, inputs in all
    int failed;       // image files that could not be read
} Input;

// Fills x (CHUNK x 3x224x224) and labels; returns the count filled (0 at the end).
static int next_chunk(Input *in, const Options *o, float *x, char **labels, int strict) {
    int n = 0;
    while (n < CHUNK && in->next < in->total) {
        long i = in->next++;
        if (o->tensor) {
            if (fread(x + (size_t)n * PREP_FLOATS, sizeof(float), PREP_FLOATS, in->tensor_file) !=
                PREP_FLOATS)
                die("%s: read error at image %ld", o->tensor, i);
            free(labels[n]);
            labels[n] = xasprintf("%s[%ld]", o->tensor, i);
            n++;
            continue;
        }
        const char *path = o->images[i];
        char err[1024];
        Image img;
        if (image_load(path, &img, err, sizeof err)) {
            // with output files every row must belong to its input: stop; otherwise go on
            if (strict) die("%s (no output file written)", err);
            fprintf(stderr, "error: %s\n", err);
            in->failed++;
            continue;
        }
        int rc = preprocess_image(&img, x + (size_t)n * PREP_FLOATS);
        image_free(&img);
        if (rc) {
            if (strict) die("%s: cannot preprocess (no output file written)", path);
            fprintf(stderr, "error: %s: cannot preprocess\n", path);
            in->failed++;
            continue;
        }
        free(labels[n]);
        labels[n] = xstrdup(path);
        n++;
    }
    return n;
}

// Output files, written atomically: complete files or none. Any exit before their commit
// (die() included) removes the temporaries through this atexit handler.
static AtomicFile af_logits, af_features;
static void abort_outputs(void) {
    afile_abort(&af_logits);
    afile_abort(&af_features);
}

static void write_rows(FILE *f, const char *path, const float *v, size_t count) {
    if (f && fwrite(v, sizeof(float), count, f) != count)
        die("%s: write failed (%s)", path, strerror(errno));
}

int main(int argc, char **argv) {
    Options o;
    parse_args(argc, argv, &o);

    // -- open the input before the (slow) model, so that bad input fails fast
    Input in = {0};
    if (o.tensor) {
        struct stat st;
        if (stat(o.tensor, &st) != 0) die("%s: %s", o.tensor, strerror(errno));
        size_t want;
        if (size_mul((size_t)o.batch, sizeof(float) * PREP_FLOATS, &want))
            die("--batch %d: too large", o.batch);
        if ((size_t)st.st_size != want)
            die("%s: %lld bytes, but --batch %d needs %zu (%d x 3x224x224 float32, CHW); "
                "is N right, and was it written by 03-preprocessing --dump?",
                o.tensor, (long long)st.st_size, o.batch, want, o.batch);
        in.tensor_file = fopen(o.tensor, "rb");
        if (!in.tensor_file) die("%s: %s", o.tensor, strerror(errno));
        in.total = o.batch;
    } else {
        in.total = o.nimages;
    }

    // -- the weights, the device and the model
    char err[1024];
    StateDict sd = {0};
    int classes = read_weights(&o, &sd);
    Backend *be = backend_open_precision(o.device, o.precision, o.quiet, err, sizeof err);
    if (!be) die("%s", err);
    ResNet34 *m = build_model(be, &o, &sd, classes);
    if (!resnet34_trust_gpu(m, o.device, o.no_self_check)) { // auto: the GPU failed its self-check
        if (!(be = backend_open_precision("cpu", "auto", o.quiet, err, sizeof err))) die("%s", err);
        m = build_model(be, &o, &sd, classes);
    }
    sd_free(&sd);

    // -- outputs
    atexit(abort_outputs);
    FILE *flog = NULL, *ffeat = NULL;
    if (o.logits_out && !(flog = afile_open(&af_logits, o.logits_out, err, sizeof err)))
        die("%s", err);
    if (o.features_out && !(ffeat = afile_open(&af_features, o.features_out, err, sizeof err)))
        die("%s", err);
    int strict = flog || ffeat;

    float *x = xmalloc(sizeof(float) * PREP_FLOATS * CHUNK);
    float *logits = xmalloc(sizeof(float) * (size_t)classes * CHUNK);
    float *features = xmalloc(sizeof(float) * RESNET34_FEATURES * CHUNK);
    char *labels[CHUNK] = {0};
    int *order = xmalloc(sizeof(int) * (size_t)classes);
    double *prob = xmalloc(sizeof(double) * (size_t)classes);
    long done = 0;
    int n;
    while ((n = next_chunk(&in, &o, x, labels, strict)) > 0) {
        resnet34_forward(m, x, n, PREP_CROP, PREP_CROP, 0); // eval mode
        resnet34_logits(m, logits);
        write_rows(flog, o.logits_out, logits, (size_t)n * classes);
        if (ffeat) {
            resnet34_features(m, features);
            write_rows(ffeat, o.features_out, features, (size_t)n * RESNET34_FEATURES);
        }
        for (int i = 0; i < n; i++)
            print_top(labels[i], logits + (size_t)i * classes, classes, o.top, order, prob);
        fflush(stdout);
        done += n;
    }
    if (flog && afile_commit(&af_logits, err, sizeof err)) die("%s", err);
    if (ffeat && afile_commit(&af_features, err, sizeof err)) die("%s", err);
    if (!o.quiet && (flog || ffeat))
        fprintf(stderr, "wrote %s%s%s for %ld input(s)\n", o.logits_out ? o.logits_out : "",
                flog && ffeat ? " and " : "", o.features_out ? o.features_out : "", done);

    for (int i = 0; i < CHUNK; i++) free(labels[i]);
    free(x);
    free(logits);
    free(features);
    free(order);
    free(prob);
    free(o.images);
    if (in.tensor_file) fclose(in.tensor_file);
    resnet34_free(m);
    backend_close(be);
    if (in.failed) {
        fprintf(stderr, "error: %d of %ld image(s) could not be read\n", in.failed, in.total);
        return 1;
    }
    return 0;
}
