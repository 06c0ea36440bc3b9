// figure.h: drawing the chapter figures: an RGB canvas (an Image), rectangles, pictures scaled into
// boxes, and text rendered with stb_truetype (Debian's libstb-dev) from a TrueType font,
// DejaVu Sans by default (Debian's fonts-dejavu-core).
#ifndef FIGURE_H
#define FIGURE_H

#include <stddef.h>
#include <stdint.h>

#include "data/image.h"

#define FIGURE_FONT_DEFAULT "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"

// A w x h canvas filled with one colour.
void canvas_new(Image *c, int w, int h, uint8_t r, uint8_t g, uint8_t b);
void canvas_fill(Image *c, int x, int y, int w, int h, uint8_t r, uint8_t g, uint8_t b);
// Copies src at (x, y) unscaled (clipped to the canvas).
void canvas_blit(Image *c, const Image *src, int x, int y);
// Scales src to fit inside the box (x, y, w, h), keeping its aspect ratio (Pillow-style bilinear
// resampling from preprocess.h), centred in the box. Returns 0 or -1.
int canvas_blit_fit(Image *c, const Image *src, int x, int y, int w, int h);

typedef struct Font Font;
// Loads a TrueType font. Returns NULL with a message (naming the file, and the Debian package
// for the default font) in err.
Font *font_load(const char *path, char *err, size_t errlen);
void font_free(Font *f);
// Width in pixels of UTF-8 text at a pixel height px.
int text_width(const Font *f, const char *s, float px);
// Draws text with its top-left at (x, y) (y = top of the line box), anti-aliased, clipped.
void draw_text(Image *c, const Font *f, const char *s, int x, int y, float px, uint8_t r, uint8_t g,
               uint8_t b);
// Draws text centred horizontally on cx, shrinking the size (down to 60%) if wider than max_w.
void draw_text_centered(Image *c, const Font *f, const char *s, int cx, int y, float px, int max_w,
                        uint8_t r, uint8_t g, uint8_t b);

// One panel of a grid of captioned pictures: an image file and two title lines above it (the
// title in black, the subtitle in red; either may be NULL).
typedef struct {
    const char *file, *title, *subtitle;
} FigurePanel;
// Writes the PNG `path`: n panels of panel_w x panel_h pixels, `cols` to a row, each with its
// titles (19 px) in a band title_h high above its picture scaled to fit. A picture that cannot be
// read leaves its panel grey, with a warning that ends in `hint`; with n = 0, the one line
// `empty`. Returns 0, or -1 with a message.
int figure_grid(const char *path, const Font *font, const FigurePanel *p, int n, int cols,
                int panel_w, int panel_h, int title_h, const char *empty, const char *hint,
                char *err, size_t errlen);

#endif // FIGURE_H
