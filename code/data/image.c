// image.c: decoding image files into 8-bit RGB by content (magic bytes), not by file extension,
// as PIL's Image.open(path).convert('RGB') would; and writing RGB images as PNG (atomically).
// The decoders are stb_image's (Debian's libstb-dev), compiled here for JPEG, PNG and GIF only,
// behind checks of our own: the format is identified from the first bytes (with a clear message
// for MATLAB files, empty files and formats we do not read), the pixel count is capped before
// anything is allocated, a JPEG whose data ends before its EOI marker is refused as truncated
// (stb would silently fill the missing rows with grey), and the streams stb_image 2.27 (Debian 12)
// mishandles are refused before it sees them (each found by fuzzing, tests/fuzz/):
//   - a JPEG Huffman table with more codes than the format allows (stb overflows its tables);
//   - a JPEG scan that uses a Huffman table no DHT segment defined (stb reads tables it never
//     initialised: an assertion, an out-of-bounds read or garbage pixels);
//   - a JPEG scan whose entropy-coded data ends (at a marker, or the end of the file) before its
//     last block, or holds a Huffman code its table does not define (stb's bit reader stops at
//     the marker, then hands out bits it does not hold: a shift by 32 or more, undefined), checked
//     by a walker of our own that decodes every scan's codes without dequantizing or the IDCT
//     (jpeg_scan.c; it also refuses a restart interval not followed by its RSTn marker, where stb
//     would leave the rest of the image unwritten, and other scans that cannot be walked);
//   - a PNG whose zlib stream uses the invalid distance codes 30/31 (stb takes them as distance 0
//     and copies bytes never written), or any other invalid deflate data (checked by a small
//     inflate walker of our own that decodes the codes without writing the output);
//   - a PNG whose first IDAT chunk is empty (stb then copies 0 bytes to a NULL pointer: UB).
// Any assertion left inside stb becomes a clean error for that image: STBI_ASSERT jumps back
// (longjmp) into the decode call, which frees what stb had allocated (a per-thread allocation list).
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
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "data/jpeg_scan.h"

// ----------------------------------------------------------------------------
// stb_image's implementation (this translation unit only; stb_image_write's is in stb_write.c)

#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_GIF
#define STBI_NO_STDIO                     // we read files ourselves (read_file, with a size cap)
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#define STBI_MAX_DIMENSIONS (1 << 16)     // per side; IMAGE_MAX_PIXELS caps the area
#define STBI_ASSERT(x) ((x) ? (void)0 : stb_assert_failed(#x, __LINE__))
#define STBI_MALLOC(n) stb_malloc(n)
#define STBI_REALLOC(p, n) stb_realloc(p, n)
#define STBI_FREE(p) stb_free(p)
#define STB_IMAGE_IMPLEMENTATION
// ----------------------------------------------------------------------------
// stb's allocations and assertions, guarded per decode call (see stb_guarded below)

// One decode call in progress on this thread: what stb has allocated and not yet freed, and where
// a failed assertion jumps back to.
typedef struct {
    void **live;
    int n, cap;
    jmp_buf jump;
    const char *assertion; // the failed expression
    int line;              // its line in stb_image.h
} StbCall;
static _Thread_local StbCall *stb_call;

static void live_add(void *p) {
    StbCall *c = stb_call;
    if (!c || !p) return;
    if (c->n == c->cap) c->live = xrealloc(c->live, (size_t)(c->cap = 2 * c->cap + 16) * sizeof(void *));
    c->live[c->n++] = p;
}

// Where p is in the list, or -1.
static int live_find(const void *p) {
    StbCall *c = stb_call;
    if (!c || !p) return -1;
    for (int i = c->n; i-- > 0;)
        if (c->live[i] == p) return i;
    return -1;
}

static void live_remove(void *p) {
    int i = live_find(p);
    if (i >= 0) stb_call->live[i] = stb_call->live[--stb_call->n];
}

static void *stb_malloc(size_t n) {
    void *p = malloc(n);
    live_add(p);
    return p;
}

static void *stb_realloc(void *p, size_t n) {
    int i = live_find(p);
    void *q = realloc(p, n);
    if (q && i >= 0) stb_call->live[i] = q;
    else if (q) live_add(q);
    return q;
}

static void stb_free(void *p) {
    live_remove(p);
    free(p);
}

__attribute__((noreturn)) static void stb_assert_failed(const char *expr, int line) {
    if (!stb_call) { // never: every stb call runs inside stb_guarded
        fprintf(stderr, "stb_image.h:%d: assertion failed: %s\n", line, expr);
        abort();
    }
    stb_call->assertion = expr;
    stb_call->line = line;
    longjmp(stb_call->jump, 1);
}

// stb is included as a system header (SYSTEM in the CMake fragment), so its own warnings are
// not ours and need no pragmas; our code keeps every warning.
#include <stb_image.h>
#include <stb_image_write.h> // declarations only

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

// The tables and scans of a JPEG, checked before stb_image 2.27 (Debian 12's libstb-dev) uses
// them, since it trusts them:
//   - every Huffman table (DHT segment) may define at most 256 codes: stb writes past its
//     256-entry tables on a hostile file (fixed upstream in 2.28);
//   - every Huffman table a scan (SOS) uses must have been defined by a DHT segment before it.
//     A sequential scan uses the DC and AC tables its components select; a progressive one the DC
//     tables when it is a first DC scan (Ss = 0, Ah = 0), the AC tables when it is an AC scan
//     (Ss > 0), none for a DC refinement;
//   - every quantization table a frame component selects must have been defined by a DQT
//     segment: before each scan of the component (sequential), or by the end (progressive, where
//     stb dequantises after the last scan);
//   - every frame component must be covered by a scan (sequential) or by a first DC scan
//     (progressive): stb leaves the pixels or coefficients of an uncovered one unwritten.
// Otherwise stb decodes with memory it never initialised (an assertion, an out-of-bounds read or
// garbage pixels). Walks every marker of the file as stb does: inside scan data, FF 00 (a stuffed
// byte) and the restart markers are skipped. Returns 0, or -1 with the reason in *why.
typedef struct {
    unsigned huff[2];    // bit t of huff[c]: Huffman table t of class c (0 DC, 1 AC) defined
    unsigned quant;      // bit t: quantization table t defined
    int progressive;     // from the first frame header (SOF2 = progressive); -1 before it
    int nf;              // frame components
    uint8_t id[4], tq[4]; // their ids and quantization tables
    uint8_t covered[4];  // 1 once a scan (a first DC scan when progressive) covered it
} JpegTables;

static const char *const JPEG_NO_QUANT =
    "corrupt JPEG (a component uses a quantization table that no DQT segment defines)";

// At the end of the file: every component covered, and (progressive) its quantization table there.
static int jpeg_tables_end(const JpegTables *t, const char **why) {
    for (int c = 0; c < t->nf; c++) {
        if (!t->covered[c]) {
            *why = "corrupt JPEG (a component that no scan decodes)";
            return -1;
        }
        if (t->progressive == 1 && !(t->quant >> t->tq[c] & 1)) {
            *why = JPEG_NO_QUANT;
            return -1;
        }
    }
    return 0;
}

// A DHT segment's tables (class/id, 16 code counts, the symbols) in buf[q..end).
static int jpeg_dht(JpegTables *t, const uint8_t *buf, size_t q, size_t end, const char **why) {
    while (q < end) {
        if (q + 17 > end) { *why = "corrupt JPEG (bad Huffman table)"; return -1; }
        int tc = buf[q] >> 4, th = buf[q] & 15;
        if (tc > 1 || th > 3) { *why = "corrupt JPEG (Huffman table of an unknown class or id)"; return -1; }
        size_t codes = 0;
        for (int i = 1; i <= 16; i++) codes += buf[q + i];
        if (codes > 256) { *why = "corrupt JPEG (Huffman table with more than 256 codes)"; return -1; }
        t->huff[tc] |= 1u << th;
        q += 17 + codes;
    }
    return 0;
}

// An SOS segment in buf[p..end) (p at its length): length, Ns, Ns x (component id,
// DC table << 4 | AC table), Ss, Se, Ah << 4 | Al.
static int jpeg_sos(JpegTables *t, const uint8_t *buf, size_t p, size_t end, const char **why) {
    size_t ns = p + 2 < end ? buf[p + 2] : 0;
    if (p + 6 + 2 * ns > end || t->progressive < 0) return 0; // stb refuses these itself
    int ss = buf[p + 3 + 2 * ns], ah = buf[p + 5 + 2 * ns] >> 4;
    int first_dc = ss == 0 && ah == 0;
    int need_dc = !t->progressive || first_dc, need_ac = !t->progressive || ss > 0;
    for (size_t k = 0; k < ns; k++) {
        int td = buf[p + 4 + 2 * k] >> 4, ta = buf[p + 4 + 2 * k] & 15;
        if ((need_dc && (td > 3 || !(t->huff[0] >> td & 1))) ||
            (need_ac && (ta > 3 || !(t->huff[1] >> ta & 1)))) {
            *why = "corrupt JPEG (a scan uses a Huffman table that no DHT segment defines)";
            return -1;
        }
        for (int c = 0; c < t->nf; c++) {
            if (t->id[c] != buf[p + 3 + 2 * k]) continue;
            if (!t->progressive && !(t->quant >> t->tq[c] & 1)) { *why = JPEG_NO_QUANT; return -1; }
            if (!t->progressive || first_dc) t->covered[c] = 1;
        }
    }
    return 0;
}

static int jpeg_check_tables(const uint8_t *buf, size_t n, const char **why) {
    JpegTables t = {.progressive = -1};
    size_t p = 2;
    for (;;) {
        while (p < n && buf[p] != 0xFF) p++;
        while (p < n && buf[p] == 0xFF) p++;
        if (p >= n) return jpeg_tables_end(&t, why); // truncation is jpeg_check_complete's business
        uint8_t m = buf[p++];
        if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;
        if (m == 0xD9 || p + 2 > n) return jpeg_tables_end(&t, why);
        size_t len = ((size_t)buf[p] << 8) | buf[p + 1];
        if (len < 2) { *why = "corrupt JPEG (bad segment length)"; return -1; }
        size_t end = p + len < n ? p + len : n;
        if (m == 0xC4) {
            if (jpeg_dht(&t, buf, p + 2, end, why)) return -1;
        } else if (m == 0xDB) { // DQT: tables of (precision << 4 | id, 64 or 128 bytes)
            for (size_t q = p + 2; q < end; q += (buf[q] >> 4) ? 129 : 65)
                if ((buf[q] & 15) < 4) t.quant |= 1u << (buf[q] & 15);
        } else if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
            if (t.progressive < 0) { // SOF: length, precision, height, width, Nf, Nf x (id, HV, Tq)
                t.progressive = m == 0xC2;
                int nf = p + 7 < end ? buf[p + 7] : 0;
                if (nf > 4 || p + 8 + 3 * (size_t)nf > end) return 0; // stb refuses these itself
                t.nf = nf;
                for (int c = 0; c < nf && c < 4; c++) {
                    t.id[c] = buf[p + 8 + 3 * c];
                    t.tq[c] = buf[p + 10 + 3 * c] & 3; // stb refuses Tq > 3
                }
            }
        } else if (m == 0xDA) {
            if (jpeg_sos(&t, buf, p, end, why)) return -1;
        }
        p += len;
    }
}

// ----------------------------------------------------------------------------
// PNG: the chunks and the zlib stream, checked before stb_image sees them

// A bit reader over a deflate stream (least significant bit first). Reading past the end fails.
typedef struct {
    const uint8_t *p, *end;
    uint32_t bits; // not yet consumed, low bits first
    int nbits;     // how many (0..7 between calls)
} BitReader;

static int get_bits(BitReader *br, int n, unsigned *v) {
    while (br->nbits < n) {
        if (br->p == br->end) return -1;
        br->bits |= (uint32_t)*br->p++ << br->nbits;
        br->nbits += 8;
    }
    *v = br->bits & ((1u << n) - 1);
    br->bits >>= n;
    br->nbits -= n;
    return 0;
}

// A canonical Huffman code (RFC 1951 3.2.2): how many codes of each length, and the symbols in
// code order (by length, then by symbol).
typedef struct {
    uint16_t count[16];
    uint16_t symbol[320];
} Huffman;

// Builds the code from the lengths of n symbols (0 = unused). Returns -1 when the lengths ask for
// more codes than exist (over-subscribed); an incomplete code is allowed (unused codes are
// refused when met).
static int huffman_build(Huffman *h, const uint8_t *length, int n) {
    memset(h->count, 0, sizeof h->count);
    for (int i = 0; i < n; i++) h->count[length[i]]++;
    int left = 1;
    for (int len = 1; len < 16; len++) {
        left = 2 * left - h->count[len];
        if (left < 0) return -1;
    }
    uint16_t start[16];
    start[1] = 0;
    for (int len = 1; len < 15; len++) start[len + 1] = start[len] + h->count[len];
    for (int i = 0; i < n; i++)
        if (length[i]) h->symbol[start[length[i]]++] = (uint16_t)i;
    return 0;
}

// Decodes one symbol, a bit at a time: returns it, -1 when there is no such code, -2 when the
// data ends first.
static int huffman_decode(BitReader *br, const Huffman *h) {
    int code = 0, first = 0, index = 0; // code read so far; first code and symbol of its length
    for (int len = 1; len < 16; len++) {
        unsigned bit;
        if (get_bits(br, 1, &bit)) return -2;
        code |= (int)bit;
        int count = h->count[len];
        if (code - first < count) return h->symbol[index + code - first];
        index += count;
        first = (first + count) << 1;
        code <<= 1;
    }
    return -1;
}

// The compressed blocks of a deflate stream, walked as an inflater would, without writing the
// output (only its length is counted, for the distance check). Returns 0 when the stream is valid
// up to its final block, or -1 with the reason in *why.
static int deflate_check(const uint8_t *data, size_t n, const char **why) {
    static const uint8_t order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    static const uint16_t len_base[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                          31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
    static const uint16_t dist_base[30] = {1,   2,   3,   4,    5,    7,    9,    13,    17,    25,
                                           33,  49,  65,  97,   129,  193,  257,  385,   513,   769,
                                           1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
    BitReader br = {data, data + n, 0, 0};
    uint64_t out = 0; // bytes the stream has produced so far
    Huffman lit, dist;
    unsigned final, type, v;
    do {
        if (get_bits(&br, 1, &final) || get_bits(&br, 2, &type)) goto ended;
        if (type == 0) { // stored: byte-aligned LEN, NLEN, then LEN bytes
            br.bits = 0, br.nbits = 0;
            if (br.end - br.p < 4) goto ended;
            unsigned len = br.p[0] | br.p[1] << 8, nlen = br.p[2] | br.p[3] << 8;
            if (len != (~nlen & 0xFFFF)) { *why = "corrupt PNG (zlib stored block with a bad length)"; return -1; }
            br.p += 4;
            if ((size_t)(br.end - br.p) < len) goto ended;
            br.p += len;
            out += len;
            continue;
        }
        if (type == 3) { *why = "corrupt PNG (zlib block of the invalid type 3)"; return -1; }
        uint8_t length[286 + 30];
        int nlit = 288, ndist = 30;
        if (type == 1) { // the fixed codes
            for (int i = 0; i < 288; i++) length[i] = i < 144 ? 8 : i < 256 ? 9 : i < 280 ? 7 : 8;
            huffman_build(&lit, length, 288);
            for (int i = 0; i < 30; i++) length[i] = 5;
            huffman_build(&dist, length, 30); // codes 30 and 31 exist but are invalid: unassigned here
        } else { // dynamic: code lengths, themselves Huffman-coded
            unsigned hlit, hdist, hclen;
            if (get_bits(&br, 5, &hlit) || get_bits(&br, 5, &hdist) || get_bits(&br, 4, &hclen)) goto ended;
            nlit = (int)hlit + 257, ndist = (int)hdist + 1;
            if (nlit > 286 || ndist > 30) {
                *why = "corrupt PNG (zlib block with more length or distance codes than exist)";
                return -1;
            }
            uint8_t cl[19] = {0};
            for (unsigned i = 0; i < hclen + 4; i++) {
                if (get_bits(&br, 3, &v)) goto ended;
                cl[order[i]] = (uint8_t)v;
            }
            Huffman clh;
            if (huffman_build(&clh, cl, 19)) { *why = "corrupt PNG (zlib code lengths)"; return -1; }
            for (int i = 0; i < nlit + ndist;) {
                int sym = huffman_decode(&br, &clh);
                if (sym < 0) goto bad_code_or_end;
                if (sym < 16) { length[i++] = (uint8_t)sym; continue; }
                unsigned rep;
                uint8_t fill = 0;
                if (sym == 16) {
                    if (i == 0) { *why = "corrupt PNG (zlib code lengths)"; return -1; }
                    fill = length[i - 1];
                    if (get_bits(&br, 2, &rep)) goto ended;
                    rep += 3;
                } else if (sym == 17) {
                    if (get_bits(&br, 3, &rep)) goto ended;
                    rep += 3;
                } else {
                    if (get_bits(&br, 7, &rep)) goto ended;
                    rep += 11;
                }
                if ((int)rep > nlit + ndist - i) { *why = "corrupt PNG (zlib code lengths)"; return -1; }
                while (rep--) length[i++] = fill;
            }
            if (huffman_build(&lit, length, nlit) || huffman_build(&dist, length + nlit, ndist)) {
                *why = "corrupt PNG (zlib code lengths)";
                return -1;
            }
        }
        for (;;) { // the symbols of the block
            int sym = huffman_decode(&br, &lit);
            if (sym < 0) goto bad_code_or_end;
            if (sym < 256) { out++; continue; }
            if (sym == 256) break;
            if (sym >= 286) { *why = "corrupt PNG (zlib stream with an invalid length code)"; return -1; }
            unsigned len = len_base[sym - 257], extra = 0;
            int nx = sym < 265 || sym == 285 ? 0 : (sym - 261) / 4;
            if (nx && get_bits(&br, nx, &extra)) goto ended;
            len += extra;
            int dsym = huffman_decode(&br, &dist);
            if (dsym == -2) goto ended;
            if (dsym < 0) {
                *why = "corrupt PNG (zlib stream with an invalid distance code: 30, 31 or unassigned)";
                return -1;
            }
            unsigned d = dist_base[dsym];
            nx = dsym < 4 ? 0 : dsym / 2 - 1;
            extra = 0;
            if (nx && get_bits(&br, nx, &extra)) goto ended;
            d += extra;
            if (d > out) { *why = "corrupt PNG (zlib distance before the start of the data)"; return -1; }
            out += len;
        }
    } while (!final);
    return 0;
ended:
    *why = "corrupt PNG (zlib stream ends before its final block)";
    return -1;
bad_code_or_end:
    if (br.p == br.end && br.nbits == 0) goto ended;
    *why = "corrupt PNG (zlib stream with an invalid Huffman code)";
    return -1;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

// Walks the chunks as stb_image does (IDATs concatenated wherever they are, up to IEND) and checks
// the image data: no empty IDAT before any data (stb would copy to a NULL pointer), and a valid
// zlib stream (raw deflate after an Apple CgBI chunk, as stb reads it). A file that ends early or
// whose chunks stb refuses anyway is left to stb's own message. Returns 0, or -1 with *why.
static int png_check_stream(const uint8_t *buf, size_t n, const char **why) {
    uint8_t *idat = NULL;
    size_t idat_n = 0, p = 8;
    int raw_deflate = 0, rc = 0;
    while (p + 8 <= n) {
        uint32_t len = be32(buf + p);
        const uint8_t *type = buf + p + 4;
        p += 8;
        if (!memcmp(type, "IEND", 4)) { // stb decodes here and never reads IEND's length or data
            if (idat_n >= 2 || (raw_deflate && idat_n))
                rc = deflate_check(idat + (raw_deflate ? 0 : 2), idat_n - (raw_deflate ? 0 : 2), why);
            break;
        }
        if (len > n - p) { // stb would first allocate what the length claims (up to 1 GiB)
            if (!memcmp(type, "IDAT", 4)) {
                *why = "truncated PNG (an IDAT chunk runs past the end of the file)";
                rc = -1;
            }
            break;
        }
        if (!memcmp(type, "CgBI", 4)) raw_deflate = 1;
        if (!memcmp(type, "IDAT", 4)) {
            if (len == 0 && idat_n == 0) {
                *why = "corrupt PNG (an empty IDAT chunk before the image data)";
                rc = -1;
                break;
            }
            idat = xrealloc(idat, idat_n + len + 1);
            memcpy(idat + idat_n, buf + p, len);
            idat_n += len;
        }
        if (n - p - len < 4) break;
        p += len + 4; // data and CRC
    }
    free(idat);
    return rc;
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

// stb_image's header read (load = 0: *w, *h only) or full decode to RGB (load = 1: returns the
// pixels, malloc'd), with its allocations tracked: a failed stb assertion jumps back here, frees
// what stb had allocated and reports the failure ("stb_image.h:LINE: EXPR") in *assertion.
// Returns 1 on success, 0 when stb refuses the data (stbi_failure_reason), -1 on an assertion.
static int stb_guarded(const uint8_t *buf, int n, int load, int *w, int *h, uint8_t **rgb,
                       char *assertion, size_t alen) {
    static _Thread_local StbCall call;
    memset(&call, 0, sizeof call);
    stb_call = &call;
    int ok, comp;
    *rgb = NULL;
    if (setjmp(call.jump) == 0) {
        if (load) {
            *rgb = stbi_load_from_memory(buf, n, w, h, &comp, 3);
            ok = *rgb != NULL;
        } else {
            ok = stbi_info_from_memory(buf, n, w, h, &comp) != 0;
        }
        live_remove(*rgb); // the caller owns the pixels
    } else {
        *rgb = NULL;
        ok = -1;
        snprintf(assertion, alen, "stb_image.h:%d: %s", call.line, call.assertion);
    }
    stb_call = NULL;
    for (int i = 0; i < call.n; i++) free(call.live[i]); // what stb left behind
    free(call.live);
    return ok;
}

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
    if ((fmt == FMT_JPEG && (jpeg_check_complete(buf, n, &what) || jpeg_check_tables(buf, n, &what))) ||
        (fmt == FMT_PNG && png_check_stream(buf, n, &what)))
        return set_err(err, errlen, "%s: %s", name, what);

    // Header first: refuse huge images before stb allocates anything for them.
    const char *fname = fmt == FMT_JPEG ? "JPEG" : fmt == FMT_PNG ? "PNG" : "GIF";
    int w, h, dw, dh, ok;
    uint8_t *rgb;
    char assertion[256];
    if ((ok = stb_guarded(buf, (int)n, 0, &w, &h, &rgb, assertion, sizeof assertion)) <= 0)
        return set_err(err, errlen, "%s: corrupt %s header (%s)", name, fname,
                       ok < 0 ? assertion : stbi_failure_reason());
    if (w <= 0 || h <= 0 || (uint64_t)w * (uint64_t)h > IMAGE_MAX_PIXELS)
        return set_err(err, errlen, "%s: image of %d x %d pixels is larger than the %u-pixel cap",
                       name, w, h, IMAGE_MAX_PIXELS);
    // Every scan walked once the size is known to be within the cap (the walk's memory grows
    // with it), before stb decodes them.
    char why[192];
    if (fmt == FMT_JPEG && jpeg_scan_check(buf, n, IMAGE_MAX_PIXELS, why, sizeof why))
        return set_err(err, errlen, "%s: %s", name, why);

    if ((ok = stb_guarded(buf, (int)n, 1, &dw, &dh, &rgb, assertion, sizeof assertion)) <= 0) {
        const char *r = ok < 0 ? assertion : stbi_failure_reason();
        return set_err(err, errlen, "%s: cannot decode %s (%s)", name, fname,
                       r ? r : "unknown reason");
    }
    if (dw != w || dh != h) {
        free(rgb);
        return set_err(err, errlen, "%s: decoded size %dx%d differs from header %dx%d", name, dw,
                       dh, w, h);
    }
    img->w = w;
    img->h = h;
    img->rgb = rgb; // stb allocates with malloc (stb_malloc): image_free's free() releases it
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
