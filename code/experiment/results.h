// results.h: the one JSON writer, used for every chapter's results/NN-name.json: a FLAT JSON
// object (string keys; number or string values) from which the report takes every number it
// prints. Keys are collected in memory
// and the file is written atomically at the end, so a run that fails leaves no partial result.
#ifndef RESULTS_H
#define RESULTS_H

#include <stddef.h>

typedef struct {
    char *buf;
    size_t n, cap;
    int count;
} Results;

void results_init(Results *r);
void results_int(Results *r, const char *key, long long v);
void results_uint(Results *r, const char *key, unsigned long long v);
// Numbers as the shortest decimal of at most 17 significant digits that reads back as the same
// double (exact round trip: 0.001, 1e-05, 0.30000001192092896 for 0.3f); NaN and infinities
// become the strings "nan", "inf", "-inf".
void results_num(Results *r, const char *key, double v);
void results_str(Results *r, const char *key, const char *s); // JSON-escaped
// Writes {...} atomically to path (creating its directory). Returns 0 or -1 with err.
int results_write(Results *r, const char *path, char *err, size_t errlen);
void results_free(Results *r);

#endif // RESULTS_H
