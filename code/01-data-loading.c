// 01-data-loading.c: chapter 1, loading the Oxford-IIIT Pet dataset.
//
// The tutorial starts with torchvision's OxfordIIITPet(root, split="trainval" | "test"): two lists
// of (image, label) pairs read from the official annotation files. This program does the same in
// C and then checks the data the way a careful user would before training on it: it decodes every
// image of both splits in parallel (with the batch loader of the later chapters), counts the images
// per split and per breed, and reports any file that cannot be decoded, by name and with the
// reason, instead of silently dropping it. It also lists files of images/ that no split uses.
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

#include "common.h"
#include "dataset.h"
#include "image.h"
#include "loader.h"
#include "results.h"

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
} ImageSize; // what we keep of each decoded image

// region: decode-one
static int decode_one(void *ctx, int index, void *out, char *err, size_t errlen) {
    Image img;
    if (image_load(item_at(ctx, index)->path, &img, err, errlen)) return -1;
    ImageSize *size = out;
    size->w = img.w;
    size->h = img.h;
    image_free(&img);
    return 0;
}
// endregion

// ----------------------------------------------------------------------------
// files of images/ that no split refers to (the dataset ships a few: a GIF, MATLAB files)

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *unreferenced_files(const char *root, const AllItems *all, int n, int *count) {
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
    qsort(extra, (size_t)*count, sizeof(char *), cmp_str);
    char *list = xstrdup("");
    for (int i = 0; i < *count; i++) {
        char *l = xasprintf("%s%s%s", list, i ? " " : "", extra[i]);
        free(list), free(extra[i]);
        list = l;
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names), free(extra), free(dir);
    return list;
}

// ----------------------------------------------------------------------------

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

    // region: decode-all
    // Decode every image of both splits on all cores. The loader hands back batches in order;
    // a file that cannot be decoded comes back flagged (ok = 0) with the reason.
    AllItems all = {{&trainval, &test}};
    int n = trainval.n + test.n, batch = 64;
    Loader *loader = loader_create(n, sizeof(ImageSize), batch, threads, 0, decode_one, &all);
    loader_start(loader, NULL, n);
    ImageSize *sizes = xcalloc((size_t)n, sizeof(ImageSize));
    int bad[2] = {0, 0};
    char *bad_list = xstrdup("");
    Progress progress;
    progress_start(&progress, "decoding", "img", n);
    double t0 = now_seconds();
    Batch b;
    for (int done = 0; loader_next(loader, &b); done += b.n) {
        memcpy(sizes + done, b.data, (size_t)b.n * sizeof(ImageSize));
        for (int k = 0; k < b.n; k++) {
            if (b.ok[k]) continue;
            const PetItem *it = item_at(&all, b.index[k]);
            bad[b.index[k] >= trainval.n]++;
            fprintf(stderr, "\nunreadable: %s\n", b.errors[k]);
            char *l = xasprintf("%s%s%s.jpg (%s)", bad_list, *bad_list ? "; " : "", it->name,
                                b.errors[k]);
            free(bad_list);
            bad_list = l;
        }
        progress_update(&progress, done + b.n);
    }
    double seconds = now_seconds() - t0;
    progress_finish(&progress);
    int nthreads = loader_threads(loader);
    loader_destroy(loader);
    // endregion

    // Image sizes of the decodable images.
    int wmin = 1 << 30, wmax = 0, hmin = 1 << 30, hmax = 0, good = 0;
    double wsum = 0, hsum = 0;
    for (int i = 0; i < n; i++) {
        if (sizes[i].w == 0) continue;
        good++;
        wsum += sizes[i].w, hsum += sizes[i].h;
        if (sizes[i].w < wmin) wmin = sizes[i].w;
        if (sizes[i].w > wmax) wmax = sizes[i].w;
        if (sizes[i].h < hmin) hmin = sizes[i].h;
        if (sizes[i].h > hmax) hmax = sizes[i].h;
    }
    if (!good) wmin = hmin = 0;

    // region: count-classes
    // Images per breed in each split. Class ids need not be contiguous: a subset of the dataset
    // keeps the ids of the full one (1, 2 and 6 in the 3-breed set of the tests).
    Results res;
    results_init(&res);
    AtomicFile csv;
    char *csv_path = xasprintf("%s/01-data-loading.csv", results_dir);
    FILE *cf = afile_open(&csv, csv_path, err, sizeof err);
    if (!cf) die("%s", err);
    fprintf(cf, "class_id,breed,species,trainval,test\n");
    printf("\n%-4s %-28s %-8s %8s %8s\n", "id", "breed", "species", "trainval", "test");
    int classes = 0;
    char *ids = xstrdup("");
    for (int c = 0; c < PETS_NUM_CLASSES; c++) {
        if (!trainval.class_count[c] && !test.class_count[c]) continue;
        const PetSplit *s = trainval.class_count[c] ? &trainval : &test;
        const char *name = pets_class_name(s, c), *species = "";
        for (int i = 0; i < s->n; i++)
            if (s->items[i].label == c) species = s->items[i].species == 1 ? "cat" : "dog";
        printf("%-4d %-28s %-8s %8d %8d\n", c + 1, name, species, trainval.class_count[c],
               test.class_count[c]);
        fprintf(cf, "%d,%s,%s,%d,%d\n", c + 1, name, species, trainval.class_count[c],
                test.class_count[c]);
        char key[64];
        snprintf(key, sizeof key, "class_%d_name", c + 1);
        results_str(&res, key, name);
        snprintf(key, sizeof key, "class_%d_trainval", c + 1);
        results_int(&res, key, trainval.class_count[c]);
        snprintf(key, sizeof key, "class_%d_test", c + 1);
        results_int(&res, key, test.class_count[c]);
        char *l = xasprintf("%s%s%d", ids, classes ? " " : "", c + 1);
        free(ids);
        ids = l;
        classes++;
    }
    // endregion

    int n_extra;
    char *extra = unreferenced_files(root, &all, n, &n_extra);
    printf("\n%d classes; %d of %d images decoded in %.2f s (%.0f images/s, %d threads)\n", classes,
           n - bad[0] - bad[1], n, seconds, n / (seconds > 0 ? seconds : 1e-9), nthreads);
    printf("unreadable: %d in trainval, %d in test%s%s\n", bad[0], bad[1], *bad_list ? ": " : "",
           bad_list);
    printf("files in images/ used by no split: %d%s%s\n", n_extra, n_extra ? ": " : "", extra);

    results_str(&res, "root", root);
    results_int(&res, "trainval_images", trainval.n);
    results_int(&res, "test_images", test.n);
    results_int(&res, "total_images", n);
    results_int(&res, "num_classes", classes);
    results_str(&res, "class_ids", ids);
    results_int(&res, "trainval_unreadable", bad[0]);
    results_int(&res, "test_unreadable", bad[1]);
    results_int(&res, "unreadable", bad[0] + bad[1]);
    results_str(&res, "unreadable_files", *bad_list ? bad_list : "none");
    results_int(&res, "decoded_images", good);
    results_int(&res, "unreferenced_files", n_extra);
    results_str(&res, "unreferenced_list", n_extra ? extra : "none");
    results_int(&res, "width_min", wmin);
    results_int(&res, "width_max", wmax);
    results_num(&res, "width_mean", good ? wsum / good : 0);
    results_int(&res, "height_min", hmin);
    results_int(&res, "height_max", hmax);
    results_num(&res, "height_mean", good ? hsum / good : 0);
    results_num(&res, "seconds", seconds);
    results_num(&res, "images_per_second", n / (seconds > 0 ? seconds : 1e-9));
    results_int(&res, "threads", nthreads);
    char *json_path = xasprintf("%s/01-data-loading.json", results_dir);
    if (afile_commit(&csv, err, sizeof err) || results_write(&res, json_path, err, sizeof err))
        die("%s", err);
    printf("wrote %s and %s\n", json_path, csv_path);

    results_free(&res);
    free(json_path), free(csv_path), free(ids), free(extra), free(bad_list), free(sizes);
    pets_free(&trainval);
    pets_free(&test);
    return 0;
}
