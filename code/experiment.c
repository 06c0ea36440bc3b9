// experiment.c: the shared machinery of the training chapters (see experiment.h): command line,
// set-up, keyed on-disk caches, batch sources, the epoch log, checkpoints and result files.
#define _GNU_SOURCE
#include "experiment.h"

#include <errno.h>
#include <glob.h>
#include <signal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "image.h"
#include "preprocess.h"
#include "pth.h"
#include "sha256.h"

// SHA-256 of torchvision's resnet34-b627a593.pth (data/checksums.sha256): only this file makes a
// run "pretrained"; any other checkpoint, or --weights random, is reported as such everywhere.
static const char IMAGENET_SHA256[] =
    "b627a593bcbe140c234610266fe4f8ae95ea42fc881d091c9b6052e6b1d0590f";

// ----------------------------------------------------------------------------
// command line

static void usage(const ExpArgs *d, const char *prog, const char *about, unsigned extra) {
    printf("%s\n\nUsage: %s [options]\n\nOptions:\n", about, prog);
    printf("  --root DIR            Oxford-IIIT Pet root with images/ and annotations/ (default %s)\n",
           d->root);
    printf("  --weights PATH|random starting checkpoint (default %s); `random` builds a seeded\n"
           "                        randomly initialised network (results then say so)\n",
           d->weights);
    printf("  --keep-fc             keep the checkpoint's 37-way fc instead of a new nn.Linear(512, 37)\n");
    printf("  --epochs N            epochs to train (default %d; 0 only prepares the caches)\n",
           d->epochs);
    printf("  --batch-size N        images per batch (default %d)\n", d->batch_size);
    printf("  --lr X                Adam learning rate (default %g)\n", (double)d->lr);
    printf("  --seed N              seeds the new head, the shuffling and `--weights random` (default %llu)\n",
           (unsigned long long)d->seed);
    printf("  --device auto|cpu|cuda  compute device (default %s)\n", d->device);
    printf("  --precision fp16|fp32 fp16 = autocast-style mixed precision on the GPU (default fp16\n"
           "                        on cuda, fp32 on the CPU)\n");
    printf("  --results DIR         where results go (default %s)\n", d->results);
    printf("  --cache DIR           where the image and feature caches go (default <results>/cache)\n");
    printf("  --resume              continue from <results>/<name>.ckpt (written after every epoch);\n"
           "                        the run ends with exactly the numbers of an uninterrupted one\n");
    printf("  --limit N             use only N evenly spaced images of each split (quick checks, CI)\n");
    if (extra & EXP_OPT_BN_TRAIN)
        printf("  --bn-train            the tutorial's exact PyTorch behaviour: the frozen backbone runs\n"
               "                        in train mode (batch statistics; running statistics drift),\n"
               "                        every epoch, nothing cached\n");
    printf("  -h, --help            this help\n");
}

static long parse_long(const char *opt, const char *v, long lo, long hi) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "error: %s expects an integer in %ld..%ld, got '%s'\n", opt, lo, hi, v);
        exit(2);
    }
    return x;
}

void exp_parse_args(ExpArgs *a, int argc, char **argv, const char *about, unsigned extra) {
    ExpArgs d = *a;
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i], *val = NULL;
        char name[64];
        const char *eq = strchr(opt, '=');
        if (eq && strncmp(opt, "--", 2) == 0 && (size_t)(eq - opt) < sizeof name) {
            memcpy(name, opt, (size_t)(eq - opt));
            name[eq - opt] = 0;
            opt = name;
            val = eq + 1;
        }
#define FLAG(s) (strcmp(opt, s) == 0)
#define VALUE()                                                                                  \
    (val ? val : (i + 1 < argc ? argv[++i]                                                       \
                               : (fprintf(stderr, "error: %s needs a value (see --help)\n", opt), \
                                  exit(2), "")))
        if (FLAG("-h") || FLAG("--help")) usage(&d, argv[0], about, extra), exit(0);
        else if (FLAG("--root")) a->root = VALUE();
        else if (FLAG("--weights")) a->weights = VALUE();
        else if (FLAG("--device")) a->device = VALUE();
        else if (FLAG("--results")) a->results = VALUE();
        else if (FLAG("--cache")) a->cache = VALUE();
        else if (FLAG("--precision")) a->precision = VALUE();
        else if (FLAG("--epochs")) a->epochs = (int)parse_long(opt, VALUE(), 0, 100000);
        else if (FLAG("--batch-size")) a->batch_size = (int)parse_long(opt, VALUE(), 1, 4096);
        else if (FLAG("--limit")) a->limit = (int)parse_long(opt, VALUE(), 1, 1 << 30);
        else if (FLAG("--seed")) {
            const char *v = VALUE();
            char *end;
            errno = 0;
            a->seed = strtoull(v, &end, 0);
            if (errno || end == v || *end || *v == '-') {
                fprintf(stderr, "error: --seed expects a non-negative integer, got '%s'\n", v);
                exit(2);
            }
        } else if (FLAG("--lr")) {
            const char *v = VALUE();
            char *end;
            double x = strtod(v, &end);
            if (end == v || *end || !(x > 0) || x > 10) {
                fprintf(stderr, "error: --lr expects a positive number, got '%s'\n", v);
                exit(2);
            }
            a->lr = (float)x;
        } else if (FLAG("--keep-fc") && !val) a->keep_fc = 1;
        else if (FLAG("--resume") && !val) a->resume = 1;
        else if (FLAG("--bn-train") && !val && (extra & EXP_OPT_BN_TRAIN)) a->bn_train = 1;
        else {
            fprintf(stderr, "error: unknown option '%s' (see %s --help)\n", argv[i], argv[0]);
            exit(2);
        }
#undef FLAG
#undef VALUE
    }
    if (a->precision && strcmp(a->precision, "fp16") != 0 && strcmp(a->precision, "fp32") != 0) {
        fprintf(stderr, "error: --precision must be fp16 or fp32, got '%s'\n", a->precision);
        exit(2);
    }
}

// ----------------------------------------------------------------------------
// set-up

// Keeps `limit` evenly spaced items (i * n / limit) at the front of the split, in order.
static void limit_split(PetSplit *ds, int limit) {
    if (limit <= 0 || limit >= ds->n) return;
    for (int i = 0; i < limit; i++) {
        int j = (int)((long long)i * ds->n / limit); // j >= i, increasing
        PetItem t = ds->items[i];
        ds->items[i] = ds->items[j];
        ds->items[j] = t;
    }
    ds->n = limit;
    memset(ds->class_count, 0, sizeof ds->class_count);
    for (int i = 0; i < limit; i++) ds->class_count[ds->items[i].label]++;
}

// What a split's cached contents depend on: its annotation file, and each listed image's name,
// label, size and modification time (a re-extracted or edited image invalidates the caches).
static void split_key(const PetSplit *ds, char key[65]) {
    Sha256 h;
    sha256_init(&h);
    char *ann = xasprintf("%s/annotations/%s.txt", ds->root, ds->split);
    size_t n = 0;
    uint8_t *buf = read_file(ann, &n, 0, NULL, 0);
    sha256_update(&h, ds->split, strlen(ds->split) + 1);
    if (buf) sha256_update(&h, buf, n);
    free(buf);
    free(ann);
    for (int i = 0; i < ds->n; i++) {
        struct stat st;
        memset(&st, 0, sizeof st);
        stat(ds->items[i].path, &st);
        char line[512];
        int len = snprintf(line, sizeof line, "%s %d %lld %lld.%09ld\n", ds->items[i].name,
                           ds->items[i].label, (long long)st.st_size, (long long)st.st_mtim.tv_sec,
                           st.st_mtim.tv_nsec);
        sha256_update(&h, line, (size_t)len);
    }
    sha256_final_hex(&h, key);
}

static void load_weights(Experiment *x) {
    const ExpArgs *a = &x->a;
    char err[1024];
    int classes = resnet34_num_classes(x->model);
    if (strcmp(a->weights, "random") == 0) {
        resnet34_init_random(x->model, a->seed);
        x->weights_sha[0] = 0;
        x->weights_pretrained = 0;
        printf("weights: random initialisation (seed %llu): NOT the ImageNet weights; results "
               "are labelled so\n", (unsigned long long)a->seed);
        return;
    }
    if (!file_exists(a->weights))
        die("%s: weights file not found. Run `make data` to download torchvision's ImageNet "
            "weights (resnet34-b627a593.pth), or pass --weights random for a randomly initialised "
            "backbone (not pretrained; for tests)", a->weights);
    size_t n = 0;
    uint8_t *buf = read_file(a->weights, &n, 0, err, sizeof err);
    if (!buf) die("%s", err);
    Sha256 h;
    sha256_init(&h);
    sha256_update(&h, buf, n);
    sha256_final_hex(&h, x->weights_sha);
    x->weights_pretrained = strcmp(x->weights_sha, IMAGENET_SHA256) == 0;
    StateDict sd = {0};
    if (pth_load_mem(buf, n, a->weights, &sd, err, sizeof err)) die("%s", err);
    free(buf);
    if (a->keep_fc) { // the head must already have our number of classes
        const PthTensor *w = sd_find(&sd, "fc.weight"), *b = sd_find(&sd, "fc.bias");
        if (!w || !b) die("%s: --keep-fc, but the checkpoint has no fc.weight / fc.bias", a->weights);
        if (w->ndim != 2 || w->shape[0] != classes || w->shape[1] != RESNET34_FEATURES ||
            b->ndim != 1 || b->shape[0] != classes)
            die("%s: --keep-fc needs a %d-class head, fc.weight (%d, %d) and fc.bias (%d), but the "
                "checkpoint has fc.weight (%lld, %lld) and fc.bias (%lld): it was trained for "
                "another number of classes; drop --keep-fc to start a new head",
                a->weights, classes, classes, RESNET34_FEATURES, classes, (long long)w->shape[0],
                (long long)(w->ndim > 1 ? w->shape[1] : 0), (long long)b->shape[0]);
    }
    if (resnet34_load_state(x->model, &sd, a->keep_fc, err, sizeof err))
        die("%s: %s", a->weights, err);
    sd_free(&sd);
    // region: new-head
    // The tutorial's `model.fc = nn.Linear(512, 37)`: a new head, nn.Linear's default init.
    if (!a->keep_fc) resnet34_reset_fc(x->model, a->seed);
    // endregion
    printf("weights: %s (%s)%s\n", a->weights,
           x->weights_pretrained ? "torchvision's ImageNet weights" : "NOT the ImageNet weights",
           a->keep_fc ? ", its fc kept" : ", new 512->37 head");
}

// A run killed while writing (kill -9, power loss) leaves "<file>.tmp.<pid>" behind: remove
// those of this experiment whose writer no longer exists.
static void remove_stale_temporaries(const Experiment *x) {
    char *pattern = xasprintf("%s/%s.*.tmp.*", x->a.results, x->name);
    glob_t g;
    if (glob(pattern, 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; i++) {
            const char *dot = strrchr(g.gl_pathv[i], '.');
            long pid = dot ? strtol(dot + 1, NULL, 10) : 0;
            if (pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH && unlink(g.gl_pathv[i]) == 0)
                printf("removed %s, left by an interrupted run\n", g.gl_pathv[i]);
        }
        globfree(&g);
    }
    free(pattern);
}

void exp_setup(Experiment *x, const ExpArgs *a, const char *chapter, const char *name,
               const char *mode) {
    memset(x, 0, sizeof *x);
    x->t_start = now_seconds();
    x->a = *a;
    x->chapter = chapter;
    x->name = xstrdup(name ? name : chapter);
    x->mode = mode;
    x->cache_status = "none";
    if (!x->a.cache) x->a.cache = xasprintf("%s/cache", a->results);
    char err[1024];
    PetSplit *sp[2] = {&x->train, &x->val};
    const char *splits[2] = {"trainval", "test"};
    int *all[2] = {&x->train_n_all, &x->val_n_all};
    for (int s = 0; s < 2; s++) {
        if (pets_open(a->root, splits[s], sp[s], err, sizeof err)) die("%s", err);
        *all[s] = sp[s]->n;
        limit_split(sp[s], a->limit);
        split_key(sp[s], x->data_key[s]);
    }
    printf("%s: %d training images (trainval), %d validation images (test)%s\n", x->name,
           x->train.n, x->val.n, a->limit ? " (--limit)" : "");

    Precision prec = PREC_FP32;
    if (a->precision) prec = strcmp(a->precision, "fp16") == 0 ? PREC_FP16 : PREC_FP32;
    else if (strcmp(a->device, "cuda") == 0 ||
             (strcmp(a->device, "auto") == 0 && backend_cuda_available()))
        prec = PREC_FP16; // the tutorial's autocast on the GPU
    x->be = backend_open(a->device, prec, 0, err, sizeof err);
    if (!x->be) die("%s", err);
    x->precision = x->be->precision;

    x->model = resnet34_create(x->be, PETS_NUM_CLASSES);
    load_weights(x);
    x->val_logits = xcalloc((size_t)x->val.n * PETS_NUM_CLASSES, sizeof(float));
    x->val_seen = xcalloc((size_t)x->val.n, 1);
    remove_stale_temporaries(x);
}

void exp_close(Experiment *x) {
    resnet34_free(x->model);
    backend_close(x->be);
    x->train.n = x->train_n_all;
    x->val.n = x->val_n_all;
    pets_free(&x->train);
    pets_free(&x->val);
    free(x->rows);
    free(x->val_logits);
    free(x->val_seen);
    free(x->name);
}

// ----------------------------------------------------------------------------
// caches
//
// File layout (little-endian), readable from Python with numpy (tests/ref_transfer.py does):
//   0   "PETCACHE"   8-byte magic
//   8   u32 version (1), u32 kind (1 crops, 2 features), u32 n, u32 0
//   24  u64 sample_bytes
//   32  64 ASCII hex digits: the key
//   96  zeros up to 128
//   128 n x i32 labels, zero-padded to a multiple of 64 bytes
//   then n x sample_bytes of data (crops: (224, 224, 3) uint8 RGB; features: 512 float32)
//   then n x u8 ok flags (1 decoded; 0 failed, its data is zeros)

#define CACHE_HEADER 128

static size_t cache_labels_bytes(int n) { return ((size_t)n * 4 + 63) / 64 * 64; }

static void cache_header(uint8_t hdr[CACHE_HEADER], uint32_t kind, const char *key, int n,
                         size_t sample_bytes) {
    memset(hdr, 0, CACHE_HEADER);
    memcpy(hdr, "PETCACHE", 8);
    uint32_t u[4] = {1, kind, (uint32_t)n, 0};
    memcpy(hdr + 8, u, sizeof u);
    uint64_t sb = sample_bytes;
    memcpy(hdr + 24, &sb, 8);
    memcpy(hdr + 32, key, 64);
}

int cache_open(Cache *c, const char *path, uint32_t kind, const char *key, const PetSplit *ds,
               size_t sample_bytes) {
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    struct stat st;
    size_t data_bytes, want = 0;
    int bad = fstat(fileno(f), &st) != 0 || size_mul((size_t)ds->n, sample_bytes, &data_bytes);
    if (!bad)
        want = CACHE_HEADER + cache_labels_bytes(ds->n) + data_bytes + (size_t)ds->n;
    uint8_t hdr[CACHE_HEADER], ref[CACHE_HEADER];
    cache_header(ref, kind, key, ds->n, sample_bytes);
    if (bad || (size_t)st.st_size != want || fread(hdr, 1, CACHE_HEADER, f) != CACHE_HEADER ||
        memcmp(hdr, ref, CACHE_HEADER) != 0) {
        fclose(f);
        printf("cache %s: stale or damaged, rebuilding it\n", path);
        return -1;
    }
    void *map = mmap(NULL, want, PROT_READ, MAP_PRIVATE, fileno(f), 0);
    fclose(f);
    if (map == MAP_FAILED) return -1;
    c->n = ds->n;
    c->sample_bytes = sample_bytes;
    c->map = map;
    c->map_len = want;
    c->label = (const int32_t *)((const uint8_t *)map + CACHE_HEADER);
    c->data = (const uint8_t *)map + CACHE_HEADER + cache_labels_bytes(ds->n);
    c->ok = c->data + data_bytes;
    for (int i = 0; i < ds->n; i++)
        if (c->label[i] != ds->items[i].label || c->ok[i] > 1) {
            printf("cache %s: labels do not match the annotations, rebuilding it\n", path);
            cache_close(c);
            return -1;
        }
    c->path = xstrdup(path);
    return 0;
}

void cache_close(Cache *c) {
    if (c->map) munmap(c->map, c->map_len);
    free(c->path);
    memset(c, 0, sizeof *c);
}

// Streams a cache file: header and labels now, data by cache_put, ok flags at the end.
static FILE *cache_begin(AtomicFile *af, const char *path, uint32_t kind, const char *key,
                         const PetSplit *ds, size_t sample_bytes, char *err, size_t errlen) {
    FILE *f = afile_open(af, path, err, errlen);
    if (!f) return NULL;
    uint8_t hdr[CACHE_HEADER];
    cache_header(hdr, kind, key, ds->n, sample_bytes);
    fwrite(hdr, 1, CACHE_HEADER, f);
    size_t lb = cache_labels_bytes(ds->n);
    uint8_t *labels = xcalloc(lb, 1);
    for (int i = 0; i < ds->n; i++) memcpy(labels + 4 * (size_t)i, &ds->items[i].label, 4);
    fwrite(labels, 1, lb, f);
    free(labels);
    return f;
}

int cache_write(const char *path, uint32_t kind, const char *key, const PetSplit *ds,
                const uint8_t *ok, size_t sample_bytes, const void *data, char *err, size_t errlen) {
    AtomicFile af;
    FILE *f = cache_begin(&af, path, kind, key, ds, sample_bytes, err, errlen);
    if (!f) return -1;
    fwrite(data, sample_bytes, (size_t)ds->n, f);
    fwrite(ok, 1, (size_t)ds->n, f);
    return afile_commit(&af, err, errlen);
}

void exp_report_failed(Experiment *x, int s, const uint8_t *ok, const char *from) {
    const PetSplit *ds = s ? &x->val : &x->train;
    x->failed[s] = 0;
    for (int i = 0; i < ds->n; i++) x->failed[s] += !ok[i];
    if (!x->failed[s]) return;
    warn("%d image(s) of the %s split could not be decoded%s and are left out of every pass "
         "(counted in the JSON as %s_failed):", x->failed[s], ds->split, from, s ? "val" : "train");
    for (int i = 0, shown = 0; i < ds->n && shown < 10; i++)
        if (!ok[i]) fprintf(stderr, "  %s\n", ds->items[i].path), shown++;
}

typedef struct {
    const PetSplit *ds;
} CropCtx;

static int load_crop(void *ctx, int index, void *out, char *err, size_t errlen) {
    const PetSplit *ds = ((CropCtx *)ctx)->ds;
    Image img;
    if (image_load(ds->items[index].path, &img, err, errlen)) return -1;
    int rc = preprocess_u8(&img, out);
    image_free(&img);
    if (rc) return set_err(err, errlen, "%s: cannot preprocess", ds->items[index].path);
    return 0;
}

void exp_image_cache(Experiment *x, int s, Cache *c) {
    const PetSplit *ds = s ? &x->val : &x->train;
    const size_t sb = (size_t)PREP_CROP * PREP_CROP * 3;
    char key[65], err[1024];
    char *desc = xasprintf("crops v1 prep=%d data=%s", EXP_PREP_VERSION, x->data_key[s]);
    Sha256 h;
    sha256_init(&h);
    sha256_update(&h, desc, strlen(desc));
    sha256_final_hex(&h, key);
    free(desc);
    char *path = xasprintf("%s/crops-%s-%.16s.u8", x->a.cache, ds->split, key);
    if (cache_open(c, path, CACHE_KIND_CROPS, key, ds, sb) == 0) {
        printf("cache: %s (decoded %s images, reused)\n", path, ds->split);
        if (strcmp(x->cache_status, "none") == 0) x->cache_status = "hit";
        exp_report_failed(x, s, c->ok, " when the cache was built");
        free(path);
        return;
    }
    // Decode every image once, on all cores, straight into the file.
    double t0 = now_seconds();
    AtomicFile af;
    FILE *f = cache_begin(&af, path, CACHE_KIND_CROPS, key, ds, sb, err, sizeof err);
    if (!f) die("%s (pass --cache DIR to put the caches elsewhere)", err);
    uint8_t *ok = xcalloc((size_t)ds->n, 1);
    CropCtx ctx = {ds};
    Loader *l = loader_create(ds->n, sb, x->a.batch_size, 0, 0, load_crop, &ctx);
    loader_start(l, NULL, ds->n);
    Progress p;
    char *label = xasprintf("decoding %s", ds->split);
    progress_start(&p, label, "img", ds->n);
    Batch b;
    long done = 0;
    while (loader_next(l, &b)) {
        fwrite(b.data, sb, (size_t)b.n, f);
        for (int k = 0; k < b.n; k++) {
            ok[b.index[k]] = (uint8_t)b.ok[k];
            if (!b.ok[k]) warn("%s", b.errors[k]);
        }
        progress_update(&p, done += b.n);
    }
    progress_finish(&p);
    loader_destroy(l);
    free(label);
    fwrite(ok, 1, (size_t)ds->n, f);
    if (afile_commit(&af, err, sizeof err)) die("%s (pass --cache DIR to put the caches elsewhere)", err);
    free(ok);
    x->setup_seconds += now_seconds() - t0;
    x->cache_status = "built";
    if (cache_open(c, path, CACHE_KIND_CROPS, key, ds, sb)) die("%s: cannot read back the cache", path);
    exp_report_failed(x, s, c->ok, "");
    free(path);
}

char *exp_feature_cache_path(Experiment *x, int s, char key[65]) {
    const PetSplit *ds = s ? &x->val : &x->train;
    char weights[96];
    if (x->weights_sha[0]) snprintf(weights, sizeof weights, "%s", x->weights_sha);
    else snprintf(weights, sizeof weights, "random:%llu", (unsigned long long)x->a.seed);
    // features depend on the backbone (weights), the pixels (data, preprocessing) and the
    // arithmetic (device, precision)
    char *desc = xasprintf("features v1 prep=%d data=%s weights=%s device=%s precision=%s",
                           EXP_PREP_VERSION, x->data_key[s], weights, x->be->name,
                           x->precision == PREC_FP16 ? "fp16" : "fp32");
    Sha256 h;
    sha256_init(&h);
    sha256_update(&h, desc, strlen(desc));
    sha256_final_hex(&h, key);
    free(desc);
    return xasprintf("%s/features-%s-%.16s.f32", x->a.cache, ds->split, key);
}

// ----------------------------------------------------------------------------
// batch sources

struct Source {
    Experiment *x;
    int s;
    const PetSplit *ds;
    const Cache *crops;        // images from the crop cache
    const float *features;     // or features (n, 512)
    const uint8_t *ok;         // (n) for features
    Loader *loader;            // images (crops or decoding)
    size_t floats;             // per sample
    int *order, n_order, pos;
    float *xbuf;               // (batch, floats) compacted batch
    int *lbuf, *ibuf;
    Progress prog;
    int show;
    long done;
};

static int load_image(void *ctx, int index, void *out, char *err, size_t errlen) {
    Source *src = ctx;
    if (src->crops) { // normalize a cached crop
        if (!src->crops->ok[index])
            return set_err(err, errlen, "%s: could not be decoded (see the cache build)",
                           src->ds->items[index].path);
        normalize_chw(src->crops->data + (size_t)index * src->crops->sample_bytes, out);
        return 0;
    }
    Image img;
    if (image_load(src->ds->items[index].path, &img, err, errlen)) return -1;
    int rc = preprocess_image(&img, out);
    image_free(&img);
    if (rc) return set_err(err, errlen, "%s: cannot preprocess", src->ds->items[index].path);
    return 0;
}

static Source *source_new(Experiment *x, int s, size_t floats) {
    Source *src = xcalloc(1, sizeof *src);
    src->x = x;
    src->s = s;
    src->ds = s ? &x->val : &x->train;
    src->floats = floats;
    src->order = xmalloc((size_t)src->ds->n * sizeof(int));
    src->xbuf = xmalloc((size_t)x->a.batch_size * floats * sizeof(float));
    src->lbuf = xmalloc((size_t)x->a.batch_size * sizeof(int));
    src->ibuf = xmalloc((size_t)x->a.batch_size * sizeof(int));
    return src;
}

Source *source_images(Experiment *x, int s, const Cache *crops) {
    Source *src = source_new(x, s, PREP_FLOATS);
    src->crops = crops;
    src->loader = loader_create(src->ds->n, PREP_FLOATS * sizeof(float), x->a.batch_size, 0, 0,
                                load_image, src);
    return src;
}

Source *source_features(Experiment *x, int s, const float *features, const uint8_t *ok) {
    Source *src = source_new(x, s, RESNET34_FEATURES);
    src->features = features;
    src->ok = ok;
    exp_report_failed(x, s, ok, "");
    return src;
}

int source_count(const Source *src) {
    return src->ds->n - src->x->failed[src->s];
}

void source_start(Source *src, int epoch, const char *label) {
    int n = src->ds->n;
    if (epoch >= 0) loader_permutation(src->order, n, src->x->a.seed, epoch);
    else
        for (int i = 0; i < n; i++) src->order[i] = i;
    src->n_order = n;
    src->pos = 0;
    src->done = 0;
    src->show = label != NULL;
    if (src->show) progress_start(&src->prog, label, "img", n);
    if (src->loader) loader_start(src->loader, src->order, n);
}

int source_next(Source *src, XBatch *b) {
    const int bs = src->x->a.batch_size;
    int m = 0;
    memset(b, 0, sizeof *b);
    for (;;) {
        if (src->loader) {
            Batch lb;
            if (!loader_next(src->loader, &lb)) break;
            int all_ok = 1;
            for (int k = 0; k < lb.n; k++) all_ok &= lb.ok[k];
            for (int k = 0; k < lb.n; k++) {
                int item = lb.index[k];
                src->ibuf[k] = item;
                src->lbuf[k] = src->ds->items[item].label;
            }
            if (all_ok) { // the usual case: hand out the loader's memory as it is
                m = lb.n;
                b->x = lb.data;
            } else { // leave failed images out (a decoding pass also counts and reports them)
                for (int k = 0; k < lb.n; k++) {
                    if (!lb.ok[k]) {
                        if (!src->crops) warn("%s (left out)", lb.errors[k]);
                        continue;
                    }
                    memcpy(src->xbuf + (size_t)m * src->floats,
                           (const float *)lb.data + (size_t)k * src->floats, src->floats * sizeof(float));
                    src->ibuf[m] = lb.index[k];
                    src->lbuf[m] = src->ds->items[lb.index[k]].label;
                    m++;
                }
                b->x = src->xbuf;
            }
            src->done += lb.n;
            if (m == 0) continue; // a batch of failed images only
        } else {
            if (src->pos >= src->n_order) break;
            int end = src->pos + bs < src->n_order ? src->pos + bs : src->n_order;
            for (; src->pos < end; src->pos++) {
                int item = src->order[src->pos];
                if (!src->ok[item]) continue;
                memcpy(src->xbuf + (size_t)m * src->floats, src->features + (size_t)item * src->floats,
                       src->floats * sizeof(float));
                src->ibuf[m] = item;
                src->lbuf[m] = src->ds->items[item].label;
                m++;
            }
            src->done = src->pos;
            if (m == 0) continue;
            b->x = src->xbuf;
        }
        b->n = m;
        b->label = src->lbuf;
        b->index = src->ibuf;
        if (src->show) progress_update(&src->prog, src->done);
        return 1;
    }
    if (src->show) {
        progress_update(&src->prog, src->done);
        progress_finish(&src->prog);
        src->show = 0;
    }
    return 0;
}

void source_free(Source *src) {
    if (!src) return;
    if (src->loader) loader_destroy(src->loader);
    free(src->order);
    free(src->xbuf);
    free(src->lbuf);
    free(src->ibuf);
    free(src);
}

float exp_loss_scale(const Experiment *x, const GradScaler *s) {
    (void)x;
    return s->enabled ? s->scale : 1.0f;
}

void exp_keep_logits(Experiment *x, const XBatch *b) {
    const int k = resnet34_num_classes(x->model);
    float *logits = xmalloc((size_t)b->n * (size_t)k * sizeof(float));
    resnet34_logits(x->model, logits);
    for (int i = 0; i < b->n; i++) {
        memcpy(x->val_logits + (size_t)b->index[i] * PETS_NUM_CLASSES, logits + (size_t)i * k,
               (size_t)k * sizeof(float));
        x->val_seen[b->index[i]] = 1;
    }
    free(logits);
}

// ----------------------------------------------------------------------------
// epoch log

void exp_log_epoch(Experiment *x, int epoch, ExpRow row) {
    // region: epoch-line
    printf("Epoch: %2d/%d | Epoch Duration: %.3f sec | Val Loss: %.5f | Val Acc: %.3f |\n",
           epoch + 1, x->a.epochs, row.seconds, row.val_loss, row.val_acc);
    // endregion
    fflush(stdout);
    x->rows = xrealloc(x->rows, (size_t)(x->n_rows + 1) * sizeof(ExpRow));
    x->rows[x->n_rows++] = row;
}

static char *out_path(const Experiment *x, const char *suffix) {
    return xasprintf("%s/%s%s", x->a.results, x->name, suffix);
}

static void write_csv(Experiment *x) {
    char err[1024];
    char *path = out_path(x, ".csv");
    AtomicFile af;
    FILE *f = afile_open(&af, path, err, sizeof err);
    if (!f) die("%s", err);
    fprintf(f, "epoch,train_loss,val_loss,val_acc,lr,seconds\n");
    for (int i = 0; i < x->n_rows; i++) {
        const ExpRow *r = &x->rows[i];
        fprintf(f, "%d,%.9g,%.9g,%.9g,%.6g,%.3f\n", i + 1, r->train_loss, r->val_loss, r->val_acc,
                r->lr, r->seconds);
    }
    if (afile_commit(&af, err, sizeof err)) die("%s", err);
    free(path);
}

// ----------------------------------------------------------------------------
// checkpoints: a torch.save zip (pth_save) holding
//   model.<key>       the state-dict entries this mode changes (fc; BN buffers when BN trains;
//                     everything when fine-tuning), over the starting weights given again
//   adam.m.<key>, adam.v.<key>, adam.step, lr, plateau.*, scaler.*, rows (epochs, 5) float64,
//   config            uint8 text: what must match for a resume to continue the same run

static char *config_string(const Experiment *x) {
    const ExpArgs *a = &x->a;
    return xasprintf("name=%s mode=%s weights=%s seed=%llu keep_fc=%d batch=%d lr=%.9g limit=%d "
                     "data=%s,%s classes=%d",
                     x->name, x->mode, x->weights_sha[0] ? x->weights_sha : "random",
                     (unsigned long long)a->seed, a->keep_fc, a->batch_size, (double)a->lr,
                     a->limit, x->data_key[0], x->data_key[1], resnet34_num_classes(x->model));
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int is_bn_buffer(const char *key) {
    return ends_with(key, ".running_mean") || ends_with(key, ".running_var") ||
           ends_with(key, ".num_batches_tracked");
}

// Whether training changes this state-dict entry in this experiment.
static int changes(Experiment *x, const char *key) {
    if (is_bn_buffer(key)) return strcmp(x->mode, "cached-eval-bn") != 0;
    Param *p = resnet34_find_param(x->model, key);
    return p && p->kind == PARAM_WEIGHT && !p->frozen;
}

static void add_scalar_i64(StateDict *sd, const char *name, int64_t v) {
    sd_add(sd, name, PTH_I64, 0, NULL, &v);
}
static void add_scalar_f64(StateDict *sd, const char *name, double v) {
    sd_add(sd, name, PTH_F64, 0, NULL, &v);
}

static void add_param_state(StateDict *sd, const char *prefix, const Param *p, const Tensor *t) {
    float *host = xmalloc(t->numel * sizeof(float));
    t->be->tensor_download(t, host);
    char *name = xasprintf("%s%s", prefix, p->name);
    sd_add(sd, name, PTH_F32, p->ndim, p->shape, host);
    free(name);
    free(host);
}

void exp_checkpoint(Experiment *x, const Adam *opt, const Plateau *p, const GradScaler *s) {
    write_csv(x);
    StateDict model = {0}, ck = {0};
    if (strcmp(x->mode, "cached-eval-bn") == 0) { // only trainable weights change (the fc)
        for (int i = 0; i < resnet34_num_params(x->model); i++) {
            Param *q = resnet34_param(x->model, i);
            if (changes(x, q->name)) add_param_state(&ck, "model.", q, q->value);
        }
    } else { // BatchNorm buffers change too, num_batches_tracked included: the whole state dict
        resnet34_to_state(x->model, &model);
        for (int i = 0; i < model.n; i++) {
            const PthTensor *t = &model.t[i];
            if (!changes(x, t->name)) continue;
            char *name = xasprintf("model.%s", t->name);
            sd_add(&ck, name, t->dtype, t->ndim, t->shape, t->data);
            free(name);
        }
        sd_free(&model);
    }
    for (int i = 0; i < resnet34_num_params(x->model); i++) {
        Param *q = resnet34_param(x->model, i);
        if (q->adam_m) add_param_state(&ck, "adam.m.", q, q->adam_m);
        if (q->adam_v) add_param_state(&ck, "adam.v.", q, q->adam_v);
    }
    add_scalar_i64(&ck, "adam.step", opt->step);
    add_scalar_f64(&ck, "lr", opt->lr);
    add_scalar_f64(&ck, "plateau.best", p->best);
    add_scalar_i64(&ck, "plateau.num_bad_epochs", p->num_bad_epochs);
    add_scalar_i64(&ck, "plateau.cooldown_counter", p->cooldown_counter);
    add_scalar_i64(&ck, "plateau.last_epoch", p->last_epoch);
    add_scalar_f64(&ck, "scaler.scale", s->scale);
    add_scalar_i64(&ck, "scaler.good_steps", s->good_steps);
    int64_t shape[2] = {x->n_rows, 5};
    sd_add(&ck, "rows", PTH_F64, 2, shape, x->rows);
    char *cfg = config_string(x);
    int64_t len = (int64_t)strlen(cfg);
    sd_add(&ck, "config", PTH_U8, 1, &len, cfg);
    free(cfg);
    char err[1024];
    char *path = out_path(x, ".ckpt");
    if (pth_save(path, &ck, NULL, err, sizeof err))
        die("%s (written atomically: the previous checkpoint is left as it was)", err);
    free(path);
    sd_free(&ck);
}

static const PthTensor *need(const StateDict *sd, const char *path, const char *name, PthDType dt,
                             size_t numel) {
    const PthTensor *t = sd_find(sd, name);
    if (!t || t->dtype != dt || t->numel != numel)
        die("%s: not a checkpoint of this program (entry '%s' missing or mis-shaped); delete it "
            "or run without --resume", path, name);
    return t;
}

static int64_t get_i64(const StateDict *sd, const char *path, const char *name) {
    return *(const int64_t *)need(sd, path, name, PTH_I64, 1)->data;
}
static double get_f64(const StateDict *sd, const char *path, const char *name) {
    return *(const double *)need(sd, path, name, PTH_F64, 1)->data;
}

int exp_resume(Experiment *x, Adam *opt, Plateau *p, GradScaler *s) {
    if (!x->a.resume) return 0;
    char err[1024];
    char *path = out_path(x, ".ckpt");
    if (!file_exists(path)) {
        printf("--resume: no checkpoint %s yet, starting from the first epoch\n", path);
        free(path);
        return 0;
    }
    StateDict ck;
    if (pth_load(path, &ck, err, sizeof err)) die("%s (delete it to start over)", err);
    // the head first, so that a checkpoint of another task is refused by its shapes
    const int classes = resnet34_num_classes(x->model);
    const PthTensor *w = sd_find(&ck, "model.fc.weight");
    if (w && (w->ndim != 2 || w->shape[0] != classes || w->shape[1] != RESNET34_FEATURES))
        die("%s: the checkpoint's head is fc.weight (%lld, %lld), this run needs (%d, %d): it "
            "comes from a model with another number of classes; delete it or use another --results",
            path, (long long)w->shape[0], (long long)(w->ndim > 1 ? w->shape[1] : 0), classes,
            RESNET34_FEATURES);
    const PthTensor *c = sd_find(&ck, "config");
    char *cfg = config_string(x);
    if (!c || c->dtype != PTH_U8 || c->numel != strlen(cfg) || memcmp(c->data, cfg, c->numel) != 0)
        die("%s: this checkpoint belongs to a run with other settings (weights, data, seed, batch "
            "size, lr, --keep-fc or --limit differ):\n  checkpoint: %.*s\n  this run:   %s\n"
            "rerun with the same options, or without --resume to start over",
            path, c && c->dtype == PTH_U8 ? (int)c->numel : 1, c && c->dtype == PTH_U8 ? (const char *)c->data : "?", cfg);
    free(cfg);
    // model: the checkpoint's entries over the starting weights, loaded as one state dict
    StateDict model = {0};
    resnet34_to_state(x->model, &model);
    for (int i = 0; i < ck.n; i++) {
        const PthTensor *t = &ck.t[i];
        if (strncmp(t->name, "model.", 6) != 0) continue;
        PthTensor *dst = NULL;
        for (int j = 0; j < model.n; j++)
            if (strcmp(model.t[j].name, t->name + 6) == 0) dst = &model.t[j];
        if (!dst || dst->dtype != t->dtype || dst->numel != t->numel)
            die("%s: entry '%s' does not fit the model; delete the checkpoint to start over", path,
                t->name);
        memcpy(dst->data, t->data, t->numel * pth_dtype_size(t->dtype));
    }
    if (resnet34_load_state(x->model, &model, 1, err, sizeof err)) die("%s: %s", path, err);
    sd_free(&model);
    // Adam moments, created as adam_step would and filled from the file
    for (int i = 0; i < resnet34_num_params(x->model); i++) {
        Param *q = resnet34_param(x->model, i);
        Tensor **mv[2] = {&q->adam_m, &q->adam_v};
        const char *pre[2] = {"adam.m.", "adam.v."};
        for (int k = 0; k < 2; k++) {
            char *name = xasprintf("%s%s", pre[k], q->name);
            const PthTensor *t = sd_find(&ck, name);
            if (t) {
                if (q->kind != PARAM_WEIGHT || q->frozen || t->dtype != PTH_F32 ||
                    t->numel != q->value->numel)
                    die("%s: entry '%s' does not fit the model", path, name);
                Tensor *v = q->value;
                if (!*mv[k]) *mv[k] = v->be->tensor_new(v->be, v->n, v->c, v->h, v->w);
                v->be->tensor_upload(*mv[k], t->data);
            }
            free(name);
        }
    }
    opt->step = get_i64(&ck, path, "adam.step");
    opt->lr = (float)get_f64(&ck, path, "lr");
    p->best = get_f64(&ck, path, "plateau.best");
    p->num_bad_epochs = (int)get_i64(&ck, path, "plateau.num_bad_epochs");
    p->cooldown_counter = (int)get_i64(&ck, path, "plateau.cooldown_counter");
    p->last_epoch = get_i64(&ck, path, "plateau.last_epoch");
    s->scale = (float)get_f64(&ck, path, "scaler.scale");
    s->good_steps = (int)get_i64(&ck, path, "scaler.good_steps");
    const PthTensor *rows = sd_find(&ck, "rows");
    if (!rows || rows->dtype != PTH_F64 || rows->ndim != 2 || rows->shape[1] != 5 ||
        rows->shape[0] < 0 || rows->shape[0] > 100000)
        die("%s: entry 'rows' missing or mis-shaped; delete the checkpoint to start over", path);
    int n = (int)rows->shape[0];
    if (n > x->a.epochs)
        die("%s: the checkpoint already holds %d epochs, more than --epochs %d; pass --epochs %d "
            "or more", path, n, x->a.epochs, n);
    x->rows = xrealloc(x->rows, (size_t)(n > 0 ? n : 1) * sizeof(ExpRow));
    memcpy(x->rows, rows->data, (size_t)n * sizeof(ExpRow));
    x->n_rows = n;
    x->resumed_from = n;
    sd_free(&ck);
    printf("--resume: continuing %s after epoch %d of %d (lr %g)\n", path, n, x->a.epochs,
           (double)opt->lr);
    for (int i = 0; i < n; i++) // the log so far, as it was printed
        printf("Epoch: %2d/%d | Epoch Duration: %.3f sec | Val Loss: %.5f | Val Acc: %.3f |\n",
               i + 1, x->a.epochs, x->rows[i].seconds, x->rows[i].val_loss, x->rows[i].val_acc);
    free(path);
    return n;
}

// ----------------------------------------------------------------------------
// results

static void write_predictions(Experiment *x) {
    char err[1024];
    char *path = out_path(x, ".predictions.csv");
    AtomicFile af;
    FILE *f = afile_open(&af, path, err, sizeof err);
    if (!f) die("%s", err);
    const int k = resnet34_num_classes(x->model);
    fprintf(f, "index,name,label,pred,prob_pred,prob_label,label_name,pred_name\n");
    for (int i = 0; i < x->val.n; i++) {
        if (!x->val_seen[i]) continue; // an image that could not be decoded
        const float *z = x->val_logits + (size_t)i * PETS_NUM_CLASSES;
        int pred = 0;
        for (int j = 1; j < k; j++)
            if (z[j] > z[pred]) pred = j;
        double sum = 0;
        for (int j = 0; j < k; j++) sum += exp((double)z[j] - (double)z[pred]);
        int label = x->val.items[i].label;
        fprintf(f, "%d,%s,%d,%d,%.6f,%.6f,%s,%s\n", i, x->val.items[i].name, label, pred, 1.0 / sum,
                exp((double)z[label] - (double)z[pred]) / sum, pets_class_name(&x->val, label),
                pets_class_name(&x->val, pred));
    }
    if (afile_commit(&af, err, sizeof err)) die("%s", err);
    free(path);
}

static void json_str(FILE *f, int *first, const char *k, const char *v) {
    fprintf(f, "%s\n  \"%s\": \"", *first ? "{" : ",", k);
    for (const char *c = v; *c; c++) {
        if (*c == '"' || *c == '\\') fprintf(f, "\\%c", *c);
        else if ((unsigned char)*c < 0x20) fprintf(f, "\\u%04x", *c);
        else fputc(*c, f);
    }
    fputc('"', f);
    *first = 0;
}
static void json_num(FILE *f, int *first, const char *k, double v) {
    if (isfinite(v)) fprintf(f, "%s\n  \"%s\": %.9g", *first ? "{" : ",", k, v);
    else fprintf(f, "%s\n  \"%s\": \"%s\"", *first ? "{" : ",", k, isnan(v) ? "nan" : "inf");
    *first = 0;
}

// A float learning rate as the decimal it was meant to be (1e-3f prints as 0.001).
static double round6(double v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.6g", v);
    return strtod(buf, NULL);
}

void exp_finish(Experiment *x) {
    char err[1024];
    // the final model first (the largest file, so a full disk shows before the small ones are
    // replaced): a torchvision state dict with the 37-way fc
    char *model_path = out_path(x, ".pth");
    StateDict sd = {0};
    resnet34_to_state(x->model, &sd);
    if (pth_save(model_path, &sd, x->name, err, sizeof err))
        die("%s (written atomically: the previous %s is left as it was)", err, model_path);
    sd_free(&sd);
    write_predictions(x);
    write_csv(x);

    // summary over the epochs
    const ExpRow *last = &x->rows[x->n_rows - 1];
    int best = 0, reductions = 0;
    double epoch_seconds = 0;
    for (int i = 0; i < x->n_rows; i++) {
        if (x->rows[i].val_acc > x->rows[best].val_acc) best = i;
        if (i > 0 && x->rows[i].lr < x->rows[i - 1].lr) reductions++;
        epoch_seconds += x->rows[i].seconds;
    }
    int correct = 0, seen = 0;
    for (int i = 0; i < x->val.n; i++) {
        if (!x->val_seen[i]) continue;
        const float *z = x->val_logits + (size_t)i * PETS_NUM_CLASSES;
        int pred = 0;
        for (int j = 1; j < resnet34_num_classes(x->model); j++)
            if (z[j] > z[pred]) pred = j;
        correct += pred == x->val.items[i].label;
        seen++;
    }
    int present = 0;
    for (int c = 0; c < PETS_NUM_CLASSES; c++) present += x->train.class_count[c] > 0;

    char *path = out_path(x, ".json");
    AtomicFile af;
    FILE *f = afile_open(&af, path, err, sizeof err);
    if (!f) die("%s", err);
    int first = 1;
    char *csv = out_path(x, ".csv"), *pred = out_path(x, ".predictions.csv");
    json_str(f, &first, "chapter", x->chapter);
    json_str(f, &first, "name", x->name);
    json_str(f, &first, "mode", x->mode);
    json_str(f, &first, "device", x->be->name);
    json_str(f, &first, "device_description", x->be->description);
    json_str(f, &first, "precision", x->precision == PREC_FP16 ? "fp16" : "fp32");
    json_str(f, &first, "weights", x->a.weights);
    json_num(f, &first, "weights_pretrained", x->weights_pretrained);
    json_str(f, &first, "weights_sha256", x->weights_sha[0] ? x->weights_sha : "random");
    json_num(f, &first, "keep_fc", x->a.keep_fc);
    json_num(f, &first, "seed", (double)x->a.seed);
    json_str(f, &first, "root", x->a.root);
    json_num(f, &first, "limit", x->a.limit);
    json_num(f, &first, "num_classes", resnet34_num_classes(x->model));
    json_num(f, &first, "classes_present", present);
    json_num(f, &first, "train_images", x->train.n - x->failed[0]);
    json_num(f, &first, "val_images", x->val.n - x->failed[1]);
    json_num(f, &first, "train_failed", x->failed[0]);
    json_num(f, &first, "val_failed", x->failed[1]);
    json_num(f, &first, "batch_size", x->a.batch_size);
    json_str(f, &first, "optimizer", "Adam");
    json_str(f, &first, "loss", "CrossEntropyLoss(reduction='sum')");
    json_str(f, &first, "scheduler", "ReduceLROnPlateau(factor=0.1, patience=2) on val loss");
    json_num(f, &first, "lr_initial", round6(x->a.lr));
    json_num(f, &first, "lr_final", round6(last->lr));
    json_num(f, &first, "lr_reductions", reductions);
    json_num(f, &first, "epochs", x->n_rows);
    json_num(f, &first, "resumed_from_epoch", x->resumed_from);
    json_num(f, &first, "final_train_loss", last->train_loss);
    json_num(f, &first, "final_val_loss", last->val_loss);
    json_num(f, &first, "final_val_acc", last->val_acc);
    json_num(f, &first, "final_val_correct", correct);
    json_num(f, &first, "final_val_count", seen);
    json_num(f, &first, "first_val_acc", x->rows[0].val_acc);
    json_num(f, &first, "best_val_acc", x->rows[best].val_acc);
    json_num(f, &first, "best_epoch", best + 1);
    json_num(f, &first, "seconds_setup", x->setup_seconds);
    json_num(f, &first, "seconds_features", x->feature_seconds);
    json_num(f, &first, "seconds_epochs", epoch_seconds);
    json_num(f, &first, "seconds_per_epoch", epoch_seconds / x->n_rows);
    json_num(f, &first, "seconds_total", x->setup_seconds + epoch_seconds);
    json_num(f, &first, "seconds_wall", now_seconds() - x->t_start);
    json_str(f, &first, "cache", x->cache_status);
    json_str(f, &first, "csv", csv);
    json_str(f, &first, "predictions", pred);
    json_str(f, &first, "model", model_path);
    fprintf(f, "\n}\n");
    if (afile_commit(&af, err, sizeof err)) die("%s", err);
    printf("results: %s, %s, %s, %s\n", csv, pred, model_path, path);
    free(csv);
    free(pred);
    free(path);
    free(model_path);
}
