// pth.h: PyTorch checkpoints (torch.save's zip format) read and written without PyTorch.
// Reading: a zip reader (stored entries, zip64, sizes from the central directory) and a small
// allowlist pickle interpreter that understands exactly what a state dict needs
// (collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch.*Storage persistent ids,
// _metadata through BUILD) and refuses everything else. No code from the file ever runs; every
// size and offset is bounds-checked before use.
// Writing: the same format, so torch.load(path, weights_only=True) and torchvision's
// resnet34().load_state_dict() accept what we write.
#ifndef PTH_H
#define PTH_H

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

size_t pth_dtype_size(PthDType dt);
// Loads a state dict. Returns 0, or -1 with a message naming the file and the problem
// (truncated, not a zip, legacy pre-zip format, forbidden pickle global "os.system", ...).
int pth_load(const char *path, StateDict *sd, char *err, size_t errlen);
// Same, from memory (for fuzzing and tests).
int pth_load_mem(const uint8_t *buf, size_t n, const char *name, StateDict *sd, char *err,
                 size_t errlen);
// Writes a state dict in torch.save's format, atomically. `archive` is the top-level folder name
// inside the zip (torch uses the file's base name; NULL gives "archive").
int pth_save(const char *path, const StateDict *sd, const char *archive, char *err, size_t errlen);

// Helpers for building and querying state dicts.
const PthTensor *sd_find(const StateDict *sd, const char *name);
// Appends a copy of `data` (numel elements of dtype) under `name`.
void sd_add(StateDict *sd, const char *name, PthDType dtype, int ndim, const int64_t *shape,
            const void *data);
void sd_free(StateDict *sd);

#endif // PTH_H
