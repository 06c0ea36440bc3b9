// bench-preprocess.c: how many images per second we decode and preprocess (file -> RGB -> resize
// 256 -> center crop 224 -> normalized CHW float32), with one thread and with all threads.
// `make bench` runs it through tests/bench-preprocess.sh beside torchvision's PIL pipeline on the
// same files (tests/bench_preprocess.py) and prints the ratio.
//
//   build/bench-preprocess [--root DIR] [--threads N] [--repeat R]
// DIR defaults to the shared 3-class Oxford-IIIT Pet subset when it exists, else
// data/oxford-iiit-pet. Every file DIR/images/*.jpg is timed (files that are not images, like the
// .mat files of the real dataset, are not named .jpg); files that fail to decode are counted and
// reported. Output: key=value lines (preprocess_img_per_s_1thread=..., preprocess_img_per_s_all=...).
#define _GNU_SOURCE
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/common.h"
#include "data/image.h"
#include "data/preprocess.h"
#ifdef HAVE_LOADER
#include "data/loader.h"
#else
#include <pthread.h>
#endif

#ifndef PETS_SHARED_DIR
#define PETS_SHARED_DIR "../shared/data/oxford-iiit-pet-3class"
#endif

typedef struct {
    char **paths;
    int n;
} FileList;

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void list_images(const char *root, FileList *fl) {
    char *dir = xasprintf("%s/images", root);
    DIR *d = opendir(dir);
    if (!d) die("%s: cannot open the images folder (pass --root DIR of an Oxford-IIIT Pet copy)", dir);
    int cap = 1024;
    fl->paths = xmalloc((size_t)cap * sizeof(char *));
    fl->n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".jpg") != 0) continue;
        if (fl->n == cap) fl->paths = xrealloc(fl->paths, (size_t)(cap *= 2) * sizeof(char *));
        fl->paths[fl->n++] = xasprintf("%s/%s", dir, e->d_name);
    }
    closedir(d);
    free(dir);
    if (fl->n == 0) die("%s/images: no .jpg files to time", root);
    qsort(fl->paths, (size_t)fl->n, sizeof(char *), cmp_str);
}

// One image: file -> normalized (3, 224, 224) float32.
static int load_one(void *ctx, int index, void *out, char *err, size_t errlen) {
    const FileList *fl = ctx;
    Image img;
    if (image_load(fl->paths[index], &img, err, errlen)) return -1;
    int rc = preprocess_image(&img, out);
    image_free(&img);
    if (rc) return set_err(err, errlen, "%s: preprocessing failed", fl->paths[index]);
    return 0;
}

// region: bench-single
// One thread; also splits the time into decoding (file read + stb) and preprocessing.
static double run_single(const FileList *fl, int repeat, int *failed, double *t_decode,
                         double *t_prep) {
    float *chw = xmalloc(PREP_FLOATS * sizeof(float));
    char err[512];
    *failed = 0;
    *t_decode = *t_prep = 0;
    double t0 = now_seconds();
    for (int r = 0; r < repeat; r++)
        for (int i = 0; i < fl->n; i++) {
            double a = now_seconds();
            Image img;
            if (image_load(fl->paths[i], &img, err, sizeof err)) {
                if (r == 0) warn("%s", err);
                (*failed)++;
                continue;
            }
            double b = now_seconds();
            if (preprocess_image(&img, chw)) {
                if (r == 0) warn("%s: preprocessing failed", fl->paths[i]);
                (*failed)++;
            }
            image_free(&img);
            *t_decode += b - a;
            *t_prep += now_seconds() - b;
        }
    double dt = now_seconds() - t0;
    free(chw);
    return dt;
}
// endregion

#ifdef HAVE_LOADER
static double run_threads(const FileList *fl, int repeat, int nthreads) {
    Loader *l = loader_create(fl->n, PREP_FLOATS * sizeof(float), 32, nthreads, 0, load_one,
                              (void *)fl);
    double t0 = now_seconds();
    for (int r = 0; r < repeat; r++) {
        loader_start(l, NULL, fl->n);
        Batch b;
        while (loader_next(l, &b)) {
        }
    }
    double dt = now_seconds() - t0;
    loader_destroy(l);
    return dt;
}
#else
// Fallback when the batch loader library is not built: a shared counter over plain pthreads.
typedef struct {
    const FileList *fl;
    int repeat, next;
    pthread_mutex_t mu;
} Work;

static void *worker(void *arg) {
    Work *w = arg;
    float *chw = xmalloc(PREP_FLOATS * sizeof(float));
    char err[512];
    for (;;) {
        pthread_mutex_lock(&w->mu);
        int j = w->next++;
        pthread_mutex_unlock(&w->mu);
        if (j >= w->fl->n * w->repeat) break;
        load_one((void *)w->fl, j % w->fl->n, chw, err, sizeof err);
    }
    free(chw);
    return NULL;
}

static double run_threads(const FileList *fl, int repeat, int nthreads) {
    Work w = {.fl = fl, .repeat = repeat, .next = 0};
    pthread_mutex_init(&w.mu, NULL);
    pthread_t *th = xmalloc((size_t)nthreads * sizeof(pthread_t));
    double t0 = now_seconds();
    for (int i = 0; i < nthreads; i++) pthread_create(&th[i], NULL, worker, &w);
    for (int i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
    double dt = now_seconds() - t0;
    free(th);
    pthread_mutex_destroy(&w.mu);
    return dt;
}
#endif

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench-preprocess [--root DIR] [--threads N] [--repeat R]\n"
            "  Times decode + preprocess (resize 256, crop 224, normalize) of DIR/images/*.jpg.\n"
            "  --root DIR    dataset root (default: %s if present, else data/oxford-iiit-pet)\n"
            "  --threads N   threads for the parallel run (default: all cores)\n"
            "  --repeat R    passes over the files in each run (default 1)\n",
            PETS_SHARED_DIR);
}

int main(int argc, char **argv) {
    const char *root = NULL;
    int nthreads = 0, repeat = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--root") && i + 1 < argc) {
            root = argv[++i];
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            nthreads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) {
            repeat = atoi(argv[++i]);
        } else {
            usage(stderr);
            die("unknown or incomplete argument '%s'", argv[i]);
        }
    }
    if (!root) root = file_exists(PETS_SHARED_DIR "/images") ? PETS_SHARED_DIR : "data/oxford-iiit-pet";
    if (nthreads <= 0) nthreads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (nthreads <= 0) nthreads = 1;
    if (repeat <= 0) die("--repeat must be at least 1");

    FileList fl;
    list_images(root, &fl);
    int failed;
    double t_dec, t_prep;
    // warm-up: file cache, allocator, lookup tables
    FileList warm = {fl.paths, fl.n < 16 ? fl.n : 16};
    run_single(&warm, 1, &failed, &t_dec, &t_prep);

    double t1 = run_single(&fl, repeat, &failed, &t_dec, &t_prep);
    double tn = run_threads(&fl, repeat, nthreads);
    double n = (double)fl.n * repeat;
    printf("preprocess_root=%s\n", root);
    printf("preprocess_images=%d\n", fl.n);
    printf("preprocess_failed=%d\n", failed / repeat);
    printf("preprocess_threads=%d\n", nthreads);
    printf("preprocess_resize_simd=%s\n", resize_uses_avx512() ? "avx512" : "scalar");
    printf("preprocess_img_per_s_1thread=%.1f\n", n / t1);
    printf("preprocess_img_per_s_all=%.1f\n", n / tn);
    printf("preprocess_decode_ms_per_img=%.3f\n", 1e3 * t_dec / n);
    printf("preprocess_resize_normalize_ms_per_img=%.3f\n", 1e3 * t_prep / n);
#ifdef HAVE_LOADER
    printf("preprocess_parallel_via=loader\n");
#else
    printf("preprocess_parallel_via=pthreads\n");
#endif
    for (int i = 0; i < fl.n; i++) free(fl.paths[i]);
    free(fl.paths);
    return 0;
}
