// preprocess.c: torchvision's ImageNet preprocessing (ResNet34_Weights.IMAGENET1K_V1.transforms()),
// bit-exact on the uint8 image it normalizes.
//
// Resize (what Pillow 9.4's Image.resize(size, BILINEAR) computes, which torchvision calls):
//   Separable resampling, horizontal pass first, then vertical. For each output sample, a window of
//   input samples is weighted by the triangle filter max(0, 1 - |d|), stretched by the downscale
//   factor when shrinking (that stretch is the antialiasing). The weights are computed in double,
//   normalized to sum 1, then turned into fixed point with 22 fraction bits (32 - 8 - 2). Each pass
//   accumulates uint8 x weight in 32-bit integers starting from one half, shifts right by 22 and
//   clips to 0..255: the intermediate image between the passes is uint8, as in Pillow. The
//   horizontal pass only covers the input rows that the vertical pass reads.
// Every output pixel depends only on its own window, so computing just the 224x224 centre crop of
// the resized image gives the same bytes as resizing everything and cropping: the fast path does
// that. A plain scalar reference (resize_bilinear_ref) sits beside the AVX-512 one and the tests
// check that they agree byte for byte. The AVX-512 passes are compiled with a target attribute and
// taken only on a CPU that has AVX-512 F/BW/VL/VBMI (core/cpu.h); elsewhere the scalar passes run.
//
// Normalize (torchvision: convert_image_dtype then normalize): x / 255, minus mean, divided by std,
// each step rounded to float32 as torch does it. There are only 3 x 256 possible results, so they
// are precomputed in a table.
#include "data/preprocess.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define PREP_AVX512 1
#define AVX512_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi")))
#else
#define PREP_AVX512 0
#endif

#include "core/common.h"
#include "core/cpu.h"

// mean/std as torch holds them: the Python doubles rounded to float32
const float PREP_MEAN[3] = {(float)0.485, (float)0.456, (float)0.406};
const float PREP_STD[3] = {(float)0.229, (float)0.224, (float)0.225};

// ----------------------------------------------------------------------------
// resampling coefficients

// region: resample-weights
#define PRECISION_BITS (32 - 8 - 2)
#define HALF (1 << (PRECISION_BITS - 1))

typedef struct {
    int n;          // output samples
    int ksize;      // weights stored per output sample
    int *first;     // (n) first input sample of each window
    int *count;     // (n) samples in each window
    int32_t *k;     // (n, ksize) fixed-point weights, PRECISION_BITS fraction bits
} Coeffs;

// The bilinear filter is a triangle: weight 1 at distance 0, falling to 0 at distance 1.
static double triangle(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

// Weights to resample in_size samples to out_size (Pillow's convention: output sample i is
// centred at input coordinate (i + 0.5) * in_size / out_size, pixel centres at j + 0.5).
static void coeffs_compute(Coeffs *c, int in_size, int out_size) {
    double scale = (double)in_size / out_size;
    double fscale = scale < 1.0 ? 1.0 : scale; // stretch the filter only when shrinking
    double support = 1.0 * fscale;              // triangle support 1, stretched
    int ksize = (int)ceil(support) * 2 + 1;
    c->n = out_size;
    c->ksize = ksize;
    c->first = xmalloc((size_t)out_size * sizeof(int));
    c->count = xmalloc((size_t)out_size * sizeof(int));
    c->k = xcalloc((size_t)out_size * (size_t)ksize, sizeof(int32_t));
    double *w = xmalloc((size_t)ksize * sizeof(double));
    double ss = 1.0 / fscale; // a multiplication by the reciprocal, as Pillow does (same bits)
    for (int i = 0; i < out_size; i++) {
        double center = (i + 0.5) * scale;
        int lo = (int)(center - support + 0.5); // truncation, as a C cast rounds
        if (lo < 0) lo = 0;
        int hi = (int)(center + support + 0.5);
        if (hi > in_size) hi = in_size;
        int cnt = hi - lo;
        double sum = 0.0;
        for (int j = 0; j < cnt; j++) {
            w[j] = triangle((j + lo - center + 0.5) * ss);
            sum += w[j];
        }
        int32_t *k = c->k + (size_t)i * ksize;
        for (int j = 0; j < cnt; j++) {
            double v = sum != 0.0 ? w[j] / sum : w[j];
            double f = v * (1 << PRECISION_BITS);
            k[j] = (int32_t)(v < 0 ? f - 0.5 : f + 0.5);
        }
        c->first[i] = lo;
        c->count[i] = cnt;
    }
    free(w);
}
// endregion

static void coeffs_free(Coeffs *c) {
    free(c->first);
    free(c->count);
    free(c->k);
}

static inline uint8_t clip8(int32_t acc) {
    int32_t v = acc >> PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

// ----------------------------------------------------------------------------
// reference passes (plain scalar loops: the specification)

// Horizontal: rows [r0, r1) of src (stride sstride bytes) -> dst rows 0..r1-r0 (stride dstride),
// output columns [x0, x0 + cw).
static void hpass_ref(const uint8_t *src, size_t sstride, int r0, int r1, const Coeffs *c, int x0,
                      int cw, uint8_t *dst, size_t dstride) {
    for (int y = r0; y < r1; y++) {
        const uint8_t *row = src + (size_t)y * sstride;
        uint8_t *out = dst + (size_t)(y - r0) * dstride;
        for (int x = x0; x < x0 + cw; x++) {
            const int32_t *k = c->k + (size_t)x * c->ksize;
            const uint8_t *p = row + (size_t)c->first[x] * 3;
            int32_t s0 = HALF, s1 = HALF, s2 = HALF;
            for (int j = 0; j < c->count[x]; j++) {
                s0 += p[3 * j + 0] * k[j];
                s1 += p[3 * j + 1] * k[j];
                s2 += p[3 * j + 2] * k[j];
            }
            out[3 * (x - x0) + 0] = clip8(s0);
            out[3 * (x - x0) + 1] = clip8(s1);
            out[3 * (x - x0) + 2] = clip8(s2);
        }
    }
}

// Vertical: output rows [y0, y0 + ch) from src whose row 0 is input row `base`; nbytes per row.
static void vpass_ref(const uint8_t *src, size_t sstride, int base, const Coeffs *c, int y0, int ch,
                      size_t nbytes, uint8_t *dst, size_t dstride) {
    for (int y = y0; y < y0 + ch; y++) {
        const int32_t *k = c->k + (size_t)y * c->ksize;
        const uint8_t *s = src + (size_t)(c->first[y] - base) * sstride;
        uint8_t *out = dst + (size_t)(y - y0) * dstride;
        for (size_t b = 0; b < nbytes; b++) {
            int32_t acc = HALF;
            for (int j = 0; j < c->count[y]; j++) acc += s[(size_t)j * sstride + b] * k[j];
            out[b] = clip8(acc);
        }
    }
}

int resize_bilinear_ref(const Image *in, int out_w, int out_h, Image *out) {
    out->w = out->h = 0;
    out->rgb = NULL;
    if (!in->rgb || in->w <= 0 || in->h <= 0 || out_w <= 0 || out_h <= 0) return -1;
    Coeffs ch, cv;
    coeffs_compute(&ch, in->w, out_w);
    coeffs_compute(&cv, in->h, out_h);
    // Pillow's order: horizontal pass over the rows the vertical pass needs, then vertical.
    const uint8_t *src = in->rgb;
    size_t sstride = (size_t)in->w * 3;
    int base = 0;
    uint8_t *tmp = NULL;
    if (out_w != in->w) {
        int r0 = cv.first[0], r1 = cv.first[out_h - 1] + cv.count[out_h - 1];
        tmp = xmalloc((size_t)(r1 - r0) * out_w * 3);
        hpass_ref(in->rgb, sstride, r0, r1, &ch, 0, out_w, tmp, (size_t)out_w * 3);
        sstride = (size_t)out_w * 3;
        src = tmp;
        base = r0;
    }
    out->rgb = xmalloc((size_t)out_w * out_h * 3);
    out->w = out_w;
    out->h = out_h;
    if (out_h != in->h) {
        vpass_ref(src, sstride, base, &cv, 0, out_h, (size_t)out_w * 3, out->rgb,
                  (size_t)out_w * 3);
    } else {
        for (int y = 0; y < out_h; y++)
            memcpy(out->rgb + (size_t)y * out_w * 3, src + (size_t)(y - base) * sstride,
                   (size_t)out_w * 3);
    }
    free(tmp);
    coeffs_free(&ch);
    coeffs_free(&cv);
    return 0;
}

// ----------------------------------------------------------------------------
// fast passes (AVX-512), byte-identical to the reference

#if PREP_AVX512
// Horizontal pass plan: output pixels are taken in groups of up to 5 (15 of 16 int32 lanes: pixel
// p, channel ch in lane 3p+ch) whose input windows fit in one 64-byte load. For tap t, a byte
// permutation (vpermb) gathers each lane's input byte from that load; lanes past a pixel's window
// get weight 0. Groups whose window exceeds 64 bytes (shrinking by more than ~10x) use the
// scalar loop.
typedef struct {
    int start;  // first input byte of the group's window
    int npix;   // output pixels in the group (1..5)
    int ntaps;  // taps (max window over the group); 0 = scalar fallback
    int x;      // first output column (relative to the region)
    int tap0;   // index of its first tap in the idx / w arrays
} HGroup;

typedef struct {
    int ngroups, ntaps;
    HGroup *g;
    __m128i *idx; // (ntaps) byte index of each lane within the 64-byte window
    __m512i *w;   // (ntaps) weight of each lane
} HPlan;

AVX512_FN static void hplan_build(HPlan *pl, const Coeffs *c, int x0, int cw) {
    pl->g = xmalloc((size_t)cw * sizeof(HGroup));
    int cap = 64;
    pl->idx = aligned_alloc(64, (size_t)cap * sizeof(__m128i));
    pl->w = aligned_alloc(64, (size_t)cap * sizeof(__m512i));
    if (!pl->idx || !pl->w) die("out of memory planning a resize");
    pl->ngroups = pl->ntaps = 0;
    int x = x0;
    while (x < x0 + cw) {
        HGroup *g = &pl->g[pl->ngroups++];
        int start = c->first[x] * 3, end = start, npix = 0, ntaps = 0;
        while (npix < 5 && x + npix < x0 + cw) {
            int e = (c->first[x + npix] + c->count[x + npix]) * 3;
            int ne = e > end ? e : end;
            if (ne - start > 64) break;
            end = ne;
            if (c->count[x + npix] > ntaps) ntaps = c->count[x + npix];
            npix++;
        }
        g->start = start;
        g->x = x - x0;
        g->tap0 = pl->ntaps;
        if (npix == 0) { // one window wider than 64 bytes: scalar
            g->npix = 1;
            g->ntaps = 0;
            x += 1;
            continue;
        }
        g->npix = npix;
        g->ntaps = ntaps;
        if (pl->ntaps + ntaps > cap) {
            int ncap = (cap * 2 + ntaps + 3) & ~3; // a multiple of 4: aligned_alloc needs sizes in 64-byte units
            __m128i *ni = aligned_alloc(64, (size_t)ncap * sizeof(__m128i));
            __m512i *nw = aligned_alloc(64, (size_t)ncap * sizeof(__m512i));
            if (!ni || !nw) die("out of memory planning a resize");
            memcpy(ni, pl->idx, (size_t)pl->ntaps * sizeof(__m128i));
            memcpy(nw, pl->w, (size_t)pl->ntaps * sizeof(__m512i));
            free(pl->idx);
            free(pl->w);
            pl->idx = ni;
            pl->w = nw;
            cap = ncap;
        }
        for (int t = 0; t < ntaps; t++) {
            uint8_t bi[16] = {0};
            int32_t wi[16] = {0};
            for (int p = 0; p < npix; p++) {
                int xx = x + p;
                if (t >= c->count[xx]) continue;
                for (int ch = 0; ch < 3; ch++) {
                    bi[3 * p + ch] = (uint8_t)((c->first[xx] + t) * 3 + ch - start);
                    wi[3 * p + ch] = c->k[(size_t)xx * c->ksize + t];
                }
            }
            pl->idx[pl->ntaps + t] = _mm_loadu_si128((const __m128i *)bi);
            pl->w[pl->ntaps + t] = _mm512_loadu_si512(wi);
        }
        pl->ntaps += ntaps;
        x += npix;
    }
}

static void hplan_free(HPlan *pl) {
    free(pl->g);
    free(pl->idx);
    free(pl->w);
}

AVX512_FN static void hpass_avx512(const uint8_t *src, size_t sstride, int in_w, int r0, int r1,
                                   const Coeffs *c, int x0, int cw, uint8_t *dst, size_t dstride) {
    HPlan pl;
    hplan_build(&pl, c, x0, cw);
    const int row_bytes = in_w * 3;
    const __m512i half = _mm512_set1_epi32(HALF), zero = _mm512_setzero_si512();
    for (int y = r0; y < r1; y++) {
        const uint8_t *row = src + (size_t)y * sstride;
        uint8_t *out = dst + (size_t)(y - r0) * dstride;
        for (int gi = 0; gi < pl.ngroups; gi++) {
            const HGroup *g = &pl.g[gi];
            if (g->ntaps == 0) {
                hpass_ref(row, 0, 0, 1, c, x0 + g->x, 1, out + 3 * g->x, 0);
                continue;
            }
            int avail = row_bytes - g->start;
            __mmask64 lm = avail >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << avail) - 1);
            __m512i v = _mm512_maskz_loadu_epi8(lm, row + g->start);
            __m512i acc = half;
            for (int t = 0; t < g->ntaps; t++) {
                __m512i sel = _mm512_permutexvar_epi8(
                    _mm512_castsi128_si512(pl.idx[g->tap0 + t]), v);
                __m512i px = _mm512_cvtepu8_epi32(_mm512_castsi512_si128(sel));
                acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(px, pl.w[g->tap0 + t]));
            }
            acc = _mm512_max_epi32(_mm512_srai_epi32(acc, PRECISION_BITS), zero);
            __m128i b = _mm512_cvtusepi32_epi8(acc); // saturates at 255
            _mm_mask_storeu_epi8(out + 3 * g->x, (__mmask16)((1u << (3 * g->npix)) - 1), b);
        }
    }
    hplan_free(&pl);
}

AVX512_FN static void vpass_avx512(const uint8_t *src, size_t sstride, int base, const Coeffs *c,
                                   int y0, int ch, size_t nbytes, uint8_t *dst, size_t dstride) {
    const __m512i half = _mm512_set1_epi32(HALF), zero = _mm512_setzero_si512();
    for (int y = y0; y < y0 + ch; y++) {
        const int32_t *k = c->k + (size_t)y * c->ksize;
        const int cnt = c->count[y];
        const uint8_t *s = src + (size_t)(c->first[y] - base) * sstride;
        uint8_t *out = dst + (size_t)(y - y0) * dstride;
        size_t b = 0;
        for (; b + 64 <= nbytes; b += 64) { // 64 bytes: 4 accumulators of 16 lanes
            __m512i a0 = half, a1 = half, a2 = half, a3 = half;
            for (int j = 0; j < cnt; j++) {
                const uint8_t *p = s + (size_t)j * sstride + b;
                __m512i w = _mm512_set1_epi32(k[j]);
                a0 = _mm512_add_epi32(a0, _mm512_mullo_epi32(
                    _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + 0))), w));
                a1 = _mm512_add_epi32(a1, _mm512_mullo_epi32(
                    _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + 16))), w));
                a2 = _mm512_add_epi32(a2, _mm512_mullo_epi32(
                    _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + 32))), w));
                a3 = _mm512_add_epi32(a3, _mm512_mullo_epi32(
                    _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + 48))), w));
            }
            a0 = _mm512_max_epi32(_mm512_srai_epi32(a0, PRECISION_BITS), zero);
            a1 = _mm512_max_epi32(_mm512_srai_epi32(a1, PRECISION_BITS), zero);
            a2 = _mm512_max_epi32(_mm512_srai_epi32(a2, PRECISION_BITS), zero);
            a3 = _mm512_max_epi32(_mm512_srai_epi32(a3, PRECISION_BITS), zero);
            _mm_storeu_si128((__m128i *)(out + b + 0), _mm512_cvtusepi32_epi8(a0));
            _mm_storeu_si128((__m128i *)(out + b + 16), _mm512_cvtusepi32_epi8(a1));
            _mm_storeu_si128((__m128i *)(out + b + 32), _mm512_cvtusepi32_epi8(a2));
            _mm_storeu_si128((__m128i *)(out + b + 48), _mm512_cvtusepi32_epi8(a3));
        }
        for (; b < nbytes; b += 16) { // tail, 16 bytes at a time with masked loads and stores
            size_t left = nbytes - b;
            __mmask16 m = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
            __m512i a = half;
            for (int j = 0; j < cnt; j++) {
                __m128i px = _mm_maskz_loadu_epi8(m, s + (size_t)j * sstride + b);
                a = _mm512_add_epi32(a, _mm512_mullo_epi32(_mm512_cvtepu8_epi32(px),
                                                           _mm512_set1_epi32(k[j])));
            }
            a = _mm512_max_epi32(_mm512_srai_epi32(a, PRECISION_BITS), zero);
            _mm_mask_storeu_epi8(out + b, m, _mm512_cvtusepi32_epi8(a));
        }
    }
}
#endif

// The passes the resize uses: AVX-512 where the CPU has it (and PETS_SIMD allows), else scalar.
int resize_uses_avx512(void) { return PREP_AVX512 && cpu_simd() >= CPU_SIMD_AVX512; }

static void hpass_fast(const uint8_t *src, size_t sstride, int in_w, int r0, int r1,
                       const Coeffs *c, int x0, int cw, uint8_t *dst, size_t dstride) {
#if PREP_AVX512
    if (resize_uses_avx512()) {
        hpass_avx512(src, sstride, in_w, r0, r1, c, x0, cw, dst, dstride);
        return;
    }
#endif
    (void)in_w;
    hpass_ref(src, sstride, r0, r1, c, x0, cw, dst, dstride);
}
static void vpass_fast(const uint8_t *src, size_t sstride, int base, const Coeffs *c, int y0,
                       int ch, size_t nbytes, uint8_t *dst, size_t dstride) {
#if PREP_AVX512
    if (resize_uses_avx512()) {
        vpass_avx512(src, sstride, base, c, y0, ch, nbytes, dst, dstride);
        return;
    }
#endif
    vpass_ref(src, sstride, base, c, y0, ch, nbytes, dst, dstride);
}

const char *resize_fast_passes(void) { return resize_uses_avx512() ? "AVX-512" : "scalar"; }

// The region [x0, x0+cw) x [y0, y0+ch) of `in` resized to out_w x out_h, into dst (cw x ch x 3,
// stride cw*3). Only the input rows and output columns the region needs are computed.
static void resize_region(const Image *in, int out_w, int out_h, int x0, int y0, int cw, int ch,
                          uint8_t *dst) {
    Coeffs chz, cv;
    coeffs_compute(&chz, in->w, out_w);
    coeffs_compute(&cv, in->h, out_h);
    size_t dstride = (size_t)cw * 3;
    const uint8_t *src = in->rgb;
    size_t sstride = (size_t)in->w * 3;
    int base = 0;
    uint8_t *tmp = NULL;
    if (out_w != in->w) {
        int r0 = 0, r1 = in->h;
        if (out_h != in->h) { // only the rows the vertical pass reads
            r0 = cv.first[y0];
            r1 = 0;
            for (int y = y0; y < y0 + ch; y++) {
                if (cv.first[y] < r0) r0 = cv.first[y];
                if (cv.first[y] + cv.count[y] > r1) r1 = cv.first[y] + cv.count[y];
            }
        } else {
            r0 = y0;
            r1 = y0 + ch;
        }
        tmp = xmalloc((size_t)(r1 - r0) * dstride + 64);
        hpass_fast(in->rgb, sstride, in->w, r0, r1, &chz, x0, cw, tmp, dstride);
        src = tmp;
        sstride = dstride;
        base = r0;
    } else {
        src = in->rgb + (size_t)x0 * 3; // identity horizontally: read the columns in place
    }
    if (out_h != in->h) {
        vpass_fast(src, sstride, base, &cv, y0, ch, dstride, dst, dstride);
    } else {
        for (int y = y0; y < y0 + ch; y++)
            memcpy(dst + (size_t)(y - y0) * dstride, src + (size_t)(y - base) * sstride, dstride);
    }
    free(tmp);
    coeffs_free(&chz);
    coeffs_free(&cv);
}

// ----------------------------------------------------------------------------
// public API

int resize_bilinear(const Image *in, int out_w, int out_h, Image *out) {
    out->w = out->h = 0;
    out->rgb = NULL;
    if (!in->rgb || in->w <= 0 || in->h <= 0 || out_w <= 0 || out_h <= 0) return -1;
    size_t n;
    if (size_mul((size_t)out_w, (size_t)out_h, &n) || n > IMAGE_MAX_PIXELS) return -1;
    out->rgb = xmalloc(n * 3);
    out->w = out_w;
    out->h = out_h;
    resize_region(in, out_w, out_h, 0, 0, out_w, out_h, out->rgb);
    return 0;
}

void resized_size(int w, int h, int size, int *out_w, int *out_h) {
    int s = w <= h ? w : h, l = w <= h ? h : w;
    int new_long = (int)((double)size * (double)l / (double)s); // Python: int(size * long / short)
    *out_w = w <= h ? size : new_long;
    *out_h = w <= h ? new_long : size;
}

int resize_shorter_side(const Image *in, int size, Image *out) {
    int ow, oh;
    if (!in->rgb || in->w <= 0 || in->h <= 0 || size <= 0) {
        out->w = out->h = 0;
        out->rgb = NULL;
        return -1;
    }
    resized_size(in->w, in->h, size, &ow, &oh);
    return resize_bilinear(in, ow, oh, out);
}

// Python's round(d / 2.0) for d >= 0: halves go to the even neighbour.
static int round_half_even_div2(int d) {
    int q = d / 2;
    if ((d & 1) && (q & 1)) q++;
    return q;
}

void center_crop_offsets(int w, int h, int size, int *left, int *top) {
    *left = round_half_even_div2(w - size);
    *top = round_half_even_div2(h - size);
}

int center_crop(const Image *in, int size, Image *out) {
    out->w = out->h = 0;
    out->rgb = NULL;
    if (!in->rgb || in->w <= 0 || in->h <= 0 || size <= 0) return -1;
    // torchvision pads a too-small image with zeros (left/top get the smaller half), then crops.
    int pl = size > in->w ? (size - in->w) / 2 : 0, pt = size > in->h ? (size - in->h) / 2 : 0;
    int pw = size > in->w ? size : in->w, ph = size > in->h ? size : in->h;
    int left, top;
    center_crop_offsets(pw, ph, size, &left, &top);
    out->rgb = xcalloc((size_t)size * size, 3);
    out->w = out->h = size;
    for (int y = 0; y < size; y++) {
        int sy = top + y - pt;
        if (sy < 0 || sy >= in->h) continue;
        for (int x = 0; x < size; x++) {
            int sx = left + x - pl;
            if (sx < 0 || sx >= in->w) continue;
            memcpy(out->rgb + ((size_t)y * size + x) * 3, in->rgb + ((size_t)sy * in->w + sx) * 3,
                   3);
        }
    }
    return 0;
}

// region: normalize
// (x / 255 - mean[c]) / std[c], each operation rounded to float32 as torch computes it.
static float norm_lut[3][256];
static void norm_lut_init(void) {
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            volatile float x = (float)v / 255.0f; // volatile: keep each float32 rounding step
            volatile float d = x - PREP_MEAN[c];
            norm_lut[c][v] = d / PREP_STD[c];
        }
}

void normalize_chw(const uint8_t *hwc, float *chw) { // (224, 224, 3) uint8 -> (3, 224, 224)
    static pthread_once_t once = PTHREAD_ONCE_INIT; // loader threads call this concurrently
    pthread_once(&once, norm_lut_init);
    const int n = PREP_CROP * PREP_CROP;
    float *r = chw, *g = chw + n, *b = chw + 2 * n;
    for (int i = 0; i < n; i++) {
        r[i] = norm_lut[0][hwc[3 * i + 0]];
        g[i] = norm_lut[1][hwc[3 * i + 1]];
        b[i] = norm_lut[2][hwc[3 * i + 2]];
    }
}
// endregion

// region: preprocess
int preprocess_u8(const Image *in, uint8_t *hwc) {
    if (!in->rgb || in->w <= 0 || in->h <= 0) return -1;
    int rw, rh, left, top;
    resized_size(in->w, in->h, PREP_RESIZE, &rw, &rh); // shorter side 256
    center_crop_offsets(rw, rh, PREP_CROP, &left, &top); // 224 x 224 in the middle
    // Resize only the part of the 256-pixel image that the crop keeps (same bytes).
    resize_region(in, rw, rh, left, top, PREP_CROP, PREP_CROP, hwc);
    return 0;
}
// endregion

int preprocess_image(const Image *in, float *chw) {
    uint8_t *hwc = xmalloc((size_t)PREP_CROP * PREP_CROP * 3);
    int rc = preprocess_u8(in, hwc);
    if (rc == 0) normalize_chw(hwc, chw);
    free(hwc);
    return rc;
}
