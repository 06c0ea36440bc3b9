// image.h: decoding image files into 8-bit RGB, by content rather than by file extension.
// The Oxford-IIIT Pet images/ folder holds JPEGs (some grayscale, some CMYK), a PNG with alpha and
// a GIF that are named .jpg, and MATLAB files: every decodable one becomes RGB exactly as PIL's
// Image.open(path).convert('RGB') would produce it; anything else is refused with a reason.
// Decoding uses stb_image (Debian's libstb-dev), compiled in image.c for JPEG, PNG and GIF only.
#ifndef IMAGE_H
#define IMAGE_H

#include <stddef.h>
#include <stdint.h>

// Largest image accepted, in pixels (width x height); larger ones are refused before decoding.
// (The fuzz targets, tests/fuzz/, build with a smaller cap so that one input decodes in seconds.)
#ifndef IMAGE_MAX_PIXELS
#define IMAGE_MAX_PIXELS (64u * 1024u * 1024u)
#endif

typedef struct {
    int w, h;
    uint8_t *rgb; // (h, w, 3) row-major, interleaved RGB
} Image;

// Decodes an image file. Returns 0, or -1 with a reason naming the file in err
// (e.g. "data/x.jpg: not an image (MATLAB file)", "...: truncated JPEG").
int image_load(const char *path, Image *img, char *err, size_t errlen);
// Same for a buffer already in memory; `name` is used in messages.
int image_decode(const uint8_t *buf, size_t n, const char *name, Image *img, char *err,
                 size_t errlen);
// Writes an 8-bit RGB PNG (atomically). Returns 0 or -1 with err.
int image_write_png(const char *path, const Image *img, char *err, size_t errlen);
void image_free(Image *img);

// What a file holds before conversion to RGB, read from its headers by image_probe: the format
// found by content (whatever the file's name says) and the colour mode as PIL names it
// (Image.open(path).mode): "RGB", "L" (grayscale), "CMYK" (Adobe CMYK or YCCK JPEG), "RGBA",
// "LA", "P" (palette: GIF, palette PNG).
typedef enum { IMAGE_NOT_IMAGE = 0, IMAGE_JPEG, IMAGE_PNG, IMAGE_GIF } ImageFormat;
typedef struct {
    ImageFormat format;
    char mode[8];  // "" when the headers are unreadable (the file may still be an image)
} ImageInfo;

// Identifies a file's content from its bytes without decoding the pixels. Returns 0 for a JPEG,
// PNG or GIF (info->mode filled when the headers can be read), or -1 when the bytes are not an
// image format we decode (MATLAB file, BMP, unknown...; info->format = IMAGE_NOT_IMAGE).
int image_probe(const uint8_t *buf, size_t n, ImageInfo *info);
// "JPEG", "PNG", "GIF" or "not an image".
const char *image_format_name(ImageFormat f);
// image_load that also reports what the file held (info may be NULL). On failure, info still says
// what the content was identified as, when the file could be read.
int image_load_info(const char *path, Image *img, ImageInfo *info, char *err, size_t errlen);
// Encodes an 8-bit RGB image as PNG into a new heap buffer (*png, *n; free() it). Returns 0 or -1.
int image_encode_png(const Image *img, uint8_t **png, size_t *n, char *err, size_t errlen);

#endif // IMAGE_H
