// common.c: implementation of common.h (errors, allocation, time, atomic files, progress).
#define _GNU_SOURCE
#include "core/common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

// ----------------------------------------------------------------------------
// errors and allocation

void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

void warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("warning: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) die("out of memory allocating %zu bytes", bytes);
    return p;
}

void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) die("out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *xrealloc(void *p, size_t bytes) {
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q) die("out of memory reallocating to %zu bytes", bytes);
    return q;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = xmalloc(n);
    memcpy(d, s, n);
    return d;
}

char *xvasprintf(const char *fmt, va_list ap) {
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) die("out of memory formatting a string");
    return s;
}

char *xasprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = xvasprintf(fmt, ap);
    va_end(ap);
    return s;
}

int size_mul(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}

int size_add(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return -1;
    *out = a + b;
    return 0;
}

int set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

// ----------------------------------------------------------------------------
// time

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// ----------------------------------------------------------------------------
// files

uint8_t *read_file(const char *path, size_t *size, size_t max_bytes, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        set_err(err, errlen, "%s: not a regular file", path);
        fclose(f);
        return NULL;
    }
    size_t n = (size_t)st.st_size;
    if (max_bytes && n > max_bytes) {
        set_err(err, errlen, "%s: file is %zu bytes, more than the %zu accepted", path, n, max_bytes);
        fclose(f);
        return NULL;
    }
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        set_err(err, errlen, "%s: out of memory reading %zu bytes", path, n);
        fclose(f);
        return NULL;
    }
    if (fread(buf, 1, n, f) != n) {
        set_err(err, errlen, "%s: read error: %s", path, ferror(f) ? strerror(errno) : "file shrank");
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *size = n;
    return buf;
}

int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int mkdir_p(const char *path) {
    char *p = xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            free(p);
            return -1;
        }
        *s = '/';
    }
    int rc = (mkdir(p, 0777) != 0 && errno != EEXIST) ? -1 : 0;
    free(p);
    return rc;
}

int mkdir_parent(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path) return 0;
    char *dir = xstrdup(path);
    dir[slash - path] = 0;
    int rc = mkdir_p(dir);
    free(dir);
    return rc;
}

FILE *afile_open(AtomicFile *af, const char *path, char *err, size_t errlen) {
    memset(af, 0, sizeof *af);
    if (mkdir_parent(path) != 0) {
        set_err(err, errlen, "%s: cannot create its directory: %s", path, strerror(errno));
        return NULL;
    }
    af->path = xstrdup(path);
    af->tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
    af->f = fopen(af->tmp, "wb");
    if (!af->f) {
        set_err(err, errlen, "%s: cannot create: %s", af->tmp, strerror(errno));
        free(af->path);
        free(af->tmp);
        memset(af, 0, sizeof *af);
        return NULL;
    }
    return af->f;
}

static void afile_release(AtomicFile *af) {
    free(af->path);
    free(af->tmp);
    memset(af, 0, sizeof *af);
}

int afile_commit(AtomicFile *af, char *err, size_t errlen) {
    if (!af->f) return set_err(err, errlen, "internal: afile_commit on a closed file");
    int bad = ferror(af->f) || fflush(af->f) != 0;
    int e = errno;
    if (!bad && fsync(fileno(af->f)) != 0) bad = 1, e = errno;
    if (fclose(af->f) != 0 && !bad) bad = 1, e = errno;
    af->f = NULL;
    if (!bad && rename(af->tmp, af->path) != 0) bad = 1, e = errno;
    if (bad) {
        set_err(err, errlen, "%s: write failed (%s); the previous file is left as it was", af->path,
                strerror(e ? e : EIO));
        unlink(af->tmp);
        afile_release(af);
        return -1;
    }
    afile_release(af);
    return 0;
}

void afile_abort(AtomicFile *af) {
    if (af->f) fclose(af->f);
    if (af->tmp) unlink(af->tmp);
    afile_release(af);
}

int write_file_atomic(const char *path, const void *data, size_t n, char *err, size_t errlen) {
    AtomicFile af;
    FILE *f = afile_open(&af, path, err, errlen);
    if (!f) return -1;
    if (n && fwrite(data, 1, n, f) != n) {
        set_err(err, errlen, "%s: write failed: %s; the previous file is left as it was", path,
                strerror(errno));
        afile_abort(&af);
        return -1;
    }
    return afile_commit(&af, err, errlen);
}

// ----------------------------------------------------------------------------
// progress display

static void fmt_duration(char *buf, size_t n, double s) {
    if (s < 0 || s > 1e7) {
        snprintf(buf, n, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else
        snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

void progress_start(Progress *p, const char *label, const char *unit, long total) {
    memset(p, 0, sizeof *p);
    p->label = label;
    p->unit = unit ? unit : "it";
    p->total = total;
    p->t_start = now_seconds();
    p->t_last_draw = p->t_start;
    p->plain_every = 10.0;
    p->tty = isatty(fileno(stderr));
}

static void progress_draw(Progress *p, int final) {
    double t = now_seconds();
    double el = t - p->t_start;
    double rate = el > 0 ? (double)p->done / el : 0;
    double eta = (rate > 0 && p->total > 0) ? (double)(p->total - p->done) / rate : -1;
    char eta_s[32], el_s[32];
    fmt_duration(eta_s, sizeof eta_s, eta);
    fmt_duration(el_s, sizeof el_s, el);
    if (p->tty) {
        char bar[31];
        int width = 30;
        int fill = p->total > 0 ? (int)((double)width * (double)p->done / (double)p->total) : 0;
        if (fill > width) fill = width;
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
        bar[width] = 0;
        fprintf(stderr, "\r%s [%s] %ld/%ld %.1f %s/s %s %s\033[K", p->label, bar, p->done, p->total,
                rate, p->unit, final ? "in" : "ETA", final ? el_s : eta_s);
        if (final) fputc('\n', stderr);
    } else {
        fprintf(stderr, "%s: %ld/%ld %s, %.1f %s/s, %s %s\n", p->label, p->done, p->total, p->unit,
                rate, p->unit, final ? "done in" : "ETA", final ? el_s : eta_s);
    }
    fflush(stderr);
    p->t_last_draw = t;
}

void progress_update(Progress *p, long done) {
    p->done = done;
    double t = now_seconds();
    double every = p->tty ? 0.1 : p->plain_every;
    if (t - p->t_last_draw >= every) progress_draw(p, 0);
}

void progress_finish(Progress *p) { progress_draw(p, 1); }
