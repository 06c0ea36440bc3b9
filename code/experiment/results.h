// results.h: writing a chapter's results/NN-name.json, a FLAT JSON object (string keys; number or
// string values) from which the report takes every number it prints. Keys are collected in memory
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
// Numbers with 17 significant digits (exact round trip); NaN and infinities become strings.
void results_num(Results *r, const char *key, double v);
void results_str(Results *r, const char *key, const char *s); // JSON-escaped
// Writes {...} atomically to path (creating its directory). Returns 0 or -1 with err.
int results_write(Results *r, const char *path, char *err, size_t errlen);
void results_free(Results *r);

#endif // RESULTS_H
