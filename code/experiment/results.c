// results.c: the flat JSON writer of results.h, the only writer of results/*.json.
#include "experiment/results.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

void results_init(Results *r) { memset(r, 0, sizeof *r); }

static void put(Results *r, const char *s, size_t n) {
    if (r->n + n + 1 > r->cap) {
        r->cap = (r->n + n + 1) * 2 + 256;
        r->buf = xrealloc(r->buf, r->cap);
    }
    memcpy(r->buf + r->n, s, n);
    r->n += n;
    r->buf[r->n] = 0;
}

static void put_string(Results *r, const char *s) {
    put(r, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c;
            put(r, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            put(r, esc, 6);
        } else {
            put(r, (const char *)&c, 1);
        }
    }
    put(r, "\"", 1);
}

static void put_key(Results *r, const char *key) {
    put(r, r->count ? ",\n  " : "{\n  ", r->count ? 4 : 4);
    put_string(r, key);
    put(r, ": ", 2);
    r->count++;
}

void results_int(Results *r, const char *key, long long v) {
    char b[32];
    put_key(r, key);
    put(r, b, (size_t)snprintf(b, sizeof b, "%lld", v));
}

void results_uint(Results *r, const char *key, unsigned long long v) {
    char b[32];
    put_key(r, key);
    put(r, b, (size_t)snprintf(b, sizeof b, "%llu", v));
}

void results_num(Results *r, const char *key, double v) {
    if (!isfinite(v)) {
        results_str(r, key, isnan(v) ? "nan" : v > 0 ? "inf" : "-inf");
        return;
    }
    // the shortest of 15, 16 or 17 significant digits that reads back as v (%g drops trailing
    // zeros, so 0.001 stays "0.001" and a float widened to double gets the digits it needs)
    char b[40];
    int n = 0;
    for (int digits = 15; digits <= 17; digits++) {
        n = snprintf(b, sizeof b, "%.*g", digits, v);
        if (strtod(b, NULL) == v) break;
    }
    put_key(r, key);
    put(r, b, (size_t)n);
}

void results_str(Results *r, const char *key, const char *s) {
    put_key(r, key);
    put_string(r, s ? s : "");
}

int results_write(Results *r, const char *path, char *err, size_t errlen) {
    AtomicFile af;
    FILE *f = afile_open(&af, path, err, errlen);
    if (!f) return -1;
    fputs(r->count ? r->buf : "{", f);
    fputs("\n}\n", f);
    return afile_commit(&af, err, errlen);
}

void results_free(Results *r) {
    free(r->buf);
    memset(r, 0, sizeof *r);
}
