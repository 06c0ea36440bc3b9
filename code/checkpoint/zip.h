// zip.h: the small part of the zip format that torch.save checkpoints use, read and written.
// Reading works on a buffer held in memory: the end-of-central-directory record (and its zip64
// twin), the central directory (with zip64 extra fields), and each entry's local header, every
// offset and size checked against the buffer before use. Only stored (uncompressed) entries can
// be read, which is all torch writes. Sizes come from the central directory, so local headers with
// the data-descriptor flag (sizes zero, written after the data) are fine. CRC-32 is verified.
// Writing produces exactly what PyTorch's writer (miniz inside torch 1.13) produces: stored
// entries whose data starts on a 64-byte boundary (padding in an "FB" extra field), a data
// descriptor after each entry, and a zip64 end record.
#ifndef ZIP_H
#define ZIP_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

// CRC-32 (the zip/zlib polynomial). Pass 0 as crc to start; feed the result back to continue.
uint32_t zip_crc32(uint32_t crc, const void *data, size_t n);

// ----------------------------------------------------------------------------
// reading

typedef struct {
    char *name;           // NUL-terminated copy of the entry name
    uint64_t data_offset; // where the entry's bytes start in the buffer (after the local header)
    uint64_t size;        // uncompressed size (= compressed size for stored entries)
    uint64_t csize;       // compressed size
    uint16_t method;      // 0 stored, 8 deflate, ...
    uint16_t flags;
    uint32_t crc;
} ZipEntry;

typedef struct {
    const uint8_t *buf; // the whole archive (not owned)
    size_t n;
    const char *label;  // used in error messages (a file name)
    int count;
    ZipEntry *e;        // (count), in central-directory order
} ZipReader;

// Parses the archive's directory. Returns 0, or -1 with a message naming `label` and the problem.
int zip_open_mem(ZipReader *z, const uint8_t *buf, size_t n, const char *label, char *err,
                 size_t errlen);
void zip_close(ZipReader *z);
// Finds an entry by exact name; NULL when absent.
const ZipEntry *zip_find(const ZipReader *z, const char *name);
// Points *data at an entry's bytes after checking it is stored (not compressed) and that its
// CRC-32 matches (verify_crc != 0). Returns 0 or -1 with a message.
int zip_entry_data(const ZipReader *z, const ZipEntry *e, int verify_crc, const uint8_t **data,
                   char *err, size_t errlen);

// ----------------------------------------------------------------------------
// writing

typedef struct {
    char *name;
    uint64_t header_offset;
    uint64_t size;
    uint32_t crc;
} ZipWEntry;

typedef struct {
    FILE *f;
    uint64_t pos; // bytes written so far
    int count, cap;
    ZipWEntry *e;
    int failed;
    // Variations that other zip writers produce, used by the tests to check the reader:
    int zip64_fields;   // store sizes/offsets in zip64 extra fields (32-bit fields 0xFFFFFFFF)
    int sizes_in_local; // sizes in the local header and no data descriptor
} ZipWriter;

void zipw_init(ZipWriter *w, FILE *f);
// Appends one stored entry. Returns 0 or -1 with a message.
int zipw_add(ZipWriter *w, const char *name, const void *data, size_t n, char *err, size_t errlen);
// Writes the central directory and end records. Does not close the FILE. Returns 0 or -1.
int zipw_finish(ZipWriter *w, char *err, size_t errlen);
void zipw_free(ZipWriter *w);

#endif // ZIP_H
