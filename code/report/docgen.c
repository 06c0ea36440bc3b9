// docgen.c: implementation of docgen.h, the report's placeholder expander (flat JSON reader,
// value formatting, code regions, CSV tables, make dependencies). See docgen.h for the syntax.
#define _GNU_SOURCE
#include "report/docgen.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

// ----------------------------------------------------------------------------
// a growable string

typedef struct {
    char *s;
    size_t n, cap;
} Buf;

static void buf_add(Buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        b->s = xrealloc(b->s, cap);
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}
static void buf_puts(Buf *b, const char *s) { buf_add(b, s, strlen(s)); }
static void buf_putc(Buf *b, char c) { buf_add(b, &c, 1); }
__attribute__((format(printf, 2, 3))) static void buf_printf(Buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = xvasprintf(fmt, ap);
    va_end(ap);
    buf_puts(b, s);
    free(s);
}
static char *buf_take(Buf *b) {
    if (!b->s) buf_add(b, "", 0);
    char *s = b->s;
    memset(b, 0, sizeof *b);
    return s;
}

static char *xstrndup(const char *s, size_t n) {
    char *d = xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

// ----------------------------------------------------------------------------
// flat JSON

typedef struct {
    const char *p, *start, *end, *name;
    char *err;
    size_t errlen;
} JsonParser;

static int jp_fail(JsonParser *jp, const char *what) {
    int line = 1, col = 1;
    for (const char *q = jp->start; q < jp->p && q < jp->end; q++) {
        if (*q == '\n') line++, col = 1;
        else col++;
    }
    return set_err(jp->err, jp->errlen, "%s:%d:%d: %s (results files must be one flat JSON object: "
                   "string keys, number or string values)", jp->name, line, col, what);
}

static void jp_ws(JsonParser *jp) {
    while (jp->p < jp->end && (*jp->p == ' ' || *jp->p == '\t' || *jp->p == '\n' || *jp->p == '\r'))
        jp->p++;
}

static int hex4(const char *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static void utf8_put(Buf *b, unsigned cp) {
    char s[4];
    if (cp < 0x80) { s[0] = (char)cp; buf_add(b, s, 1); }
    else if (cp < 0x800) { s[0] = (char)(0xC0 | (cp >> 6)); s[1] = (char)(0x80 | (cp & 63)); buf_add(b, s, 2); }
    else if (cp < 0x10000) {
        s[0] = (char)(0xE0 | (cp >> 12)); s[1] = (char)(0x80 | ((cp >> 6) & 63));
        s[2] = (char)(0x80 | (cp & 63)); buf_add(b, s, 3);
    } else {
        s[0] = (char)(0xF0 | (cp >> 18)); s[1] = (char)(0x80 | ((cp >> 12) & 63));
        s[2] = (char)(0x80 | ((cp >> 6) & 63)); s[3] = (char)(0x80 | (cp & 63)); buf_add(b, s, 4);
    }
}

// At an opening quote: decodes the string into a heap string.
static char *jp_string(JsonParser *jp) {
    Buf b = {0};
    jp->p++; // opening quote
    while (jp->p < jp->end && *jp->p != '"') {
        unsigned char c = (unsigned char)*jp->p;
        if (c < 0x20) { free(b.s); jp_fail(jp, "control character inside a string"); return NULL; }
        if (c != '\\') { buf_putc(&b, (char)c); jp->p++; continue; }
        if (jp->end - jp->p < 2) break;
        char e = jp->p[1];
        jp->p += 2;
        switch (e) {
        case '"': buf_putc(&b, '"'); break;
        case '\\': buf_putc(&b, '\\'); break;
        case '/': buf_putc(&b, '/'); break;
        case 'b': buf_putc(&b, '\b'); break;
        case 'f': buf_putc(&b, '\f'); break;
        case 'n': buf_putc(&b, '\n'); break;
        case 'r': buf_putc(&b, '\r'); break;
        case 't': buf_putc(&b, '\t'); break;
        case 'u': {
            unsigned cp, lo;
            if (jp->end - jp->p < 4 || hex4(jp->p, &cp)) {
                free(b.s); jp_fail(jp, "bad \\u escape"); return NULL;
            }
            jp->p += 4;
            if (cp >= 0xD800 && cp < 0xDC00) { // a surrogate pair
                if (jp->end - jp->p < 6 || jp->p[0] != '\\' || jp->p[1] != 'u' || hex4(jp->p + 2, &lo) ||
                    lo < 0xDC00 || lo > 0xDFFF) {
                    free(b.s); jp_fail(jp, "unpaired UTF-16 surrogate in a \\u escape"); return NULL;
                }
                jp->p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                free(b.s); jp_fail(jp, "unpaired UTF-16 surrogate in a \\u escape"); return NULL;
            }
            utf8_put(&b, cp);
            break;
        }
        default: free(b.s); jp->p--; jp_fail(jp, "bad escape in a string"); return NULL;
        }
    }
    if (jp->p >= jp->end) { free(b.s); jp_fail(jp, "unterminated string"); return NULL; }
    jp->p++; // closing quote
    return buf_take(&b);
}

// A JSON number (strict grammar). Returns its text, and its value in *v.
static char *jp_number(JsonParser *jp, double *v) {
    const char *s = jp->p, *q = s;
    if (q < jp->end && *q == '-') q++;
    if (q < jp->end && *q == '0') q++;
    else if (q < jp->end && *q >= '1' && *q <= '9') while (q < jp->end && isdigit((unsigned char)*q)) q++;
    else { jp_fail(jp, "expected a number or a string value"); return NULL; }
    if (q < jp->end && *q == '.') {
        q++;
        if (q >= jp->end || !isdigit((unsigned char)*q)) { jp->p = q; jp_fail(jp, "bad number"); return NULL; }
        while (q < jp->end && isdigit((unsigned char)*q)) q++;
    }
    if (q < jp->end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < jp->end && (*q == '+' || *q == '-')) q++;
        if (q >= jp->end || !isdigit((unsigned char)*q)) { jp->p = q; jp_fail(jp, "bad number"); return NULL; }
        while (q < jp->end && isdigit((unsigned char)*q)) q++;
    }
    char *t = xstrndup(s, (size_t)(q - s));
    *v = strtod(t, NULL);
    jp->p = q;
    return t;
}

void flatjson_free(FlatJson *j) {
    for (int i = 0; i < j->n; i++) {
        free(j->e[i].key);
        free(j->e[i].text);
    }
    free(j->e);
    memset(j, 0, sizeof *j);
}

int flatjson_parse(const char *text, size_t len, const char *name, FlatJson *out, char *err,
                   size_t errlen) {
    memset(out, 0, sizeof *out);
    JsonParser jp = {text, text, text + len, name, err, errlen};
    int cap = 0;
    jp_ws(&jp);
    if (jp.p >= jp.end || *jp.p != '{') return jp_fail(&jp, "expected '{'");
    jp.p++;
    jp_ws(&jp);
    if (jp.p < jp.end && *jp.p == '}') { jp.p++; goto done; }
    for (;;) {
        jp_ws(&jp);
        if (jp.p >= jp.end || *jp.p != '"') { jp_fail(&jp, "expected a string key"); goto fail; }
        const char *key_at = jp.p;
        char *key = jp_string(&jp);
        if (!key) goto fail;
        if (flatjson_get(out, key)) {
            jp.p = key_at;
            char what[300];
            snprintf(what, sizeof what, "duplicate key \"%.200s\"", key);
            free(key);
            jp_fail(&jp, what);
            goto fail;
        }
        jp_ws(&jp);
        if (jp.p >= jp.end || *jp.p != ':') { free(key); jp_fail(&jp, "expected ':' after a key"); goto fail; }
        jp.p++;
        jp_ws(&jp);
        JsonEntry e = {key, NULL, 0, 0};
        if (jp.p < jp.end && *jp.p == '"') {
            e.text = jp_string(&jp);
            e.is_string = 1;
        } else if (jp.p < jp.end && (*jp.p == '{' || *jp.p == '[')) {
            char what[300];
            snprintf(what, sizeof what, "key \"%.200s\": nested objects and arrays are not allowed", key);
            jp_fail(&jp, what);
        } else if (jp.p < jp.end && (*jp.p == 't' || *jp.p == 'f' || *jp.p == 'n')) {
            char what[300];
            snprintf(what, sizeof what, "key \"%.200s\": true/false/null are not allowed "
                     "(write 1/0 or a string)", key);
            jp_fail(&jp, what);
        } else {
            e.text = jp_number(&jp, &e.num);
        }
        if (!e.text) { free(key); goto fail; }
        if (out->n == cap) {
            cap = cap ? 2 * cap : 16;
            out->e = xrealloc(out->e, (size_t)cap * sizeof *out->e);
        }
        out->e[out->n++] = e;
        jp_ws(&jp);
        if (jp.p < jp.end && *jp.p == ',') { jp.p++; continue; }
        if (jp.p < jp.end && *jp.p == '}') { jp.p++; break; }
        jp_fail(&jp, "expected ',' or '}'");
        goto fail;
    }
done:
    jp_ws(&jp);
    if (jp.p != jp.end) { jp_fail(&jp, "trailing characters after the object"); goto fail; }
    return 0;
fail:
    flatjson_free(out);
    return -1;
}

int flatjson_load(const char *path, FlatJson *out, char *err, size_t errlen) {
    size_t n;
    uint8_t *data = read_file(path, &n, 64u << 20, err, errlen);
    if (!data) return -1;
    int rc = flatjson_parse((const char *)data, n, path, out, err, errlen);
    free(data);
    return rc;
}

const JsonEntry *flatjson_get(const FlatJson *j, const char *key) {
    for (int i = 0; i < j->n; i++)
        if (strcmp(j->e[i].key, key) == 0) return &j->e[i];
    return NULL;
}

// ----------------------------------------------------------------------------
// formatting values

// Characters that mean something to pandoc's Markdown inline; backslash-escaped in strings.
static const char MD_SPECIAL[] = "\\`*_{}[]<>$~^|@#";

static void md_escape(Buf *b, const char *s) {
    for (; *s; s++) {
        if (strchr(MD_SPECIAL, *s)) buf_putc(b, '\\');
        buf_putc(b, *s);
    }
}

// Checks a printf format with exactly one conversion (flags, width, precision, no length or '*'),
// and returns its conversion character and a copy fit for snprintf with a long long (for
// d i u x X, "ll" is inserted), or 0 with err.
static char check_format(const char *fmt, char **out, char *err, size_t errlen) {
    Buf b = {0};
    char conv = 0;
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') { buf_putc(&b, *p); continue; }
        if (p[1] == '%') { buf_puts(&b, "%%"); p++; continue; }
        if (conv) { free(b.s); set_err(err, errlen, "format \"%s\" has more than one conversion", fmt); return 0; }
        const char *q = p + 1;
        while (*q && strchr("-+ #0", *q)) q++;
        int w = 0;
        while (isdigit((unsigned char)*q)) { q++; if (++w > 2) break; }
        if (*q == '.') {
            q++;
            int pr = 0;
            while (isdigit((unsigned char)*q)) { q++; if (++pr > 2) break; }
        }
        if (!*q || !strchr("diuxXeEfFgGs", *q)) {
            free(b.s);
            set_err(err, errlen, "format \"%s\" is not one printf conversion "
                    "(%%[flags][width][.precision] then one of d i u x X e E f F g G s)", fmt);
            return 0;
        }
        conv = *q;
        buf_add(&b, p, (size_t)(q - p));
        if (strchr("diuxX", conv)) buf_puts(&b, "ll");
        buf_putc(&b, conv);
        p = q;
    }
    if (!conv) { free(b.s); set_err(err, errlen, "format \"%s\" has no conversion", fmt); return 0; }
    *out = buf_take(&b);
    return conv;
}

char *docgen_format_value(const JsonEntry *e, const char *mods, char *err, size_t errlen) {
    const char *fmt = NULL;
    size_t fmt_len = 0;
    double scale = 1;
    int scaled = 0, raw = 0, base = 0;
    // parse the modifier chain
    for (const char *m = mods; m && *m;) {
        const char *bar = strchr(m, '|');
        size_t n = bar ? (size_t)(bar - m) : strlen(m);
        char *one = xstrndup(m, n);
        if (one[0] == '%') {
            if (fmt) { set_err(err, errlen, "more than one format"); free(one); return NULL; }
            fmt = m, fmt_len = n;
        } else if (one[0] == '*') {
            char *end;
            errno = 0;
            double s = strtod(one + 1, &end);
            if (end == one + 1 || *end || errno || !isfinite(s)) {
                set_err(err, errlen, "bad scale \"%s\" (write e.g. *100)", one);
                free(one);
                return NULL;
            }
            scale *= s, scaled = 1;
        } else if (strcmp(one, "raw") == 0) {
            raw = 1;
        } else if (strcmp(one, "basename") == 0) {
            base = 1;
        } else {
            set_err(err, errlen, "unknown modifier \"%s\" (use a printf format such as %%.3f, a scale "
                    "such as *100, basename or raw)", one);
            free(one);
            return NULL;
        }
        free(one);
        m = bar ? bar + 1 : m + n;
    }
    char *fmtc = NULL, conv = 0;
    if (fmt) {
        char *f = xstrndup(fmt, fmt_len);
        conv = check_format(f, &fmtc, err, errlen);
        free(f);
        if (!conv) return NULL;
    }
    Buf b = {0};
    if (base && !e->is_string) {
        set_err(err, errlen, "basename applies to strings (file paths), not to the number %s", e->text);
        free(fmtc);
        return NULL;
    }
    if (e->is_string) {
        if (scaled || (conv && conv != 's')) {
            set_err(err, errlen, "the value is the string \"%s\": only %%s formats and raw apply",
                    e->text);
            free(fmtc);
            return NULL;
        }
        const char *text = e->text, *slash = strrchr(text, '/');
        if (base && slash && slash[1]) text = slash + 1;
        char *s = conv ? xasprintf(fmtc, text) : xstrdup(text);
        if (raw) buf_puts(&b, s);
        else md_escape(&b, s);
        free(s);
    } else {
        double v = e->num * scale;
        char *s;
        if (!conv) s = scaled ? xasprintf("%.15g", v) : xstrdup(e->text);
        else if (strchr("di", conv)) s = xasprintf(fmtc, (long long)llround(v));
        else if (strchr("uxX", conv)) {
            if (v < 0) {
                set_err(err, errlen, "format %%%c needs a non-negative value, not %g", conv, v);
                free(fmtc);
                return NULL;
            }
            s = xasprintf(fmtc, (unsigned long long)llround(v));
        } else if (conv == 's') {
            char *t = scaled ? xasprintf("%.15g", v) : xstrdup(e->text);
            s = xasprintf(fmtc, t);
            free(t);
        } else s = xasprintf(fmtc, v);
        if (raw) buf_puts(&b, s);
        else md_escape(&b, s);
        free(s);
    }
    free(fmtc);
    return buf_take(&b);
}

// ----------------------------------------------------------------------------
// code regions

// If `line` (length n) is a region marker, returns 1 for "region: NAME" (NAME in *name, *name_len)
// or 2 for "endregion"; 0 otherwise. Markers are comments: // or #.
static int region_marker(const char *line, size_t n, const char **name, size_t *name_len) {
    const char *p = line, *end = line + n;
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    if (end - p >= 2 && p[0] == '/' && p[1] == '/') p += 2;
    else if (p < end && *p == '#') p++;
    else return 0;
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    while (end > p && isspace((unsigned char)end[-1])) end--;
    if (end - p >= 7 && memcmp(p, "region:", 7) == 0) {
        p += 7;
        while (p < end && (*p == ' ' || *p == '\t')) p++;
        *name = p;
        *name_len = (size_t)(end - p);
        return 1;
    }
    if (end - p >= 9 && memcmp(p, "endregion", 9) == 0 && (end - p == 9 || isspace((unsigned char)p[9])))
        return 2;
    return 0;
}

char *docgen_extract_region(const char *src, size_t len, const char *path, const char *name,
                            int *first_line, int *last_line, char *err, size_t errlen) {
    enum { MAXDEPTH = 32 };
    int open_line[MAXDEPTH];
    int depth = 0, lineno = 0;
    int found = 0, target_depth = -1, found_line = 0, done = 0;
    size_t nlen = strlen(name);
    Buf body = {0};
    int n_lines = 0;
    const char **lines = NULL; // start of each captured line
    size_t *lens = NULL;
    int *at = NULL; // its line number in the file
    for (const char *p = src; p < src + len;) {
        const char *nl = memchr(p, '\n', (size_t)(src + len - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(src + len - p);
        lineno++;
        const char *mname;
        size_t mlen;
        int kind = region_marker(p, n, &mname, &mlen);
        if (kind == 1) {
            if (depth == MAXDEPTH) { set_err(err, errlen, "%s:%d: regions nested too deeply", path, lineno); goto fail; }
            if (mlen == 0) { set_err(err, errlen, "%s:%d: region without a name", path, lineno); goto fail; }
            if (mlen == nlen && memcmp(mname, name, nlen) == 0) {
                if (found) {
                    set_err(err, errlen, "%s:%d: region \"%s\" is defined twice (also at line %d); "
                            "region names must be unique in a file", path, lineno, name, found_line);
                    goto fail;
                }
                found = 1, found_line = lineno, target_depth = depth;
            }
            open_line[depth++] = lineno;
        } else if (kind == 2) {
            if (depth == 0) {
                set_err(err, errlen, "%s:%d: \"endregion\" without an open region", path, lineno);
                goto fail;
            }
            depth--;
            if (found && !done && depth == target_depth) done = 1;
        } else if (found && !done) {
            lines = xrealloc(lines, (size_t)(n_lines + 1) * sizeof *lines);
            lens = xrealloc(lens, (size_t)(n_lines + 1) * sizeof *lens);
            at = xrealloc(at, (size_t)(n_lines + 1) * sizeof *at);
            at[n_lines] = lineno;
            lines[n_lines] = p;
            lens[n_lines] = n;
            n_lines++;
        }
        p = nl ? nl + 1 : src + len;
    }
    if (depth > 0) {
        set_err(err, errlen, "%s:%d: region opened here has no \"endregion\"", path, open_line[depth - 1]);
        goto fail;
    }
    if (!found) {
        set_err(err, errlen, "%s: no region \"%s\" (mark it with lines \"// region: %s\" and "
                "\"// endregion\")", path, name, name);
        goto fail;
    }
    // drop blank lines at both ends, then the common indentation
    int a = 0, z = n_lines;
    #define BLANK(i) (strspn(lines[i], " \t\r") >= lens[i])
    while (a < z && BLANK(a)) a++;
    while (z > a && BLANK(z - 1)) z--;
    size_t indent = (size_t)-1;
    for (int i = a; i < z; i++) {
        if (BLANK(i)) continue;
        size_t k = strspn(lines[i], " \t");
        if (k > lens[i]) k = lens[i];
        if (k < indent) indent = k;
    }
    if (a == z) {
        set_err(err, errlen, "%s:%d: region \"%s\" is empty", path, found_line, name);
        goto fail;
    }
    for (int i = a; i < z; i++) {
        size_t k = BLANK(i) ? lens[i] : indent;
        size_t n = lens[i] - k;
        while (n && lines[i][k + n - 1] == '\r') n--;
        buf_add(&body, lines[i] + k, n);
        buf_putc(&body, '\n');
    }
    #undef BLANK
    if (first_line) *first_line = at[a];
    if (last_line) *last_line = at[z - 1];
    free(lines);
    free(lens);
    free(at);
    return buf_take(&body);
fail:
    free(lines);
    free(lens);
    free(at);
    free(body.s);
    return NULL;
}

// ----------------------------------------------------------------------------
// the expander

void docgen_init(DocGen *g) {
    memset(g, 0, sizeof *g);
    g->results_dir = "results";
    g->figures_dir = "figures";
    g->src_dir = ".";
    g->errors = stderr;
    g->weights = -1;
}

void docgen_free(DocGen *g) {
    for (int i = 0; i < g->n_deps; i++) free(g->deps[i]);
    free(g->deps);
    for (int i = 0; i < g->n_json; i++) {
        free(g->json_names[i]);
        flatjson_free(&g->jsons[i]);
    }
    free(g->json_names);
    free(g->jsons);
    free(g->json_ok);
    g->deps = NULL, g->json_names = NULL, g->jsons = NULL, g->json_ok = NULL;
    g->n_deps = g->n_json = 0;
}

static void add_dep(DocGen *g, const char *path) {
    for (int i = 0; i < g->n_deps; i++)
        if (strcmp(g->deps[i], path) == 0) return;
    g->deps = xrealloc(g->deps, (size_t)(g->n_deps + 1) * sizeof *g->deps);
    g->deps[g->n_deps++] = xstrdup(path);
}

__attribute__((format(printf, 5, 6))) static void report(DocGen *g, const char *md, int line,
                                                        const char *ph, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(g->errors, "error: %s:%d: {{%s}}: ", md, line, ph);
    vfprintf(g->errors, fmt, ap);
    fputc('\n', g->errors);
    va_end(ap);
    g->n_errors++;
}

static char *join_path(const char *dir, const char *name) {
    if (!dir || !*dir || strcmp(dir, ".") == 0) return xstrdup(name);
    size_t n = strlen(dir);
    return xasprintf("%s%s%s", dir, dir[n - 1] == '/' ? "" : "/", name);
}

static int safe_name(const char *s) {
    if (!*s || strstr(s, "..")) return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("._-/", *s)) return 0;
    return 1;
}

// The results file of a chapter, loaded once; NULL (error reported) when it can't be read.
static const FlatJson *get_json(DocGen *g, const char *chapter, const char *md, int line, const char *ph) {
    for (int i = 0; i < g->n_json; i++) {
        if (strcmp(g->json_names[i], chapter) != 0) continue;
        if (!g->json_ok[i]) {
            char *path = xasprintf("%s.json", chapter);
            char *full = join_path(g->results_dir, path);
            report(g, md, line, ph, "%s could not be read (see the first error about it)", full);
            free(path);
            free(full);
            return NULL;
        }
        return &g->jsons[i];
    }
    int i = g->n_json++;
    g->json_names = xrealloc(g->json_names, (size_t)g->n_json * sizeof *g->json_names);
    g->jsons = xrealloc(g->jsons, (size_t)g->n_json * sizeof *g->jsons);
    g->json_ok = xrealloc(g->json_ok, (size_t)g->n_json * sizeof *g->json_ok);
    g->json_names[i] = xstrdup(chapter);
    memset(&g->jsons[i], 0, sizeof g->jsons[i]);
    char *name = xasprintf("%s.json", chapter);
    char *path = join_path(g->results_dir, name);
    free(name);
    char err[512];
    g->json_ok[i] = flatjson_load(path, &g->jsons[i], err, sizeof err) == 0;
    if (!g->json_ok[i]) {
        report(g, md, line, ph, "%s; run the chapter program (build/%s, or `make report`) to write %s",
               err, chapter, path);
        free(path);
        return NULL;
    }
    add_dep(g, path);
    free(path);
    const JsonEntry *w = flatjson_get(&g->jsons[i], "weights_pretrained");
    const JsonEntry *ws = flatjson_get(&g->jsons[i], "weights");
    int random = (w && !w->is_string && w->num == 0) || (ws && ws->is_string && strcmp(ws->text, "random") == 0);
    if (random) g->weights = 0;
    else if (w && g->weights == -1) g->weights = 1;
    return &g->jsons[i];
}

// {{chapter:key|mods}} -> appended to out; 0 or -1 (reported).
static int expand_value(DocGen *g, const char *ph, const char *md, int line, Buf *out) {
    const char *colon = strchr(ph, ':');
    if (!colon) {
        report(g, md, line, ph, "expected {{NN-name:key}}, {{figure:FILE}}, {{code:PATH#region}} or "
               "{{table:FILE.csv}}");
        return -1;
    }
    char *kind = xstrndup(ph, (size_t)(colon - ph));
    const char *rest = colon + 1;
    int rc = -1;
    if (strcmp(kind, "code") == 0 || strcmp(kind, "table") == 0) {
        report(g, md, line, ph, "{{%s:...}} must stand alone on its line", kind);
    } else if (strcmp(kind, "figure") == 0) {
        if (!safe_name(rest)) {
            report(g, md, line, ph, "bad figure name \"%s\"", rest);
        } else {
            char *path = join_path(g->figures_dir, rest);
            if (!file_exists(path)) {
                report(g, md, line, ph, "figure %s does not exist; the chapter program that draws it "
                       "writes it (see Makefile.doc)", path);
            } else {
                add_dep(g, path);
                buf_puts(out, path);
                rc = 0;
            }
            free(path);
        }
    } else if (!safe_name(kind) || strchr(kind, '/')) {
        report(g, md, line, ph, "bad chapter name \"%s\" (expected e.g. 01-data-loading)", kind);
    } else {
        const char *bar = strchr(rest, '|');
        char *key = xstrndup(rest, bar ? (size_t)(bar - rest) : strlen(rest));
        const FlatJson *j = get_json(g, kind, md, line, ph);
        if (j) {
            const JsonEntry *e = flatjson_get(j, key);
            if (!e) {
                Buf keys = {0};
                for (int i = 0; i < j->n && i < 40; i++) buf_printf(&keys, "%s%s", i ? ", " : "", j->e[i].key);
                if (j->n > 40) buf_puts(&keys, ", ...");
                char *name = xasprintf("%s.json", kind);
                char *path = join_path(g->results_dir, name);
                report(g, md, line, ph, "%s has no key \"%s\" (its keys: %s)", path, key,
                       keys.s ? keys.s : "none");
                free(name);
                free(path);
                free(keys.s);
            } else {
                char err[512];
                char *v = docgen_format_value(e, bar ? bar + 1 : "", err, sizeof err);
                if (!v) report(g, md, line, ph, "%s", err);
                else {
                    buf_puts(out, v);
                    free(v);
                    rc = 0;
                }
            }
        }
        free(key);
    }
    free(kind);
    return rc;
}

static const char *lang_of(const char *path) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    if (strcmp(base, "Makefile") == 0 || (dot && strcmp(dot, ".mk") == 0) || strncmp(base, "Makefile.", 9) == 0)
        return "makefile";
    if (!dot) return "";
    if (!strcmp(dot, ".c") || !strcmp(dot, ".h")) return "c";
    if (!strcmp(dot, ".cu") || !strcmp(dot, ".cuh")) return "cpp";
    if (!strcmp(dot, ".gp") || !strcmp(dot, ".gnuplot")) return "gnuplot";
    if (!strcmp(dot, ".sh")) return "bash";
    if (!strcmp(dot, ".py")) return "python";
    if (!strcmp(dot, ".cmake")) return "cmake";
    return "";
}

// {{code:PATH#region}} alone on a line -> a fenced code block.
static void expand_code(DocGen *g, const char *ph, const char *md, int line, Buf *out) {
    const char *spec = ph + 5;
    const char *hash = strchr(spec, '#');
    if (!hash || hash == spec || !hash[1]) {
        report(g, md, line, ph, "expected {{code:PATH#region}}, e.g. {{code:code/01-data-loading.c#count-classes}}");
        return;
    }
    char *rel = xstrndup(spec, (size_t)(hash - spec));
    const char *region = hash + 1;
    if (!safe_name(rel)) {
        report(g, md, line, ph, "bad source path \"%s\"", rel);
        free(rel);
        return;
    }
    char *path = join_path(g->src_dir, rel);
    char err[512];
    size_t n;
    uint8_t *src = read_file(path, &n, 16u << 20, err, sizeof err);
    if (!src) {
        report(g, md, line, ph, "%s", err);
    } else {
        int first = 0, last = 0;
        char *code = docgen_extract_region((const char *)src, n, rel, region, &first, &last, err,
                                           sizeof err);
        if (!code) report(g, md, line, ph, "%s", err);
        else {
            add_dep(g, path);
            // a fence longer than any run of backticks in the code
            int run = 0, longest = 0;
            for (const char *c = code; *c; c++) {
                run = *c == '`' ? run + 1 : 0;
                if (run > longest) longest = run;
            }
            int fence = longest >= 3 ? longest + 1 : 3;
            buf_putc(out, '\n');
            const char *lang = lang_of(rel);
            for (int i = 0; i < fence; i++) buf_putc(out, '`');
            buf_printf(out, "%s\n", lang);
            buf_puts(out, code);
            for (int i = 0; i < fence; i++) buf_putc(out, '`');
            buf_putc(out, '\n');
            // where it comes from, so that readers can find it in the program
            buf_printf(out, "\n`\\coderef{%s}{%s}{%d}{%d}`{=latex}\n\n", rel, region, first, last);
            free(code);
        }
        free(src);
    }
    free(path);
    free(rel);
}

static int is_number(const char *s) {
    if (!*s) return 0;
    char *end;
    strtod(s, &end);
    return *end == 0;
}

// Splits a CSV line into fields (commas; double-quoted fields may hold commas and "" quotes).
static int csv_split(const char *line, char ***fields) {
    int n = 0;
    *fields = NULL;
    const char *p = line;
    for (;;) {
        Buf f = {0};
        while (*p == ' ') p++;
        if (*p == '"') {
            p++;
            while (*p && !(*p == '"' && p[1] != '"')) {
                if (*p == '"') p++;
                buf_putc(&f, *p++);
            }
            if (*p == '"') p++;
            while (*p && *p != ',') p++;
        } else {
            while (*p && *p != ',') buf_putc(&f, *p++);
            while (f.n && (f.s[f.n - 1] == ' ' || f.s[f.n - 1] == '\r')) f.s[--f.n] = 0;
        }
        *fields = xrealloc(*fields, (size_t)(n + 1) * sizeof **fields);
        (*fields)[n++] = buf_take(&f);
        if (*p != ',') break;
        p++;
    }
    return n;
}

static void free_fields(char **f, int n) {
    for (int i = 0; i < n; i++) free(f[i]);
    free(f);
}

// A CSV results file: rows[0] is the header; every row has ncol fields.
typedef struct {
    char ***rows;
    int n_rows, ncol;
} Csv;

static void csv_free(Csv *t) {
    for (int r = 0; r < t->n_rows; r++) free_fields(t->rows[r], t->ncol);
    free(t->rows);
}

// The columns a table shows: indexes into the CSV's fields, each with an optional format.
typedef struct {
    int *cols;
    char **fmts; // NULL: the cell as written
    int n;
} Columns;

static void columns_free(Columns *c) {
    for (int k = 0; k < c->n; k++) free(c->fmts[k]);
    free(c->fmts);
    free(c->cols);
}

// Reads the CSV file `path` for the table placeholder `ph`. Returns 0, or -1 once the problem
// is reported.
static int table_read(DocGen *g, const char *md, int line, const char *ph, const char *path,
                      Csv *t) {
    char err[512];
    size_t n;
    uint8_t *data = read_file(path, &n, 64u << 20, err, sizeof err);
    if (!data) {
        report(g, md, line, ph, "%s; the chapter program writes it", err);
        return -1;
    }
    char *text = xstrndup((const char *)data, n);
    free(data);
    int ok = 1, csv_line = 0;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        csv_line++;
        if (strspn(l, " \r") == strlen(l)) continue;
        char **f;
        int nf = csv_split(l, &f);
        if (t->n_rows == 0) t->ncol = nf;
        else if (nf != t->ncol) {
            report(g, md, line, ph, "%s:%d: %d fields where the header has %d", path, csv_line,
                   nf, t->ncol);
            free_fields(f, nf);
            ok = 0;
            break;
        }
        t->rows = xrealloc(t->rows, (size_t)(t->n_rows + 1) * sizeof *t->rows);
        t->rows[t->n_rows++] = f;
    }
    free(text);
    if (ok && t->n_rows < 2) {
        report(g, md, line, ph, "%s has no data rows", path);
        ok = 0;
    }
    return ok ? 0 : -1;
}

// The columns named after the placeholder's '|' ("val_acc:%.3f,epoch"), or all of them when
// `want_spec` is NULL. Every unknown name is reported; returns 0 or -1.
static int table_columns(DocGen *g, const char *md, int line, const char *ph, const char *path,
                         const Csv *t, const char *want_spec, Columns *c) {
    int cap = t->ncol > 0 ? t->ncol : 1, ok = 1;
    c->cols = xmalloc((size_t)cap * sizeof *c->cols);
    c->fmts = xcalloc((size_t)cap, sizeof *c->fmts);
    if (!want_spec) {
        for (int k = 0; k < t->ncol; k++) c->cols[c->n++] = k;
        return 0;
    }
    char **want;
    int nw = csv_split(want_spec, &want);
    if (nw > cap) {
        cap = nw;
        c->cols = xrealloc(c->cols, (size_t)cap * sizeof *c->cols);
        c->fmts = xrealloc(c->fmts, (size_t)cap * sizeof *c->fmts);
    }
    for (int w = 0; w < nw; w++) {
        char *colon = strchr(want[w], ':');
        if (colon) *colon = 0;
        int col = -1;
        for (int k = 0; k < t->ncol; k++)
            if (strcmp(t->rows[0][k], want[w]) == 0) col = k;
        if (col < 0) {
            Buf have = {0};
            for (int k = 0; k < t->ncol; k++)
                buf_printf(&have, "%s%s", k ? ", " : "", t->rows[0][k]);
            report(g, md, line, ph, "%s has no column \"%s\" (its columns: %s)", path, want[w],
                   have.s);
            free(have.s);
            ok = 0;
            continue;
        }
        c->fmts[c->n] = colon ? xstrdup(colon + 1) : NULL;
        c->cols[c->n++] = col;
    }
    free_fields(want, nw);
    return ok ? 0 : -1;
}

// The pipe table: header, alignment row (numbers right-aligned), the data rows, each cell
// escaped or formatted as a results value would be. Returns 0, or -1 once a format is reported.
static int table_render(DocGen *g, const char *md, int line, const char *ph, const char *path,
                        const Csv *t, const Columns *c, Buf *table) {
    char ***rows = t->rows;
    buf_puts(table, "\n|");
    for (int k = 0; k < c->n; k++) {
        buf_putc(table, ' ');
        md_escape(table, rows[0][c->cols[k]]);
        buf_puts(table, " |");
    }
    buf_puts(table, "\n|");
    for (int k = 0; k < c->n; k++) {
        int numeric = 1;
        for (int r = 1; r < t->n_rows; r++) numeric &= is_number(rows[r][c->cols[k]]);
        buf_puts(table, numeric ? "---:|" : ":---|");
    }
    buf_putc(table, '\n');
    for (int r = 1; r < t->n_rows; r++) {
        buf_putc(table, '|');
        for (int k = 0; k < c->n; k++) {
            const char *cell = rows[r][c->cols[k]];
            buf_putc(table, ' ');
            if (c->fmts[k]) { // formatted as a results value would be
                JsonEntry e = {rows[0][c->cols[k]], (char *)cell, !is_number(cell), 0};
                if (!e.is_string) e.num = strtod(cell, NULL);
                char ferr[256];
                char *v = docgen_format_value(&e, c->fmts[k], ferr, sizeof ferr);
                if (!v) {
                    report(g, md, line, ph, "%s, column %s, row %d: %s", path,
                           rows[0][c->cols[k]], r, ferr);
                    return -1;
                }
                buf_puts(table, v);
                free(v);
            } else {
                md_escape(table, cell);
            }
            buf_puts(table, " |");
        }
        buf_putc(table, '\n');
    }
    buf_putc(table, '\n');
    return 0;
}

// {{table:FILE.csv|col,col}} alone on a line -> a pipe table.
static void expand_table(DocGen *g, const char *ph, const char *md, int line, Buf *out) {
    const char *spec = ph + 6;
    const char *bar = strchr(spec, '|');
    char *name = xstrndup(spec, bar ? (size_t)(bar - spec) : strlen(spec));
    if (!safe_name(name)) {
        report(g, md, line, ph, "bad table file name \"%s\"", name);
        free(name);
        return;
    }
    char *path = join_path(g->results_dir, name);
    free(name);
    Csv t = {0};
    Columns c = {0};
    Buf table = {0};
    if (table_read(g, md, line, ph, path, &t) == 0 &&
        table_columns(g, md, line, ph, path, &t, bar ? bar + 1 : NULL, &c) == 0 &&
        table_render(g, md, line, ph, path, &t, &c, &table) == 0) {
        add_dep(g, path);
        buf_add(out, table.s, table.n);
    }
    free(table.s);
    columns_free(&c);
    csv_free(&t);
    free(path);
}

char *docgen_expand(DocGen *g, const char *md_path, const char *text, size_t len) {
    Buf body = {0};
    int lineno = 0;
    size_t after_title = 0; // where the random-weights note goes: after the chapter's first "# " heading
    int have_title = 0;
    for (const char *p = text; p < text + len;) {
        const char *nl = memchr(p, '\n', (size_t)(text + len - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(text + len - p);
        char *l = xstrndup(p, n);
        lineno++;
        // block directives: alone on their line
        char *t = l + strspn(l, " \t");
        size_t tl = strlen(t);
        while (tl && isspace((unsigned char)t[tl - 1])) tl--;
        if (tl > 4 && strncmp(t, "{{", 2) == 0 && strncmp(t + tl - 2, "}}", 2) == 0 &&
            (strncmp(t + 2, "code:", 5) == 0 || strncmp(t + 2, "table:", 6) == 0) &&
            !memmem(t + 2, tl - 4, "}}", 2)) {
            char *ph = xstrndup(t + 2, tl - 4);
            if (ph[0] == 'c') expand_code(g, ph, md_path, lineno, &body);
            else expand_table(g, ph, md_path, lineno, &body);
            free(ph);
        } else {
            // inline placeholders
            const char *q = l;
            for (;;) {
                const char *open = strstr(q, "{{");
                if (!open) { buf_puts(&body, q); break; }
                if (open > l && open[-1] == '\\') { // \{{ stays literal
                    buf_add(&body, q, (size_t)(open - q) + 2);
                    q = open + 2;
                    continue;
                }
                buf_add(&body, q, (size_t)(open - q));
                const char *close = strstr(open + 2, "}}");
                if (!close) {
                    fprintf(g->errors, "error: %s:%d: \"%s\": no closing }} on this line\n", md_path,
                            lineno, open);
                    g->n_errors++;
                    buf_puts(&body, open);
                    break;
                }
                char *ph = xstrndup(open + 2, (size_t)(close - open - 2));
                if (expand_value(g, ph, md_path, lineno, &body) != 0)
                    buf_add(&body, open, (size_t)(close + 2 - open));
                free(ph);
                q = close + 2;
            }
            buf_putc(&body, '\n');
            if (!have_title && l[0] == '#' && l[1] == ' ') have_title = 1, after_title = body.n;
        }
        free(l);
        p = nl ? nl + 1 : text + len;
    }
    Buf out = {0};
    buf_printf(&out, "```{=latex}\n\\petschapter{%s}\n```\n\n",
               g->weights == 0 ? "random" : g->weights == 1 ? "imagenet" : "none");
    if (body.s) buf_add(&out, body.s, after_title);
    if (g->weights == 0) buf_puts(&out, "\n```{=latex}\n\\petsrandomnote\n```\n\n");
    if (body.s) buf_add(&out, body.s + after_title, body.n - after_title);
    free(body.s);
    return buf_take(&out);
}

// Make-escapes a path for a depfile (spaces, '#', '$').
static void dep_escape(Buf *b, const char *s) {
    for (; *s; s++) {
        if (*s == ' ' || *s == '#') buf_putc(b, '\\');
        if (*s == '$') buf_putc(b, '$');
        buf_putc(b, *s);
    }
}

int docgen_write_depfile(const DocGen *g, const char *path, const char *target, char *err,
                         size_t errlen) {
    Buf b = {0};
    dep_escape(&b, target);
    buf_putc(&b, ':');
    for (int i = 0; i < g->n_deps; i++) {
        buf_puts(&b, " \\\n  ");
        dep_escape(&b, g->deps[i]);
    }
    buf_putc(&b, '\n');
    for (int i = 0; i < g->n_deps; i++) {
        buf_putc(&b, '\n');
        dep_escape(&b, g->deps[i]);
        buf_puts(&b, ":\n");
    }
    int rc = write_file_atomic(path, b.s, b.n, err, errlen);
    free(b.s);
    return rc;
}
