// tests/check.h: what the C test programs share.
//   CHECK(cond, fmt, ...)   on failure prints "FAIL file:line: <message>  [failed: cond]" on
//                           stderr and counts it in `failures`; the test goes on
//   approx_eq(got, ref, atol, rtol)   the tolerance rule of every comparison with a reference:
//                           |got - ref| <= atol + rtol |ref|; NaN never passes
//   fresh_dir, write_text, read_or_die   scratch folders and fixture files (die naming the file)
//   check_exit(passed)      main's last line: "N check(s) failed" and 1, or `passed` and 0
#ifndef TESTS_CHECK_H
#define TESTS_CHECK_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

// ----------------------------------------------------------------------------
// checks

static int failures __attribute__((unused)) = 0; // failed checks so far
// When set, printed as "[context] " in front of each failure (e.g. the layer under test).
static const char *check_context __attribute__((unused)) = NULL;

__attribute__((format(printf, 4, 5))) static inline void check_fail(const char *file, int line,
                                                                    const char *expr,
                                                                    const char *fmt, ...) {
    fprintf(stderr, "FAIL %s%s%s%s:%d: ", check_context ? "[" : "",
            check_context ? check_context : "", check_context ? "] " : "", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "  [failed: %s]\n", expr);
    failures++;
}

#define CHECK(cond, ...)                                                                          \
    do {                                                                                          \
        if (!(cond)) check_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                          \
    } while (0)

// |got - ref| <= atol + rtol |ref|, false when either is NaN.
static inline int approx_eq(double got, double ref, double atol, double rtol) {
    return fabs(got - ref) <= atol + rtol * fabs(ref);
}

// The end of main: a summary line and the exit status.
static inline int check_exit(const char *passed) {
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("%s\n", passed);
    return 0;
}

// ----------------------------------------------------------------------------
// files

// Empties (or creates) the scratch folder `dir`; dies if it cannot.
static inline void fresh_dir(const char *dir) {
    char *cmd = xasprintf("rm -rf '%s'", dir);
    if (system(cmd) != 0) die("cannot clear %s", dir);
    free(cmd);
    if (mkdir_p(dir)) die("cannot create %s", dir);
}

// Writes `text` to `path` atomically, creating its folder; dies naming the file if it cannot.
static inline void write_text(const char *path, const char *text) {
    char err[512] = "";
    if (mkdir_parent(path) || write_file_atomic(path, text, strlen(text), err, sizeof err))
        die("cannot write %s: %s", path, err);
}

// The whole file (max_bytes 0: no limit); dies with read_file's message if it cannot.
static inline uint8_t *read_or_die(const char *path, size_t *n, size_t max_bytes) {
    char err[600];
    uint8_t *b = read_file(path, n, max_bytes, err, sizeof err);
    if (!b) die("%s", err);
    return b;
}

#endif // TESTS_CHECK_H
