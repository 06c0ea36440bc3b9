// 01-data-loading.c: chapter 1, loading the Oxford-IIIT Pet dataset.
//
// The tutorial starts with torchvision's OxfordIIITPet(root, split="trainval" | "test"): two lists
// of (image, label) pairs read from the official annotation files. This program does the same in
// C and then checks the data the way a careful user would before training on it: it decodes every
// image of both splits in parallel (with the batch loader of the later chapters), counts the images
// per split and per breed, and reports any file that cannot be decoded, by name and with the
// reason, instead of silently dropping it. It also lists files of images/ that no split uses,
// and counts what the files really are, by content: PNG and GIF files named .jpg, grayscale and
// CMYK JPEGs, files that are not images at all.
//
//   build/01-data-loading [--root DIR] [--results DIR] [--threads N]
//
// Writes <results>/01-data-loading.json (every number of the chapter) and 01-data-loading.csv (the
// per-breed table). Exit status 1 when the dataset cannot be read at all.
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "data/dataset.h"
#include "data/image.h"
#include "data/loader.h"
#include "experiment/results.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: 01-data-loading [--root DIR] [--results DIR] [--threads N]\n"
            "Reads the Oxford-IIIT Pet splits, decodes every image, and reports counts per split\n"
            "and per breed, unreadable files and the time taken.\n"
            "  --root DIR      dataset root holding images/ and annotations/ (default\n"
            "                  data/oxford-iiit-pet; `make data` downloads it there)\n"
            "  --results DIR   where 01-data-loading.json and .csv are written (default results)\n"
            "  --threads N     decoding threads (default: all cores)\n");
}

// ----------------------------------------------------------------------------
// decoding one image: the loader's per-item function

// Both splits, seen as one list of items: trainval first, then test.
typedef struct {
    const PetSplit *split[2];
} AllItems;

static const PetItem *item_at(const AllItems *a, int i) {
    return i < a->split[0]->n ? &a->split[0]->items[i] : &a->split[1]->items[i - a->split[0]->n];
}

typedef struct {
    int w, h;
    ImageInfo info; // the format found by content, and the colour mode before conversion to RGB
} ImageSize;        // what we keep of each decoded image

// region: decode-one
static int decode_one(void *ctx, int index, void *out, char *err, size_t errlen) {
    Image img;
    ImageSize *size = out;
    if (image_load_info(item_at(ctx, index)->path, &img, &size->info, err, errlen)) return -1;
    size->w = img.w;
    size->h = img.h;
    image_free(&img);
    return 0;
}
// endregion

// What a file holds, from its first bytes (for the files the loader could not decode and those
// no split lists). Returns -1 when the file cannot be read at all.
static int probe_path(const char *path, ImageInfo *info) {
    char err[256];
    size_t n;
    *info = (ImageInfo){IMAGE_NOT_IMAGE, ""};
    uint8_t *buf = read_file(path, &n, (size_t)512 << 20, err, sizeof err);
    if (!buf) return -1;
    image_probe(buf, n, info);
    free(buf);
    return 0;
}

// ----------------------------------------------------------------------------
// counting the files of images/ by what they really are

#define LIST_MAX 12 // names kept per list for the report; the count is always complete

typedef struct {
    int count;
    char *names; // the first LIST_MAX names, separated by ", "
} NameList;

static void list_add(NameList *l, const char *name) {
    char *s = l->count < LIST_MAX ? xasprintf("%s%s%s", l->names ? l->names : "",
                                              l->count ? ", " : "", name)
                                  : NULL;
    if (s) free(l->names), l->names = s;
    l->count++;
}

// The list as one string: "none", or the names, with "and N more" past LIST_MAX.
static char *list_str(const NameList *l) {
    if (!l->count) return xstrdup("none");
    if (l->count <= LIST_MAX) return xstrdup(l->names);
    return xasprintf("%s and %d more", l->names, l->count - LIST_MAX);
}

typedef struct {
    NameList jpeg, png, gif, gray_jpeg, cmyk_jpeg, non_image;
} ContentCounts;

static void content_free(ContentCounts *c) {
    NameList *l[] = {&c->jpeg, &c->png, &c->gif, &c->gray_jpeg, &c->cmyk_jpeg, &c->non_image};
    for (size_t k = 0; k < sizeof l / sizeof l[0]; k++) free(l[k]->names);
}

// region: count-content
// A file counts by what its bytes are, whatever its name says: `file` is its name in images/.
static void count_content(ContentCounts *c, const char *file, const ImageInfo *info) {
    switch (info->format) {
    case IMAGE_JPEG:
        list_add(&c->jpeg, file);
        if (!strcmp(info->mode, "L")) list_add(&c->gray_jpeg, file);
        if (!strcmp(info->mode, "CMYK")) list_add(&c->cmyk_jpeg, file);
        break;
    case IMAGE_PNG: list_add(&c->png, file); break;
    case IMAGE_GIF: list_add(&c->gif, file); break;
    default: list_add(&c->non_image, file); break;
    }
}
// endregion

// ----------------------------------------------------------------------------
// files of images/ that no split refers to (the dataset ships a few: a GIF, MATLAB files)

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char **unreferenced_files(const char *root, const AllItems *all, int n, int *count) {
    char **names = xmalloc((size_t)n * sizeof(char *));
    for (int i = 0; i < n; i++) names[i] = xasprintf("%s.jpg", item_at(all, i)->name);
    qsort(names, (size_t)n, sizeof(char *), cmp_str);
    char *dir = xasprintf("%s/images", root);
    DIR *d = opendir(dir);
    char **extra = NULL;
    *count = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        const char *key = e->d_name;
        if (key[0] == '.' || bsearch(&key, names, (size_t)n, sizeof(char *), cmp_str)) continue;
        extra = xrealloc(extra, (size_t)(*count + 1) * sizeof(char *));
        extra[(*count)++] = xstrdup(key);
    }
    if (d) closedir(d);
    if (*count) qsort(extra, (size_t)*count, sizeof(char *), cmp_str);
    for (int i = 0; i < n; i++) free(names[i]);
    free(names), free(dir);
    return extra;
}

// ----------------------------------------------------------------------------
// the steps of main

// What decoding both splits found.
typedef struct {
    ImageSize *sizes; // (n) zero for an image that could not be decoded
    int *ok;          // (n) 1: decoded
    int bad[2];       // unreadable images in trainval, in test
    char *bad_list;   // "name.jpg (reason); ..."
    double seconds;
    int threads;
} Decoding;

// region: decode-all
// Decode every image of both splits on all cores. The loader hands back batches in order;
// a file that cannot be decoded comes back flagged (ok = 0) with the reason.
static Decoding decode_all(AllItems *all, int n, int threads) {
    int batch = 64;
    Loader *loader = loader_create(n, sizeof(ImageSize), batch, threads, 0, decode_one, all);
    loader_start(loader, NULL, n);
    Decoding d = {.sizes = xcalloc((size_t)n, sizeof(ImageSize)),
                  .ok = xcalloc((size_t)n, sizeof(int)), .bad_list = xstrdup("")};
    Progress progress;
    progress_start(&progress, "decoding", "img", n);
    double t0 = now_seconds();
    Batch b;
    for (int done = 0; loader_next(loader, &b); done += b.n) {
        memcpy(d.sizes + done, b.data, (size_t)b.n * sizeof(ImageSize));
        for (int k = 0; k < b.n; k++) {
            d.ok[done + k] = b.ok[k];
            if (b.ok[k]) continue;
            const PetItem *it = item_at(all, b.index[k]);
            d.bad[b.index[k] >= all->split[0]->n]++;
            fprintf(stderr, "\nunreadable: %s\n", b.errors[k]);
            char *l = xasprintf("%s%s%s.jpg (%s)", d.bad_list, *d.bad_list ? "; " : "", it->name,
                                b.errors[k]);
            free(d.bad_list);
            d.bad_list = l;
        }
        progress_update(&progress, done + b.n);
    }
    d.seconds = now_seconds() - t0;
    progress_finish(&progress);
    d.threads = loader_threads(loader);
    loader_destroy(loader);
    return d;
}
// endregion

// Image sizes of the decodable images.
typedef struct {
    int wmin, wmax, hmin, hmax, good; // good: images decoded
    double wmean, hmean;
} Sizes;

static Sizes size_stats(const ImageSize *sizes, int n) {
    Sizes z = {.wmin = 1 << 30, .hmin = 1 << 30};
    double wsum = 0, hsum = 0;
    for (int i = 0; i < n; i++) {
        if (sizes[i].w == 0) continue;
        z.good++;
        wsum += sizes[i].w, hsum += sizes[i].h;
        if (sizes[i].w < z.wmin) z.wmin = sizes[i].w;
        if (sizes[i].w > z.wmax) z.wmax = sizes[i].w;
        if (sizes[i].h < z.hmin) z.hmin = sizes[i].h;
        if (sizes[i].h > z.hmax) z.hmax = sizes[i].h;
    }
    if (!z.good) z.wmin = z.hmin = 0;
    z.wmean = z.good ? wsum / z.good : 0, z.hmean = z.good ? hsum / z.good : 0;
    return z;
}

// region: count-classes
// Images per breed in each split: printed, written to the CSV `cf` and recorded in `res`. Class
// ids need not be contiguous: a subset of the dataset keeps the ids of the full one (1, 2 and 6
// in the 3-breed set of the tests). Returns the ids ("1 2 6"), and their number in *classes.
static char *count_classes(const PetSplit *trainval, const PetSplit *test, FILE *cf,
                           Results *res, int *classes) {
    fprintf(cf, "class_id,breed,species,trainval,test\n");
    printf("\n%-4s %-28s %-8s %8s %8s\n", "id", "breed", "species", "trainval", "test");
    *classes = 0;
    char *ids = xstrdup("");
    for (int c = 0; c < PETS_NUM_CLASSES; c++) {
        if (!trainval->class_count[c] && !test->class_count[c]) continue;
        const PetSplit *s = trainval->class_count[c] ? trainval : test;
        const char *name = pets_class_name(s, c), *species = "";
        for (int i = 0; i < s->n; i++)
            if (s->items[i].label == c) species = s->items[i].species == 1 ? "cat" : "dog";
        printf("%-4d %-28s %-8s %8d %8d\n", c + 1, name, species, trainval->class_count[c],
               test->class_count[c]);
        fprintf(cf, "%d,%s,%s,%d,%d\n", c + 1, name, species, trainval->class_count[c],
                test->class_count[c]);
        char key[64];
        snprintf(key, sizeof key, "class_%d_name", c + 1);
        results_str(res, key, name);
        snprintf(key, sizeof key, "class_%d_trainval", c + 1);
        results_int(res, key, trainval->class_count[c]);
        snprintf(key, sizeof key, "class_%d_test", c + 1);
        results_int(res, key, test->class_count[c]);
        char *l = xasprintf("%s%s%d", ids, *classes ? " " : "", c + 1);
        free(ids);
        ids = l;
        (*classes)++;
    }
    return ids;
}
// endregion

// What the files of images/ are, by content: the split images (as decoded; those that failed
// are probed again here, a missing one is not in images/) and the files no split uses, which
// also go to `unlisted`. Returns the number of those.
static int count_files(const char *root, const AllItems *all, int n, const Decoding *d,
                       ContentCounts *content, NameList *unlisted) {
    int n_extra;
    char **extra = unreferenced_files(root, all, n, &n_extra);
    for (int i = 0; i < n; i++) {
        char *file = xasprintf("%s.jpg", item_at(all, i)->name);
        ImageInfo info = d->sizes[i].info;
        if (d->ok[i] || probe_path(item_at(all, i)->path, &info) == 0)
            count_content(content, file, &info);
        free(file);
    }
    for (int i = 0; i < n_extra; i++) {
        char *path = xasprintf("%s/images/%s", root, extra[i]);
        ImageInfo info;
        if (probe_path(path, &info) == 0) count_content(content, extra[i], &info);
        list_add(unlisted, extra[i]);
        free(path), free(extra[i]);
    }
    free(extra);
    return n_extra;
}

// The files of images/ by content (listed in a split or not), with the names of the odd ones.
static void record_content(Results *res, const ContentCounts *content) {
    struct {
        const char *count_key, *list_key;
        const NameList *l;
    } kinds[] = {
        {"jpeg_files", NULL, &content->jpeg}, // the plain JPEGs are not worth listing
        {"png_files", "png_list", &content->png},
        {"gif_files", "gif_list", &content->gif},
        {"grayscale_jpegs", "grayscale_list", &content->gray_jpeg},
        {"cmyk_jpegs", "cmyk_list", &content->cmyk_jpeg},
        {"non_image_files", "non_image_list", &content->non_image},
    };
    results_int(res, "image_folder_files", content->jpeg.count + content->png.count +
                                               content->gif.count + content->non_image.count);
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        results_int(res, kinds[k].count_key, kinds[k].l->count);
        if (!kinds[k].list_key) continue;
        char *l = list_str(kinds[k].l);
        results_str(res, kinds[k].list_key, l);
        free(l);
    }
}

int main(int argc, char **argv) {
    const char *root = "data/oxford-iiit-pet", *results_dir = "results";
    int threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage(stdout), 0;
        else if (!strcmp(argv[i], "--root") && i + 1 < argc) root = argv[++i];
        else if (!strcmp(argv[i], "--results") && i + 1 < argc) results_dir = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else return usage(stderr), fprintf(stderr, "error: unknown argument '%s'\n", argv[i]), 2;
    }
    char err[1024];

    // region: open-splits
    // The two official splits, as torchvision's OxfordIIITPet(root, split=...) reads them:
    // one line per image, "<name> <CLASS-ID> <SPECIES> <BREED-ID>", label = CLASS-ID - 1.
    PetSplit trainval, test;
    if (pets_open(root, "trainval", &trainval, err, sizeof err)) die("%s", err);
    if (pets_open(root, "test", &test, err, sizeof err)) die("%s", err);
    // endregion
    printf("dataset root: %s\n", root);
    printf("trainval: %d images, test: %d images\n", trainval.n, test.n);

    // Decode every image; count the breeds; count the files of images/ by content.
    AllItems all = {{&trainval, &test}};
    int n = trainval.n + test.n, classes;
    Decoding dec = decode_all(&all, n, threads);
    Sizes size = size_stats(dec.sizes, n);
    Results res;
    results_init(&res);
    AtomicFile csv;
    char *csv_path = xasprintf("%s/01-data-loading.csv", results_dir);
    FILE *cf = afile_open(&csv, csv_path, err, sizeof err);
    if (!cf) die("%s", err);
    char *ids = count_classes(&trainval, &test, cf, &res, &classes);
    ContentCounts content = {0};
    NameList unlisted = {0};
    int n_extra = count_files(root, &all, n, &dec, &content, &unlisted);

    // The report: on the terminal, then every number in the JSON file.
    double per_second = n / (dec.seconds > 0 ? dec.seconds : 1e-9);
    printf("\n%d classes; %d of %d images decoded in %.2f s (%.0f images/s, %d threads)\n", classes,
           n - dec.bad[0] - dec.bad[1], n, dec.seconds, per_second, dec.threads);
    printf("unreadable: %d in trainval, %d in test%s%s\n", dec.bad[0], dec.bad[1],
           *dec.bad_list ? ": " : "", dec.bad_list);
    char *unlisted_str = list_str(&unlisted);
    printf("files in images/ used by no split: %d%s%s\n", n_extra, n_extra ? ": " : "",
           n_extra ? unlisted_str : "");
    printf("files in images/ by content: %d JPEG (%d grayscale, %d CMYK), %d PNG, %d GIF, "
           "%d not images\n", content.jpeg.count, content.gray_jpeg.count, content.cmyk_jpeg.count,
           content.png.count, content.gif.count, content.non_image.count);
    results_str(&res, "root", root);
    results_int(&res, "trainval_images", trainval.n);
    results_int(&res, "test_images", test.n);
    results_int(&res, "total_images", n);
    results_int(&res, "num_classes", classes);
    results_str(&res, "class_ids", ids);
    results_int(&res, "trainval_unreadable", dec.bad[0]);
    results_int(&res, "test_unreadable", dec.bad[1]);
    results_int(&res, "unreadable", dec.bad[0] + dec.bad[1]);
    results_str(&res, "unreadable_files", *dec.bad_list ? dec.bad_list : "none");
    results_int(&res, "decoded_images", size.good);
    results_int(&res, "unreferenced_files", n_extra);
    results_str(&res, "unreferenced_list", unlisted_str);
    record_content(&res, &content);
    results_int(&res, "width_min", size.wmin);
    results_int(&res, "width_max", size.wmax);
    results_num(&res, "width_mean", size.wmean);
    results_int(&res, "height_min", size.hmin);
    results_int(&res, "height_max", size.hmax);
    results_num(&res, "height_mean", size.hmean);
    results_num(&res, "seconds", dec.seconds);
    results_num(&res, "images_per_second", per_second);
    results_int(&res, "threads", dec.threads);
    char *json_path = xasprintf("%s/01-data-loading.json", results_dir);
    if (afile_commit(&csv, err, sizeof err) || results_write(&res, json_path, err, sizeof err))
        die("%s", err);
    printf("wrote %s and %s\n", json_path, csv_path);

    results_free(&res), content_free(&content), pets_free(&trainval), pets_free(&test);
    free(json_path), free(csv_path), free(ids), free(unlisted_str), free(dec.bad_list);
    free(dec.sizes), free(dec.ok), free(unlisted.names);
    return 0;
}
