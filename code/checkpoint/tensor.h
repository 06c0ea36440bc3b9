// tensor.h: a PyTorch state dict in memory: named tensors of a few dtypes, in file order, with
// the helpers that build and query one. A leaf of checkpoint/ (the types pickle.h and pth.h both
// use); reading and writing files is pth.h.
#ifndef TENSOR_H
#define TENSOR_H

#include <stddef.h>
#include <stdint.h>

typedef enum { PTH_F32 = 0, PTH_F16, PTH_F64, PTH_I64, PTH_I32, PTH_U8 } PthDType;

#define PTH_MAX_DIMS 8

typedef struct {
    char *name;                     // "layer1.0.conv1.weight"
    PthDType dtype;
    int ndim;                       // 0 for a scalar (num_batches_tracked)
    int64_t shape[PTH_MAX_DIMS];
    size_t numel;
    void *data;                     // contiguous, row-major, numel elements of dtype (owned)
} PthTensor;

typedef struct {
    int n;
    PthTensor *t; // (n), in file order
} StateDict;

size_t pth_dtype_size(PthDType dt); // bytes per element

// Helpers for building and querying state dicts.
const PthTensor *sd_find(const StateDict *sd, const char *name);
// Appends a copy of `data` (numel elements of dtype) under `name`.
void sd_add(StateDict *sd, const char *name, PthDType dtype, int ndim, const int64_t *shape,
            const void *data);
// Appends a tensor taking ownership of `data` (already numel elements of dtype; freed by sd_free).
PthTensor *sd_push(StateDict *sd, const char *name, PthDType dtype, int ndim, const int64_t *shape,
                   size_t numel, void *data);
void sd_free(StateDict *sd);

#endif // TENSOR_H
