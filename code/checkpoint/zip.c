// zip.c: reads and writes the stored-entry zip archives that torch.save produces (see zip.h).
// Everything read from the archive is a number chosen by whoever wrote the file, so each offset
// and size is checked against the buffer before it is used, and counts are capped by the bytes
// that could hold them before anything is allocated.
#include "checkpoint/zip.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

// ----------------------------------------------------------------------------
// CRC-32, slicing by 8 (about 8 bytes per few cycles: an 87 MB checkpoint checks in tens of ms)

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
}

uint32_t zip_crc32(uint32_t crc, const void *data, size_t n) {
    pthread_once(&crc_once, crc_init);
    const uint8_t *p = data;
    uint32_t c = ~crc;
    while (n >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
                      (uint32_t)p[7] << 24;
        c = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^
            crc_table[5][(lo >> 16) & 0xFF] ^ crc_table[4][lo >> 24] ^
            crc_table[3][hi & 0xFF] ^ crc_table[2][(hi >> 8) & 0xFF] ^
            crc_table[1][(hi >> 16) & 0xFF] ^ crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) c = crc_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return ~c;
}

// ----------------------------------------------------------------------------
// little-endian access (callers check bounds first)

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_LOC64 0x07064b50u
#define SIG_DESCRIPTOR 0x08074b50u
#define EOCD_SIZE 22
#define EOCD64_SIZE 56
#define LOC64_SIZE 20
#define CENTRAL_SIZE 46
#define LOCAL_SIZE 30

// ----------------------------------------------------------------------------
// reading

// Finds the zip64 fields of one central-directory entry in its extra data.
static int read_zip64_extra(const uint8_t *x, size_t xlen, uint64_t *usize, uint64_t *csize,
                            uint64_t *offset, int need_u, int need_c, int need_o) {
    size_t i = 0;
    while (i + 4 <= xlen) {
        uint16_t id = rd16(x + i), len = rd16(x + i + 2);
        if (i + 4 + len > xlen) return -1;
        if (id == 0x0001) {
            const uint8_t *f = x + i + 4;
            size_t left = len;
            if (need_u) { if (left < 8) return -1; *usize = rd64(f); f += 8; left -= 8; }
            if (need_c) { if (left < 8) return -1; *csize = rd64(f); f += 8; left -= 8; }
            if (need_o) { if (left < 8) return -1; *offset = rd64(f); }
            return 0;
        }
        i += 4 + (size_t)len;
    }
    return (need_u || need_c || need_o) ? -1 : 0;
}

// Finds the central directory (offset, size, entry count) through the end-of-central-directory
// record, or its zip64 twin, and checks that it lies inside the file. Returns 0 or -1.
static int find_directory(const uint8_t *buf, size_t n, const char *label, uint64_t *count,
                          uint64_t *cd_off, uint64_t *cd_size, char *err, size_t errlen) {
    if (n < EOCD_SIZE)
        return set_err(err, errlen, "%s: not a zip archive (only %zu bytes)", label, n);

    // The end-of-central-directory record sits in the last 22 + 65535 (comment) bytes.
    size_t eocd = (size_t)-1;
    size_t lowest = n - EOCD_SIZE > 65535 ? n - EOCD_SIZE - 65535 : 0;
    for (size_t p = n - EOCD_SIZE + 1; p-- > lowest;) {
        if (rd32(buf + p) == SIG_EOCD && p + EOCD_SIZE + rd16(buf + p + 20) <= n) {
            eocd = p;
            break;
        }
    }
    if (eocd == (size_t)-1)
        return set_err(err, errlen,
                       "%s: not a zip archive (no end-of-central-directory record; truncated?)",
                       label);
    const uint8_t *e = buf + eocd;
    if (rd16(e + 4) != 0 || (rd16(e + 6) != 0 && rd16(e + 6) != 0xFFFF))
        return set_err(err, errlen, "%s: multi-disk zip archives are not supported", label);
    *count = rd16(e + 10);
    *cd_size = rd32(e + 12);
    *cd_off = rd32(e + 16);
    size_t dir_end = eocd; // the central directory must end before this

    if (eocd >= LOC64_SIZE && rd32(buf + eocd - LOC64_SIZE) == SIG_LOC64) {
        uint64_t off64 = rd64(buf + eocd - LOC64_SIZE + 8);
        if (off64 > eocd - LOC64_SIZE || eocd - LOC64_SIZE - off64 < EOCD64_SIZE ||
            rd32(buf + off64) != SIG_EOCD64)
            return set_err(err, errlen, "%s: corrupt zip64 end-of-central-directory record "
                                        "(bad offset %llu)", label, (unsigned long long)off64);
        const uint8_t *e64 = buf + off64;
        *count = rd64(e64 + 32);
        *cd_size = rd64(e64 + 40);
        *cd_off = rd64(e64 + 48);
        dir_end = (size_t)off64;
    } else if (*count == 0xFFFF || *cd_size == 0xFFFFFFFFu || *cd_off == 0xFFFFFFFFu) {
        return set_err(err, errlen, "%s: zip64 archive without its zip64 end record (truncated?)",
                       label);
    }
    if (*cd_off > dir_end || *cd_size > dir_end - *cd_off)
        return set_err(err, errlen, "%s: central directory (offset %llu, %llu bytes) lies outside "
                       "the file (%zu bytes; truncated?)", label, (unsigned long long)*cd_off,
                       (unsigned long long)*cd_size, n);
    if (*count > *cd_size / CENTRAL_SIZE)
        return set_err(err, errlen, "%s: zip directory claims %llu entries but has room for %llu",
                       label, (unsigned long long)*count,
                       (unsigned long long)(*cd_size / CENTRAL_SIZE));
    return 0;
}

// Reads central-directory entry i, at *p in a directory that ends at `end`, into z->e[z->count]
// (the name is owned from then on) and checks its local header and its data lie inside the file.
// Advances *p to the next entry. Returns 0 or -1.
static int read_entry(ZipReader *z, uint64_t i, size_t *p, size_t end, char *err,
                      size_t errlen) {
    const uint8_t *buf = z->buf;
    size_t n = z->n;
    const char *label = z->label;
    if (end - *p < CENTRAL_SIZE || rd32(buf + *p) != SIG_CENTRAL)
        return set_err(err, errlen, "%s: corrupt central directory at entry %llu (offset %zu)",
                       label, (unsigned long long)i, *p);
    const uint8_t *c = buf + *p;
    size_t nlen = rd16(c + 28), xlen = rd16(c + 30), clen = rd16(c + 32);
    if (end - *p - CENTRAL_SIZE < nlen + xlen + clen)
        return set_err(err, errlen, "%s: central directory entry %llu runs past the directory",
                       label, (unsigned long long)i);
    ZipEntry *ze = &z->e[z->count];
    ze->flags = rd16(c + 8);
    ze->method = rd16(c + 10);
    ze->crc = rd32(c + 16);
    uint64_t csize = rd32(c + 20), usize = rd32(c + 24), hoff = rd32(c + 42);
    ze->name = xmalloc(nlen + 1);
    memcpy(ze->name, c + CENTRAL_SIZE, nlen);
    ze->name[nlen] = 0;
    z->count++;
    if (memchr(ze->name, 0, nlen))
        return set_err(err, errlen, "%s: zip entry name with a NUL byte", label);
    if (read_zip64_extra(c + CENTRAL_SIZE + nlen, xlen, &usize, &csize, &hoff,
                         usize == 0xFFFFFFFFu, csize == 0xFFFFFFFFu, hoff == 0xFFFFFFFFu))
        return set_err(err, errlen, "%s: entry '%s': missing or corrupt zip64 extra field", label,
                       ze->name);
    ze->size = usize;
    ze->csize = csize;
    // The local header: its sizes may be zero (data descriptor); only its lengths matter.
    if (hoff > n || n - hoff < LOCAL_SIZE || rd32(buf + hoff) != SIG_LOCAL)
        return set_err(err, errlen, "%s: entry '%s': local header at offset %llu is missing or "
                       "corrupt (truncated file?)", label, ze->name, (unsigned long long)hoff);
    const uint8_t *l = buf + hoff;
    uint64_t lnlen = rd16(l + 26), lxlen = rd16(l + 28);
    uint64_t data = hoff + LOCAL_SIZE + lnlen + lxlen;
    if (lnlen != nlen || data > n || memcmp(l + LOCAL_SIZE, ze->name, nlen) != 0)
        return set_err(err, errlen, "%s: entry '%s': local header does not match the central "
                       "directory (corrupt file)", label, ze->name);
    if (csize > n - data)
        return set_err(err, errlen, "%s: entry '%s' (%llu bytes at offset %llu) runs past the end "
                       "of the file (%zu bytes; truncated?)", label, ze->name,
                       (unsigned long long)csize, (unsigned long long)data, n);
    ze->data_offset = data;
    *p += CENTRAL_SIZE + nlen + xlen + clen;
    return 0;
}

int zip_open_mem(ZipReader *z, const uint8_t *buf, size_t n, const char *label, char *err,
                 size_t errlen) {
    memset(z, 0, sizeof *z);
    z->buf = buf;
    z->n = n;
    z->label = label;
    uint64_t count = 0, cd_off = 0, cd_size = 0;
    if (find_directory(buf, n, label, &count, &cd_off, &cd_size, err, errlen)) return -1;
    z->e = xcalloc(count ? (size_t)count : 1, sizeof(ZipEntry));
    size_t p = (size_t)cd_off, end = (size_t)(cd_off + cd_size);
    for (uint64_t i = 0; i < count; i++) {
        if (read_entry(z, i, &p, end, err, errlen)) {
            zip_close(z); // the one failure path: frees the entries read so far
            return -1;
        }
    }
    return 0;
}

void zip_close(ZipReader *z) {
    for (int i = 0; i < z->count; i++) free(z->e[i].name);
    free(z->e);
    z->e = NULL;
    z->count = 0;
}

const ZipEntry *zip_find(const ZipReader *z, const char *name) {
    for (int i = 0; i < z->count; i++)
        if (strcmp(z->e[i].name, name) == 0) return &z->e[i];
    return NULL;
}

int zip_entry_data(const ZipReader *z, const ZipEntry *e, int verify_crc, const uint8_t **data,
                   char *err, size_t errlen) {
    if (e->flags & 1)
        return set_err(err, errlen, "%s: entry '%s' is encrypted", z->label, e->name);
    if (e->method != 0)
        return set_err(err, errlen, "%s: entry '%s' is compressed (method %u); torch.save writes "
                       "stored entries: re-save the checkpoint with torch.save instead of "
                       "re-zipping it", z->label, e->name, e->method);
    if (e->csize != e->size)
        return set_err(err, errlen, "%s: entry '%s' is stored but its sizes differ (%llu, %llu)",
                       z->label, e->name, (unsigned long long)e->csize,
                       (unsigned long long)e->size);
    const uint8_t *d = z->buf + e->data_offset;
    if (verify_crc) {
        uint32_t crc = zip_crc32(0, d, (size_t)e->size);
        if (crc != e->crc)
            return set_err(err, errlen, "%s: entry '%s' is corrupt (CRC-32 %08x, expected %08x)",
                           z->label, e->name, crc, e->crc);
    }
    *data = d;
    return 0;
}

// ----------------------------------------------------------------------------
// writing

static void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, v & 0xFFFF); put16(p + 2, v >> 16); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }

static void wr(ZipWriter *w, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, w->f) != n) w->failed = 1;
    w->pos += n;
}

void zipw_init(ZipWriter *w, FILE *f) {
    memset(w, 0, sizeof *w);
    w->f = f;
}

int zipw_add(ZipWriter *w, const char *name, const void *data, size_t n, char *err,
             size_t errlen) {
    size_t nlen = strlen(name);
    if (nlen > 0xFFFF) return set_err(err, errlen, "zip entry name too long: %.40s...", name);
    int big = w->zip64_fields || n >= 0xFFFFFFFFu || w->pos >= 0xFFFFFFFFu;
    if (big && !w->zip64_fields)
        return set_err(err, errlen, "zip entry '%s': archives over 4 GiB are not supported", name);
    uint32_t crc = zip_crc32(0, data, n);
    uint16_t flags = w->sizes_in_local ? 0x0800 : 0x0808; // UTF-8 names (+ data descriptor)

    // Extra field: zip64 sizes (if any), then "FB" padding so that the data starts on a 64-byte
    // boundary, as PyTorch's writer does (it lets readers mmap tensors in place).
    size_t x64 = big ? 4 + 16 : 0;
    uint64_t start = w->pos + LOCAL_SIZE + nlen + x64 + 4;
    size_t pad = (size_t)((64 - start % 64) % 64);
    size_t xlen = x64 + 4 + pad;
    uint8_t h[LOCAL_SIZE];
    memset(h, 0, sizeof h);
    put32(h, SIG_LOCAL);
    put16(h + 4, big ? 45 : 0);
    put16(h + 6, flags);
    if (w->sizes_in_local) {
        put32(h + 14, crc);
        put32(h + 18, big ? 0xFFFFFFFFu : (uint32_t)n);
        put32(h + 22, big ? 0xFFFFFFFFu : (uint32_t)n);
    }
    put16(h + 26, (uint32_t)nlen);
    put16(h + 28, (uint32_t)xlen);
    if (w->count == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 16;
        w->e = xrealloc(w->e, (size_t)w->cap * sizeof *w->e);
    }
    ZipWEntry *e = &w->e[w->count++];
    e->name = xstrdup(name);
    e->header_offset = w->pos;
    e->size = n;
    e->crc = crc;
    wr(w, h, sizeof h);
    wr(w, name, nlen);
    uint8_t x[4 + 16 + 4 + 64];
    size_t k = 0;
    if (big) {
        put16(x, 0x0001);
        put16(x + 2, 16);
        put64(x + 4, w->sizes_in_local ? n : 0);
        put64(x + 12, w->sizes_in_local ? n : 0);
        k = 20;
    }
    x[k] = 'F';
    x[k + 1] = 'B';
    put16(x + k + 2, (uint32_t)pad);
    memset(x + k + 4, 'Z', pad);
    wr(w, x, xlen);
    wr(w, data, n);
    if (!w->sizes_in_local) {
        uint8_t d[24];
        put32(d, SIG_DESCRIPTOR);
        put32(d + 4, crc);
        if (big) {
            put64(d + 8, n);
            put64(d + 16, n);
            wr(w, d, 24);
        } else {
            put32(d + 8, (uint32_t)n);
            put32(d + 12, (uint32_t)n);
            wr(w, d, 16);
        }
    }
    if (w->failed) return set_err(err, errlen, "zip entry '%s': write error", name);
    return 0;
}

int zipw_finish(ZipWriter *w, char *err, size_t errlen) {
    uint64_t cd_off = w->pos;
    for (int i = 0; i < w->count; i++) {
        ZipWEntry *e = &w->e[i];
        size_t nlen = strlen(e->name);
        int big = w->zip64_fields;
        uint8_t c[CENTRAL_SIZE];
        memset(c, 0, sizeof c);
        put32(c, SIG_CENTRAL);
        put16(c + 4, big ? 45 : 0);
        put16(c + 6, big ? 45 : 0);
        put16(c + 8, w->sizes_in_local ? 0x0800 : 0x0808);
        put32(c + 16, e->crc);
        put32(c + 20, big ? 0xFFFFFFFFu : (uint32_t)e->size);
        put32(c + 24, big ? 0xFFFFFFFFu : (uint32_t)e->size);
        put16(c + 28, (uint32_t)nlen);
        put16(c + 30, big ? 28 : 0);
        put32(c + 42, big ? 0xFFFFFFFFu : (uint32_t)e->header_offset);
        wr(w, c, sizeof c);
        wr(w, e->name, nlen);
        if (big) {
            uint8_t x[28];
            put16(x, 0x0001);
            put16(x + 2, 24);
            put64(x + 4, e->size);
            put64(x + 12, e->size);
            put64(x + 20, e->header_offset);
            wr(w, x, sizeof x);
        }
    }
    uint64_t cd_size = w->pos - cd_off, e64_off = w->pos;
    int big = w->zip64_fields || cd_off >= 0xFFFFFFFFu || w->count >= 0xFFFF;
    uint8_t r[EOCD64_SIZE + LOC64_SIZE + EOCD_SIZE];
    memset(r, 0, sizeof r);
    uint8_t *e64 = r, *loc = r + EOCD64_SIZE, *eo = loc + LOC64_SIZE;
    put32(e64, SIG_EOCD64);
    put64(e64 + 4, EOCD64_SIZE - 12);
    put16(e64 + 12, 0x031e);
    put16(e64 + 14, 45);
    put64(e64 + 24, (uint64_t)w->count);
    put64(e64 + 32, (uint64_t)w->count);
    put64(e64 + 40, cd_size);
    put64(e64 + 48, cd_off);
    put32(loc, SIG_LOC64);
    put64(loc + 8, e64_off);
    put32(loc + 16, 1);
    put32(eo, SIG_EOCD);
    put16(eo + 8, big ? 0xFFFF : (uint32_t)w->count);
    put16(eo + 10, big ? 0xFFFF : (uint32_t)w->count);
    put32(eo + 12, big ? 0xFFFFFFFFu : (uint32_t)cd_size);
    put32(eo + 16, big ? 0xFFFFFFFFu : (uint32_t)cd_off);
    wr(w, r, sizeof r);
    if (w->failed) return set_err(err, errlen, "zip central directory: write error");
    return 0;
}

void zipw_free(ZipWriter *w) {
    for (int i = 0; i < w->count; i++) free(w->e[i].name);
    free(w->e);
    w->e = NULL;
    w->count = w->cap = 0;
}
