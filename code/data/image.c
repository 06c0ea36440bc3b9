// image.c: decoding image files into 8-bit RGB by content (magic bytes), not by file extension,
// as PIL's Image.open(path).convert('RGB') would; and writing RGB images as PNG (atomically).
// The decoders are stb_image's (Debian's libstb-dev), compiled here for JPEG, PNG and GIF only,
// behind checks of our own: the format is identified from the first bytes (with a clear message
// for MATLAB files, empty files and formats we do not read), the pixel count is capped before
// anything is allocated, a JPEG whose data ends before its EOI marker is refused as truncated
// (stb would silently fill the missing rows with grey), and a JPEG Huffman table with more codes
// than the format allows is refused before stb_image 2.27 overflows its tables with it.
//
// Colour conversion, PIL's .convert('RGB') rules, which stb's req_comp = 3 follows:
//   grayscale (L)            -> R = G = B = L
//   grayscale + alpha (LA)   -> R = G = B = L, alpha dropped (PIL does not composite)
//   RGBA                     -> RGB, alpha dropped
//   palette (PNG P, GIF)     -> the palette colour of each index (first frame of a GIF)
//   Adobe CMYK / YCCK JPEG   -> R = C'*K'/255 with the stored (inverted) Adobe values, rounded:
//                               the same numbers PIL gets from its CMYK;I rawmode + cmyk2rgb.
// Known differences from PIL, none of which occur in the Oxford-IIIT Pet images: 16-bit grayscale
// PNGs (PIL clips I;16 to 255, stb keeps the high byte) and transparent GIF pixels (stb gives
// black, PIL the palette colour of the transparent index).
#include "data/image.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

// ----------------------------------------------------------------------------
// stb_image / stb_image_write implementations (this translation unit only)

#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_GIF
#define STBI_NO_STDIO                     // we read files ourselves (read_file, with a size cap)
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#define STBI_MAX_DIMENSIONS (1 << 16)     // per side; IMAGE_MAX_PIXELS caps the area
#define STB_IMAGE_IMPLEMENTATION
#define STBIW_ASSERT(x) ((void)0)
#define STBI_WRITE_NO_STDIO
#define STB_IMAGE_WRITE_IMPLEMENTATION
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wshift-negative-value"
#pragma GCC diagnostic ignored "-Wtype-limits"
#if !defined(__clang__) // clang has no such warning (and warns about the unknown name)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <stb_image.h>
#include <stb_image_write.h>
#pragma GCC diagnostic pop

// Largest file accepted by image_load (a 64-Mpixel JPEG is far smaller than this).
#define IMAGE_MAX_FILE_BYTES ((size_t)512 << 20)

// ----------------------------------------------------------------------------
// format identification by content

typedef enum { FMT_UNKNOWN, FMT_JPEG, FMT_PNG, FMT_GIF } Format;

static int starts_with(const uint8_t *buf, size_t n, const void *magic, size_t m) {
    return n >= m && memcmp(buf, magic, m) == 0;
}

// Returns the format, or FMT_UNKNOWN with a description of what the bytes are in `what`.
static Format identify(const uint8_t *buf, size_t n, const char **what) {
    *what = "unknown format";
    if (starts_with(buf, n, "\xFF\xD8\xFF", 3)) return FMT_JPEG;
    if (starts_with(buf, n, "\x89PNG\r\n\x1A\n", 8)) return FMT_PNG;
    if (starts_with(buf, n, "GIF87a", 6) || starts_with(buf, n, "GIF89a", 6)) return FMT_GIF;
    if (starts_with(buf, n, "MATLAB", 6)) *what = "not an image (MATLAB .mat file)";
    else if (starts_with(buf, n, "BM", 2)) *what = "unsupported format (BMP)";
    else if (starts_with(buf, n, "II*\0", 4) || starts_with(buf, n, "MM\0*", 4))
        *what = "unsupported format (TIFF)";
    else if (starts_with(buf, n, "RIFF", 4) && n >= 12 && memcmp(buf + 8, "WEBP", 4) == 0)
        *what = "unsupported format (WebP)";
    else if (starts_with(buf, n, "\xFF\xD8", 2)) *what = "corrupt JPEG (no marker after SOI)";
    else *what = "unknown format (not JPEG, PNG or GIF)";
    return FMT_UNKNOWN;
}

// A JPEG is complete when an EOI marker (FF D9) follows its first SOS (start of scan) marker.
// Inside entropy-coded data every FF byte is stuffed (FF 00) or a restart/scan marker, so an
// FF D9 after the first SOS can only be the real end; the header segments before SOS (which may
// hold an EXIF thumbnail with its own FF D9) are skipped by their lengths.
// Returns 0 when complete, or -1 with the reason in *why.
static int jpeg_check_complete(const uint8_t *buf, size_t n, const char **why) {
    size_t p = 2; // after SOI
    for (;;) {
        while (p < n && buf[p] != 0xFF) p++; // tolerate junk between segments, as decoders do
        while (p < n && buf[p] == 0xFF) p++; // fill bytes
        if (p >= n) { *why = "truncated JPEG (ends in its headers)"; return -1; }
        uint8_t m = buf[p++];
        if (m == 0xD9) { *why = "corrupt JPEG (EOI before any image data)"; return -1; }
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue; // markers without a length
        if (p + 2 > n) { *why = "truncated JPEG (ends in its headers)"; return -1; }
        size_t len = ((size_t)buf[p] << 8) | buf[p + 1];
        if (len < 2) { *why = "corrupt JPEG (bad segment length)"; return -1; }
        if (m == 0xDA) { p += len; break; } // SOS: entropy-coded data follows
        p += len;
    }
    for (size_t i = n; i-- > p + 1;)
        if (buf[i - 1] == 0xFF && buf[i] == 0xD9) return 0;
    *why = "truncated JPEG (image data ends before the EOI marker)";
    return -1;
}

// Every Huffman table (DHT segment, before the first scan or between the scans of a progressive
// JPEG) may define at most 256 codes. stb_image 2.27 (Debian 12's libstb-dev) does not check this
// and writes past its 256-entry tables on a hostile file (fixed upstream in 2.28), so we check
// first. Walks every marker of the file: inside scan data, FF 00 (a stuffed byte) and the
// restart markers are skipped. Returns 0, or -1 with the reason in *why.
static int jpeg_check_huffman(const uint8_t *buf, size_t n, const char **why) {
    size_t p = 2;
    for (;;) {
        while (p < n && buf[p] != 0xFF) p++;
        while (p < n && buf[p] == 0xFF) p++;
        if (p >= n) return 0; // truncation is jpeg_check_complete's business
        uint8_t m = buf[p++];
        if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;
        if (m == 0xD9 || p + 2 > n) return 0;
        size_t len = ((size_t)buf[p] << 8) | buf[p + 1];
        if (len < 2) { *why = "corrupt JPEG (bad segment length)"; return -1; }
        if (m == 0xC4) { // DHT: tables of (class/id, 16 code counts, the symbols)
            size_t q = p + 2, end = p + len < n ? p + len : n;
            while (q < end) {
                if (q + 17 > end) { *why = "corrupt JPEG (bad Huffman table)"; return -1; }
                size_t codes = 0;
                for (int i = 1; i <= 16; i++) codes += buf[q + i];
                if (codes > 256) {
                    *why = "corrupt JPEG (Huffman table with more than 256 codes)";
                    return -1;
                }
                q += 17 + codes;
            }
        }
        p += len;
    }
}

// ----------------------------------------------------------------------------
// colour modes from the headers (what PIL's Image.open(path).mode would say)

// JPEG: the component count of the frame header (SOF0..SOF15, less DHT C4, JPG C8 and DAC CC):
// 1 = "L", 3 = "RGB" (YCbCr or RGB), 4 = "CMYK" (Adobe CMYK or YCCK, both CMYK in PIL).
static const char *jpeg_mode(const uint8_t *buf, size_t n) {
    size_t p = 2; // after SOI
    for (;;) {
        while (p < n && buf[p] != 0xFF) p++;
        while (p < n && buf[p] == 0xFF) p++;
        if (p >= n) return "";
        uint8_t m = buf[p++];
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;
        if (m == 0xD9 || m == 0xDA || p + 2 > n) return ""; // no frame header before the scan
        size_t len = ((size_t)buf[p] << 8) | buf[p + 1];
        if (len < 2) return "";
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
            if (len < 8 || p + 8 > n) return "";
            int nf = buf[p + 7]; // length(2) precision(1) height(2) width(2) components(1)
            return nf == 1 ? "L" : nf == 3 ? "RGB" : nf == 4 ? "CMYK" : "";
        }
        p += len;
    }
}

// PNG: the colour type of IHDR (always the first chunk, at byte 8).
static const char *png_mode(const uint8_t *buf, size_t n) {
    if (n < 26 || memcmp(buf + 12, "IHDR", 4) != 0) return "";
    int depth = buf[24];
    switch (buf[25]) {
    case 0: return depth == 16 ? "I" : "L";
    case 2: return "RGB";
    case 3: return "P";
    case 4: return "LA";
    case 6: return "RGBA";
    default: return "";
    }
}

int image_probe(const uint8_t *buf, size_t n, ImageInfo *info) {
    const char *what;
    Format fmt = n ? identify(buf, n, &what) : FMT_UNKNOWN;
    const char *mode = fmt == FMT_JPEG  ? jpeg_mode(buf, n)
                       : fmt == FMT_PNG ? png_mode(buf, n)
                       : fmt == FMT_GIF ? "P"
                                        : "";
    info->format = fmt == FMT_JPEG ? IMAGE_JPEG : fmt == FMT_PNG ? IMAGE_PNG
                   : fmt == FMT_GIF ? IMAGE_GIF : IMAGE_NOT_IMAGE;
    snprintf(info->mode, sizeof info->mode, "%s", mode);
    return fmt == FMT_UNKNOWN ? -1 : 0;
}

const char *image_format_name(ImageFormat f) {
    return f == IMAGE_JPEG ? "JPEG" : f == IMAGE_PNG ? "PNG" : f == IMAGE_GIF ? "GIF"
                                                                        : "not an image";
}

// ----------------------------------------------------------------------------
// decoding

int image_decode(const uint8_t *buf, size_t n, const char *name, Image *img, char *err,
                 size_t errlen) {
    img->w = img->h = 0;
    img->rgb = NULL;
    if (!name) name = "(buffer)";
    if (n == 0) return set_err(err, errlen, "%s: empty file (0 bytes)", name);
    const char *what;
    Format fmt = identify(buf, n, &what);
    if (fmt == FMT_UNKNOWN) return set_err(err, errlen, "%s: %s", name, what);
    if (n > (size_t)INT_MAX) return set_err(err, errlen, "%s: file too large (%zu bytes)", name, n);
    if (fmt == FMT_JPEG && (jpeg_check_complete(buf, n, &what) || jpeg_check_huffman(buf, n, &what)))
        return set_err(err, errlen, "%s: %s", name, what);

    // Header first: refuse huge images before stb allocates anything for them.
    int w, h, comp;
    if (!stbi_info_from_memory(buf, (int)n, &w, &h, &comp))
        return set_err(err, errlen, "%s: corrupt %s header (%s)", name,
                       fmt == FMT_JPEG ? "JPEG" : fmt == FMT_PNG ? "PNG" : "GIF",
                       stbi_failure_reason());
    if (w <= 0 || h <= 0 || (uint64_t)w * (uint64_t)h > IMAGE_MAX_PIXELS)
        return set_err(err, errlen, "%s: image of %d x %d pixels is larger than the %u-pixel cap",
                       name, w, h, IMAGE_MAX_PIXELS);

    int dw, dh, dc;
    uint8_t *rgb = stbi_load_from_memory(buf, (int)n, &dw, &dh, &dc, 3);
    if (!rgb) {
        const char *r = stbi_failure_reason();
        return set_err(err, errlen, "%s: cannot decode %s (%s)", name,
                       fmt == FMT_JPEG ? "JPEG" : fmt == FMT_PNG ? "PNG" : "GIF",
                       r ? r : "unknown reason");
    }
    if (dw != w || dh != h) {
        stbi_image_free(rgb);
        return set_err(err, errlen, "%s: decoded size %dx%d differs from header %dx%d", name, dw,
                       dh, w, h);
    }
    img->w = w;
    img->h = h;
    img->rgb = rgb; // stb allocates with malloc: image_free's free() releases it
    return 0;
}

int image_load_info(const char *path, Image *img, ImageInfo *info, char *err, size_t errlen) {
    img->w = img->h = 0;
    img->rgb = NULL;
    if (info) *info = (ImageInfo){IMAGE_NOT_IMAGE, ""};
    size_t n = 0;
    uint8_t *buf = read_file(path, &n, IMAGE_MAX_FILE_BYTES, err, errlen);
    if (!buf) return -1;
    if (info) image_probe(buf, n, info);
    int rc = image_decode(buf, n, path, img, err, errlen);
    free(buf);
    return rc;
}

int image_load(const char *path, Image *img, char *err, size_t errlen) {
    return image_load_info(path, img, NULL, err, errlen);
}

void image_free(Image *img) {
    if (!img) return;
    free(img->rgb);
    img->rgb = NULL;
    img->w = img->h = 0;
}

// ----------------------------------------------------------------------------
// writing PNG

typedef struct {
    uint8_t *data;
    size_t n, cap;
    int failed;
} MemBuf;

static void membuf_write(void *ctx, void *data, int size) {
    MemBuf *mb = ctx;
    if (size <= 0) return;
    if (mb->n + (size_t)size > mb->cap) {
        size_t cap = mb->cap ? mb->cap : 65536;
        while (cap < mb->n + (size_t)size) cap *= 2;
        mb->data = xrealloc(mb->data, cap);
        mb->cap = cap;
    }
    memcpy(mb->data + mb->n, data, (size_t)size);
    mb->n += (size_t)size;
}

int image_encode_png(const Image *img, uint8_t **png, size_t *n, char *err, size_t errlen) {
    *png = NULL;
    *n = 0;
    if (!img->rgb || img->w <= 0 || img->h <= 0 || img->w > INT_MAX / 3)
        return set_err(err, errlen, "cannot encode an empty or invalid image as PNG");
    MemBuf mb = {0};
    if (!stbi_write_png_to_func(membuf_write, &mb, img->w, img->h, 3, img->rgb, img->w * 3) ||
        mb.failed) {
        free(mb.data);
        return set_err(err, errlen, "PNG encoding of a %dx%d image failed", img->w, img->h);
    }
    *png = mb.data;
    *n = mb.n;
    return 0;
}

int image_write_png(const char *path, const Image *img, char *err, size_t errlen) {
    uint8_t *png;
    size_t n;
    if (image_encode_png(img, &png, &n, err, errlen)) return -1;
    int rc = write_file_atomic(path, png, n, err, errlen);
    free(png);
    return rc;
}
