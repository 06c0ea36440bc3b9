// pth.h: PyTorch checkpoints (torch.save's zip format) read and written without PyTorch.
// Reading: a zip reader (stored entries, zip64, sizes from the central directory) and a small
// allowlist pickle interpreter that understands exactly what a state dict needs
// (collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch.*Storage persistent ids,
// _metadata through BUILD) and refuses everything else. No code from the file ever runs; every
// size and offset is bounds-checked before use.
// Writing: the same format, so torch.load(path, weights_only=True) and torchvision's
// resnet34().load_state_dict() accept what we write.
// The tensor and state-dict types and their helpers are in tensor.h.
#ifndef PTH_H
#define PTH_H

#include <stddef.h>
#include <stdint.h>

#include "checkpoint/tensor.h"

// Loads a state dict. Returns 0, or -1 with a message naming the file and the problem
// (truncated, not a zip, legacy pre-zip format, forbidden pickle global "os.system", ...).
int pth_load(const char *path, StateDict *sd, char *err, size_t errlen);
// Same, from memory (for fuzzing and tests).
int pth_load_mem(const uint8_t *buf, size_t n, const char *name, StateDict *sd, char *err,
                 size_t errlen);
// Writes a state dict in torch.save's format, atomically. `archive` is the top-level folder name
// inside the zip (torch uses the file's base name; NULL gives "archive").
int pth_save(const char *path, const StateDict *sd, const char *archive, char *err, size_t errlen);

#endif // PTH_H
