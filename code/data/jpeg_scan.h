// jpeg_scan.h: a walk of a JPEG's entropy-coded data, run by image.c (its only user) before
// stb_image decodes the file. Every scan's Huffman codes are decoded as a decoder reads them,
// without dequantizing or transforming, so that a scan whose data ends early (truncated or
// damaged) or holds codes its tables do not define is refused before stb_image 2.27, which reads
// such data with undefined behaviour, sees it. See jpeg_scan.c for what is checked.
#ifndef JPEG_SCAN_H
#define JPEG_SCAN_H

#include <stddef.h>
#include <stdint.h>

// Walks every scan of the JPEG in buf[0..n) that stb_image would decode (baseline, extended and
// progressive Huffman; the file starts with FF D8). Returns 0 when each scan decodes within its
// own data, or when the walk meets a structure that stb refuses itself before decoding any
// further scan (left to stb's own message); -1 with the reason in why otherwise, e.g. "corrupt
// JPEG (the data of scan 3 ends before its last block: truncated or damaged)". A frame of more
// than max_pixels pixels is refused: the walk's memory is a copy of the scan data (at most the
// file's size) and, for a progressive JPEG, 8 bytes per 8x8 block of each component.
int jpeg_scan_check(const uint8_t *buf, size_t n, uint64_t max_pixels, char *why, size_t whylen);

#endif // JPEG_SCAN_H
