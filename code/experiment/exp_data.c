// exp_data.c: the training chapters' data (see experiment.h): on-disk caches keyed on what their
// contents depend on, and batch sources that feed decoded images, cached crops or cached
// features to the model, in order or shuffled, with failed images left out.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "core/common.h"
#include "experiment/experiment.h"
#include "data/image.h"
#include "data/preprocess.h"
#include "core/sha256.h"

// ----------------------------------------------------------------------------
// caches
//
// File layout (little-endian), readable from Python with numpy (tests/ref_transfer.py does):
//   0   "PETCACHE"   8-byte magic
//   8   u32 version (2), u32 kind (1 crops, 2 features), u32 n, u32 0
//   24  u64 sample_bytes
//   32  64 ASCII hex digits: the key
//   96  32 bytes: checksum of everything after the header (labels, data, ok flags; sum_* below),
//       checked on open so that a damaged file is rebuilt, never used
//   128 n x i32 labels, zero-padded to a multiple of 64 bytes
//   then n x sample_bytes of data (crops: (224, 224, 3) uint8 RGB; features: 512 float32)
//   then n x u8 ok flags (1 decoded; 0 failed, its data is zeros)

#define CACHE_HEADER 128
#define CACHE_VERSION 2
#define CACHE_SUM 96 // offset of the checksum; the header before it must match exactly

// The checksum: four lanes over successive 8-byte words (little-endian; the tail zero-padded),
// each lane h = (h ^ word) * P, then the byte count mixed into every lane. Each step is a
// bijection of h, so any change confined to one word always changes the result; it runs at
// memory speed (SHA-256 would take seconds over the 1.1 GB of crops of the whole dataset).
// Not a defence against deliberate tampering: the caches are the program's own files.
typedef struct {
    uint64_t lane[4];
    uint8_t buf[32];
    size_t fill;
    uint64_t bytes;
} Sum;

#define SUM_P 0x100000001b3ull // FNV's 64-bit prime

static void sum_init(Sum *c) {
    memset(c, 0, sizeof *c);
    for (int k = 0; k < 4; k++) c->lane[k] = 0xcbf29ce484222325ull + (uint64_t)k;
}

static void sum_block(Sum *c, const uint8_t *p) { // 32 bytes
    for (int k = 0; k < 4; k++) {
        uint64_t w;
        memcpy(&w, p + 8 * k, 8);
        c->lane[k] = (c->lane[k] ^ w) * SUM_P;
    }
}

static void sum_update(Sum *c, const void *data, size_t n) {
    const uint8_t *p = data;
    c->bytes += n;
    if (c->fill) {
        size_t take = 32 - c->fill < n ? 32 - c->fill : n;
        memcpy(c->buf + c->fill, p, take);
        c->fill += take, p += take, n -= take;
        if (c->fill < 32) return;
        sum_block(c, c->buf);
        c->fill = 0;
    }
    for (; n >= 32; p += 32, n -= 32) sum_block(c, p);
    memcpy(c->buf, p, n);
    c->fill = n;
}

static void sum_final(Sum *c, uint8_t out[32]) {
    if (c->fill) {
        memset(c->buf + c->fill, 0, 32 - c->fill);
        sum_block(c, c->buf);
    }
    for (int k = 0; k < 4; k++) {
        uint64_t h = (c->lane[k] ^ c->bytes) * SUM_P;
        memcpy(out + 8 * k, &h, 8);
    }
}

static size_t cache_labels_bytes(int n) { return ((size_t)n * 4 + 63) / 64 * 64; }

static void cache_header(uint8_t hdr[CACHE_HEADER], uint32_t kind, const char *key, int n,
                         size_t sample_bytes) {
    memset(hdr, 0, CACHE_HEADER);
    memcpy(hdr, "PETCACHE", 8);
    uint32_t u[4] = {CACHE_VERSION, kind, (uint32_t)n, 0};
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
        memcmp(hdr, ref, CACHE_SUM) != 0) {
        fclose(f);
        printf("cache %s: stale or damaged, rebuilding it\n", path);
        return -1;
    }
    void *map = mmap(NULL, want, PROT_READ, MAP_PRIVATE, fileno(f), 0);
    fclose(f);
    if (map == MAP_FAILED) return -1;
    uint8_t sum[32];
    Sum h;
    sum_init(&h);
    sum_update(&h, (const uint8_t *)map + CACHE_HEADER, want - CACHE_HEADER);
    sum_final(&h, sum);
    if (memcmp(sum, hdr + CACHE_SUM, 32) != 0) {
        munmap(map, want);
        warn("cache %s: its contents do not match their checksum (the file is damaged); not "
             "using it, rebuilding it", path);
        return -1;
    }
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

// A cache file being written: the payload goes through cache_put (which hashes it), and
// cache_end writes the checksum into the header before the atomic commit.
typedef struct {
    AtomicFile af;
    FILE *f;
    Sum sum;
} CacheOut;

static void cache_put(CacheOut *o, const void *p, size_t n) {
    fwrite(p, 1, n, o->f);
    sum_update(&o->sum, p, n);
}

// Streams a cache file: header and labels now, data by cache_put, ok flags at the end.
static int cache_begin(CacheOut *o, const char *path, uint32_t kind, const char *key,
                       const PetSplit *ds, size_t sample_bytes, char *err, size_t errlen) {
    o->f = afile_open(&o->af, path, err, errlen);
    if (!o->f) return -1;
    sum_init(&o->sum);
    uint8_t hdr[CACHE_HEADER];
    cache_header(hdr, kind, key, ds->n, sample_bytes);
    fwrite(hdr, 1, CACHE_HEADER, o->f);
    size_t lb = cache_labels_bytes(ds->n);
    uint8_t *labels = xcalloc(lb, 1);
    for (int i = 0; i < ds->n; i++) memcpy(labels + 4 * (size_t)i, &ds->items[i].label, 4);
    cache_put(o, labels, lb);
    free(labels);
    return 0;
}

static int cache_end(CacheOut *o, char *err, size_t errlen) {
    uint8_t sum[32];
    sum_final(&o->sum, sum);
    if (fseek(o->f, CACHE_SUM, SEEK_SET) == 0) fwrite(sum, 1, sizeof sum, o->f);
    return afile_commit(&o->af, err, errlen); // reports any failed write
}

int cache_write(const char *path, uint32_t kind, const char *key, const PetSplit *ds,
                const uint8_t *ok, size_t sample_bytes, const void *data, char *err, size_t errlen) {
    CacheOut o;
    if (cache_begin(&o, path, kind, key, ds, sample_bytes, err, errlen)) return -1;
    cache_put(&o, data, sample_bytes * (size_t)ds->n);
    cache_put(&o, ok, (size_t)ds->n);
    return cache_end(&o, err, errlen);
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
    // crops depend on the pixels (data, preprocessing) and on the code that decoded them (this
    // build, stb_image); not on the backend or precision, which never touch them
    char *desc = xasprintf("crops v2 prep=%d data=%s build=%s stb=%s", EXP_PREP_VERSION,
                           x->data_key[s], PETS_BUILD_ID, PETS_STB_ID);
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
    CacheOut out;
    if (cache_begin(&out, path, CACHE_KIND_CROPS, key, ds, sb, err, sizeof err))
        die("%s (pass --cache DIR to put the caches elsewhere)", err);
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
        cache_put(&out, b.data, sb * (size_t)b.n);
        for (int k = 0; k < b.n; k++) {
            ok[b.index[k]] = (uint8_t)b.ok[k];
            if (!b.ok[k]) warn("%s", b.errors[k]);
        }
        progress_update(&p, done += b.n);
    }
    progress_finish(&p);
    loader_destroy(l);
    free(label);
    cache_put(&out, ok, (size_t)ds->n);
    if (cache_end(&out, err, sizeof err)) die("%s (pass --cache DIR to put the caches elsewhere)", err);
    free(ok);
    x->setup_seconds += now_seconds() - t0;
    x->cache_status = "built";
    if (cache_open(c, path, CACHE_KIND_CROPS, key, ds, sb)) die("%s: cannot read back the cache", path);
    exp_report_failed(x, s, c->ok, "");
    free(path);
}

char *exp_device_id(const Experiment *x) {
    const Backend *be = x->be;
    return xasprintf("%s (%s) %s", be->name, be->kernels[0] ? be->kernels : be->description,
                     x->precision == PREC_FP16 ? "fp16" : "fp32");
}

char *exp_feature_cache_path(Experiment *x, int s, char key[65]) {
    const PetSplit *ds = s ? &x->val : &x->train;
    char weights[96];
    if (x->weights_sha[0]) snprintf(weights, sizeof weights, "%s", x->weights_sha);
    else snprintf(weights, sizeof weights, "random:%llu", (unsigned long long)x->a.seed);
    // features depend on the backbone (weights), the pixels (data, preprocessing) and on what
    // computed them: this build, stb_image, the backend with its kernel table, the precision and
    // the eval path (fused or not)
    char *dev = exp_device_id(x);
    char *desc = xasprintf("features v2 prep=%d data=%s weights=%s build=%s stb=%s device=%s "
                           "eval=%s", EXP_PREP_VERSION, x->data_key[s], weights, PETS_BUILD_ID,
                           PETS_STB_ID, dev, resnet34_eval_path(x->model));
    free(dev);
    Sha256 h;
    sha256_init(&h);
    sha256_update(&h, desc, strlen(desc));
    sha256_final_hex(&h, key);
    free(desc);
    return xasprintf("%s/features-%s-%.16s.f32", x->a.cache, ds->split, key);
}

// region: feature-cache
// The frozen backbone in eval mode is a fixed function: an image's 512 pooled features never
// change, so compute them once for the whole split and keep them on disk. The cache key covers
// the weights file (SHA-256), the split (annotations, file names, sizes, dates), the
// preprocessing version and what computed the features (this build, stb_image, the backend's
// kernel table, the precision); the file's checksum is verified whenever it is opened.
float *exp_feature_cache(Experiment *x, int s, uint8_t **ok_out) {
    const PetSplit *ds = s ? &x->val : &x->train;
    const size_t row = RESNET34_FEATURES * sizeof(float);
    float *features = xcalloc((size_t)ds->n, row); // (n, 512)
    uint8_t *ok = xcalloc((size_t)ds->n, 1);       // (n) 1 where the image decoded
    char key[65], err[1024];
    char *path = exp_feature_cache_path(x, s, key);
    Cache c;
    if (cache_open(&c, path, CACHE_KIND_FEATURES, key, ds, row) == 0) {
        memcpy(features, c.data, (size_t)ds->n * row);
        memcpy(ok, c.ok, (size_t)ds->n);
        cache_close(&c);
        printf("cache: %s (features of the %s split, reused)\n", path, ds->split);
        if (strcmp(x->cache_status, "none") == 0) x->cache_status = "hit";
    } else {
        double t0 = now_seconds();
        float *batch_features = xmalloc((size_t)x->a.batch_size * row);
        Source *images = source_images(x, s, NULL); // decodes the JPEGs on all cores
        char *label = xasprintf("features %s", ds->split);
        source_start(images, -1, label);
        XBatch b;
        while (source_next(images, &b)) {
            resnet34_forward(x->model, b.x, b.n, PREP_CROP, PREP_CROP, /*bn_train=*/0);
            resnet34_features(x->model, batch_features); // (b.n, 512)
            for (int k = 0; k < b.n; k++) {
                memcpy(features + (size_t)b.index[k] * RESNET34_FEATURES,
                       batch_features + (size_t)k * RESNET34_FEATURES, row);
                ok[b.index[k]] = 1;
            }
        }
        source_free(images);
        free(label);
        free(batch_features);
        if (cache_write(path, CACHE_KIND_FEATURES, key, ds, ok, row, features, err, sizeof err))
            die("%s (pass --cache DIR to put the cache elsewhere)", err);
        x->feature_seconds += now_seconds() - t0;
        x->setup_seconds += now_seconds() - t0;
        x->cache_status = "built";
    }
    free(path);
    *ok_out = ok;
    return features;
}
// endregion

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
    int min_batch;             // smaller batches are skipped (BatchNorm in train mode needs 2)
    int *subset, n_subset;     // passes over these items only (source_subset), or all
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
    src->min_batch = 1;
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
    // The training split of a run whose BatchNorm uses batch statistics cannot take a batch of
    // one image (PyTorch raises "Expected more than 1 value per channel"): such a batch, possible
    // when failed images or --limit leave one image at the end, is skipped with a warning.
    src->min_batch = (s == 0 && strcmp(x->mode, "cached-eval-bn") != 0) ? 2 : 1;
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
    if (!src->subset) return src->ds->n - src->x->failed[src->s];
    const uint8_t *ok = src->ok ? src->ok : src->crops ? src->crops->ok : NULL;
    int n = 0;
    for (int i = 0; i < src->n_subset; i++) n += !ok || ok[src->subset[i]];
    return n;
}

void source_subset(Source *src, const int *items, int n) {
    free(src->subset);
    src->subset = xmalloc((size_t)(n > 0 ? n : 1) * sizeof(int));
    memcpy(src->subset, items, (size_t)n * sizeof(int));
    src->n_subset = n;
}

void source_start(Source *src, int epoch, const char *label) {
    int n = src->subset ? src->n_subset : src->ds->n;
    if (epoch >= 0) loader_permutation(src->order, n, src->x->a.seed, epoch);
    else
        for (int i = 0; i < n; i++) src->order[i] = i;
    if (src->subset)
        for (int i = 0; i < n; i++) src->order[i] = src->subset[src->order[i]];
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
            if (m > 0 && m < src->min_batch)
                warn("skipping a training batch of %d image (%s): BatchNorm in train mode needs at "
                     "least %d", m, src->ds->items[src->ibuf[0]].name, src->min_batch);
            if (m < src->min_batch) continue; // nothing usable in this batch
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
            if (m < src->min_batch) continue;
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
    free(src->subset);
    free(src->xbuf);
    free(src->lbuf);
    free(src->ibuf);
    free(src);
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

