// pth.c: PyTorch state dicts in torch.save's zip format, loaded and saved without PyTorch
// (see pth.h). The archive is "<name>/data.pkl" (the pickle), "<name>/data/<key>" (one entry per
// storage, raw little-endian elements), "<name>/version" and, from newer torch, "<name>/byteorder".
// zip.c finds the entries, pickle.c runs the pickle under an allowlist; this file ties them
// together, checks the result is a state dict, and copies every tensor out into memory we own.
#define _GNU_SOURCE // MAP_POPULATE, MADV_HUGEPAGE
#include "checkpoint/pth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/common.h"
#include "checkpoint/pickle.h"
#include "checkpoint/zip.h"

// ----------------------------------------------------------------------------
// loading

typedef struct {
    const ZipReader *z;
    const char *prefix; // "archive/"
    uint8_t *verified;  // per zip entry: CRC already checked
} StorageCtx;

static int storage_lookup(void *ctx, const char *key, const uint8_t **data, size_t *nbytes,
                          char *err, size_t errlen) {
    StorageCtx *c = ctx;
    char *name = xasprintf("%sdata/%s", c->prefix, key);
    const ZipEntry *e = zip_find(c->z, name);
    free(name);
    if (!e)
        return set_err(err, errlen, "storage '%s' is missing from the archive (no %sdata/%s)",
                       key, c->prefix, key);
    int idx = (int)(e - c->z->e);
    if (zip_entry_data(c->z, e, !c->verified[idx], data, err, errlen)) return -1;
    c->verified[idx] = 1;
    *nbytes = (size_t)e->size;
    return 0;
}

static int starts_with(const uint8_t *buf, size_t n, const char *s, size_t k) {
    return n >= k && memcmp(buf, s, k) == 0;
}

// Messages for files that are not torch zip checkpoints at all.
static int not_a_checkpoint(const uint8_t *buf, size_t n, const char *name, char *err,
                            size_t errlen) {
    // Legacy torch.save (before 1.6): a pickled magic number 0x1950a86a20f9469cfc6c first.
    static const char legacy[] = "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";
    if (starts_with(buf, n, legacy, sizeof legacy - 1) ||
        (n > 262 && memcmp(buf + 257, "ustar", 5) == 0))
        return set_err(err, errlen, "%s: legacy (pre-1.6) torch.save format, which is not "
                       "supported; re-save it with torch >= 1.6: "
                       "torch.save(torch.load(p), p2)", name);
    if (n > 0 && buf[0] == 0x80)
        return set_err(err, errlen, "%s: a bare pickle, not a torch.save zip archive; if it "
                       "came from an old torch, re-save it with torch >= 1.6: "
                       "torch.save(torch.load(p), p2)", name);
    return 0;
}

// Finds "<prefix>/data.pkl": the folder name is free (torch uses the file's base name).
static const ZipEntry *find_pickle(const ZipReader *z, char **prefix) {
    for (int i = 0; i < z->count; i++) {
        const char *s = z->e[i].name, *slash = strchr(s, '/');
        if (slash && slash > s && strcmp(slash + 1, "data.pkl") == 0) {
            *prefix = xmalloc((size_t)(slash - s) + 2);
            memcpy(*prefix, s, (size_t)(slash - s) + 1);
            (*prefix)[slash - s + 1] = 0;
            return &z->e[i];
        }
    }
    return NULL;
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

// Copies a strided view of a storage into contiguous memory: dst (numel elements).
static void gather(uint8_t *dst, const PkObj *t, size_t es) {
    const uint8_t *src = t->storage->data;
    int contiguous = 1;
    int64_t expect = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && t->stride[d] != expect) contiguous = 0;
        expect *= t->shape[d];
    }
    if (contiguous || t->numel <= 1) {
        if (t->numel) memcpy(dst, src + t->offset * es, t->numel * es);
        return;
    }
    int64_t idx[PTH_MAX_DIMS] = {0};
    for (size_t i = 0; i < t->numel; i++) {
        size_t off = t->offset;
        for (int d = 0; d < t->ndim; d++) off += (size_t)(idx[d] * t->stride[d]);
        memcpy(dst + i * es, src + off * es, es);
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
}

// Tensor memory. Big tensors get 2 MiB-aligned buffers marked for transparent huge pages: most
// of a ResNet34's 87 MB sits in a few multi-megabyte convolutions, and touching fresh memory one
// 4 KiB page fault at a time costs more than copying it.
static void *alloc_tensor(size_t bytes) {
    const size_t huge = (size_t)2 << 20;
    if (bytes >= 2 * huge) {
        void *p = NULL;
        if (posix_memalign(&p, huge, bytes) == 0) {
#ifdef MADV_HUGEPAGE
            madvise(p, bytes & ~(huge - 1), MADV_HUGEPAGE);
#endif
            return p;
        }
    }
    return xmalloc(bytes ? bytes : 1);
}

static int to_state_dict(const PkObj *root, size_t file_bytes, const char *name, StateDict *sd,
                         char *err, size_t errlen) {
    if (root->type != PK_DICT)
        return set_err(err, errlen, "%s: the checkpoint holds a %s, not a state dict (an "
                       "OrderedDict of tensors); save model.state_dict()", name,
                       pk_type_name(root));
    size_t npairs = root->n / 2, total = 0;
    for (size_t i = 0; i < npairs; i++) {
        const PkObj *k = root->items[2 * i], *v = root->items[2 * i + 1];
        if (k->type != PK_STR)
            return set_err(err, errlen, "%s: state dict key %zu is not a string", name, i);
        if (strlen(k->s) != k->slen)
            return set_err(err, errlen, "%s: state dict key %zu contains a NUL byte", name, i);
        if (v->type != PK_TENSOR)
            return set_err(err, errlen, "%s: key '%s' holds a value of type %s, not a tensor: this is not a "
                           "plain state dict (a training checkpoint? save model.state_dict())",
                           name, k->s, pk_type_name(v));
        size_t bytes;
        if (size_mul(v->numel, pth_dtype_size(v->dtype), &bytes) ||
            size_add(total, bytes, &total) || total / 4 > file_bytes)
            return set_err(err, errlen, "%s: tensors add up to more than 4x the file's size "
                           "(storages shared by too many views)", name);
    }
    if (npairs > 1) { // duplicate keys would silently shadow each other
        char **names = xmalloc(npairs * sizeof *names);
        for (size_t i = 0; i < npairs; i++) names[i] = root->items[2 * i]->s;
        qsort(names, npairs, sizeof *names, cmp_names);
        for (size_t i = 1; i < npairs; i++) {
            if (strcmp(names[i - 1], names[i]) == 0) {
                int r = set_err(err, errlen, "%s: key '%s' appears twice", name, names[i]);
                free(names);
                return r;
            }
        }
        free(names);
    }
    if (npairs > (size_t)INT32_MAX) return set_err(err, errlen, "%s: too many tensors", name);
    memset(sd, 0, sizeof *sd);
    for (size_t i = 0; i < npairs; i++) {
        const PkObj *k = root->items[2 * i], *v = root->items[2 * i + 1];
        size_t es = pth_dtype_size(v->dtype);
        uint8_t *data = alloc_tensor(v->numel * es);
        gather(data, v, es);
        sd_push(sd, k->s, v->dtype, v->ndim, v->shape, v->numel, data);
    }
    return 0;
}

int pth_load_mem(const uint8_t *buf, size_t n, const char *name, StateDict *sd, char *err,
                 size_t errlen) {
    memset(sd, 0, sizeof *sd);
    if (n == 0) return set_err(err, errlen, "%s: empty file", name);
    if (!starts_with(buf, n, "PK", 2) && not_a_checkpoint(buf, n, name, err, errlen)) return -1;
    ZipReader z;
    if (zip_open_mem(&z, buf, n, name, err, errlen)) {
        if (!starts_with(buf, n, "PK", 2))
            set_err(err, errlen, "%s: not a PyTorch checkpoint (neither a zip archive nor a "
                    "legacy torch file)", name);
        return -1;
    }
    char *prefix = NULL;
    const ZipEntry *pkl = find_pickle(&z, &prefix);
    int rc = -1;
    Unpickler *u = NULL;
    StorageCtx ctx = {&z, NULL, NULL};
    if (!pkl) {
        int script = 0;
        for (int i = 0; i < z.count; i++)
            script |= strstr(z.e[i].name, "/constants.pkl") != NULL;
        set_err(err, errlen, script ? "%s: a TorchScript archive (torch.jit.save), not a state "
                "dict; save model.state_dict() with torch.save"
                : "%s: a zip archive without <name>/data.pkl: not a torch.save checkpoint", name);
        goto out;
    }
    char *bo_name = xasprintf("%sbyteorder", prefix);
    const ZipEntry *bo = zip_find(&z, bo_name);
    free(bo_name);
    if (bo) {
        const uint8_t *b;
        if (zip_entry_data(&z, bo, 1, &b, err, errlen)) goto out;
        if (!(bo->size == 6 && memcmp(b, "little", 6) == 0)) {
            set_err(err, errlen, "%s: byte order '%.*s' is not supported (only little-endian)",
                    name, bo->size < 16 ? (int)bo->size : 16, (const char *)b);
            goto out;
        }
    }
    char *ver_name = xasprintf("%sversion", prefix);
    const ZipEntry *ver = zip_find(&z, ver_name);
    free(ver_name);
    if (ver) { // "3\n" from torch 1.6 to 2.x; read it so that damage there is noticed too
        const uint8_t *v;
        if (zip_entry_data(&z, ver, 1, &v, err, errlen)) goto out;
        size_t k = 0;
        while (k < ver->size && k < 8 && v[k] >= '0' && v[k] <= '9') k++;
        if (k == 0 || (k < ver->size && v[k] != '\n')) {
            set_err(err, errlen, "%s: bad archive version record '%.*s'", name,
                    ver->size < 16 ? (int)ver->size : 16, (const char *)v);
            goto out;
        }
    }
    const uint8_t *p;
    if (zip_entry_data(&z, pkl, 1, &p, err, errlen)) goto out;
    char *label = xasprintf("%s:%s", name, pkl->name);
    ctx.prefix = prefix;
    ctx.verified = xcalloc((size_t)z.count + 1, 1);
    u = unpickler_new(label, storage_lookup, &ctx);
    PkObj *root = unpickle(u, p, (size_t)pkl->size, err, errlen);
    if (root) rc = to_state_dict(root, n, name, sd, err, errlen);
    free(label);
out:
    unpickler_free(u);
    free(ctx.verified);
    free(prefix);
    zip_close(&z);
    return rc;
}

int pth_load(const char *path, StateDict *sd, char *err, size_t errlen) {
    memset(sd, 0, sizeof *sd);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return set_err(err, errlen, "%s: not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    if (n == 0) {
        close(fd);
        return set_err(err, errlen, "%s: empty file", path);
    }
    // Mapped, not read: the tensors are copied straight out of the page cache.
#ifdef MAP_POPULATE
    int populate = MAP_POPULATE; // fault the whole file in at once, not page by page
#else
    int populate = 0;
#endif
    void *m = mmap(NULL, n, PROT_READ, MAP_PRIVATE | populate, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        size_t got;
        uint8_t *buf = read_file(path, &got, 0, err, errlen);
        if (!buf) return -1;
        int rc = pth_load_mem(buf, got, path, sd, err, errlen);
        free(buf);
        return rc;
    }
    int rc = pth_load_mem(m, n, path, sd, err, errlen);
    munmap(m, n);
    return rc;
}

// ----------------------------------------------------------------------------
// saving

static int valid_utf8(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int k = *p < 0x80 ? 0 : (*p >> 5) == 6 ? 1 : (*p >> 4) == 14 ? 2 : (*p >> 3) == 30 ? 3 : -1;
        if (k < 0) return 0;
        p++;
        for (int i = 0; i < k; i++, p++)
            if ((*p & 0xC0) != 0x80) return 0;
    }
    return 1;
}

static int cmp_keys(const void *a, const void *b) {
    char ka[24], kb[24];
    snprintf(ka, sizeof ka, "%d", *(const int *)a);
    snprintf(kb, sizeof kb, "%d", *(const int *)b);
    return strcmp(ka, kb);
}

int pth_save(const char *path, const StateDict *sd, const char *archive, char *err,
             size_t errlen) {
    if (!archive) archive = "archive";
    if (!*archive || strchr(archive, '/') || !valid_utf8(archive))
        return set_err(err, errlen, "%s: bad archive name '%s'", path, archive);
    for (int i = 0; i < sd->n; i++) {
        const PthTensor *t = &sd->t[i];
        size_t numel = 1;
        if (!pth_dtype_size(t->dtype) || t->ndim < 0 || t->ndim > PTH_MAX_DIMS)
            return set_err(err, errlen, "%s: tensor '%s' has a bad dtype or rank", path, t->name);
        for (int d = 0; d < t->ndim; d++)
            if (t->shape[d] < 0 || size_mul(numel, (size_t)t->shape[d], &numel))
                return set_err(err, errlen, "%s: tensor '%s' has a bad shape", path, t->name);
        if (numel != t->numel)
            return set_err(err, errlen, "%s: tensor '%s' has numel %zu but its shape holds %zu",
                           path, t->name, t->numel, numel);
        if (!valid_utf8(t->name))
            return set_err(err, errlen, "%s: tensor name '%s' is not valid UTF-8", path, t->name);
        if (sd_find(sd, t->name) != t)
            return set_err(err, errlen, "%s: key '%s' appears twice", path, t->name);
    }
    size_t pn;
    uint8_t *pkl = pickle_state_dict(sd, &pn);
    AtomicFile af;
    FILE *f = afile_open(&af, path, err, errlen);
    if (!f) {
        free(pkl);
        return -1;
    }
    ZipWriter w;
    zipw_init(&w, f);
    char *ename = xasprintf("%s/data.pkl", archive);
    int rc = zipw_add(&w, ename, pkl, pn, err, errlen);
    free(ename);
    free(pkl);
    // torch writes the storages in the order of their keys as strings: 0, 1, 10, 100, 101, ...
    int *order = xmalloc((size_t)(sd->n ? sd->n : 1) * sizeof *order);
    for (int i = 0; i < sd->n; i++) order[i] = i;
    qsort(order, (size_t)sd->n, sizeof *order, cmp_keys);
    for (int j = 0; j < sd->n && rc == 0; j++) {
        const PthTensor *t = &sd->t[order[j]];
        ename = xasprintf("%s/data/%d", archive, order[j]);
        rc = zipw_add(&w, ename, t->data, t->numel * pth_dtype_size(t->dtype), err, errlen);
        free(ename);
    }
    free(order);
    if (rc == 0) {
        ename = xasprintf("%s/version", archive);
        rc = zipw_add(&w, ename, "3\n", 2, err, errlen);
        free(ename);
    }
    if (rc == 0) rc = zipw_finish(&w, err, errlen);
    zipw_free(&w);
    if (rc != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", err ? err : "");
        afile_abort(&af);
        return set_err(err, errlen, "%s: %s", path, msg);
    }
    return afile_commit(&af, err, errlen);
}
