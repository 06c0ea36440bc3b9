// tests/test_image.c: decoding by content (code/data/image.c).
//   - every small format fixture (grayscale / CMYK / progressive / 4:4:4 JPEG, LA / RGBA /
//     palette+tRNS PNG, palette and grayscale GIF; tests/fixtures/preprocess/formats, made by
//     tests/ref_preprocess.py) decodes to PIL's .convert('RGB'): exactly for PNG and GIF, within
//     JPEG decoder differences (a few levels) for JPEG;
//   - bad input gets a clear reason and never crashes: empty file, MATLAB .mat header, unknown
//     bytes, BMP, JPEGs truncated anywhere (one written here with stb_image_write, one from PIL),
//     a truncated PNG, an oversized header, a missing file; plus a few thousand randomly corrupted
//     images (any outcome but a crash or a bad result is fine);
//   - streams stb_image 2.27 mishandles (found by fuzzing, tests/fuzz/) are refused, each forged
//     here: (a) a JPEG scan using a Huffman table no DHT defined, (b) a PNG zlib stream using the
//     invalid distance codes 30/31, (c) an empty IDAT before the image data, (d) a JPEG component
//     using a quantization table no DQT defined, (e) a JPEG component no scan decodes, (f) an IDAT
//     and (g) an IEND whose lengths run past the end of the file (stb decodes at IEND without
//     reading its length, so the stream before it is still checked), (h) a JPEG scan whose data
//     ends before its last block (stb's bit reader then hands out bits it does not hold): every
//     scan of a baseline JPEG written by stb_image_write and of the progressive fixture cut short
//     in turn, and each file truncated in its last scan with an EOI re-appended; in a tiny forged
//     JPEG with restart intervals, an interval with no data, a missing RSTn marker and a Huffman
//     code the table does not define. The uncut files decode exactly as stb_image alone does;
//   - image_write_png round-trips and writes atomically (no temporary left behind; a failed write
//     leaves the old file).
//   - with --shared DIR: the real set's MATLAB files are refused, Abyssinian_5.jpg (PNG with
//     alpha) and Abyssinian_34.jpg (GIF) decode, a real JPEG truncated at several points is
//     refused as truncated, every other .jpg decodes, and (h) on real files: each of the ten
//     scans of a progressive one cut short, and in one with restart intervals an interval cut
//     short or an RSTn marker removed, are refused. Exits 77 (skipped) without DIR.
// usage: test-image FIXTURE_DIR TMP_DIR [--shared DIR]
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <stb_image.h>       // implementations compiled in code/data/image.c and stb_write.c
#include <stb_image_write.h>

#include "core/common.h"
#include "data/image.h"
#include "check.h"

// Decoding `buf` must fail with a message that contains `want`.
static void expect_error(const uint8_t *buf, size_t n, const char *name, const char *want) {
    Image img;
    char err[512] = "";
    int rc = image_decode(buf, n, name, &img, err, sizeof err);
    CHECK(rc == -1, "%s: decoded (%dx%d) but must be refused (%s)", name, img.w, img.h, want);
    CHECK(rc != -1 || strstr(err, want), "%s: error '%s' does not say '%s'", name, err, want);
    CHECK(rc != -1 || strstr(err, name), "%s: error '%s' does not name the file", name, err);
    CHECK(img.rgb == NULL, "%s: failed decode left an image", name);
    if (rc == 0) image_free(&img);
}

// ----------------------------------------------------------------------------
// formats as PIL converts them

static void test_formats(const char *fixtures) {
    static const struct {
        const char *name;
        int tol;            // max abs difference allowed per channel value (0 = identical)
        ImageFormat format; // what image_probe must find, and PIL's Image.open(f).mode
        const char *mode;
    } cases[] = {
        {"gray.jpg", 3, IMAGE_JPEG, "L"},          {"cmyk.jpg", 3, IMAGE_JPEG, "CMYK"},
        {"rgb444.jpg", 3, IMAGE_JPEG, "RGB"},      {"progressive.jpg", 3, IMAGE_JPEG, "RGB"},
        {"la.png", 0, IMAGE_PNG, "LA"},            {"rgba.png", 0, IMAGE_PNG, "RGBA"},
        {"palette_trns.png", 0, IMAGE_PNG, "P"},   {"palette.gif", 0, IMAGE_GIF, "P"},
        {"gray.gif", 0, IMAGE_GIF, "P"},           {"gray.jpg.rgb.png", 0, IMAGE_PNG, "RGB"},
    };
    char err[512];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *path = xasprintf("%s/formats/%s", fixtures, cases[i].name);
        char *ref = xasprintf("%s.rgb.png", path);
        if (strstr(cases[i].name, ".rgb.png")) { // only the probe: the file is a reference itself
            free(ref);
            ref = xstrdup(path);
        }
        Image got, want;
        ImageInfo info;
        if (image_load_info(path, &got, &info, err, sizeof err)) {
            CHECK(0, "%s", err);
        } else if (image_load(ref, &want, err, sizeof err)) {
            CHECK(0, "%s", err);
            image_free(&got);
        } else {
            CHECK(got.w == want.w && got.h == want.h, "%s: %dx%d, PIL %dx%d", cases[i].name,
                  got.w, got.h, want.w, want.h);
            if (got.w == want.w && got.h == want.h) {
                int maxd = 0;
                double sum = 0;
                size_t n = (size_t)got.w * got.h * 3;
                for (size_t j = 0; j < n; j++) {
                    int d = abs((int)got.rgb[j] - (int)want.rgb[j]);
                    if (d > maxd) maxd = d;
                    sum += d;
                }
                CHECK(maxd <= cases[i].tol, "%s: max abs diff %d from PIL's convert('RGB') "
                      "(allowed %d)", cases[i].name, maxd, cases[i].tol);
                printf("format %-17s %2dx%-2d  max diff from PIL %d, mean %.3f\n", cases[i].name,
                       got.w, got.h, maxd, sum / n);
            }
            CHECK(info.format == cases[i].format && !strcmp(info.mode, cases[i].mode),
                  "%s: probed as %s %s, expected %s %s", cases[i].name,
                  image_format_name(info.format), info.mode, image_format_name(cases[i].format),
                  cases[i].mode);
            image_free(&got);
            image_free(&want);
        }
        free(path);
        free(ref);
    }
}

// ----------------------------------------------------------------------------
// bad input

static void write_cb(void *ctx, void *data, int size) {
    uint8_t **pp = ctx; // appends into a buffer whose first 8 bytes hold the length
    size_t n;
    memcpy(&n, *pp, sizeof n);
    *pp = xrealloc(*pp, sizeof n + n + (size_t)size);
    memcpy(*pp + sizeof n + n, data, (size_t)size);
    n += (size_t)size;
    memcpy(*pp, &n, sizeof n);
}

// A JPEG written by stb_image_write (baseline, 4:2:0), so the test needs no data files.
static uint8_t *synthetic_jpeg(size_t *n, int w, int h) {
    uint8_t *rgb = xmalloc((size_t)w * h * 3);
    for (int i = 0; i < w * h * 3; i++) rgb[i] = (uint8_t)(i * 7 + (i / (w * 3)) * 3);
    uint8_t *buf = xcalloc(1, sizeof(size_t));
    if (!stbi_write_jpg_to_func(write_cb, &buf, w, h, 3, rgb, 90)) die("stbi_write_jpg failed");
    free(rgb);
    memcpy(n, buf, sizeof *n);
    memmove(buf, buf + sizeof *n, *n);
    return buf;
}

static void test_truncated_jpeg(const uint8_t *jpg, size_t n, const char *name) {
    Image img;
    char err[512];
    // the whole file decodes
    CHECK(image_decode(jpg, n, name, &img, err, sizeof err) == 0, "%s: %s", name, err);
    image_free(&img);
    // trailing bytes after EOI are fine (some cameras pad files)
    uint8_t *pad = xmalloc(n + 100);
    memcpy(pad, jpg, n);
    memset(pad + n, 0, 100);
    CHECK(image_decode(pad, n + 100, name, &img, err, sizeof err) == 0, "%s + padding: %s", name,
          err);
    image_free(&img);
    free(pad);
    // cut anywhere from inside the headers to just before EOI: refused as truncated
    size_t cuts[] = {3, 20, n / 4, n / 2, n - 100, n - 3, n - 2, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        if (cuts[i] >= n || cuts[i] < 3) continue;
        char *what = xasprintf("%s cut to %zu of %zu bytes", name, cuts[i], n);
        expect_error(jpg, cuts[i], what, "truncated JPEG");
        free(what);
    }
}

// image_probe on what is not an image, or not a whole one: never a crash, never a wrong answer.
static void test_probe(void) {
    ImageInfo info;
    static const uint8_t empty[1] = {0};
    CHECK(image_probe(empty, 0, &info) == -1 && info.format == IMAGE_NOT_IMAGE, "empty buffer");
    CHECK(image_probe((const uint8_t *)"MATLAB 5.0 MAT-file", 19, &info) == -1 &&
              info.format == IMAGE_NOT_IMAGE && !info.mode[0], "MATLAB header probed as an image");
    CHECK(image_probe((const uint8_t *)"BM\0\0", 4, &info) == -1, "BMP probed as readable");
    // a JPEG cut inside its frame header: a JPEG of unknown mode
    static const uint8_t jpeg_cut[] = {0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0x00};
    CHECK(image_probe(jpeg_cut, sizeof jpeg_cut, &info) == 0 && info.format == IMAGE_JPEG &&
              !info.mode[0], "cut JPEG: %s '%s'", image_format_name(info.format), info.mode);
    // a segment length running past the end, and a zero length
    static const uint8_t jpeg_long[] = {0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF, 0x00};
    CHECK(image_probe(jpeg_long, sizeof jpeg_long, &info) == 0 && !info.mode[0], "long segment");
    static const uint8_t jpeg_zero[] = {0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x00, 0xFF, 0xC0};
    CHECK(image_probe(jpeg_zero, sizeof jpeg_zero, &info) == 0 && !info.mode[0], "zero length");
    // a PNG signature without its IHDR
    CHECK(image_probe((const uint8_t *)"\x89PNG\r\n\x1A\n", 8, &info) == 0 &&
              info.format == IMAGE_PNG && !info.mode[0], "PNG without IHDR: '%s'", info.mode);
}

static void test_bad_input(const char *fixtures, const char *tmp) {
    expect_error((const uint8_t *)"", 0, "empty.jpg", "empty file");
    const char mat[] = "MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024";
    expect_error((const uint8_t *)mat, sizeof mat, "x.mat", "MATLAB");
    expect_error((const uint8_t *)"hello world, not an image", 25, "text.jpg", "unknown format");
    expect_error((const uint8_t *)"BM\x36\0\0\0\0\0", 8, "bitmap.jpg", "BMP");
    expect_error((const uint8_t *)"\xFF\xD8", 2, "soi-only.jpg", "JPEG");
    // a GIF header claiming 65535 x 65535 pixels: refused from the header, before decoding
    const uint8_t big[] = {'G', 'I', 'F', '8', '9', 'a', 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0};
    expect_error(big, sizeof big, "huge.gif", "cap");

    size_t n;
    uint8_t *jpg = synthetic_jpeg(&n, 97, 61);
    test_truncated_jpeg(jpg, n, "stb-written.jpg");
    free(jpg);
    char err[512];
    char *path = xasprintf("%s/formats/rgb444.jpg", fixtures);
    jpg = read_file(path, &n, 0, err, sizeof err);
    CHECK(jpg != NULL, "%s", err);
    if (jpg) test_truncated_jpeg(jpg, n, "pil-written.jpg");
    free(path);

    // a truncated PNG: stb's reason, no crash
    path = xasprintf("%s/formats/rgba.png", fixtures);
    uint8_t *png = read_file(path, &n, 0, err, sizeof err);
    CHECK(png != NULL, "%s", err);
    if (png) expect_error(png, n / 2, "half.png", "half.png");
    free(path);

    // a Huffman table with more than 256 codes (stb_image 2.27 would write past its tables)
    path = xasprintf("%s/formats/rgb444.jpg", fixtures);
    size_t dn = 0;
    uint8_t *dht = read_file(path, &dn, 0, err, sizeof err);
    CHECK(dht != NULL, "%s", err);
    size_t at = 0;
    for (size_t i = 2; dht && i + 1 < dn && !at; i++)
        if (dht[i] == 0xFF && dht[i + 1] == 0xC4) at = i;
    CHECK(at > 0, "%s: no DHT segment", path);
    if (at) {
        dht[at + 4 + 15] = 200, dht[at + 4 + 16] = 200; // counts of 15- and 16-bit codes
        expect_error(dht, dn, "dht.jpg", "Huffman table with more than 256 codes");
    }
    free(dht);
    free(path);

    // a missing file
    Image img;
    char *missing = xasprintf("%s/no-such-file.jpg", tmp);
    CHECK(image_load(missing, &img, err, sizeof err) == -1 && strstr(err, "no-such-file.jpg"),
          "missing file: '%s'", err);
    free(missing);

    // random corruption of real encoders' output: never a crash, and a success is a sane image
    const uint8_t *srcs[2] = {jpg, png};
    size_t lens[2] = {0, 0};
    if (jpg) {
        char *p2 = xasprintf("%s/formats/rgb444.jpg", fixtures);
        free(read_file(p2, &lens[0], 0, err, sizeof err));
        free(p2);
    }
    if (png) lens[1] = n;
    uint64_t s = 42;
    int ok = 0, refused = 0;
    for (int k = 0; k < 2; k++) {
        if (!srcs[k]) continue;
        uint8_t *buf = xmalloc(lens[k]);
        for (int t = 0; t < 1500; t++) {
            memcpy(buf, srcs[k], lens[k]);
            int flips = 1 + t % 8;
            for (int f = 0; f < flips; f++) {
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                buf[(s >> 33) % lens[k]] ^= (uint8_t)(1u << ((s >> 20) & 7));
            }
            size_t len = lens[k] - (t % 3 == 0 ? (size_t)((s >> 40) % 64) : 0);
            if (image_decode(buf, len, "fuzz", &img, err, sizeof err) == 0) {
                CHECK(img.w > 0 && img.h > 0 && img.rgb, "fuzz: success without an image");
                image_free(&img);
                ok++;
            } else {
                refused++;
            }
        }
        free(buf);
    }
    printf("corrupted inputs: %d decoded, %d refused, no crash\n", ok, refused);
    free(jpg);
    free(png);
}

// ----------------------------------------------------------------------------
// PNG writing

// ----------------------------------------------------------------------------
// streams stb_image 2.27 mishandles, forged here (each class found by tests/fuzz/fuzz_image)

// (a) A JPEG scan selecting a Huffman table that no DHT segment defined: stb_image_write's JPEG
// defines DC/AC tables 0 and 1; its scan is made to select DC table 2, then AC table 3.
static void test_undefined_huffman_table(void) {
    size_t n;
    uint8_t *jpg = synthetic_jpeg(&n, 16, 16);
    size_t sos = 0;
    for (size_t i = 2; i + 1 < n && !sos; i++)
        if (jpg[i] == 0xFF && jpg[i + 1] == 0xDA) sos = i;
    CHECK(sos > 0 && jpg[sos + 4] == 3, "stb-written JPEG: no 3-component SOS");
    if (!sos) return;
    uint8_t *bad = xmalloc(n);
    const struct { uint8_t sel; const char *name; } cases[] = {{0x20, "undefined-dc.jpg"},
                                                               {0x03, "undefined-ac.jpg"},
                                                               {0x12, "undefined-ac2.jpg"}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        memcpy(bad, jpg, n);
        bad[sos + 6] = cases[k].sel; // table selectors of the scan's first component
        expect_error(bad, n, cases[k].name, "Huffman table that no DHT segment defines");
    }
    // (d) a frame component selecting quantization table 2, which no DQT segment defines
    size_t sof = 0;
    for (size_t i = 2; i + 1 < n && !sof; i++)
        if (jpg[i] == 0xFF && jpg[i + 1] == 0xC0) sof = i;
    CHECK(sof > 0 && jpg[sof + 9] == 3, "stb-written JPEG: no 3-component SOF0");
    if (sof) {
        memcpy(bad, jpg, n);
        bad[sof + 12] = 2; // Tq of the first component (id, HV, Tq at sof + 10..12)
        expect_error(bad, n, "undefined-quant.jpg", "quantization table that no DQT segment defines");
    }
    // (e) a component that no scan decodes: the scan lists only the first two of three
    memcpy(bad, jpg, sos + 4);
    bad[sos + 3] = 10, bad[sos + 4] = 2; // length 6 + 2 x 2, Ns = 2
    memcpy(bad + sos + 5, jpg + sos + 5, 4);                          // components 1 and 2
    memcpy(bad + sos + 9, jpg + sos + 11, n - (sos + 11));            // Ss, Se, Ah/Al, the data
    expect_error(bad, n - 2, "uncovered-component.jpg", "a component that no scan decodes");
    // the file as written, selecting defined tables, decodes (the check is no blanket refusal)
    Image img;
    char err[512] = "";
    CHECK(image_decode(jpg, n, "defined-tables.jpg", &img, err, sizeof err) == 0,
          "the stb-written JPEG refused: %s", err);
    image_free(&img);
    free(bad);
    free(jpg);
}

// A byte buffer with a bit writer (deflate order: least significant bit first).
typedef struct {
    uint8_t b[256];
    size_t n;
    int bit;
} Bits;

static void put_bits(Bits *w, unsigned v, int count) {
    for (int i = 0; i < count; i++) {
        if (w->bit == 0) w->b[w->n++] = 0;
        w->b[w->n - 1] |= (uint8_t)(((v >> i) & 1) << w->bit);
        w->bit = (w->bit + 1) & 7;
    }
}

// A Huffman code is sent most significant bit first.
static void put_code(Bits *w, unsigned code, int len) {
    for (int i = len - 1; i >= 0; i--) put_bits(w, (code >> i) & 1, 1);
}

static void put_be32(Bits *w, uint32_t v) {
    for (int i = 3; i >= 0; i--) w->b[w->n++] = (uint8_t)(v >> (8 * i));
}

static uint32_t crc32_png(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    }
    return ~c;
}

static void put_chunk(Bits *png, const char *type, const uint8_t *data, size_t n) {
    put_be32(png, (uint32_t)n);
    size_t at = png->n;
    memcpy(png->b + png->n, type, 4);
    png->n += 4;
    if (n) memcpy(png->b + png->n, data, n);
    png->n += n;
    put_be32(png, crc32_png(png->b + at, n + 4));
}

// A 2x1 8-bit grayscale PNG whose IDAT holds `zlib` (and, with empty_idat, an empty IDAT first).
static void forge_png(Bits *png, const Bits *zlib, int empty_idat) {
    memset(png, 0, sizeof *png);
    memcpy(png->b, "\x89PNG\r\n\x1A\n", 8);
    png->n = 8;
    const uint8_t ihdr[13] = {0, 0, 0, 2, 0, 0, 0, 1, 8, 0, 0, 0, 0};
    put_chunk(png, "IHDR", ihdr, 13);
    if (empty_idat) put_chunk(png, "IDAT", NULL, 0);
    put_chunk(png, "IDAT", zlib->b, zlib->n);
    put_chunk(png, "IEND", NULL, 0);
}

// A zlib stream of one fixed-code block: literal 0 (the row's filter byte), literal 7, then a
// match of length 3 at distance code `dcode` (0 = distance 1), then the end of the block.
static void forge_zlib(Bits *z, int dcode) {
    memset(z, 0, sizeof *z);
    z->b[0] = 0x78, z->b[1] = 0x01, z->n = 2; // deflate, 32K window, no dictionary
    put_bits(z, 1, 1);                        // final block
    put_bits(z, 1, 2);                        // fixed codes
    put_code(z, 0x30 + 0, 8);                 // literal 0: 8-bit codes 0x30.. for 0..143
    put_code(z, 0x30 + 7, 8);                 // literal 7
    put_code(z, 257 - 256, 7);                // length 3: 7-bit codes 0.. for 256..279
    put_code(z, (unsigned)dcode, 5);          // distance code, 5 bits
    put_code(z, 0, 7);                        // end of block (256)
    z->bit = 0;
    put_be32(z, 0); // Adler-32 (neither stb nor we check it)
}

// (b) distance codes 30 and 31 (stb: distance 0, copying bytes never written) and (c) an empty
// IDAT before the data (stb: a copy to a NULL pointer). The same stream with distance code 0
// decodes, and so does the valid stream after the empty IDAT when that IDAT is left out. Also
// (f) an IDAT and (g) an IEND whose lengths run past the end of the file.
static void test_png_streams(void) {
    Bits z, png;
    Image img;
    char err[512] = "";
    forge_zlib(&z, 0);
    forge_png(&png, &z, 0);
    CHECK(image_decode(png.b, png.n, "distance-1.png", &img, err, sizeof err) == 0 &&
              img.w == 2 && img.h == 1 && img.rgb[0] == 7 && img.rgb[3] == 7,
          "forged PNG with a valid match refused or wrong: %s", err);
    image_free(&img);
    for (int dcode = 30; dcode <= 31; dcode++) {
        forge_zlib(&z, dcode);
        forge_png(&png, &z, 0);
        char name[32];
        snprintf(name, sizeof name, "distance-code-%d.png", dcode);
        expect_error(png.b, png.n, name, "invalid distance code");
    }
    forge_zlib(&z, 0);
    forge_png(&png, &z, 1);
    expect_error(png.b, png.n, "empty-idat.png", "empty IDAT");
    // (f) an IDAT claiming 1 GiB in a small file (stb would allocate it first; fuzz_image_msan)
    forge_png(&png, &z, 0);
    png.b[33] = 0x3F, png.b[34] = 0xFF, png.b[35] = 0xFF, png.b[36] = 0xF0; // 8 + 25 (IHDR chunk)
    expect_error(png.b, png.n, "huge-idat.png", "IDAT chunk runs past the end");
    // (g) an invalid stream followed by an IEND whose length runs past the end of the file: stb
    // decodes at IEND without reading its length, so the stream must still be checked
    // (tests/fuzz/regress/image/png-iend-length-past-end.png, fuzz_image_msan)
    forge_zlib(&z, 30);
    forge_png(&png, &z, 0);
    png.b[png.n - 12 + 3] = 0xF8; // IEND's length: 248 bytes that the file does not have
    expect_error(png.b, png.n, "iend-past-end.png", "invalid distance code");
}

// ----------------------------------------------------------------------------
// (h) JPEG scans whose data ends before their last block (stb's bit reader then hands out bits it
// does not hold: tests/fuzz/regress/image/jpeg-scan-data-ends-early.jpg), forged from valid files

// Decoding succeeds, with exactly stb_image's own pixels (the scan walk only ever refuses).
static void expect_stb_pixels(const uint8_t *buf, size_t n, const char *name) {
    Image img;
    char err[512] = "";
    int w, h, comp;
    uint8_t *ref = stbi_load_from_memory(buf, (int)n, &w, &h, &comp, 3);
    CHECK(ref != NULL, "%s: stb_image alone refuses it (%s)", name, stbi_failure_reason());
    CHECK(image_decode(buf, n, name, &img, err, sizeof err) == 0, "%s: %s", name, err);
    if (ref && img.rgb)
        CHECK(img.w == w && img.h == h && !memcmp(img.rgb, ref, (size_t)w * h * 3),
              "%s: pixels differ from stb_image's", name);
    image_free(&img);
    stbi_image_free(ref);
}

// Where the entropy-coded data of each scan lies: [start[k], end[k]) for k below the count
// returned (segments skipped by their lengths; a scan's data ends at a marker other than RSTn).
static int jpeg_scan_ranges(const uint8_t *b, size_t n, size_t *start, size_t *end, int max) {
    int k = 0;
    for (size_t p = 2; p + 4 <= n && k < max;) {
        if (b[p] != 0xFF || b[p + 1] == 0xFF) { p++; continue; }
        if (b[p + 1] == 0xD9) break;
        uint8_t m = b[p + 1];
        p += 2 + ((size_t)b[p + 2] << 8 | b[p + 3]);
        if (m != 0xDA) continue;
        start[k] = p;
        while (p + 1 < n && !(b[p] == 0xFF && b[p + 1] && (b[p + 1] < 0xD0 || b[p + 1] > 0xD7))) p++;
        end[k++] = p;
    }
    return k;
}

// b[0..n) without the bytes [from, to); with eoi, cut at `from` and ended by an EOI marker.
static uint8_t *jpeg_cut(const uint8_t *b, size_t n, size_t from, size_t to, int eoi, size_t *m) {
    uint8_t *out = xmalloc(n + 2);
    memcpy(out, b, from);
    if (eoi) {
        out[from] = 0xFF, out[from + 1] = 0xD9;
        *m = from + 2;
    } else {
        memcpy(out + from, b + to, n - to);
        *m = n - (to - from);
    }
    return out;
}

// Every scan of `jpg` cut short in turn (its data cut in half, the rest of the file kept) is
// refused, naming it; so is the file truncated inside its last scan (an EOI re-appended).
static void test_scans_cut(const uint8_t *jpg, size_t n, const char *name, int want_scans) {
    size_t start[16], end[16], m;
    int scans = jpeg_scan_ranges(jpg, n, start, end, 16);
    CHECK(scans == want_scans, "%s: %d scans found, expected %d", name, scans, want_scans);
    if (scans == 0) return;
    expect_stb_pixels(jpg, n, name);
    for (int k = 0; k < scans; k++) {
        uint8_t *cut = jpeg_cut(jpg, n, start[k] + (end[k] - start[k]) / 2, end[k], 0, &m);
        char *what = xasprintf("%s with scan %d cut short", name, k + 1);
        char *want = xasprintf("the data of scan %d ends before its last block", k + 1);
        expect_error(cut, m, what, want);
        free(cut);
        free(what);
        free(want);
    }
    size_t cuts[] = {start[scans - 1] + (end[scans - 1] - start[scans - 1]) / 2, end[scans - 1] - 1};
    for (int i = 0; i < 2; i++) {
        uint8_t *cut = jpeg_cut(jpg, n, cuts[i], 0, 1, &m);
        char *what = xasprintf("%s truncated at %zu of %zu bytes, EOI re-appended", name, cuts[i], n);
        char *want = xasprintf("the data of scan %d ends before its last block", scans);
        expect_error(cut, m, what, want);
        free(cut);
        free(what);
        free(want);
    }
}

// A 16x8 grayscale baseline JPEG of two 8x8 blocks, one per restart interval (DRI 1), whose
// Huffman tables each hold one 1-bit code, 0: DC difference 0, AC end of block. Each block is
// bits 00, a byte 0x3F with its padding; `data` is what follows the scan header, up to EOI.
static size_t forge_restart_jpeg(uint8_t *out, const uint8_t *data, size_t n) {
    static const uint8_t head[] = {
        0xFF, 0xC0, 0, 11, 8, 0, 8, 0, 16, 1, 1, 0x11, 0,                // SOF0 8 x 16, 1 component
        0xFF, 0xC4, 0, 20, 0x00, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, // DC 0
        0xFF, 0xC4, 0, 20, 0x10, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, // AC 0
        0xFF, 0xDD, 0, 4, 0, 1,                                          // DRI: 1 MCU
        0xFF, 0xDA, 0, 8, 1, 1, 0x00, 0, 63, 0,                          // SOS
    };
    memcpy(out, "\xFF\xD8\xFF\xDB\x00\x43\x00", 7); // SOI, DQT: table 0 of 64 ones
    memset(out + 7, 1, 64);
    size_t m = 7 + 64;
    memcpy(out + m, head, sizeof head);
    m += sizeof head;
    memcpy(out + m, data, n);
    m += n;
    out[m++] = 0xFF, out[m++] = 0xD9;
    return m;
}

// (h) as described above: a baseline JPEG written by stb_image_write, the progressive fixture (ten
// scans: DC first and refinement, AC first and refinement) and the forged restart-interval JPEG.
static void test_jpeg_scans(const char *fixtures) {
    size_t n;
    uint8_t *jpg = synthetic_jpeg(&n, 97, 61);
    test_scans_cut(jpg, n, "stb-written.jpg", 1);
    free(jpg);
    char err[512];
    char *path = xasprintf("%s/formats/progressive.jpg", fixtures);
    jpg = read_file(path, &n, 0, err, sizeof err);
    CHECK(jpg != NULL, "%s", err);
    if (jpg) test_scans_cut(jpg, n, "progressive.jpg", 10);
    free(jpg);
    free(path);

    uint8_t buf[256];
    static const uint8_t two_blocks[] = {0x3F, 0xFF, 0xD0, 0x3F};
    size_t m = forge_restart_jpeg(buf, two_blocks, sizeof two_blocks);
    expect_stb_pixels(buf, m, "restart.jpg");
    static const uint8_t no_rst[] = {0x3F, 0x3F};
    m = forge_restart_jpeg(buf, no_rst, sizeof no_rst);
    expect_error(buf, m, "restart-marker-missing.jpg", "instead of an RSTn marker");
    static const uint8_t empty_interval[] = {0xFF, 0xD0, 0x3F};
    m = forge_restart_jpeg(buf, empty_interval, sizeof empty_interval);
    expect_error(buf, m, "restart-interval-empty.jpg", "the data of scan 1 ends before its last block");
    static const uint8_t bad_code[] = {0xBF, 0xFF, 0xD0, 0x3F}; // bit 1: no such DC code
    m = forge_restart_jpeg(buf, bad_code, sizeof bad_code);
    expect_error(buf, m, "undefined-code.jpg", "Huffman code that its table does not define");
}

static void test_write_png(const char *tmp) {
    char err[512];
    if (mkdir_p(tmp)) die("%s: cannot create", tmp);
    Image a = {37, 23, xmalloc(37 * 23 * 3)}, b;
    for (int i = 0; i < 37 * 23 * 3; i++) a.rgb[i] = (uint8_t)(i * 13);
    char *path = xasprintf("%s/sub/dir/out.png", tmp);
    CHECK(image_write_png(path, &a, err, sizeof err) == 0, "%s", err);
    CHECK(image_load(path, &b, err, sizeof err) == 0, "%s", err);
    CHECK(b.w == 37 && b.h == 23 && !memcmp(a.rgb, b.rgb, 37 * 23 * 3), "PNG round trip differs");
    image_free(&b);
    // no temporary left behind
    char *dir = xasprintf("%s/sub/dir", tmp);
    DIR *d = opendir(dir);
    int entries = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') entries++;
    if (d) closedir(d);
    CHECK(entries == 1, "%s: %d entries after writing one PNG", dir, entries);
    // a write that cannot succeed (the parent is a file) fails cleanly
    char *bad = xasprintf("%s/out.png/x.png", dir);
    CHECK(image_write_png(bad, &a, err, sizeof err) == -1, "writing under a file succeeded");
    // an invalid image is refused and the old file stays
    Image empty = {0, 0, NULL};
    CHECK(image_write_png(path, &empty, err, sizeof err) == -1, "writing an empty image succeeded");
    CHECK(image_load(path, &b, err, sizeof err) == 0 && b.w == 37, "old PNG lost: %s", err);
    image_free(&b);
    image_free(&a);
    free(bad);
    free(dir);
    free(path);
}

// ----------------------------------------------------------------------------
// the real 3-class set

// A real JPEG whose scan has restart intervals: decodes as stb alone decodes it; with its fifth
// interval cut short, or its fifth RSTn marker removed, it is refused (case (h) above).
static void test_restart_cut(const char *images, const char *name) {
    char err[512];
    char *path = xasprintf("%s/%s", images, name);
    size_t n, start[16], end[16], rst[8], k = 0, m;
    uint8_t *b = read_file(path, &n, 0, err, sizeof err);
    CHECK(b != NULL, "%s", err);
    int scans = b ? jpeg_scan_ranges(b, n, start, end, 16) : 0;
    CHECK(scans == 1, "%s: %d scans, expected 1", name, scans);
    for (size_t p = scans ? start[0] : 0; scans && p + 1 < end[0] && k < 8; p++)
        if (b[p] == 0xFF && b[p + 1] >= 0xD0 && b[p + 1] <= 0xD7) rst[k++] = p;
    CHECK(k == 8, "%s: %zu RSTn markers in the scan, expected 8 or more", name, k);
    if (k == 8) {
        expect_stb_pixels(b, n, name);
        uint8_t *cut = jpeg_cut(b, n, rst[3] + 2 + (rst[4] - rst[3] - 2) / 2, rst[4], 0, &m);
        expect_error(cut, m, "restart interval 5 cut short", "the data of scan 1 ends before its last block");
        free(cut);
        cut = jpeg_cut(b, n, rst[4], rst[4] + 2, 0, &m);
        expect_error(cut, m, "RST marker 5 removed", "instead of an RSTn marker");
        free(cut);
    }
    free(b);
    free(path);
}

static int test_shared(const char *root) {
    char *images = xasprintf("%s/images", root);
    DIR *d = opendir(images);
    if (!d) {
        printf("SKIP: %s not found (the shared 3-class subset)\n", images);
        free(images);
        return 77;
    }
    char err[512];
    int jpg_ok = 0, jpg_bad = 0, mats = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 5) continue;
        char *path = xasprintf("%s/%s", images, e->d_name);
        Image img;
        ImageInfo info;
        if (!strcmp(e->d_name + len - 4, ".mat")) {
            CHECK(image_load_info(path, &img, &info, err, sizeof err) == -1 &&
                      strstr(err, "MATLAB") && strstr(err, e->d_name),
                  "%s: must be refused as a MATLAB file naming it, got '%s'", path, err);
            CHECK(info.format == IMAGE_NOT_IMAGE, "%s: probed as an image", path);
            mats++;
        } else if (!strcmp(e->d_name + len - 4, ".jpg")) {
            if (image_load_info(path, &img, &info, err, sizeof err) == 0) {
                jpg_ok++;
                // PIL: every .jpg is a JPEG in mode RGB, except these two
                const char *want = !strcmp(e->d_name, "Abyssinian_5.jpg")    ? "PNG RGBA"
                                   : !strcmp(e->d_name, "Abyssinian_34.jpg") ? "GIF P"
                                                                             : "JPEG RGB";
                char got[32];
                snprintf(got, sizeof got, "%s %s", image_format_name(info.format), info.mode);
                CHECK(!strcmp(got, want), "%s: probed as %s, PIL says %s", path, got, want);
                if (!strcmp(e->d_name, "Abyssinian_5.jpg"))
                    CHECK(img.w == 200 && img.h == 150, "Abyssinian_5 (PNG): %dx%d", img.w, img.h);
                if (!strcmp(e->d_name, "Abyssinian_34.jpg"))
                    CHECK(img.w == 250 && img.h == 202, "Abyssinian_34 (GIF): %dx%d", img.w, img.h);
                image_free(&img);
            } else {
                CHECK(0, "%s", err);
                jpg_bad++;
            }
        }
        free(path);
    }
    closedir(d);
    CHECK(mats == 3, "%d .mat files, expected 3", mats);
    CHECK(jpg_ok == 600 && jpg_bad == 0, "%d .jpg decoded, %d failed; expected 600 and 0", jpg_ok,
          jpg_bad);
    printf("shared: %d .jpg files decoded (598 JPEG + PNG + GIF), %d MATLAB files refused\n",
           jpg_ok, mats);
    // real JPEGs truncated at run time: refused as truncated (stb alone would fill grey)
    const char *names[] = {"Abyssinian_1.jpg", "Abyssinian_120.jpg" /* progressive */};
    for (int i = 0; i < 2; i++) {
        char *path = xasprintf("%s/%s", images, names[i]);
        size_t n;
        uint8_t *buf = read_file(path, &n, 0, err, sizeof err);
        CHECK(buf != NULL, "%s", err);
        if (buf) test_truncated_jpeg(buf, n, names[i]);
        if (buf && i == 1) test_scans_cut(buf, n, names[i], 10);
        free(buf);
        free(path);
    }
    test_restart_cut(images, "Abyssinian_207.jpg");
    free(images);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3 && !(argc == 5 && !strcmp(argv[3], "--shared")))
        die("usage: test-image FIXTURE_DIR TMP_DIR [--shared DIR]");
    if (argc == 5) {
        if (test_shared(argv[4]) == 77) return 77;
    } else {
        test_formats(argv[1]);
        test_probe();
        test_bad_input(argv[1], argv[2]);
        test_undefined_huffman_table();
        test_png_streams();
        test_jpeg_scans(argv[1]);
        test_write_png(argv[2]);
    }
    return check_exit("all image checks passed");
}
