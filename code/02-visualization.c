// 02-visualization.c: chapter 2, looking at the data.
//
// Before training anything, the tutorial draws a grid of sample images with their breed as title:
// a 4-column by 5-row matplotlib figure of dataset[i * 50] for i = 1..20 of the trainval split.
// This program draws the same figure as a PNG: each image is scaled to fit its panel (keeping its
// aspect ratio, never cropped, as imshow shows it) under a title with the breed name, rendered
// with stb_truetype in DejaVu Sans. A split with fewer than 1001 images cannot supply index
// 20 * 50 = 1000, so there we take 20 evenly spaced images instead (index i * n / 20, i = 0..19).
//
//   build/02-visualization [--root DIR] [--out PATH] [--results DIR] [--font FILE.ttf]
//
// Writes the figure (default figures/pets.png) and <results>/02-visualization.json, both
// atomically. An image that cannot be decoded gets a grey panel titled "unreadable: <name>" and
// a warning; the figure is still made.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "data/dataset.h"
#include "report/figure.h"
#include "data/image.h"
#include "data/loader.h"
#include "experiment/results.h"

#define COLS 4
#define ROWS 5
#define PANELS (COLS * ROWS)
#define PANEL_W 300  // pixels per panel, title included
#define PANEL_H 270
#define TITLE_H 34   // the title band above each picture
#define MARGIN 10    // around each picture
#define TITLE_PX 20.0f

static void usage(FILE *f) {
    fprintf(f,
            "usage: 02-visualization [--root DIR] [--out PATH] [--results DIR] [--font FILE.ttf]\n"
            "Draws the tutorial's sample figure: a 4x5 grid of trainval images titled with their\n"
            "breed (dataset[i*50], i = 1..20; 20 evenly spaced images when the split is smaller).\n"
            "  --root DIR      dataset root (default data/oxford-iiit-pet; `make data` gets it)\n"
            "  --out PATH      the PNG to write (default figures/pets.png)\n"
            "  --results DIR   where 02-visualization.json is written (default results)\n"
            "  --font FILE     TrueType font for the titles (default %s)\n",
            FIGURE_FONT_DEFAULT);
}

// region: pick-samples
// The tutorial's indices: dataset[i * 50] for i = 1..20, when the split is large enough.
static void pick_samples(int n, int idx[PANELS]) {
    for (int i = 0; i < PANELS; i++)
        idx[i] = n > PANELS * 50 ? (i + 1) * 50 : (int)((long)i * n / PANELS);
}
// endregion

// Each panel is decoded by the loader's worker threads; the decoded Image is handed over through
// the sample buffer (the consumer owns and frees it).
typedef struct {
    Image img;
} Decoded;

static int decode_panel(void *ctx, int index, void *out, char *err, size_t errlen) {
    const PetSplit *split = ctx;
    Decoded *d = out;
    return image_load(split->items[index].path, &d->img, err, errlen);
}

int main(int argc, char **argv) {
    const char *root = "data/oxford-iiit-pet", *out = "figures/pets.png", *results_dir = "results";
    const char *font_path = FIGURE_FONT_DEFAULT;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return usage(stdout), 0;
        else if (!strcmp(argv[i], "--root") && i + 1 < argc) root = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--results") && i + 1 < argc) results_dir = argv[++i];
        else if (!strcmp(argv[i], "--font") && i + 1 < argc) font_path = argv[++i];
        else return usage(stderr), fprintf(stderr, "error: unknown argument '%s'\n", argv[i]), 2;
    }
    char err[1024];
    PetSplit split;
    if (pets_open(root, "trainval", &split, err, sizeof err)) die("%s", err);
    Font *font = font_load(font_path, err, sizeof err);
    if (!font) die("%s", err);

    int idx[PANELS];
    pick_samples(split.n, idx);

    // region: draw-grid
    // A white canvas of 4 x 5 panels; in each, the breed as title and the picture scaled to fit.
    Image fig;
    canvas_new(&fig, COLS * PANEL_W, ROWS * PANEL_H, 255, 255, 255);
    Loader *loader = loader_create(split.n, sizeof(Decoded), PANELS, 0, 1, decode_panel, &split);
    loader_start(loader, idx, PANELS);
    Batch b;
    if (!loader_next(loader, &b)) die("internal: no batch of panels");
    int unreadable = 0;
    for (int p = 0; p < PANELS; p++) {
        int x = (p % COLS) * PANEL_W, y = (p / COLS) * PANEL_H;
        const PetItem *it = &split.items[idx[p]];
        Decoded *d = (Decoded *)b.data + p;
        char title[300];
        if (b.ok[p]) {
            snprintf(title, sizeof title, "%s", pets_class_name(&split, it->label));
            if (canvas_blit_fit(&fig, &d->img, x + MARGIN, y + TITLE_H, PANEL_W - 2 * MARGIN,
                                PANEL_H - TITLE_H - MARGIN))
                die("cannot scale %s for the figure", it->path);
            image_free(&d->img);
        } else {
            warn("%s", b.errors[p]);
            unreadable++;
            snprintf(title, sizeof title, "unreadable: %s", it->name);
            canvas_fill(&fig, x + MARGIN, y + TITLE_H, PANEL_W - 2 * MARGIN,
                        PANEL_H - TITLE_H - MARGIN, 200, 200, 200);
        }
        draw_text_centered(&fig, font, title, x + PANEL_W / 2, y + 6, TITLE_PX, PANEL_W - 8, 0, 0,
                           0);
    }
    loader_destroy(loader);
    if (image_write_png(out, &fig, err, sizeof err)) die("%s", err);
    // endregion

    // The indices and breeds shown, for the chapter text.
    Results res;
    results_init(&res);
    char *list = xstrdup(""), *names = xstrdup("");
    for (int p = 0; p < PANELS; p++) {
        char *l = xasprintf("%s%s%d", list, p ? " " : "", idx[p]);
        char *m = xasprintf("%s%s%s", names, p ? ", " : "",
                            pets_class_name(&split, split.items[idx[p]].label));
        free(list), free(names);
        list = l, names = m;
    }
    results_str(&res, "figure", out);
    results_str(&res, "split", "trainval");
    results_int(&res, "split_images", split.n);
    results_int(&res, "panels", PANELS);
    results_int(&res, "columns", COLS);
    results_int(&res, "rows", ROWS);
    results_str(&res, "indices", list);
    results_int(&res, "tutorial_indices", split.n > PANELS * 50);
    results_int(&res, "index_step", split.n > PANELS * 50 ? 50 : split.n / PANELS);
    results_str(&res, "breeds", names);
    results_int(&res, "unreadable", unreadable);
    results_int(&res, "width", fig.w);
    results_int(&res, "height", fig.h);
    char *json = xasprintf("%s/02-visualization.json", results_dir);
    if (results_write(&res, json, err, sizeof err)) die("%s", err);
    printf("wrote %s (%dx%d, trainval images %s) and %s\n", out, fig.w, fig.h, list, json);

    results_free(&res);
    free(json), free(list), free(names);
    image_free(&fig);
    font_free(font);
    pets_free(&split);
    return 0;
}
