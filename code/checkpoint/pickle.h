// pickle.h: the two halves of data.pkl, the pickle inside a torch.save checkpoint.
// Reading: an allowlist unpickler. It understands the opcodes a state dict uses under pickle
// protocols 2 to 5 (torch.save's default 2; 4 and 5 add FRAME, SHORT_BINUNICODE, STACK_GLOBAL
// and MEMOIZE), builds plain values, and knows exactly
// five kinds of callable: collections.OrderedDict, torch._utils._rebuild_tensor_v2,
// torch._utils._rebuild_parameter(_with_state) and the torch.*Storage types named in persistent
// ids. Any other global is refused by name; nothing from the file is ever called or executed.
// Writing: a pickler for state dicts that emits the same bytes as Python's pickler does when
// torch 1.13 saves an OrderedDict of CPU tensors, so only allowlisted globals appear.
#ifndef PICKLE_H
#define PICKLE_H

#include <stddef.h>
#include <stdint.h>

#include "checkpoint/tensor.h"

typedef enum {
    PK_NONE,
    PK_BOOL,
    PK_INT,
    PK_FLOAT,
    PK_STR,
    PK_TUPLE,
    PK_LIST,
    PK_DICT,    // dict or OrderedDict: items[2k] = key, items[2k+1] = value, in insertion order
    PK_GLOBAL,  // an allowlisted callable
    PK_STORAGE, // a torch storage (persistent id), its bytes inside the archive
    PK_TENSOR,  // the result of _rebuild_tensor_v2: a view of a storage
} PkType;

typedef enum {
    PKG_ORDERED_DICT,
    PKG_REBUILD_TENSOR_V2,
    PKG_REBUILD_PARAMETER,
    PKG_REBUILD_PARAMETER_WITH_STATE,
    PKG_STORAGE_TYPE, // torch.FloatStorage, ...: dtype in PkObj.dtype
} PkGlobal;

typedef struct PkObj PkObj;
struct PkObj {
    PkType type;
    int64_t i;          // PK_INT, PK_BOOL
    double f;           // PK_FLOAT
    char *s;            // PK_STR (NUL-terminated copy; slen bytes)
    size_t slen;
    PkObj **items;      // PK_TUPLE, PK_LIST, PK_DICT (n items: key, value, key, value, ...)
    size_t n, cap;
    PkGlobal global;    // PK_GLOBAL
    PthDType dtype;     // PK_GLOBAL storage type, PK_STORAGE
    const uint8_t *data; // PK_STORAGE: the bytes (numel * element size), not owned
    size_t numel;       // PK_STORAGE: elements; PK_TENSOR: elements of the view
    PkObj *storage;     // PK_TENSOR
    size_t offset;      // PK_TENSOR: storage offset, in elements
    int ndim;           // PK_TENSOR
    int64_t shape[PTH_MAX_DIMS], stride[PTH_MAX_DIMS];
};

// Resolves a persistent id: the bytes of storage `key` (the archive entry "<prefix>/data/<key>").
// Returns 0, or -1 with a message.
typedef int (*PkStorageFn)(void *ctx, const char *key, const uint8_t **data, size_t *nbytes,
                           char *err, size_t errlen);

typedef struct Unpickler Unpickler;
// `label` names the pickle in error messages ("model.pth:archive/data.pkl").
Unpickler *unpickler_new(const char *label, PkStorageFn storage_fn, void *ctx);
// Runs the pickle. Returns the top-level object (owned by the unpickler), or NULL with a message
// naming the byte offset and the problem.
PkObj *unpickle(Unpickler *u, const uint8_t *buf, size_t n, char *err, size_t errlen);
void unpickler_free(Unpickler *u);
// "int", "str", "tensor", ...: for messages.
const char *pk_type_name(const PkObj *o);

// The data.pkl that torch 1.13 writes for `sd` saved as an OrderedDict (without _metadata):
// tensor i refers to storage key "i". Returns a heap buffer of *n bytes.
uint8_t *pickle_state_dict(const StateDict *sd, size_t *n);

#endif // PICKLE_H
