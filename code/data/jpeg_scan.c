// jpeg_scan.c: the entropy-coded data of a JPEG, walked before stb_image 2.27 decodes it.
// stb's bit reader stops filling at the first marker inside a scan's data, and several of its
// readers then take bits it does not hold: its bit count goes negative and the next fill shifts by
// 32 or more (undefined behaviour; fixed upstream after 2.27). So every scan is decoded here as a
// decoder reads it (ITU T.81: Annex F for sequential, Annex G for progressive scans): Huffman
// codes, the bits that follow them, EOB runs, correction bits, restart intervals; nothing is
// dequantized or transformed. The image is refused when a scan needs a bit beyond the end of its
// data (the first marker that is neither a stuffed FF 00 nor an RSTn where an interval ends; or
// the end of the file), meets a code its table does not define, or cannot be walked otherwise.
// The modes are exactly those stb decodes: 8-bit Huffman, sequential (SOF0, SOF1) or progressive
// (SOF2). Where stb refuses a file itself (another mode, a bad header, an unknown marker) the walk
// stops there, the scans before it walked, and leaves the refusal to stb's own message.
// Where they matter for consistency the walk follows stb: the tables are those DHT segments
// defined before the scan, fill bytes FF before a marker are skipped, FF FF.. 00 is one data byte,
// any RSTn ends an interval, and a progressive block's non-zero coefficients (which decide how
// many correction bits a refinement reads) are tracked as stb stores them.
#include "data/jpeg_scan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

// Why a walk refuses the image (the message is made at the end, naming the scan).
enum {
    JS_OK,
    JS_ENDED,       // the data ends (a marker, the end of the file) before the scan's last block
    JS_BAD_CODE,    // a Huffman code the table does not define
    JS_DC_SIZE,     // a DC difference of more than 15 bits (stb refuses them)
    JS_REFINE_SIZE, // a refinement scan coding a new coefficient of more than one bit
    JS_NO_RESTART,  // data goes on where a restart interval ends, instead of an RSTn marker
    JS_AC_FIRST,    // AC coefficients of a component before any scan coded its DC coefficients
    JS_NO_TABLE,    // a scan uses a Huffman table no DHT segment defined
    JS_BIG_TABLE,   // a Huffman table of more than 256 codes
    JS_CAP,         // a frame larger than the pixel cap
    JS_NO_MEMORY,
};

static unsigned be16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }

// ----------------------------------------------------------------------------
// Huffman tables (DHT segments)

#define FAST_BITS 10 // codes up to this long are decoded with one table look-up
// fast_ac entries: bits 0-5 the length (a shift count as is), 8-11 the run, and a flag: a
// coefficient (size > 0) after `run` zeros, or the end of band (EOB0); neither: 16 zeros (ZRL)
#define AC_COEF 0x1000
#define AC_EOB 0x2000
#define AC_LEN(e) ((e) & 63)
#define AC_RUN(e) ((e) >> 8 & 15)

typedef struct {
    int defined;
    uint16_t fast[1 << FAST_BITS]; // the next FAST_BITS bits -> length << 8 | symbol (0: longer)
    uint16_t fast_ac[1 << FAST_BITS]; // AC tables: the next bits -> a code with its extra bits
                                      // (AC_* | run << 8 | length), 0 when longer (or EOBr, r > 0)
    uint32_t limit[17];            // [L]: one past the last code of length L, as a 16-bit prefix
    int offset[17];                // [L]: code c of length L is symbol[c + offset[L]]
    uint8_t symbol[256];
} Huff;

// Builds a table's canonical code (T.81 Annex C: codes assigned in order of length, then of
// position) from its 16 counts and nsym <= 256 symbols. Returns -1 when the counts ask for more
// codes of some length than exist (stb refuses such a table: "bad code lengths").
static int huff_build(Huff *t, const uint8_t *count, const uint8_t *symbol, int nsym) {
    memset(t->fast, 0, sizeof t->fast);
    memcpy(t->symbol, symbol, (size_t)nsym);
    uint32_t code = 0; // the next code of the current length
    int index = 0;     // its symbol's position
    for (int len = 1; len <= 16; len++) {
        int c = count[len - 1];
        if (code + (uint32_t)c > (1u << len)) return -1;
        t->offset[len] = index - (int)code;
        for (int i = 0; i < c; i++, code++, index++) {
            if (len > FAST_BITS) continue;
            uint32_t first = code << (FAST_BITS - len), span = 1u << (FAST_BITS - len);
            for (uint32_t j = 0; j < span; j++)
                t->fast[first + j] = (uint16_t)(len << 8 | t->symbol[index]);
        }
        t->limit[len] = code << (16 - len);
        code <<= 1;
    }
    t->defined = 1;
    return 0;
}

// An AC table's look-up of whole coefficients: the code and the size bits after it, when both fit
// in FAST_BITS; end of band (EOB0) and 16 zeros (ZRL) too.
static void huff_build_ac(Huff *t) {
    for (int i = 0; i < 1 << FAST_BITS; i++) {
        int e = t->fast[i], len = e >> 8, run = (e >> 4) & 15, size = e & 15;
        t->fast_ac[i] = 0;
        if (!e || len + size > FAST_BITS) continue;
        if (size) t->fast_ac[i] = (uint16_t)(AC_COEF | run << 8 | (len + size));
        else if (run == 0) t->fast_ac[i] = (uint16_t)(AC_EOB | len);
        else if (run == 15) t->fast_ac[i] = (uint16_t)(15 << 8 | len);
    }
}

// ----------------------------------------------------------------------------
// the bits of a scan's data, one segment at a time: up to the first marker (an RSTn ends an
// interval's segment), copied without the stuffing, then read past its end as zeros. Decoding
// never stops for the end: after each block, the bits it took are compared with those there are.

typedef struct {
    uint8_t *data;    // the segment's bytes, FF 00 as one byte FF, then 16 zero bytes
    size_t len, cap;  // how many bytes it has; the allocation
    size_t p;         // the next byte to load
    uint64_t acc;     // the next bits (the next in bit 63)
    int nbits;        // how many of them come from loaded bytes (the rest: bits of byte p on)
    size_t marker_at; // the marker ending the segment: where its first FF is (the file's end)
    size_t after;     // where the bytes after its code start
    int marker;       // its code (-1 at the end of the file)
} Bits;

// Appends m bytes to the segment, whose room was made by bits_load.
static void bits_append(Bits *in, const uint8_t *bytes, size_t m) {
    memcpy(in->data + in->len, bytes, m);
    in->len += m;
}

// Loads the segment starting at buf[at]: data bytes up to a marker (fill bytes FF, then a code
// other than 00) or the end of the file. Returns -1 when memory runs out.
static int bits_load(Bits *in, const uint8_t *buf, size_t n, size_t at) {
    static const uint8_t ff = 0xFF;
    if (in->cap < n - at + 16) { // room for the rest of the file: at most its size, once per walk
        free(in->data);
        in->cap = n - at + 16;
        if (!(in->data = malloc(in->cap))) return in->cap = 0, -1;
    }
    in->len = in->p = 0, in->acc = 0, in->nbits = 0;
    for (size_t p = at;;) {
        const uint8_t *next = memchr(buf + p, 0xFF, n - p);
        size_t q = next ? (size_t)(next - buf) : n, r = q + 1;
        bits_append(in, buf + p, q - p);
        if (q == n) {
            in->marker_at = in->after = n, in->marker = -1;
            break;
        }
        while (r < n && buf[r] == 0xFF) r++;
        if (r < n && buf[r] == 0) { // stuffing (after fill bytes too: one byte FF, as stb reads it)
            bits_append(in, &ff, 1);
            p = r + 1;
            continue;
        }
        in->marker_at = q, in->marker = r < n ? buf[r] : -1, in->after = r < n ? r + 1 : n;
        break;
    }
    memset(in->data + in->len, 0, 16);
    return 0;
}

// The bits read so far, and those the segment has.
static uint64_t bits_used(const Bits *in) { return 8 * (uint64_t)in->p - (uint64_t)in->nbits; }
static uint64_t bits_there(const Bits *in) { return 8 * (uint64_t)in->len; }

// Loads whole bytes into acc: 56 or more bits counted after.
static inline void bits_fill(Bits *in) {
    uint64_t x = 0; // the 8 bytes at p, the first in the top bits
    if (in->p <= in->len + 8) {
        memcpy(&x, in->data + in->p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        x = __builtin_bswap64(x);
#elif !defined(__BYTE_ORDER__)
        x = 0;
        for (int i = 0; i < 8; i++) x = x << 8 | in->data[in->p + i];
#endif
    }
    // the bits below nbits are zeros or already these same bits: OR keeps them right
    in->acc |= x >> in->nbits;
    in->p += (size_t)((63 - in->nbits) >> 3);
    in->nbits |= 56;
}

// Reads n (1..16) bits as an unsigned number.
static inline unsigned get_bits(Bits *in, int n) {
    if (in->nbits < n) bits_fill(in);
    unsigned v = (unsigned)(in->acc >> (64 - n));
    in->acc <<= n;
    in->nbits -= n;
    return v;
}

static void skip_bits(Bits *in, int n) {
    for (; n > 16; n -= 16) get_bits(in, 16);
    if (n > 0) get_bits(in, n);
}

// Decodes one Huffman code: returns its symbol, or -1 when no code of the table starts with
// these bits (even read as zeros past the data's end: zeros are the smallest continuation).
static inline int huff_decode(Bits *in, const Huff *t) {
    if (in->nbits < 16) bits_fill(in);
    unsigned peek = (unsigned)(in->acc >> 48);
    unsigned e = t->fast[peek >> (16 - FAST_BITS)];
    int len = e >> 8, sym = e & 0xFF;
    if (!e) {
        for (len = FAST_BITS + 1; len <= 16 && peek >= t->limit[len]; len++) {}
        if (len > 16) return -1;
        sym = t->symbol[(int)(peek >> (16 - len)) + t->offset[len]];
    }
    in->acc <<= len;
    in->nbits -= len;
    return sym;
}

// Takes one whole AC coefficient (or EOB, ZRL) in one look-up when its code and extra bits fit in
// FAST_BITS (see huff_build_ac): returns the table entry after consuming its bits, or 0 (nothing
// consumed) when the slow path must decode it.
static inline unsigned ac_fast_take(Bits *in, const Huff *ac) {
    if (in->nbits < 32) bits_fill(in);
    unsigned e = ac->fast_ac[in->acc >> (64 - FAST_BITS)];
    if (e) {
        in->acc <<= AC_LEN(e);
        in->nbits -= (int)AC_LEN(e);
    }
    return e;
}

// ----------------------------------------------------------------------------
// the walk's state: the frame, the tables, the scan being walked

typedef struct {
    int id, h, v;     // from the frame header: identifier, sampling factors
    int bw, bh;       // blocks of a non-interleaved scan: ceil(component width / 8) x ...
    int cw, ch;       // blocks of the interleaved MCUs covering the image (cw: one row)
    int td, ta;       // the DC and AC tables the latest scan header selected for it
    int dc_coded;     // progressive: a first DC scan has covered it
    uint64_t *nz;     // progressive, per block (cw x ch): bit k = coefficient k (zigzag) non-zero
} Comp;

typedef struct {
    Huff dc[4], ac[4];
    int frame, progressive, w, h, nf, mcux, mcuy;
    Comp comp[4];
    unsigned restart;                 // MCUs per restart interval (DRI; 0 = none)
    int scan;                         // scans met so far: the one being walked
    int ns, order[4], ss, se, ah, al; // its components (indices into comp) and parameters
    int eobrun;                       // blocks left in the current EOB run
    Bits in;
    int err;                          // JS_*
} Walk;

// Refuses the image. A code the data cannot hold (its bits, or all of them, past the data's end)
// is the data ending early.
static int fail(Walk *w, int err) {
    uint64_t used = bits_used(&w->in), there = bits_there(&w->in);
    if ((err == JS_BAD_CODE && used >= there) || ((err == JS_DC_SIZE || err == JS_REFINE_SIZE) && used > there))
        err = JS_ENDED;
    w->err = err;
    return -1;
}

// fail() from a block that read through its own copy of the bits: the copy is the position.
static int fail_at(Walk *w, const Bits *in, int err) {
    w->in = *in;
    return fail(w, err);
}

// ----------------------------------------------------------------------------
// blocks (one 8x8 block of one component, its coefficients in zigzag order 0..63)

// Sequential: a DC difference (size code, then that many bits), then AC codes (run << 4 | size,
// then size bits; 0x00 ends the block, 0xF0 is a run of 16 zeros) up to coefficient 63.
static int block_sequential(Walk *w, const Comp *c) {
    Bits in = w->in; // a copy the compiler keeps in registers
    const Huff *ac = &w->ac[c->ta];
    int t = huff_decode(&in, &w->dc[c->td]);
    if (t < 0 || t > 15) return fail_at(w, &in, t < 0 ? JS_BAD_CODE : JS_DC_SIZE);
    if (t) get_bits(&in, t);
    for (int k = 1; k < 64;) {
        unsigned e = ac_fast_take(&in, ac);
        if (e) {
            if (e & AC_EOB) break;
            k += (int)AC_RUN(e) + 1;
            continue;
        }
        int rs = huff_decode(&in, ac);
        if (rs < 0) return fail_at(w, &in, JS_BAD_CODE);
        int r = rs >> 4, s = rs & 15;
        if (s == 0 && r != 15) break;
        if (s) get_bits(&in, s);
        k += s ? r + 1 : 16; // a run past 63 ends the block (stb and libjpeg tolerate it)
    }
    w->in = in;
    return 0;
}

// Progressive DC (G.1.2.1): a first scan codes a difference, which also clears the block's AC
// coefficients as stb stores them; a refinement reads one bit.
static int block_dc(Walk *w, const Comp *c, uint64_t *nz) {
    if (w->ah) {
        get_bits(&w->in, 1);
        return 0;
    }
    *nz = 0;
    int t = huff_decode(&w->in, &w->dc[c->td]);
    if (t < 0 || t > 15) return fail(w, t < 0 ? JS_BAD_CODE : JS_DC_SIZE);
    if (t) get_bits(&w->in, t);
    return 0;
}

// Progressive AC, first scan (G.1.2.2) of the band Ss..Se: coefficients at Al, EOB runs of
// 2^r + r bits blocks (EOBr), 0xF0 a run of 16 zeros. Records which coefficients stb's stored
// value makes non-zero (a large value shifted by Al can wrap to zero in its 16 bits).
static int block_ac_first(Walk *w, const Comp *c, uint64_t *nz) {
    if (w->eobrun) {
        w->eobrun--;
        return 0;
    }
    Bits in = w->in;
    const Huff *ac = &w->ac[c->ta];
    uint64_t m = *nz;
    int k = w->ss, fast = w->al < 8; // look-up sizes <= 9 bits: shifted by Al < 8, never zero
    do {
        unsigned e = fast ? ac_fast_take(&in, ac) : 0;
        if (e) {
            if (e & AC_EOB) break;
            k += (int)AC_RUN(e);
            if (e & AC_COEF) m |= 1ull << (k < 64 ? k : 63);
            k++;
            continue;
        }
        int rs = huff_decode(&in, ac);
        if (rs < 0) return fail_at(w, &in, JS_BAD_CODE);
        int r = rs >> 4, s = rs & 15;
        if (s == 0 && r < 15) { // end of band here and in the next 2^r - 1 + (r bits) blocks
            w->eobrun = (1 << r) - 1 + (r ? (int)get_bits(&in, r) : 0);
            break;
        }
        if (s == 0) {
            k += 16;
            continue;
        }
        unsigned v = get_bits(&in, s);
        k += r;
        int value = v < (1u << (s - 1)) ? (int)v - (1 << s) + 1 : (int)v; // T.81 F.2.2.1 EXTEND
        int at = k < 64 ? k : 63; // where stb stores a coefficient whose run goes past 63
        if (((unsigned)value << w->al) & 0xFFFF) m |= 1ull << at;
        else m &= ~(1ull << at);
        k++;
    } while (k <= w->se);
    w->in = in;
    *nz = m;
    return 0;
}

// Progressive AC refinement (G.1.2.3): each code is an EOB run or a new coefficient of size 1
// (a sign bit) after r zero coefficients; every already non-zero coefficient passed on the way,
// and in the rest of the band after an EOB, reads one correction bit.
static int block_ac_refine(Walk *w, const Comp *c, uint64_t *nz) {
    uint64_t m = *nz, band = (~0ull >> (63 - w->se)) & (~0ull << w->ss);
    Bits *in = &w->in;
    if (w->eobrun) {
        w->eobrun--;
        skip_bits(in, __builtin_popcountll(m & band));
        return 0;
    }
    int k = w->ss;
    do {
        int rs = huff_decode(in, &w->ac[c->ta]);
        if (rs < 0) return fail(w, JS_BAD_CODE);
        int r = rs >> 4, s = rs & 15;
        if (s == 0 && r < 15) { // EOBr: the band ends here
            w->eobrun = (1 << r) - 1 + (r ? (int)get_bits(in, r) : 0);
            r = 64;
        } else if (s) { // a new coefficient: its sign now, its place after r zero ones
            if (s != 1) return fail(w, JS_REFINE_SIZE);
            get_bits(in, 1);
        } // else 0xF0: 16 zero coefficients (the 16th "set" to zero)
        for (; k <= w->se; k++) {
            if (m >> k & 1) {
                get_bits(in, 1);
            } else if (r-- == 0) {
                if (s) m |= 1ull << k;
                k++;
                break;
            }
        }
    } while (k <= w->se);
    *nz = m;
    return 0;
}

// One block; then the data must still hold every bit it took.
static int walk_block(Walk *w, Comp *c, size_t block) {
    int rc = !w->progressive ? block_sequential(w, c)
             : w->ss == 0    ? block_dc(w, c, c->nz + block)
             : w->ah         ? block_ac_refine(w, c, c->nz + block)
                             : block_ac_first(w, c, c->nz + block);
    if (!rc && bits_used(&w->in) > bits_there(&w->in)) return fail(w, JS_ENDED);
    return rc;
}

// ----------------------------------------------------------------------------
// scans: blocks in order, restart intervals

// Where a restart interval ends (not the scan's last MCU): its segment must end there (at most
// the bits padding its last byte left) at an RSTn marker, after which the next interval starts
// afresh (its own segment, no EOB run). stb, meeting no RSTn there, would end the scan and leave
// the rest of the image unwritten.
static int next_interval(Walk *w, const uint8_t *buf, size_t n) {
    Bits *in = &w->in;
    if (bits_there(in) - bits_used(in) >= 8) return fail(w, JS_NO_RESTART);
    if (in->marker < 0xD0 || in->marker > 0xD7) return fail(w, JS_ENDED);
    w->eobrun = 0;
    return bits_load(in, buf, n, in->after) ? fail(w, JS_NO_MEMORY) : 0;
}

// Counts an MCU done; at the end of a restart interval, moves to the next.
static int mcu_done(Walk *w, const uint8_t *buf, size_t n, long *todo, long done, long mcus) {
    if (!w->restart || --*todo > 0 || done == mcus) return 0;
    *todo = w->restart;
    return next_interval(w, buf, n);
}

// The scan's data starts at buf[at]: its blocks in order, one component (non-interleaved: its
// blocks row by row) or several (interleaved: MCUs of h x v blocks of each component, in scan
// order). On success in.marker_at is the marker after the data.
static int walk_scan(Walk *w, const uint8_t *buf, size_t n, size_t at) {
    if (bits_load(&w->in, buf, n, at)) return fail(w, JS_NO_MEMORY);
    w->eobrun = 0;
    long todo = w->restart, done = 0;
    if (w->ns == 1) {
        Comp *c = &w->comp[w->order[0]];
        long mcus = (long)c->bw * c->bh;
        for (int y = 0; y < c->bh; y++)
            for (int x = 0; x < c->bw; x++)
                if (walk_block(w, c, (size_t)y * c->cw + x) || mcu_done(w, buf, n, &todo, ++done, mcus))
                    return -1;
        return 0;
    }
    long mcus = (long)w->mcux * w->mcuy;
    for (int my = 0; my < w->mcuy; my++)
        for (int mx = 0; mx < w->mcux; mx++) {
            for (int i = 0; i < w->ns; i++) {
                Comp *c = &w->comp[w->order[i]];
                for (int y = 0; y < c->v; y++)
                    for (int x = 0; x < c->h; x++)
                        if (walk_block(w, c, (size_t)(my * c->v + y) * c->cw + mx * c->h + x))
                            return -1;
            }
            if (mcu_done(w, buf, n, &todo, ++done, mcus)) return -1;
        }
    return 0;
}

// ----------------------------------------------------------------------------
// segments: frame header, scan header, Huffman tables. Each returns 1 to go on, 0 where stb
// refuses the file itself (the walk stops: stb decodes no further scan), -1 to refuse it here.

// SOF0/1/2 (s at its length): precision, height, width, Nf x (id, H << 4 | V, Tq), as stb
// accepts them (8-bit, 1, 3 or 4 components, factors 1..4 dividing the largest).
static int parse_frame(Walk *w, const uint8_t *s, size_t len, uint64_t max_pixels) {
    int nf = len >= 8 ? s[7] : 0, hmax = 1, vmax = 1;
    if (len < 11 || s[2] != 8 || (nf != 1 && nf != 3 && nf != 4) || len != 8 + 3 * (size_t)nf) return 0;
    w->h = (int)be16(s + 3), w->w = (int)be16(s + 5), w->nf = nf;
    if (!w->w || !w->h) return 0;
    if ((uint64_t)w->w * (uint64_t)w->h > max_pixels) return fail(w, JS_CAP);
    for (int i = 0; i < nf; i++) {
        Comp *c = &w->comp[i];
        c->id = s[8 + 3 * i], c->h = s[9 + 3 * i] >> 4, c->v = s[9 + 3 * i] & 15;
        if (c->h < 1 || c->h > 4 || c->v < 1 || c->v > 4 || s[10 + 3 * i] > 3) return 0;
        if (c->h > hmax) hmax = c->h;
        if (c->v > vmax) vmax = c->v;
    }
    w->mcux = (w->w + 8 * hmax - 1) / (8 * hmax);
    w->mcuy = (w->h + 8 * vmax - 1) / (8 * vmax);
    for (int i = 0; i < nf; i++) {
        Comp *c = &w->comp[i];
        if (hmax % c->h || vmax % c->v) return 0;
        c->bw = ((w->w * c->h + hmax - 1) / hmax + 7) / 8;
        c->bh = ((w->h * c->v + vmax - 1) / vmax + 7) / 8;
        c->cw = w->mcux * c->h, c->ch = w->mcuy * c->v;
        // at most (width / 8 + 4) x (height / 8 + 4) blocks: bounded by the pixel cap
        if (w->progressive && !(c->nz = calloc((size_t)c->cw * (size_t)c->ch, sizeof *c->nz)))
            return fail(w, JS_NO_MEMORY);
    }
    w->frame = 1;
    return 1;
}

// SOS (s at its length): Ns x (component id, Td << 4 | Ta), Ss, Se, Ah << 4 | Al; checked as stb
// checks them, then the tables the scan uses must be defined and, progressive, a component's
// DC coefficients coded before its AC coefficients (stb's coefficients are unset until then).
static int parse_scan(Walk *w, const uint8_t *s, size_t len) {
    int ns = len >= 3 ? s[2] : 0;
    if (ns < 1 || ns > w->nf || len != 6 + 2 * (size_t)ns) return 0;
    for (int i = 0; i < ns; i++) {
        int c = 0;
        while (c < w->nf && w->comp[c].id != s[3 + 2 * i]) c++;
        if (c == w->nf || s[4 + 2 * i] >> 4 > 3 || (s[4 + 2 * i] & 15) > 3) return 0;
        w->comp[c].td = s[4 + 2 * i] >> 4, w->comp[c].ta = s[4 + 2 * i] & 15;
        w->order[i] = c;
    }
    w->ns = ns;
    w->ss = s[3 + 2 * ns], w->se = s[4 + 2 * ns], w->ah = s[5 + 2 * ns] >> 4, w->al = s[5 + 2 * ns] & 15;
    if (!w->progressive) {
        if (w->ss || w->ah || w->al) return 0;
        w->se = 63;
    } else if (w->ss > w->se || w->se > 63 || w->ah > 13 || w->al > 13 || (w->ss == 0 && w->se) ||
               (w->ss && ns > 1)) {
        return 0; // stb: "bad SOS", or "can't merge dc and ac" at the first block
    }
    int dc = !w->progressive || (w->ss == 0 && w->ah == 0), ac = !w->progressive || w->ss > 0;
    for (int i = 0; i < ns; i++) {
        Comp *c = &w->comp[w->order[i]];
        if ((dc && !w->dc[c->td].defined) || (ac && !w->ac[c->ta].defined)) return fail(w, JS_NO_TABLE);
        if (w->progressive && w->ss > 0 && !c->dc_coded) return fail(w, JS_AC_FIRST);
    }
    for (int i = 0; i < ns && w->progressive && w->ss == 0 && w->ah == 0; i++)
        w->comp[w->order[i]].dc_coded = 1;
    return 1;
}

// DHT (s at its length): tables of (Tc << 4 | Th, 16 counts, the symbols) filling the segment.
static int parse_dht(Walk *w, const uint8_t *s, size_t len) {
    size_t q = 2;
    while (q < len) {
        if (q + 17 > len || s[q] >> 4 > 1 || (s[q] & 15) > 3) return 0;
        int nsym = 0;
        for (int i = 1; i <= 16; i++) nsym += s[q + i];
        if (nsym > 256) return fail(w, JS_BIG_TABLE);
        if (q + 17 + (size_t)nsym > len) return 0;
        Huff *t = (s[q] >> 4 ? w->ac : w->dc) + (s[q] & 15);
        if (huff_build(t, s + q + 1, s + q + 17, nsym)) return 0;
        if (s[q] >> 4) huff_build_ac(t);
        q += 17 + (size_t)nsym;
    }
    return 1;
}

// ----------------------------------------------------------------------------
// the file: its markers in order, as stb reads them, up to EOI

// One segment (marker m, s at its length field, len bytes): 1 to go on, 0 to stop, -1 to refuse.
static int segment(Walk *w, int m, const uint8_t *s, size_t len, uint64_t max_pixels) {
    if (m == 0xC4) return parse_dht(w, s, len);
    if (m == 0xDD) { // DRI
        if (len != 4) return 0;
        w->restart = be16(s + 2);
        return 1;
    }
    if (m == 0xC0 || m == 0xC1 || m == 0xC2) {
        if (w->frame) return 0; // stb: a second frame is an unknown marker
        w->progressive = m == 0xC2;
        return parse_frame(w, s, len, max_pixels);
    }
    if (m == 0xDC) return w->frame && len == 4 && (int)be16(s + 2) == w->h; // DNL
    // DQT, APPn, COM: skipped; anything else (other frame types, DAC, SOS before the frame...)
    // stb refuses as an unknown marker
    return m == 0xDB || (m >= 0xE0 && m <= 0xEF) || m == 0xFE;
}

static int walk_file(Walk *w, const uint8_t *buf, size_t n, uint64_t max_pixels) {
    size_t p = 2; // after SOI
    for (;;) {
        while (p < n && buf[p] != 0xFF) p++; // junk between segments: stb refuses most of it
        while (p < n && buf[p] == 0xFF) p++;
        if (p >= n) return 0;
        int m = buf[p++];
        if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;
        if (m == 0xD9 || p + 2 > n) return 0; // EOI: stb decodes no further
        size_t len = be16(buf + p);
        if (len < 2 || len > n - p) return 0; // stb refuses, or reads zeros (never a marker) on
        if (m != 0xDA) {
            int rc = segment(w, m, buf + p, len, max_pixels);
            if (rc <= 0) return rc;
            p += len;
            continue;
        }
        w->scan++;
        int rc = w->frame ? parse_scan(w, buf + p, len) : 0;
        if (rc <= 0) return rc;
        if (walk_scan(w, buf, n, p + len)) return -1;
        p = w->in.marker_at;
    }
}

int jpeg_scan_check(const uint8_t *buf, size_t n, uint64_t max_pixels, char *why, size_t whylen) {
    Walk *w = xcalloc(1, sizeof *w);
    int rc = walk_file(w, buf, n, max_pixels);
    for (int c = 0; c < 4; c++) free(w->comp[c].nz);
    free(w->in.data);
    if (rc < 0) {
        int k = w->scan;
        switch (w->err) {
        case JS_ENDED:
            set_err(why, whylen, "corrupt JPEG (the data of scan %d ends before its last block: "
                    "truncated or damaged)", k);
            break;
        case JS_BAD_CODE:
            set_err(why, whylen, "corrupt JPEG (scan %d holds a Huffman code that its table does "
                    "not define)", k);
            break;
        case JS_DC_SIZE:
            set_err(why, whylen, "corrupt JPEG (scan %d codes a DC difference of more than 15 bits)", k);
            break;
        case JS_REFINE_SIZE:
            set_err(why, whylen, "corrupt JPEG (scan %d, a refinement, codes a new coefficient of "
                    "more than one bit)", k);
            break;
        case JS_NO_RESTART:
            set_err(why, whylen, "corrupt JPEG (the data of scan %d goes on where a restart "
                    "interval ends, instead of an RSTn marker)", k);
            break;
        case JS_AC_FIRST:
            set_err(why, whylen, "corrupt JPEG (scan %d codes AC coefficients of a component "
                    "whose DC coefficients no earlier scan coded)", k);
            break;
        case JS_NO_TABLE:
            set_err(why, whylen, "corrupt JPEG (a scan uses a Huffman table that no DHT segment defines)");
            break;
        case JS_BIG_TABLE:
            set_err(why, whylen, "corrupt JPEG (Huffman table with more than 256 codes)");
            break;
        case JS_CAP:
            set_err(why, whylen, "JPEG frame of %d x %d pixels is larger than the %llu-pixel cap",
                    w->w, w->h, (unsigned long long)max_pixels);
            break;
        default:
            set_err(why, whylen, "out of memory for the JPEG check of %d x %d pixels", w->w, w->h);
        }
    }
    free(w);
    return rc < 0 ? -1 : 0;
}
