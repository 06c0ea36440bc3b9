// 03-preprocessing.c: chapter 3, preparing images exactly as the pretrained network expects.
//
// ResNet34 learnt its ImageNet weights on images prepared one particular way, and the tutorial
// feeds it the Oxford pets prepared the same way: ResNet34_Weights.IMAGENET1K_V1.transforms(), i.e.
//   1. resize so that the shorter side is 256 pixels (Pillow's antialiased bilinear filter),
//   2. cut the central 224 x 224 square,
//   3. scale the 0..255 values to 0..1 and normalise each channel with ImageNet's mean and std,
//   4. lay the result out as a (3, 224, 224) float tensor, channel first.
// This program shows each step on one image (a figure), measures what normalisation does to the
// whole split (per-channel mean and std before and after), and, with --dump, writes one image's
// tensor so that other tools (and the PyTorch reference scripts) can compare against it. With
// --compare DIR it also measures how far our tensors are from torchvision's, on the crops that
// tests/ref_preprocess.py saved from torchvision (tests/fixtures/preprocess/real: the PNG, the GIF
// and a sample of JPEGs of the dataset), so that the report prints measured differences.
//
//   build/03-preprocessing [--root DIR] [--results DIR] [--out PATH] [--image PATH] [--samples N]
//                          [--compare DIR]
//   build/03-preprocessing --image PATH --dump OUT.f32
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "data/dataset.h"
#include "report/figure.h"
#include "data/image.h"
#include "data/loader.h"
#include "data/preprocess.h"
#include "experiment/results.h"
#include "core/sha256.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: 03-preprocessing [--root DIR] [--results DIR] [--out PATH] [--image PATH]\n"
            "                        [--samples N] [--threads N] [--font FILE.ttf] [--compare DIR]\n"
            "       03-preprocessing --image PATH --dump OUT.f32\n"
            "Shows torchvision's ImageNet preprocessing (resize 256, center crop 224, normalize)\n"
            "on one image and measures per-channel mean and std over the trainval split.\n"
            "  --root DIR      dataset root (default data/oxford-iiit-pet)\n"
            "  --results DIR   where 03-preprocessing.json is written (default results)\n"
            "  --out PATH      the figure (default figures/preprocessing.png)\n"
            "  --image PATH    the image shown (default: the first trainval image)\n"
            "  --samples N     images used for the statistics, evenly spaced (default 0 = all)\n"
            "  --compare DIR   also compare with torchvision's crops DIR/NAME.crop.png of the\n"
            "                  images --root holds (tests/fixtures/preprocess/real)\n"
            "  --dump OUT.f32  only write --image's tensor: 3x224x224 little-endian float32, CHW\n");
}

// Writes the tensor as little-endian float32, atomically.
static int dump_tensor(const char *path, const float *chw, char *err, size_t errlen) {
    uint8_t *bytes = xmalloc(PREP_FLOATS * 4);
    for (int i = 0; i < PREP_FLOATS; i++) {
        uint32_t u;
        memcpy(&u, &chw[i], 4);
        for (int k = 0; k < 4; k++) bytes[4 * i + k] = (uint8_t)(u >> (8 * k));
    }
    int rc = write_file_atomic(path, bytes, PREP_FLOATS * 4, err, errlen);
    free(bytes);
    return rc;
}

// The loader's per-item function for the statistics: the (224, 224, 3) uint8 crop of an image.
static int load_crop(void *ctx, int index, void *out, char *err, size_t errlen) {
    const PetSplit *split = ctx;
    Image img;
    if (image_load(split->items[index].path, &img, err, errlen)) return -1;
    int rc = preprocess_u8(&img, out);
    image_free(&img);
    return rc ? set_err(err, errlen, "%s: preprocessing failed", split->items[index].path) : 0;
}

// ----------------------------------------------------------------------------
// --compare: our tensors against torchvision's

typedef struct {
    int n;           // images compared
    double max, sum; // largest absolute difference over all their values; sum of per-image means
    int levels;      // largest difference of the uint8 crops, in levels of 255
} Diff;

// The SHA-256 of `n` bytes as 64 hex digits.
static void sha256_hex(const uint8_t *buf, size_t n, char hex[65]) {
    Sha256 h;
    sha256_init(&h);
    sha256_update(&h, buf, n);
    sha256_final_hex(&h, hex);
}

// region: compare
// torchvision's float tensor is a function of its uint8 224x224 crop, so the fixtures hold
// torchvision's crops (NAME.crop.png, with the SHA-256 of each source image in sources.sha256)
// and both crops go through the same normalisation. The differences are those of the normalised
// tensors, grouped by the format of the source file (by content).
static void compare_torchvision(const char *dir, const char *root, Diff diff[3]) {
    char err[1024], hex[65], want[65], name[256];
    char *list_path = xasprintf("%s/sources.sha256", dir);
    FILE *list = fopen(list_path, "r");
    if (!list) die("--compare: cannot open %s (the fixtures of tests/ref_preprocess.py are in "
                   "tests/fixtures/preprocess/real)", list_path);
    uint8_t *ours = xmalloc(PREP_FLOATS);
    float *a = xmalloc(PREP_FLOATS * sizeof(float)), *b = xmalloc(PREP_FLOATS * sizeof(float));
    while (fscanf(list, "%64s %255s", want, name) == 2) {
        char *path = xasprintf("%s/images/%s", root, name);
        char *ref_path = xasprintf("%s/%.*s.crop.png", dir, (int)strcspn(name, "."), name);
        size_t n;
        uint8_t *buf = file_exists(path) ? read_file(path, &n, (size_t)512 << 20, err, sizeof err)
                                         : NULL;
        if (buf) sha256_hex(buf, n, hex);
        Image img, ref;
        ImageInfo info;
        if (!buf || strcmp(hex, want)) {
            printf("compare: %s: %s, skipped\n", path,
                   buf ? "not the file the fixture was made from" : "not in this dataset");
        } else if (image_probe(buf, n, &info) || image_decode(buf, n, path, &img, err, sizeof err) ||
                   image_load(ref_path, &ref, err, sizeof err)) {
            die("--compare: %s", err);
        } else {
            if (ref.w != PREP_CROP || ref.h != PREP_CROP)
                die("%s: %dx%d, not a %d x %d crop", ref_path, ref.w, ref.h, PREP_CROP, PREP_CROP);
            if (preprocess_u8(&img, ours)) die("%s: preprocessing failed", path);
            normalize_chw(ours, a);
            normalize_chw(ref.rgb, b);
            double mx = 0, sum = 0;
            Diff *g = &diff[info.format == IMAGE_PNG ? 1 : info.format == IMAGE_GIF ? 2 : 0];
            for (int k = 0; k < PREP_FLOATS; k++) {
                double v = fabs((double)a[k] - b[k]);
                mx = fmax(mx, v), sum += v;
                int l = abs((int)ours[k] - (int)ref.rgb[k]);
                if (l > g->levels) g->levels = l;
            }
            g->n++, g->max = fmax(g->max, mx), g->sum += sum / PREP_FLOATS;
            printf("compare: %-24s %-4s %-4s max abs diff %.6f, mean %.6f\n", name,
                   image_format_name(info.format), info.mode, mx, sum / PREP_FLOATS);
            image_free(&img), image_free(&ref);
        }
        free(buf), free(path), free(ref_path);
    }
    fclose(list);
    free(list_path), free(ours), free(a), free(b);
}
// endregion

// A normalised channel shown as an image: values -2.5..2.5 mapped to 0..255 (clipped).
static uint8_t show(float v) {
    float u = (v + 2.5f) / 5.0f * 255.0f + 0.5f;
    return (uint8_t)(u < 0 ? 0 : u > 255 ? 255 : u);
}

// ----------------------------------------------------------------------------
// the steps of main

// region: dump
// --dump: one image's tensor, for comparisons with other tools.
static int dump_image(const char *image_path, const char *dump) {
    if (!image_path) die("--dump needs --image PATH");
    char err[1024];
    float *chw = xmalloc(PREP_FLOATS * sizeof(float)); // (3, 224, 224)
    Image img;
    if (image_load(image_path, &img, err, sizeof err)) die("%s", err);
    if (preprocess_image(&img, chw)) die("%s: preprocessing failed", image_path);
    if (dump_tensor(dump, chw, err, sizeof err)) die("%s", err);
    printf("wrote %s: (3, 224, 224) float32 little-endian, from %s (%dx%d)\n", dump, image_path,
           img.w, img.h);
    image_free(&img);
    free(chw);
    return 0;
}
// endregion

// The figure: original | resized + cropped | normalised (chw), each under a two-line title.
static void draw_steps(Image *fig, const Font *font, const Image *orig, const Image *resized,
                       const Image *crop, const float *chw) {
    const int pw = 320, ph = 330, top = 62;
    Image norm = {PREP_CROP, PREP_CROP, xmalloc(PREP_FLOATS)};
    for (int i = 0; i < PREP_CROP * PREP_CROP; i++)
        for (int c = 0; c < 3; c++) norm.rgb[3 * i + c] = show(chw[c * PREP_CROP * PREP_CROP + i]);
    canvas_new(fig, 3 * pw, ph, 255, 255, 255);
    char line[3][2][128];
    snprintf(line[0][0], 128, "original");
    snprintf(line[0][1], 128, "%d x %d pixels", orig->w, orig->h);
    snprintf(line[1][0], 128, "resized to %d x %d, center crop", resized->w, resized->h);
    snprintf(line[1][1], 128, "%d x %d, uint8 (true size)", PREP_CROP, PREP_CROP);
    snprintf(line[2][0], 128, "normalized (x/255 - mean) / std");
    snprintf(line[2][1], 128, "values -2.5..2.5 shown as 0..255");
    if (canvas_blit_fit(fig, orig, 10, top, pw - 20, ph - top - 10)) die("figure: resize failed");
    canvas_blit(fig, crop, pw + (pw - PREP_CROP) / 2, top + (ph - top - PREP_CROP) / 2);
    canvas_blit(fig, &norm, 2 * pw + (pw - PREP_CROP) / 2, top + (ph - top - PREP_CROP) / 2);
    for (int p = 0; p < 3; p++) {
        draw_text_centered(fig, font, line[p][0], p * pw + pw / 2, 8, 18.0f, pw - 8, 0, 0, 0);
        draw_text_centered(fig, font, line[p][1], p * pw + pw / 2, 32, 15.0f, pw - 8, 80, 80, 80);
    }
    free(norm.rgb);
}

// Sums over the crops of the statistics pass, per channel.
typedef struct {
    int n, used, unreadable, threads; // n: images asked for; used: those preprocessed
    double sum[3], sq[3];             // of the pixels scaled to 0..1, and of their squares
    double nsum[3], nsq[3];           // of the normalised values, and of their squares
    double seconds;
} ChannelSums;

// region: channel-stats
// Per-channel mean and std over the split, of the pixels scaled to 0..1 and of the normalised
// tensor (summed here, divided out in record_channel_stats): normalisation moves each channel to
// roughly mean 0 and std 1, as on ImageNet.
static ChannelSums channel_sums(PetSplit *split, int samples, int threads) {
    ChannelSums s = {.n = samples > 0 && samples < split->n ? samples : split->n};
    int *order = xmalloc((size_t)s.n * sizeof(int));
    for (int i = 0; i < s.n; i++) order[i] = (int)((long)i * split->n / s.n);
    Loader *loader = loader_create(split->n, PREP_CROP * PREP_CROP * 3, 16, threads, 0, load_crop,
                                   split);
    loader_start(loader, order, s.n);
    float *chw = xmalloc(PREP_FLOATS * sizeof(float)); // (3, 224, 224)
    Progress progress;
    progress_start(&progress, "preprocessing", "img", s.n);
    double t0 = now_seconds();
    Batch b;
    for (int done = 0; loader_next(loader, &b); done += b.n, progress_update(&progress, done)) {
        for (int k = 0; k < b.n; k++) {
            if (!b.ok[k]) {
                warn("%s", b.errors[k]);
                s.unreadable++;
                continue;
            }
            const uint8_t *hwc = (const uint8_t *)b.data + (size_t)k * PREP_CROP * PREP_CROP * 3;
            normalize_chw(hwc, chw);
            for (int c = 0; c < 3; c++)
                for (int i = 0; i < PREP_CROP * PREP_CROP; i++) {
                    double x = hwc[3 * i + c] / 255.0, v = chw[c * PREP_CROP * PREP_CROP + i];
                    s.sum[c] += x, s.sq[c] += x * x, s.nsum[c] += v, s.nsq[c] += v * v;
                }
            s.used++;
        }
    }
    s.seconds = now_seconds() - t0;
    progress_finish(&progress);
    s.threads = loader_threads(loader);
    loader_destroy(loader);
    free(order), free(chw);
    return s;
}
// endregion

// The means and standard deviations of the channels, printed and recorded.
static void record_channel_stats(Results *res, const ChannelSums *s) {
    double count = (double)s->used * PREP_CROP * PREP_CROP;
    const char *ch[3] = {"r", "g", "b"};
    printf("%d images (%d unreadable), %.2f s; per channel over the crops:\n", s->used,
           s->unreadable, s->seconds);
    for (int c = 0; c < 3; c++) {
        double m = s->sum[c] / count, sd = sqrt(fmax(s->sq[c] / count - m * m, 0));
        double nm = s->nsum[c] / count, ns = sqrt(fmax(s->nsq[c] / count - nm * nm, 0));
        printf("  %s: pixels mean %.4f std %.4f (ImageNet %.3f, %.3f) -> normalized mean %.4f "
               "std %.4f\n", ch[c], m, sd, PREP_MEAN[c], PREP_STD[c], nm, ns);
        char key[64];
        snprintf(key, sizeof key, "pixel_mean_%s", ch[c]), results_num(res, key, m);
        snprintf(key, sizeof key, "pixel_std_%s", ch[c]), results_num(res, key, sd);
        snprintf(key, sizeof key, "norm_mean_%s", ch[c]), results_num(res, key, nm);
        snprintf(key, sizeof key, "norm_std_%s", ch[c]), results_num(res, key, ns);
        snprintf(key, sizeof key, "imagenet_mean_%s", ch[c]), results_num(res, key, round(PREP_MEAN[c] * 1e6) / 1e6);
        snprintf(key, sizeof key, "imagenet_std_%s", ch[c]), results_num(res, key, round(PREP_STD[c] * 1e6) / 1e6);
    }
}

// --compare: the differences from torchvision, per format of the source file, and whether they
// are within the limits the tests hold them to.
static void record_compare(Results *res, const Diff diff[3]) {
    const char *fmt[3] = {"jpeg", "png", "gif"};
    for (int f = 0; f < 3; f++) {
        char key[64];
        snprintf(key, sizeof key, "tv_%s_images", fmt[f]), results_int(res, key, diff[f].n);
        snprintf(key, sizeof key, "tv_%s_max_abs_diff", fmt[f]);
        results_num(res, key, diff[f].max);
        snprintf(key, sizeof key, "tv_%s_mean_abs_diff", fmt[f]);
        results_num(res, key, diff[f].n ? diff[f].sum / diff[f].n : 0);
        snprintf(key, sizeof key, "tv_%s_max_levels", fmt[f]);
        results_int(res, key, diff[f].levels);
    }
    results_int(res, "tv_images", diff[0].n + diff[1].n + diff[2].n);
    int within = diff[0].max < PREP_TV_JPEG_MAX_LIMIT &&
                 (diff[0].n ? diff[0].sum / diff[0].n : 0) < PREP_TV_JPEG_MEAN_LIMIT &&
                 diff[1].max < PREP_TV_EXACT_LIMIT && diff[2].max < PREP_TV_EXACT_LIMIT;
    if (!within) warn("the tensors differ from torchvision's by more than the limits "
                      "(%g for PNG and GIF; %g max, %g mean for JPEG)", PREP_TV_EXACT_LIMIT,
                      PREP_TV_JPEG_MAX_LIMIT, PREP_TV_JPEG_MEAN_LIMIT);
    results_int(res, "tv_within_limits", within);
}

int main(int argc, char **argv) {
    const char *root = "data/oxford-iiit-pet", *results_dir = "results";
    const char *out = "figures/preprocessing.png", *image_path = NULL, *dump = NULL;
    const char *font_path = FIGURE_FONT_DEFAULT, *compare = NULL;
    int samples = 0, threads = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage(stdout), 0;
        else if (!strcmp(argv[i], "--root") && i + 1 < argc) root = argv[++i];
        else if (!strcmp(argv[i], "--results") && i + 1 < argc) results_dir = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--image") && i + 1 < argc) image_path = argv[++i];
        else if (!strcmp(argv[i], "--dump") && i + 1 < argc) dump = argv[++i];
        else if (!strcmp(argv[i], "--samples") && i + 1 < argc) samples = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--font") && i + 1 < argc) font_path = argv[++i];
        else if (!strcmp(argv[i], "--compare") && i + 1 < argc) compare = argv[++i];
        else return usage(stderr), fprintf(stderr, "error: unknown argument '%s'\n", argv[i]), 2;
    }
    if (dump) return dump_image(image_path, dump);
    char err[1024];
    PetSplit split;
    if (pets_open(root, "trainval", &split, err, sizeof err)) die("%s", err);
    Font *font = font_load(font_path, err, sizeof err);
    if (!font) die("%s", err);
    if (!image_path) image_path = split.items[0].path;
    Diff diff[3] = {{0}}; // JPEG, PNG, GIF
    if (compare) compare_torchvision(compare, root, diff);

    // region: steps
    // The four steps on one image, kept apart so that the figure can show each.
    float *chw = xmalloc(PREP_FLOATS * sizeof(float)); // (3, 224, 224)
    Image orig, resized, crop;
    if (image_load(image_path, &orig, err, sizeof err)) die("%s", err);
    if (resize_shorter_side(&orig, PREP_RESIZE, &resized)) die("%s: resize failed", image_path);
    if (center_crop(&resized, PREP_CROP, &crop)) die("%s: center crop failed", image_path);
    normalize_chw(crop.rgb, chw); // (224, 224, 3) uint8 -> (3, 224, 224) float
    // endregion
    float *whole = xmalloc(PREP_FLOATS * sizeof(float));
    if (preprocess_image(&orig, whole)) die("%s: preprocessing failed", image_path);
    float maxdiff = 0, vmin = chw[0], vmax = chw[0];
    for (int i = 0; i < PREP_FLOATS; i++) {
        maxdiff = fmaxf(maxdiff, fabsf(whole[i] - chw[i]));
        vmin = fminf(vmin, chw[i]), vmax = fmaxf(vmax, chw[i]);
    }
    if (maxdiff != 0) die("internal: the steps and preprocess_image differ by %g", maxdiff);
    Image fig; // written at the end, with the results
    draw_steps(&fig, font, &orig, &resized, &crop, chw);

    ChannelSums sums = channel_sums(&split, samples, threads);
    if (sums.used == 0) die("none of the %d images could be preprocessed", sums.n);

    Results res;
    results_init(&res);
    record_channel_stats(&res, &sums);
    if (compare) record_compare(&res, diff);
    results_num(&res, "tv_exact_limit", PREP_TV_EXACT_LIMIT);
    results_num(&res, "tv_jpeg_max_limit", PREP_TV_JPEG_MAX_LIMIT);
    results_num(&res, "tv_jpeg_mean_limit", PREP_TV_JPEG_MEAN_LIMIT);
    results_str(&res, "split", "trainval");
    results_int(&res, "samples", sums.n);
    results_int(&res, "samples_used", sums.used);
    results_int(&res, "unreadable", sums.unreadable);
    results_str(&res, "example_image", image_path);
    results_int(&res, "example_width", orig.w);
    results_int(&res, "example_height", orig.h);
    results_int(&res, "resized_width", resized.w);
    results_int(&res, "resized_height", resized.h);
    results_int(&res, "resize_shorter_side", PREP_RESIZE);
    results_int(&res, "crop_size", PREP_CROP);
    results_num(&res, "example_min", vmin);
    results_num(&res, "example_max", vmax);
    results_str(&res, "figure", out);
    results_num(&res, "seconds", sums.seconds);
    results_num(&res, "images_per_second", sums.n / (sums.seconds > 0 ? sums.seconds : 1e-9));
    results_int(&res, "threads", sums.threads);
    // The outputs, once everything has worked: the figure, then the numbers.
    char *json = xasprintf("%s/03-preprocessing.json", results_dir);
    if (image_write_png(out, &fig, err, sizeof err) || results_write(&res, json, err, sizeof err))
        die("%s", err);
    printf("wrote %s and %s\n", out, json);

    results_free(&res);
    free(json), free(whole), free(chw);
    image_free(&fig), image_free(&orig), image_free(&resized), image_free(&crop);
    font_free(font);
    pets_free(&split);
    return 0;
}
