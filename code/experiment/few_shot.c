// few_shot.c: subsets, the epoch rule, the training-free baselines and the run table of chapter 07
// (see few_shot.h).
#include "experiment/few_shot.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/sha256.h"
#include "core/rng.h"

// ----------------------------------------------------------------------------
// subsets and the epoch rule

// region: subset
int fs_subset(const PetSplit *ds, const uint8_t *ok, int per_class, uint64_t seed, int *items) {
    int *pool = xmalloc((size_t)(ds->n > 0 ? ds->n : 1) * sizeof(int));
    uint8_t *take = xcalloc((size_t)(ds->n > 0 ? ds->n : 1), 1);
    for (int c = 0; c < PETS_NUM_CLASSES; c++) {
        int m = 0;
        for (int i = 0; i < ds->n; i++)
            if (ds->items[i].label == c && (!ok || ok[i])) pool[m++] = i;
        Rng r; // one generator per (seed, class): a class's draw does not depend on the others
        rng_seed(&r, seed * 0x9E3779B97F4A7C15ULL + (uint64_t)c + 1);
        for (int i = m - 1; i > 0; i--) { // Fisher-Yates
            int j = (int)(rng_u64(&r) % (uint64_t)(i + 1));
            int t = pool[i];
            pool[i] = pool[j];
            pool[j] = t;
        }
        int keep = per_class > 0 && per_class < m ? per_class : m;
        for (int i = 0; i < keep; i++) take[pool[i]] = 1;
    }
    int n = 0;
    for (int i = 0; i < ds->n; i++)
        if (take[i]) items[n++] = i;
    free(pool);
    free(take);
    return n;
}
// endregion

int fs_write_subsets(const char *path, const PetSplit *ds, const uint8_t *ok, const int *ks, int nk,
                     long long seed0, int seeds, char *err, size_t errlen) {
    AtomicFile af;
    FILE *f = afile_open(&af, path, err, errlen);
    if (!f) return -1;
    int *items = xmalloc((size_t)(ds->n > 0 ? ds->n : 1) * sizeof(int));
    fprintf(f, "per_class,seed,name\n");
    for (int i = 0; i < nk; i++)
        for (int s = 0; s < seeds && ks[i] > 0; s++) {
            int n = fs_subset(ds, ok, ks[i], (uint64_t)(seed0 + s), items);
            for (int j = 0; j < n; j++)
                fprintf(f, "%d,%lld,%s\n", ks[i], seed0 + s, ds->items[items[j]].name);
        }
    free(items);
    return afile_commit(&af, err, errlen);
}

int fs_epochs(int n, int batch_size, int min_epochs, int min_steps) {
    if (n <= 0) return min_epochs;
    long steps_per_epoch = (n + batch_size - 1) / batch_size;
    long e = (min_steps + steps_per_epoch - 1) / steps_per_epoch;
    return (int)(e > min_epochs ? e : min_epochs);
}

// ----------------------------------------------------------------------------
// baselines

double fs_prototype_accuracy(const float *train_f, const int *train_label, const int *items, int n,
                             const float *test_f, const int *test_label, const uint8_t *test_ok,
                             int n_test, int dim, int classes) {
    double *mean = xcalloc((size_t)classes * (size_t)dim, sizeof(double)); // (classes, dim)
    int *count = xcalloc((size_t)classes, sizeof(int));
    for (int i = 0; i < n; i++) {
        int c = train_label[items[i]];
        const float *f = train_f + (size_t)items[i] * dim;
        for (int d = 0; d < dim; d++) mean[(size_t)c * dim + d] += f[d];
        count[c]++;
    }
    for (int c = 0; c < classes; c++)
        for (int d = 0; d < dim && count[c]; d++) mean[(size_t)c * dim + d] /= count[c];
    int correct = 0, seen = 0;
    for (int t = 0; t < n_test; t++) {
        if (test_ok && !test_ok[t]) continue;
        const float *q = test_f + (size_t)t * dim;
        int best = -1;
        double best_d = 0;
        for (int c = 0; c < classes; c++) {
            if (!count[c]) continue;
            double d2 = 0;
            for (int d = 0; d < dim; d++) {
                double e = q[d] - mean[(size_t)c * dim + d];
                d2 += e * e;
            }
            if (best < 0 || d2 < best_d) best = c, best_d = d2;
        }
        correct += best == test_label[t];
        seen++;
    }
    free(mean);
    free(count);
    return seen ? (double)correct / seen : 0.0;
}

static double norm(const float *f, int dim) {
    double s = 0;
    for (int d = 0; d < dim; d++) s += (double)f[d] * f[d];
    return s > 0 ? sqrt(s) : 1.0;
}

double fs_knn_accuracy(const float *train_f, const int *train_label, const int *items, int n,
                       const float *test_f, const int *test_label, const uint8_t *test_ok,
                       int n_test, int dim, int classes, int k) {
    if (k > n) k = n;
    double *tnorm = xmalloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    for (int i = 0; i < n; i++) tnorm[i] = norm(train_f + (size_t)items[i] * dim, dim);
    double *sim = xmalloc((size_t)(k > 0 ? k : 1) * sizeof(double)); // the k best, descending
    int *who = xmalloc((size_t)(k > 0 ? k : 1) * sizeof(int));
    double *votes = xmalloc((size_t)classes * sizeof(double)), *sums = xmalloc((size_t)classes * sizeof(double));
    int correct = 0, seen = 0;
    for (int t = 0; t < n_test; t++) {
        if (test_ok && !test_ok[t]) continue;
        const float *q = test_f + (size_t)t * dim;
        double qn = norm(q, dim);
        int m = 0;
        for (int i = 0; i < n; i++) {
            const float *f = train_f + (size_t)items[i] * dim;
            double dot = 0;
            for (int d = 0; d < dim; d++) dot += (double)q[d] * f[d];
            double s = dot / (qn * tnorm[i]);
            // insert into the sorted top k (an equal similarity keeps the earlier item first)
            if (m == k && !(s > sim[k - 1])) continue;
            int j = m < k ? m++ : k - 1;
            while (j > 0 && s > sim[j - 1]) sim[j] = sim[j - 1], who[j] = who[j - 1], j--;
            sim[j] = s, who[j] = i;
        }
        // region: knn-vote
        memset(votes, 0, (size_t)classes * sizeof(double));
        memset(sums, 0, (size_t)classes * sizeof(double));
        for (int j = 0; j < m; j++) {
            int c = train_label[items[who[j]]];
            votes[c] += 1;
            sums[c] += sim[j];
        }
        int best = 0;
        for (int c = 1; c < classes; c++)
            if (votes[c] > votes[best] || (votes[c] == votes[best] && sums[c] > sums[best])) best = c;
        // endregion
        correct += m > 0 && best == test_label[t];
        seen++;
    }
    free(tnorm);
    free(sim);
    free(who);
    free(votes);
    free(sums);
    return seen ? (double)correct / seen : 0.0;
}

// ----------------------------------------------------------------------------
// the table of runs

static const char HEADER[] =
    "method,per_class,seed,train_images,test_images,epochs,steps,accuracy,loss,seconds,config";

static int fail(char *err, size_t errlen, const char *path, int line, const char *what) {
    return set_err(err, errlen, "%s:%d: %s (delete the file to start the sweep again)", path,
                   line, what);
}

int fs_read_rows(const char *path, FsRow **rows, int *n, char *err, size_t errlen) {
    *rows = NULL;
    *n = 0;
    FILE *f = fopen(path, "r");
    if (!f) return errno == ENOENT ? 0 : set_err(err, errlen, "%s: cannot read", path);
    char line[1024];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = 0;
        if (lineno == 1) {
            if (strcmp(line, HEADER) != 0) {
                rc = fail(err, errlen, path, 1, "not the header of a 07-data-efficiency table");
                break;
            }
            continue;
        }
        FsRow r;
        memset(&r, 0, sizeof r);
        char k[16], loss[64];
        int used = 0;
        int got = sscanf(line, "%15[^,],%15[^,],%lld,%d,%d,%d,%d,%lf,%63[^,],%lf,%16[0-9a-f]%n",
                         r.method, k, &r.seed, &r.train_images, &r.test_images, &r.epochs, &r.steps,
                         &r.accuracy, loss, &r.seconds, r.config, &used);
        if (got != 11 || line[used] != 0 || strlen(r.config) != 16) {
            rc = fail(err, errlen, path, lineno, "expected " "method,per_class,seed,...,config (11 fields)");
            break;
        }
        r.per_class = strcmp(k, "all") == 0 ? 0 : atoi(k);
        r.loss = strcmp(loss, "nan") == 0 ? NAN : strtod(loss, NULL);
        *rows = xrealloc(*rows, (size_t)(*n + 1) * sizeof(FsRow));
        (*rows)[(*n)++] = r;
    }
    fclose(f);
    if (rc) {
        free(*rows);
        *rows = NULL;
        *n = 0;
    }
    return rc;
}

int fs_write_rows(const char *path, const FsRow *rows, const uint8_t *keep, int n, char *err,
                  size_t errlen) {
    AtomicFile af;
    FILE *f = afile_open(&af, path, err, errlen);
    if (!f) return -1;
    fprintf(f, "%s\n", HEADER);
    for (int i = 0; i < n; i++) {
        const FsRow *r = &rows[i];
        if (keep && !keep[i]) continue;
        char k[16];
        fs_k_name(r->per_class, k, sizeof k);
        fprintf(f, "%s,%s,%lld,%d,%d,%d,%d,%.9g,", r->method, k, r->seed, r->train_images,
                r->test_images, r->epochs, r->steps, r->accuracy);
        if (isnan(r->loss)) fprintf(f, "nan");
        else fprintf(f, "%.9g", r->loss);
        fprintf(f, ",%.3f,%s\n", r->seconds, r->config);
    }
    return afile_commit(&af, err, errlen);
}

const FsRow *fs_find(const FsRow *rows, int n, const char *method, int per_class, long long seed,
                     const char *config) {
    for (int i = 0; i < n; i++)
        if (strcmp(rows[i].method, method) == 0 && rows[i].per_class == per_class &&
            rows[i].seed == seed && strcmp(rows[i].config, config) == 0)
            return &rows[i];
    return NULL;
}

int fs_stat(const FsRow *rows, int n, const char *method, int per_class, int classes, FsStat *s) {
    memset(s, 0, sizeof *s);
    double sum = 0, images = 0;
    for (int i = 0; i < n; i++) {
        const FsRow *r = &rows[i];
        if (strcmp(r->method, method) != 0 || r->per_class != per_class) continue;
        if (!s->runs || r->accuracy < s->min) s->min = r->accuracy;
        if (!s->runs || r->accuracy > s->max) s->max = r->accuracy;
        sum += r->accuracy;
        images += r->train_images;
        s->runs++;
    }
    if (!s->runs) return 0;
    s->mean = sum / s->runs;
    s->images_per_class = images / s->runs / (classes > 0 ? classes : 1);
    double ss = 0;
    for (int i = 0; i < n; i++)
        if (strcmp(rows[i].method, method) == 0 && rows[i].per_class == per_class)
            ss += (rows[i].accuracy - s->mean) * (rows[i].accuracy - s->mean);
    s->std = s->runs > 1 ? sqrt(ss / (s->runs - 1)) : 0.0;
    return s->runs;
}

int fs_write_summary(const char *path, const FsRow *rows, int n, const char *const *methods,
                     int n_methods, const int *ks, int nk, int classes, char *err, size_t errlen) {
    AtomicFile af;
    FILE *f = afile_open(&af, path, err, errlen);
    if (!f) return -1;
    fprintf(f, "method,k,per_breed,runs,acc_mean,acc_std,acc_min,acc_max\n");
    for (int m = 0; m < n_methods; m++)
        for (int i = 0; i < nk; i++) {
            FsStat s;
            if (!fs_stat(rows, n, methods[m], ks[i], classes, &s)) continue;
            char k[16];
            fs_k_name(ks[i], k, sizeof k);
            fprintf(f, "%s,%s,%.6g,%d,%.9g,%.9g,%.9g,%.9g\n", methods[m], k, s.images_per_class,
                    s.runs, s.mean, s.std, s.min, s.max);
        }
    return afile_commit(&af, err, errlen);
}

int fs_k_reaching(const FsRow *rows, int n, const char *method, const int *ks, int nk,
                  double frac, int classes) {
    FsStat all, s;
    if (!fs_stat(rows, n, method, 0, classes, &all)) return -1;
    for (int i = 0; i < nk; i++)
        if (fs_stat(rows, n, method, ks[i], classes, &s) && s.mean >= frac * all.mean) return ks[i];
    return 0; // with all images it reaches its own accuracy
}

int fs_k_overtakes(const FsRow *rows, int n, const char *a, const char *b, const int *ks, int nk,
                   int classes) {
    FsStat sa, sb;
    for (int i = 0; i < nk; i++)
        if (fs_stat(rows, n, a, ks[i], classes, &sa) && fs_stat(rows, n, b, ks[i], classes, &sb) &&
            sa.mean > sb.mean)
            return ks[i];
    return -1;
}

// ----------------------------------------------------------------------------
// command line

void fs_bad_option(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (see --help)\n", stderr);
    va_end(ap);
    exit(2);
}

void fs_k_name(int k, char *out, size_t len) {
    if (k > 0) snprintf(out, len, "%d", k);
    else snprintf(out, len, "all");
}

char *fs_take_option(int *argc, char **argv, const char *name) {
    size_t len = strlen(name);
    for (int i = 1; i < *argc; i++) {
        char *value = NULL;
        int used = 0;
        if (strcmp(argv[i], name) == 0) {
            if (i + 1 >= *argc) {
                fprintf(stderr, "error: %s needs a value (see --help)\n", name);
                exit(2);
            }
            value = argv[i + 1], used = 2;
        } else if (strncmp(argv[i], name, len) == 0 && argv[i][len] == '=') {
            value = argv[i] + len + 1, used = 1;
        } else {
            continue;
        }
        memmove(argv + i, argv + i + used, (size_t)(*argc - i - used + 1) * sizeof(char *));
        *argc -= used;
        return value;
    }
    return NULL;
}

int fs_parse_ks(const char *opt, const char *list, int *ks, int max) {
    int n = 0, has_all = 0;
    const char *p = list;
    while (*p) {
        size_t len = strcspn(p, ",");
        char tok[32];
        if (len == 0 || len >= sizeof tok) goto bad;
        memcpy(tok, p, len);
        tok[len] = 0;
        if (strcmp(tok, "all") == 0) {
            has_all = 1;
        } else {
            char *end;
            errno = 0;
            long v = strtol(tok, &end, 10);
            if (errno || *end || v < 1 || v > 100000) goto bad;
            int dup = 0;
            for (int i = 0; i < n; i++) dup |= ks[i] == v;
            if (!dup) {
                if (n >= max - 1) goto bad;
                ks[n++] = (int)v;
            }
        }
        p += len;
        if (*p == ',') p++;
    }
    for (int i = 1; i < n; i++) // ascending (insertion sort)
        for (int j = i; j > 0 && ks[j] < ks[j - 1]; j--) {
            int t = ks[j];
            ks[j] = ks[j - 1];
            ks[j - 1] = t;
        }
    if (has_all) ks[n++] = 0;
    if (n > 0) return n;
bad:
    fs_bad_option("%s expects a comma-separated list of images per class (positive integers or "
                  "all), got '%s'", opt, list);
}

// ----------------------------------------------------------------------------
// the sweep's configuration key

void fs_config_key(const Experiment *x, char out[17]) {
    char *desc = xasprintf("07 v1 weights=%s:%llu data=%s,%s device=%s precision=%s limit=%d "
                           "epochs=%d batch=%d", x->weights_sha, (unsigned long long)x->a.seed,
                           x->data_key[0], x->data_key[1], x->be->name,
                           x->precision == PREC_FP16 ? "fp16" : "fp32", x->a.limit, x->a.epochs,
                           x->a.batch_size);
    Sha256 h;
    char hex[65];
    sha256_init(&h);
    sha256_update(&h, desc, strlen(desc));
    sha256_final_hex(&h, hex);
    memcpy(out, hex, 16);
    out[16] = 0;
    free(desc);
}
