// figure.c: the canvas and text drawing of figure.h. The stb_truetype implementation is compiled
// here (and only here); glyphs are rasterised one by one with sub-pixel horizontal positioning
// and kerning, then blended onto the canvas with their coverage as alpha.
#include "report/figure.h"

#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "data/preprocess.h"

#define STB_TRUETYPE_IMPLEMENTATION
#define STBTT_STATIC
// stb is included as a system header (SYSTEM in the CMake fragment), so its own warnings are
// not ours and need no pragmas; our code keeps every warning.
#include <stb_truetype.h>

// ----------------------------------------------------------------------------
// canvas

void canvas_new(Image *c, int w, int h, uint8_t r, uint8_t g, uint8_t b) {
    c->w = w;
    c->h = h;
    c->rgb = xmalloc((size_t)w * (size_t)h * 3);
    canvas_fill(c, 0, 0, w, h, r, g, b);
}

void canvas_fill(Image *c, int x, int y, int w, int h, uint8_t r, uint8_t g, uint8_t b) {
    for (int j = y < 0 ? 0 : y; j < y + h && j < c->h; j++)
        for (int i = x < 0 ? 0 : x; i < x + w && i < c->w; i++) {
            uint8_t *p = c->rgb + ((size_t)j * c->w + i) * 3;
            p[0] = r, p[1] = g, p[2] = b;
        }
}

void canvas_blit(Image *c, const Image *src, int x, int y) {
    for (int j = 0; j < src->h; j++) {
        if (y + j < 0 || y + j >= c->h) continue;
        for (int i = 0; i < src->w; i++) {
            if (x + i < 0 || x + i >= c->w) continue;
            memcpy(c->rgb + ((size_t)(y + j) * c->w + (x + i)) * 3,
                   src->rgb + ((size_t)j * src->w + i) * 3, 3);
        }
    }
}

int canvas_blit_fit(Image *c, const Image *src, int x, int y, int w, int h) {
    double s = (double)w / src->w < (double)h / src->h ? (double)w / src->w : (double)h / src->h;
    int sw = (int)(src->w * s + 0.5), sh = (int)(src->h * s + 0.5);
    if (sw < 1) sw = 1;
    if (sh < 1) sh = 1;
    Image scaled;
    if (resize_bilinear(src, sw, sh, &scaled)) return -1;
    canvas_blit(c, &scaled, x + (w - sw) / 2, y + (h - sh) / 2);
    image_free(&scaled);
    return 0;
}

// ----------------------------------------------------------------------------
// text

struct Font {
    stbtt_fontinfo info;
    uint8_t *data;
};

Font *font_load(const char *path, char *err, size_t errlen) {
    size_t n;
    uint8_t *data = read_file(path, &n, 64u << 20, err, errlen);
    if (!data) {
        if (strcmp(path, FIGURE_FONT_DEFAULT) == 0) {
            size_t len = strlen(err);
            snprintf(err + len, errlen > len ? errlen - len : 0,
                     " (install Debian's fonts-dejavu-core: `make deps`, or pass --font FILE.ttf)");
        }
        return NULL;
    }
    Font *f = xcalloc(1, sizeof *f);
    f->data = data;
    int off = stbtt_GetFontOffsetForIndex(data, 0);
    if (off < 0 || !stbtt_InitFont(&f->info, data, off)) {
        set_err(err, errlen, "%s: not a TrueType font", path);
        font_free(f);
        return NULL;
    }
    return f;
}

void font_free(Font *f) {
    if (!f) return;
    free(f->data);
    free(f);
}

// Next code point of a UTF-8 string (invalid bytes are taken as Latin-1).
static int utf8_next(const char **s) {
    const unsigned char *p = (const unsigned char *)*s;
    int c = *p++;
    int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    int cp = extra ? c & (0x3F >> extra) : c;
    for (int k = 0; k < extra; k++) {
        if ((p[0] & 0xC0) != 0x80) {
            cp = c;
            p = (const unsigned char *)*s + 1;
            break;
        }
        cp = (cp << 6) | (*p++ & 0x3F);
    }
    *s = (const char *)p;
    return cp;
}

int text_width(const Font *f, const char *s, float px) {
    float scale = stbtt_ScaleForPixelHeight(&f->info, px), x = 0;
    int prev = 0;
    while (*s) {
        int cp = utf8_next(&s);
        int adv, lsb;
        if (prev) x += scale * stbtt_GetCodepointKernAdvance(&f->info, prev, cp);
        stbtt_GetCodepointHMetrics(&f->info, cp, &adv, &lsb);
        x += scale * adv;
        prev = cp;
    }
    return (int)(x + 0.999f);
}

void draw_text(Image *c, const Font *f, const char *s, int x, int y, float px, uint8_t r, uint8_t g,
               uint8_t b) {
    float scale = stbtt_ScaleForPixelHeight(&f->info, px);
    int ascent, descent, gap;
    stbtt_GetFontVMetrics(&f->info, &ascent, &descent, &gap);
    int baseline = y + (int)(ascent * scale + 0.5f);
    float pen = (float)x;
    int prev = 0;
    const uint8_t col[3] = {r, g, b};
    while (*s) {
        int cp = utf8_next(&s);
        if (prev) pen += scale * stbtt_GetCodepointKernAdvance(&f->info, prev, cp);
        int adv, lsb;
        stbtt_GetCodepointHMetrics(&f->info, cp, &adv, &lsb);
        int ix = (int)pen;
        float shift = pen - (float)ix;
        int x0, y0, x1, y1;
        stbtt_GetCodepointBitmapBoxSubpixel(&f->info, cp, scale, scale, shift, 0, &x0, &y0, &x1, &y1);
        int gw = x1 - x0, gh = y1 - y0;
        if (gw > 0 && gh > 0) {
            uint8_t *cov = xcalloc((size_t)gw * gh, 1);
            stbtt_MakeCodepointBitmapSubpixel(&f->info, cov, gw, gh, gw, scale, scale, shift, 0, cp);
            for (int j = 0; j < gh; j++) {
                int yy = baseline + y0 + j;
                if (yy < 0 || yy >= c->h) continue;
                for (int i = 0; i < gw; i++) {
                    int xx = ix + x0 + i, a = cov[j * gw + i];
                    if (xx < 0 || xx >= c->w || a == 0) continue;
                    uint8_t *p = c->rgb + ((size_t)yy * c->w + xx) * 3;
                    for (int k = 0; k < 3; k++) p[k] = (uint8_t)((p[k] * (255 - a) + col[k] * a + 127) / 255);
                }
            }
            free(cov);
        }
        pen += scale * adv;
        prev = cp;
    }
}

void draw_text_centered(Image *c, const Font *f, const char *s, int cx, int y, float px, int max_w,
                        uint8_t r, uint8_t g, uint8_t b) {
    int w = text_width(f, s, px);
    if (max_w > 0 && w > max_w) {
        float shrunk = px * (float)max_w / (float)w;
        px = shrunk < 0.6f * px ? 0.6f * px : shrunk;
        w = text_width(f, s, px);
    }
    draw_text(c, f, s, cx - w / 2, y, px, r, g, b);
}

// ----------------------------------------------------------------------------
// a grid of captioned pictures

int figure_grid(const char *path, const Font *font, const FigurePanel *p, int n, int cols,
                int panel_w, int panel_h, int title_h, const char *empty, const char *hint,
                char *err, size_t errlen) {
    Image fig;
    canvas_new(&fig, cols * panel_w, n ? (n + cols - 1) / cols * panel_h : 60, 255, 255, 255);
    for (int i = 0; i < n; i++) {
        int x = (i % cols) * panel_w, y = (i / cols) * panel_h;
        int bw = panel_w - 16, bh = panel_h - title_h - 8; // the picture's box
        char msg[1024];
        Image img;
        if (image_load(p[i].file, &img, msg, sizeof msg) == 0) {
            canvas_blit_fit(&fig, &img, x + 8, y + title_h, bw, bh);
            image_free(&img);
        } else {
            warn("%s (its panel stays grey; %s)", msg, hint);
            canvas_fill(&fig, x + 8, y + title_h, bw, bh, 200, 200, 200);
        }
        if (p[i].title)
            draw_text_centered(&fig, font, p[i].title, x + panel_w / 2, y + 6, 19.0f, panel_w - 8,
                               0, 0, 0);
        if (p[i].subtitle)
            draw_text_centered(&fig, font, p[i].subtitle, x + panel_w / 2, y + 31, 19.0f,
                               panel_w - 8, 178, 24, 24);
    }
    if (!n) draw_text_centered(&fig, font, empty, fig.w / 2, 16, 24.0f, fig.w - 20, 0, 0, 0);
    int rc = image_write_png(path, &fig, err, errlen);
    image_free(&fig);
    return rc;
}
