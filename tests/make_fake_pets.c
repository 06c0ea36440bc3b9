// tests/make_fake_pets.c: writes a tiny synthetic Oxford-IIIT Pet root for the program tests.
//   make-fake-pets DIR
//   make-fake-pets DIR --trainval N
// DIR/images holds PNGs named .jpg (written with image_write_png), real JPEGs (stb_image_write),
// a truncated JPEG (Bengal_3.jpg, in trainval), a MATLAB-like file; one test image is listed but
// missing (Bengal_9.jpg). Classes 1, 6 and 37 only; the annotation files carry '#' comment lines.
// Expected: trainval 24 images (8 per class), test 10; unreadable: Bengal_3 (truncated),
// Bengal_9 (missing).
// With --trainval N: a large split instead (for the sample choice of 02-visualization): N tiny
// PNG images in trainval, in three breeds of N/3 (Abyssinian, Bengal, yorkshire_terrier, the
// remainder in the last) numbered 1.., and 3 test images; no odd files.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "data/image.h"

#include <stb_image_write.h> // implementation compiled in code/data/image.c (no stdio: to a buffer)

static const char *breeds[3] = {"Abyssinian", "Bengal", "yorkshire_terrier"};
static const int ids[3] = {1, 6, 37};

typedef struct {
    uint8_t *data;
    size_t n;
} Buf;

static void buf_write(void *ctx, void *data, int size) {
    Buf *b = ctx;
    b->data = xrealloc(b->data, b->n + (size_t)size);
    memcpy(b->data + b->n, data, (size_t)size);
    b->n += (size_t)size;
}

// A JPEG (quality 90) of img, keeping only the first `keep` tenths of its bytes (10 = all).
static void write_jpeg(const char *path, const Image *img, int keep) {
    char err[512];
    Buf b = {0};
    if (!stbi_write_jpg_to_func(buf_write, &b, img->w, img->h, 3, img->rgb, 90))
        die("cannot encode %s", path);
    if (write_file_atomic(path, b.data, b.n * (size_t)keep / 10, err, sizeof err)) die("%s", err);
    free(b.data);
}

// A picture with a gradient and a disc, different per image.
static Image make_picture(int k) {
    Image img = {160 + 37 * (k % 5), 120 + 23 * (k % 7), NULL};
    img.rgb = xmalloc((size_t)img.w * img.h * 3);
    for (int y = 0; y < img.h; y++)
        for (int x = 0; x < img.w; x++) {
            uint8_t *p = img.rgb + ((size_t)y * img.w + x) * 3;
            int dx = x - img.w / 2, dy = y - img.h / 2, in = dx * dx + dy * dy < (img.h * img.h) / 9;
            p[0] = (uint8_t)(in ? 40 * k : x * 255 / img.w);
            p[1] = (uint8_t)(in ? 200 : y * 255 / img.h);
            p[2] = (uint8_t)((x + y + 17 * k) & 255);
        }
    return img;
}

// The --trainval N dataset.
static void write_many(const char *root, int n) {
    char err[512];
    char *dir = xasprintf("%s/images", root), *ann = xasprintf("%s/annotations", root);
    if (mkdir_p(dir) || mkdir_p(ann)) die("cannot create %s and %s", dir, ann);
    const char *names[3] = {"trainval", "test", "list"};
    FILE *files[3];
    for (int s = 0; s < 3; s++) {
        char *p = xasprintf("%s/%s.txt", ann, names[s]);
        if (!(files[s] = fopen(p, "w"))) die("cannot write %s", p);
        free(p);
    }
    int per = n / 3;
    for (int i = 0; i < n + 3; i++) {
        int test = i >= n, c = test ? i - n : i / per < 3 ? i / per : 2;
        int num = test ? 100000 + c : i - c * per + 1;
        Image img = {8, 6, xmalloc(8 * 6 * 3)};
        for (int k = 0; k < 8 * 6 * 3; k++) img.rgb[k] = (uint8_t)(i * 7 + k * 13);
        char *path = xasprintf("%s/%s_%d.jpg", dir, breeds[c], num);
        uint8_t *png;
        size_t bytes;
        FILE *f = fopen(path, "wb"); // plain writes: image_write_png's fsync per file is slow here
        if (!f || image_encode_png(&img, &png, &bytes, err, sizeof err) ||
            fwrite(png, 1, bytes, f) != bytes || fclose(f))
            die("cannot write %s", path);
        free(png);
        int species = c == 2 ? 2 : 1, breed = c == 2 ? 25 : c + 1;
        fprintf(files[test], "%s_%d %d %d %d\n", breeds[c], num, ids[c], species, breed);
        fprintf(files[2], "%s_%d %d %d %d\n", breeds[c], num, ids[c], species, breed);
        image_free(&img);
        free(path);
    }
    for (int s = 0; s < 3; s++)
        if (fclose(files[s])) die("cannot write the annotations of %s", root);
    free(dir), free(ann);
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[2], "--trainval") && atoi(argv[3]) >= 3) {
        write_many(argv[1], atoi(argv[3]));
        return 0;
    }
    if (argc != 2) die("usage: make-fake-pets DIR [--trainval N]");
    char err[512];
    char *dir = xasprintf("%s/images", argv[1]);
    if (mkdir_p(dir)) die("cannot create %s", dir);
    char *ann = xasprintf("%s/annotations", argv[1]);
    if (mkdir_p(ann)) die("cannot create %s", ann);
    FILE *files[3];
    const char *names[3] = {"trainval", "test", "list"};
    for (int s = 0; s < 3; s++) {
        char *p = xasprintf("%s/%s.txt", ann, names[s]);
        files[s] = fopen(p, "w");
        if (!files[s]) die("cannot write %s", p);
        fprintf(files[s], "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n");
        free(p);
    }
    for (int c = 0; c < 3; c++) {
        for (int i = 1; i <= 12; i++) {
            int k = c * 12 + i;
            if (c < 2 && i > 11) continue; // test: 3 + 3 + 4 images
            int test = i > 8;
            char *path = xasprintf("%s/%s_%d.jpg", dir, breeds[c], i);
            Image img = make_picture(k);
            if (strcmp(breeds[c], "Bengal") == 0 && i == 9) {
                // listed in test, but the file is missing
            } else if (i % 2 == 0) { // a PNG named .jpg, as in the real dataset
                if (image_write_png(path, &img, err, sizeof err)) die("%s", err);
            } else { // Bengal_3.jpg is truncated to 60% of its bytes
                write_jpeg(path, &img, strcmp(breeds[c], "Bengal") == 0 && i == 3 ? 6 : 10);
            }
            image_free(&img);
            free(path);
            int species = c == 2 ? 2 : 1, breed = c == 2 ? 25 : c + 1;
            fprintf(files[test], "%s_%d %d %d %d\n", breeds[c], i, ids[c], species, breed);
            fprintf(files[2], "%s_%d %d %d %d\n", breeds[c], i, ids[c], species, breed);
        }
    }
    for (int s = 0; s < 3; s++) fclose(files[s]);
    char *mat = xasprintf("%s/Abyssinian_100.mat", dir);
    if (write_file_atomic(mat, "MATLAB 5.0 MAT-file", 19, err, sizeof err)) die("%s", err);
    free(mat), free(dir), free(ann);
    return 0;
}
