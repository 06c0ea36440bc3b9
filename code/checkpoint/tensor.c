// tensor.c: the state dict in memory (tensor.h): element sizes, lookup, appending and freeing.
#include "checkpoint/tensor.h"

#include <stdlib.h>
#include <string.h>

#include "core/common.h"

size_t pth_dtype_size(PthDType dt) {
    switch (dt) {
    case PTH_F32: return 4;
    case PTH_F16: return 2;
    case PTH_F64: return 8;
    case PTH_I64: return 8;
    case PTH_I32: return 4;
    case PTH_U8: return 1;
    }
    return 0;
}

// ----------------------------------------------------------------------------
// state dict helpers

const PthTensor *sd_find(const StateDict *sd, const char *name) {
    for (int i = 0; i < sd->n; i++)
        if (strcmp(sd->t[i].name, name) == 0) return &sd->t[i];
    return NULL;
}

PthTensor *sd_push(StateDict *sd, const char *name, PthDType dtype, int ndim, const int64_t *shape,
                   size_t numel, void *data) {
    sd->t = xrealloc(sd->t, (size_t)(sd->n + 1) * sizeof *sd->t);
    PthTensor *t = &sd->t[sd->n++];
    memset(t, 0, sizeof *t);
    t->name = xstrdup(name);
    t->dtype = dtype;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++) t->shape[d] = shape[d];
    t->numel = numel;
    t->data = data;
    return t;
}

void sd_add(StateDict *sd, const char *name, PthDType dtype, int ndim, const int64_t *shape,
            const void *data) {
    if (ndim < 0 || ndim > PTH_MAX_DIMS || !pth_dtype_size(dtype))
        die("sd_add('%s'): bad ndim %d or dtype %d", name, ndim, (int)dtype);
    size_t numel = 1, bytes;
    for (int d = 0; d < ndim; d++)
        if (shape[d] < 0 || size_mul(numel, (size_t)shape[d], &numel))
            die("sd_add('%s'): bad shape", name);
    if (size_mul(numel, pth_dtype_size(dtype), &bytes)) die("sd_add('%s'): too large", name);
    void *copy = xmalloc(bytes ? bytes : 1);
    if (bytes) memcpy(copy, data, bytes);
    sd_push(sd, name, dtype, ndim, shape, numel, copy);
}

void sd_free(StateDict *sd) {
    for (int i = 0; i < sd->n; i++) {
        free(sd->t[i].name);
        free(sd->t[i].data);
    }
    free(sd->t);
    sd->t = NULL;
    sd->n = 0;
}
