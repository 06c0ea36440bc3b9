// common.h: small helpers shared by every program and library of the package.
// Fatal errors, checked allocation, wall-clock time, atomic file writes (a result or checkpoint is
// either the old file or the complete new one, never half of either), and a progress display
// (a bar with rate and ETA on a terminal, plain periodic lines otherwise).
#ifndef COMMON_H
#define COMMON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

// ----------------------------------------------------------------------------
// errors and allocation

// Prints "error: <message>" to stderr and exits with status 1.
__attribute__((noreturn, format(printf, 1, 2))) void die(const char *fmt, ...);
// Prints "warning: <message>" to stderr.
__attribute__((format(printf, 1, 2))) void warn(const char *fmt, ...);

// Allocation that dies with a clear message (naming the size) when memory runs out.
void *xmalloc(size_t bytes);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t bytes);
char *xstrdup(const char *s);
// printf into a new heap string.
__attribute__((format(printf, 1, 2))) char *xasprintf(const char *fmt, ...);
// The same with a va_list.
__attribute__((format(printf, 1, 0))) char *xvasprintf(const char *fmt, va_list ap);

// Overflow-checked size arithmetic: returns 0 and stores the result, or -1 on overflow.
int size_mul(size_t a, size_t b, size_t *out);
int size_add(size_t a, size_t b, size_t *out);

// Formats an error into a caller's buffer (err may be NULL); always returns -1 so that
// `return set_err(err, errlen, "...")` reads naturally.
__attribute__((format(printf, 3, 4))) int set_err(char *err, size_t errlen, const char *fmt, ...);

// ----------------------------------------------------------------------------
// time

double now_seconds(void); // monotonic clock, seconds

// ----------------------------------------------------------------------------
// files

// Reads a whole file. Returns NULL (with a message naming the file in err) on failure.
// max_bytes caps the size accepted (0 = no cap).
uint8_t *read_file(const char *path, size_t *size, size_t max_bytes, char *err, size_t errlen);
int file_exists(const char *path);
// mkdir -p. Returns 0 or -1 with errno set.
int mkdir_p(const char *path);
// mkdir -p of the directory part of a file path.
int mkdir_parent(const char *path);

// Atomic file writes: data goes to "<path>.tmp.<pid>", is flushed and fsync'd, then renamed over
// <path>. A failure at any point (a full disk, say) removes the temporary and leaves <path> as it
// was. Usage:
//   AtomicFile af; FILE *f = afile_open(&af, path, err, errlen); ... fprintf(f, ...);
//   if (afile_commit(&af, err, errlen)) -> error
typedef struct {
    FILE *f;
    char *path;
    char *tmp;
} AtomicFile;
FILE *afile_open(AtomicFile *af, const char *path, char *err, size_t errlen);
int afile_commit(AtomicFile *af, char *err, size_t errlen); // 0 ok, -1 error (tmp removed)
void afile_abort(AtomicFile *af);                          // discard (tmp removed)
// Convenience: write a buffer atomically.
int write_file_atomic(const char *path, const void *data, size_t n, char *err, size_t errlen);

// ----------------------------------------------------------------------------
// progress display

// On a terminal (stderr is a tty): a one-line bar redrawn at most 10 times a second,
//   "label  [#########.........]  120/300  41.2 img/s  ETA 0:04".
// Otherwise: a plain line every `plain_every` seconds (default 10) and one at the end.
typedef struct {
    const char *label;
    const char *unit; // "img", "batch", ...
    long total;
    long done;
    double t_start;
    double t_last_draw;
    double plain_every;
    int tty;
} Progress;
void progress_start(Progress *p, const char *label, const char *unit, long total);
void progress_update(Progress *p, long done);
void progress_finish(Progress *p);

#endif // COMMON_H
