// sha256.h: SHA-256 (FIPS 180-4), used by the training chapters to key their on-disk caches on the
// exact contents of the weights file and to recognise torchvision's ImageNet checkpoint, whose
// file name carries the first 8 hex digits of its SHA-256 (resnet34-b627a593.pth).
#ifndef SHA256_H
#define SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t bytes;    // message length so far
    uint8_t block[64]; // pending partial block
    size_t fill;
} Sha256;

void sha256_init(Sha256 *s);
void sha256_update(Sha256 *s, const void *data, size_t n);
void sha256_final(Sha256 *s, uint8_t digest[32]);
// Convenience: final digest as 64 lowercase hex digits plus NUL.
void sha256_final_hex(Sha256 *s, char hex[65]);

#endif // SHA256_H
