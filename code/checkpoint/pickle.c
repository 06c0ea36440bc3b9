// pickle.c: an allowlist unpickler for torch state dicts and the matching pickler (see pickle.h).
// The unpickler is a plain loop over opcodes (one small handler per opcode or family of opcodes,
// found in a table) with an explicit stack, mark stack and memo; it never recurses, so hostile
// nesting cannot overflow the C stack. Every object it makes costs at least one input byte, and
// the memo index is capped by the pickle's length, so memory stays proportional to the input.
#include "checkpoint/pickle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

// ----------------------------------------------------------------------------
// the unpickler's state

struct Unpickler {
    const char *label;
    PkStorageFn storage_fn;
    void *ctx;
    PkObj **objs; // every object made, freed together
    size_t nobjs, capobjs;
    PkObj **stack;
    size_t sp, capstack;
    size_t *marks;
    size_t nmarks, capmarks;
    // the input
    const uint8_t *buf;
    size_t n, pos;
    PkObj **memo; // memo[i]: the object stored under index i, or NULL
    size_t capmemo;
    size_t nmemo; // entries stored (Python's len(memo)): the index MEMOIZE uses next
    // the opcode being run, for messages
    size_t op_pos;
    uint8_t op;
};

// Grows *arr (elements of `elem` bytes) so that index `need` - 1 fits.
static void grow(void *arr, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    *(void **)arr = xrealloc(*(void **)arr, c * elem);
    *cap = c;
}

static PkObj *new_obj(Unpickler *u, PkType t) {
    PkObj *o = xcalloc(1, sizeof *o);
    o->type = t;
    grow(&u->objs, &u->capobjs, u->nobjs + 1, sizeof *u->objs);
    u->objs[u->nobjs++] = o;
    return o;
}

static void obj_push_item(PkObj *o, PkObj *it) {
    grow(&o->items, &o->cap, o->n + 1, sizeof *o->items);
    o->items[o->n++] = it;
}

Unpickler *unpickler_new(const char *label, PkStorageFn storage_fn, void *ctx) {
    Unpickler *u = xcalloc(1, sizeof *u);
    u->label = label;
    u->storage_fn = storage_fn;
    u->ctx = ctx;
    return u;
}

void unpickler_free(Unpickler *u) {
    if (!u) return;
    for (size_t i = 0; i < u->nobjs; i++) {
        free(u->objs[i]->s);
        free(u->objs[i]->items);
        free(u->objs[i]);
    }
    free(u->objs);
    free(u->stack);
    free(u->marks);
    free(u->memo);
    free(u);
}

const char *pk_type_name(const PkObj *o) {
    switch (o->type) {
    case PK_NONE: return "None";
    case PK_BOOL: return "bool";
    case PK_INT: return "int";
    case PK_FLOAT: return "float";
    case PK_STR: return "str";
    case PK_TUPLE: return "tuple";
    case PK_LIST: return "list";
    case PK_DICT: return "dict";
    case PK_GLOBAL: return "global";
    case PK_STORAGE: return "storage";
    case PK_TENSOR: return "tensor";
    }
    return "?";
}

// All errors go through here: "<label> offset <pos> (opcode 'c'): <message>".
__attribute__((format(printf, 4, 5))) static int fail(Unpickler *u, char *err, size_t errlen,
                                                      const char *fmt, ...) {
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (u->op >= 0x20 && u->op < 0x7f)
        return set_err(err, errlen, "%s: offset %zu (opcode '%c'): %s", u->label, u->op_pos,
                       u->op, msg);
    return set_err(err, errlen, "%s: offset %zu (opcode 0x%02x): %s", u->label, u->op_pos, u->op,
                   msg);
}

static void push(Unpickler *u, PkObj *o) {
    grow(&u->stack, &u->capstack, u->sp + 1, sizeof *u->stack);
    u->stack[u->sp++] = o;
}

// The stack floor: objects below the innermost mark belong to an enclosing frame.
static size_t floor_sp(const Unpickler *u) { return u->nmarks ? u->marks[u->nmarks - 1] : 0; }

static PkObj *pop(Unpickler *u, char *err, size_t errlen) {
    if (u->sp <= floor_sp(u)) {
        fail(u, err, errlen, "stack underflow (corrupt pickle)");
        return NULL;
    }
    return u->stack[--u->sp];
}

static PkObj *top(Unpickler *u, char *err, size_t errlen) {
    if (u->sp <= floor_sp(u)) {
        fail(u, err, errlen, "stack underflow (corrupt pickle)");
        return NULL;
    }
    return u->stack[u->sp - 1];
}

// Pops the innermost mark; the objects above it are stack[*start .. sp).
static int pop_mark(Unpickler *u, size_t *start, char *err, size_t errlen) {
    if (!u->nmarks) return fail(u, err, errlen, "no MARK on the stack (corrupt pickle)");
    *start = u->marks[--u->nmarks];
    return 0;
}

// ----------------------------------------------------------------------------
// the allowlist

static const struct {
    const char *module, *name;
    PkGlobal g;
    int dtype; // for storage types, a PthDType; -1 = known but unsupported dtype
} allowed[] = {
    {"collections", "OrderedDict", PKG_ORDERED_DICT, 0},
    {"torch._utils", "_rebuild_tensor_v2", PKG_REBUILD_TENSOR_V2, 0},
    {"torch._utils", "_rebuild_parameter", PKG_REBUILD_PARAMETER, 0},
    {"torch._utils", "_rebuild_parameter_with_state", PKG_REBUILD_PARAMETER_WITH_STATE, 0},
    {"torch", "FloatStorage", PKG_STORAGE_TYPE, PTH_F32},
    {"torch", "HalfStorage", PKG_STORAGE_TYPE, PTH_F16},
    {"torch", "DoubleStorage", PKG_STORAGE_TYPE, PTH_F64},
    {"torch", "LongStorage", PKG_STORAGE_TYPE, PTH_I64},
    {"torch", "IntStorage", PKG_STORAGE_TYPE, PTH_I32},
    {"torch", "ByteStorage", PKG_STORAGE_TYPE, PTH_U8},
    {"torch", "BFloat16Storage", PKG_STORAGE_TYPE, -1},
    {"torch", "CharStorage", PKG_STORAGE_TYPE, -1},
    {"torch", "ShortStorage", PKG_STORAGE_TYPE, -1},
    {"torch", "BoolStorage", PKG_STORAGE_TYPE, -1},
    {"torch", "ComplexFloatStorage", PKG_STORAGE_TYPE, -1},
    {"torch", "ComplexDoubleStorage", PKG_STORAGE_TYPE, -1},
};

static const char *storage_name(PthDType dt) {
    switch (dt) {
    case PTH_F32: return "FloatStorage";
    case PTH_F16: return "HalfStorage";
    case PTH_F64: return "DoubleStorage";
    case PTH_I64: return "LongStorage";
    case PTH_I32: return "IntStorage";
    case PTH_U8: return "ByteStorage";
    }
    return "?";
}

static int make_global(Unpickler *u, const char *module, const char *name, char *err,
                       size_t errlen) {
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++) {
        if (strcmp(allowed[i].module, module) || strcmp(allowed[i].name, name)) continue;
        if (allowed[i].dtype < 0)
            return fail(u, err, errlen, "tensors of type torch.%s are not supported (supported: "
                        "float32, float16, float64, int64, int32, uint8); convert them before "
                        "saving, e.g. with .float()", name);
        PkObj *o = new_obj(u, PK_GLOBAL);
        o->global = allowed[i].g;
        o->dtype = (PthDType)allowed[i].dtype;
        push(u, o);
        return 0;
    }
    return fail(u, err, errlen, "forbidden pickle global '%s.%s': a state dict of tensors never "
                "needs it, so the file is refused (it could run code under Python's pickle)",
                module, name);
}

// ----------------------------------------------------------------------------
// the few calls the allowlist permits

static int get_int(const PkObj *o, int64_t *v) {
    if (o->type != PK_INT && o->type != PK_BOOL) return -1;
    *v = o->i;
    return 0;
}

// torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
//                                 backward_hooks[, metadata])
static PkObj *rebuild_tensor(Unpickler *u, PkObj *args, char *err, size_t errlen) {
    if (args->n != 6 && args->n != 7) {
        fail(u, err, errlen, "_rebuild_tensor_v2 takes 6 or 7 arguments, got %zu", args->n);
        return NULL;
    }
    PkObj *st = args->items[0], *size = args->items[2], *stride = args->items[3];
    int64_t off;
    if (st->type != PK_STORAGE) {
        fail(u, err, errlen, "_rebuild_tensor_v2: first argument is a %s, not a storage",
             pk_type_name(st));
        return NULL;
    }
    if (get_int(args->items[1], &off) || off < 0) {
        fail(u, err, errlen, "_rebuild_tensor_v2: bad storage offset");
        return NULL;
    }
    if (size->type != PK_TUPLE || stride->type != PK_TUPLE || size->n != stride->n) {
        fail(u, err, errlen, "_rebuild_tensor_v2: size and stride must be tuples of one length");
        return NULL;
    }
    if (size->n > PTH_MAX_DIMS) {
        fail(u, err, errlen, "tensor with %zu dimensions (at most %d supported)", size->n,
             PTH_MAX_DIMS);
        return NULL;
    }
    PkObj *t = new_obj(u, PK_TENSOR);
    t->storage = st;
    t->dtype = st->dtype;
    t->ndim = (int)size->n;
    size_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (get_int(size->items[d], &t->shape[d]) || get_int(stride->items[d], &t->stride[d])) {
            fail(u, err, errlen, "_rebuild_tensor_v2: size and stride must hold integers");
            return NULL;
        }
        if (t->shape[d] < 0 || t->stride[d] < 0) {
            fail(u, err, errlen, "tensor dimension %d has negative size %lld or stride %lld", d,
                 (long long)t->shape[d], (long long)t->stride[d]);
            return NULL;
        }
        if (size_mul(numel, (size_t)t->shape[d], &numel)) {
            fail(u, err, errlen, "tensor shape overflows (element count too large)");
            return NULL;
        }
    }
    // The view must stay inside its storage: offset + sum((size-1)*stride) < storage elements.
    if ((uint64_t)off > st->numel) {
        fail(u, err, errlen, "storage offset %lld is past the end of its storage (%zu elements)",
             (long long)off, st->numel);
        return NULL;
    }
    if (numel > 0) {
        size_t last = (size_t)off, step;
        for (int d = 0; d < t->ndim; d++) {
            if (size_mul((size_t)(t->shape[d] - 1), (size_t)t->stride[d], &step) ||
                size_add(last, step, &last)) {
                fail(u, err, errlen, "tensor extent overflows");
                return NULL;
            }
        }
        if (last >= st->numel) {
            fail(u, err, errlen, "tensor of %zu elements (offset %lld, last element %zu) lies "
                 "outside its storage of %zu elements", numel, (long long)off, last, st->numel);
            return NULL;
        }
    }
    // Expanded views (stride 0) could claim far more elements than the file holds.
    if (numel > st->numel) {
        fail(u, err, errlen, "tensor view has %zu elements but its storage only %zu (an expanded "
             "view); save a .contiguous() copy instead", numel, st->numel);
        return NULL;
    }
    t->offset = (size_t)off;
    t->numel = numel;
    return t;
}

static int do_reduce(Unpickler *u, char *err, size_t errlen) {
    PkObj *args = pop(u, err, errlen);
    if (!args) return -1;
    PkObj *fn = pop(u, err, errlen);
    if (!fn) return -1;
    if (fn->type != PK_GLOBAL) return fail(u, err, errlen, "REDUCE on a %s", pk_type_name(fn));
    if (args->type != PK_TUPLE) return fail(u, err, errlen, "REDUCE arguments are not a tuple");
    PkObj *r = NULL;
    switch (fn->global) {
    case PKG_ORDERED_DICT:
        if (args->n != 0) return fail(u, err, errlen, "OrderedDict() with arguments");
        r = new_obj(u, PK_DICT);
        break;
    case PKG_REBUILD_TENSOR_V2:
        if (!(r = rebuild_tensor(u, args, err, errlen))) return -1;
        break;
    case PKG_REBUILD_PARAMETER:
    case PKG_REBUILD_PARAMETER_WITH_STATE:
        // (data, requires_grad, backward_hooks[, state]): the parameter is its data.
        if (args->n < 3 || args->n > 4 || args->items[0]->type != PK_TENSOR)
            return fail(u, err, errlen, "_rebuild_parameter: expected (tensor, requires_grad, "
                        "hooks[, state])");
        r = args->items[0];
        break;
    case PKG_STORAGE_TYPE:
        return fail(u, err, errlen, "torch.%s called directly (storages come only from "
                    "persistent ids)", storage_name(fn->dtype));
    }
    push(u, r);
    return 0;
}

// BINPERSID: ('storage', torch.<T>Storage, key, location, numel)
static int do_persid(Unpickler *u, char *err, size_t errlen) {
    PkObj *pid = pop(u, err, errlen);
    if (!pid) return -1;
    if (pid->type != PK_TUPLE || pid->n != 5 || pid->items[0]->type != PK_STR ||
        strcmp(pid->items[0]->s, "storage") != 0)
        return fail(u, err, errlen, "persistent id is not ('storage', type, key, location, "
                    "numel)");
    PkObj *ty = pid->items[1], *key = pid->items[2];
    int64_t numel;
    if (ty->type != PK_GLOBAL || ty->global != PKG_STORAGE_TYPE)
        return fail(u, err, errlen, "persistent id: storage type is a %s", pk_type_name(ty));
    if (key->type != PK_STR || pid->items[3]->type != PK_STR)
        return fail(u, err, errlen, "persistent id: key and location must be strings");
    if (get_int(pid->items[4], &numel) || numel < 0)
        return fail(u, err, errlen, "persistent id: bad element count");
    const uint8_t *data;
    size_t nbytes;
    char sub[512];
    if (u->storage_fn(u->ctx, key->s, &data, &nbytes, sub, sizeof sub))
        return fail(u, err, errlen, "%s", sub);
    size_t es = pth_dtype_size(ty->dtype), want;
    if (size_mul((size_t)numel, es, &want) || want != nbytes)
        return fail(u, err, errlen, "storage '%s' holds %zu bytes but %lld elements of %s need "
                    "%lld x %zu bytes", key->s, nbytes, (long long)numel, storage_name(ty->dtype),
                    (long long)numel, es);
    PkObj *st = new_obj(u, PK_STORAGE);
    st->dtype = ty->dtype;
    st->data = data;
    st->numel = (size_t)numel;
    push(u, st);
    return 0;
}

// ----------------------------------------------------------------------------
// reading opcode arguments

// Fails unless k more bytes of the pickle remain.
static int need(Unpickler *u, uint64_t k, char *err, size_t errlen) {
    if ((uint64_t)(u->n - u->pos) < k)
        return fail(u, err, errlen, "pickle ends in the middle of an opcode (truncated)");
    return 0;
}

// Reads an unsigned little-endian argument of k (1 to 8) bytes.
static int arg(Unpickler *u, size_t k, uint64_t *v, char *err, size_t errlen) {
    if (need(u, k, err, errlen)) return -1;
    *v = 0;
    for (size_t i = 0; i < k; i++) *v |= (uint64_t)u->buf[u->pos + i] << (8 * i);
    u->pos += k;
    return 0;
}

// ----------------------------------------------------------------------------
// the memo

static int memo_put(Unpickler *u, size_t idx, char *err, size_t errlen) {
    PkObj *o = top(u, err, errlen);
    if (!o) return -1;
    // A real pickle numbers memo entries 0, 1, 2, ...: an index can never exceed the input size.
    if (idx >= u->n) return fail(u, err, errlen, "memo index %zu out of range", idx);
    if (idx >= u->capmemo) {
        size_t old = u->capmemo;
        grow(&u->memo, &u->capmemo, idx + 1, sizeof *u->memo);
        memset(u->memo + old, 0, (u->capmemo - old) * sizeof *u->memo);
    }
    if (!u->memo[idx]) u->nmemo++;
    u->memo[idx] = o;
    return 0;
}

// BINPUT (1-byte index), LONG_BINPUT (4-byte index)
static int op_put(Unpickler *u, char *err, size_t errlen) {
    uint64_t idx;
    if (arg(u, u->op == 'q' ? 1 : 4, &idx, err, errlen)) return -1;
    return memo_put(u, (size_t)idx, err, errlen);
}

// MEMOIZE (protocol 4): memo[len(memo)] = top, as Python's pickle does
static int op_memoize(Unpickler *u, char *err, size_t errlen) {
    return memo_put(u, u->nmemo, err, errlen);
}

// BINGET (1-byte index), LONG_BINGET (4-byte index)
static int op_get(Unpickler *u, char *err, size_t errlen) {
    uint64_t idx;
    if (arg(u, u->op == 'h' ? 1 : 4, &idx, err, errlen)) return -1;
    if (idx >= u->capmemo || !u->memo[idx])
        return fail(u, err, errlen, "memo index %zu was never stored (corrupt pickle)",
                    (size_t)idx);
    push(u, u->memo[idx]);
    return 0;
}

// ----------------------------------------------------------------------------
// framing, the stack and marks, building tuples, lists and dicts

// PROTO
static int op_proto(Unpickler *u, char *err, size_t errlen) {
    if (need(u, 1, err, errlen)) return -1;
    if (u->buf[u->pos] > 5)
        return fail(u, err, errlen, "unknown pickle protocol %u", u->buf[u->pos]);
    u->pos += 1;
    return 0;
}

// FRAME (protocol 4): a length hint only
static int op_frame(Unpickler *u, char *err, size_t errlen) {
    if (need(u, 8, err, errlen)) return -1;
    u->pos += 8;
    return 0;
}

// MARK
static int op_mark(Unpickler *u, char *err, size_t errlen) {
    (void)err, (void)errlen;
    grow(&u->marks, &u->capmarks, u->nmarks + 1, sizeof *u->marks);
    u->marks[u->nmarks++] = u->sp;
    return 0;
}

// POP
static int op_pop(Unpickler *u, char *err, size_t errlen) {
    return pop(u, err, errlen) ? 0 : -1;
}

// POP_MARK
static int op_pop_mark(Unpickler *u, char *err, size_t errlen) {
    size_t start = 0;
    if (pop_mark(u, &start, err, errlen)) return -1;
    u->sp = start;
    return 0;
}

// EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE
static int op_empty(Unpickler *u, char *err, size_t errlen) {
    (void)err, (void)errlen;
    push(u, new_obj(u, u->op == '}' ? PK_DICT : u->op == ']' ? PK_LIST : PK_TUPLE));
    return 0;
}

// TUPLE, LIST, DICT: the objects above the innermost mark
static int op_collect(Unpickler *u, char *err, size_t errlen) {
    size_t start = 0;
    if (pop_mark(u, &start, err, errlen)) return -1;
    PkObj *o = new_obj(u, u->op == 't' ? PK_TUPLE : u->op == 'l' ? PK_LIST : PK_DICT);
    for (size_t i = start; i < u->sp; i++) obj_push_item(o, u->stack[i]);
    u->sp = start;
    push(u, o);
    if (o->type == PK_DICT && o->n % 2)
        return fail(u, err, errlen, "DICT with an odd number of items");
    return 0;
}

// TUPLE1, TUPLE2, TUPLE3
static int op_tuple_n(Unpickler *u, char *err, size_t errlen) {
    size_t k = (size_t)(u->op - 0x84);
    if (u->sp < floor_sp(u) + k) return fail(u, err, errlen, "stack underflow (corrupt pickle)");
    PkObj *o = new_obj(u, PK_TUPLE);
    for (size_t i = u->sp - k; i < u->sp; i++) obj_push_item(o, u->stack[i]);
    u->sp -= k;
    push(u, o);
    return 0;
}

// ----------------------------------------------------------------------------
// plain values

// BINUNICODE, BINSTRING (4-byte length), SHORT_BINUNICODE, SHORT_BINSTRING (1-byte length),
// BINUNICODE8 (8-byte length)
static int op_str(Unpickler *u, char *err, size_t errlen) {
    uint64_t len;
    size_t k = u->op == 'X' || u->op == 'T' ? 4 : u->op == 0x8d ? 8 : 1;
    if (arg(u, k, &len, err, errlen) || need(u, len, err, errlen)) return -1;
    PkObj *o = new_obj(u, PK_STR);
    o->s = xmalloc((size_t)len + 1);
    memcpy(o->s, u->buf + u->pos, (size_t)len);
    o->s[len] = 0;
    o->slen = (size_t)len;
    push(u, o);
    u->pos += (size_t)len;
    return 0;
}

// BININT (signed 4 bytes), BININT1 (unsigned 1 byte), BININT2 (unsigned 2 bytes)
static int op_int(Unpickler *u, char *err, size_t errlen) {
    uint64_t v;
    size_t k = u->op == 'J' ? 4 : u->op == 'M' ? 2 : 1;
    if (arg(u, k, &v, err, errlen)) return -1;
    PkObj *o = new_obj(u, PK_INT);
    o->i = k == 4 ? (int64_t)(int32_t)(uint32_t)v : (int64_t)v;
    push(u, o);
    return 0;
}

// LONG1: little-endian two's complement, n bytes
static int op_long1(Unpickler *u, char *err, size_t errlen) {
    uint64_t len;
    if (arg(u, 1, &len, err, errlen) || need(u, len, err, errlen)) return -1;
    if (len > 8) return fail(u, err, errlen, "integer of %zu bytes is too large", (size_t)len);
    const uint8_t *p = u->buf + u->pos;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) v |= (uint64_t)p[i] << (8 * i);
    if (len > 0 && len < 8 && (p[len - 1] & 0x80)) v |= ~0ull << (8 * len);
    PkObj *o = new_obj(u, PK_INT);
    o->i = (int64_t)v;
    u->pos += (size_t)len;
    push(u, o);
    return 0;
}

// NONE, NEWTRUE, NEWFALSE
static int op_none_bool(Unpickler *u, char *err, size_t errlen) {
    (void)err, (void)errlen;
    PkObj *o = new_obj(u, u->op == 'N' ? PK_NONE : PK_BOOL);
    o->i = u->op == 0x88;
    push(u, o);
    return 0;
}

// BINFLOAT (big-endian)
static int op_binfloat(Unpickler *u, char *err, size_t errlen) {
    if (need(u, 8, err, errlen)) return -1;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | u->buf[u->pos + i];
    PkObj *o = new_obj(u, PK_FLOAT);
    memcpy(&o->f, &v, 8);
    u->pos += 8;
    push(u, o);
    return 0;
}

// ----------------------------------------------------------------------------
// globals, and setting a dict's items and a list's elements

// GLOBAL "module\nname\n"
static int op_global(Unpickler *u, char *err, size_t errlen) {
    const uint8_t *p = u->buf + u->pos, *end = u->buf + u->n;
    const uint8_t *nl1 = memchr(p, '\n', (size_t)(end - p));
    const uint8_t *nl2 = nl1 ? memchr(nl1 + 1, '\n', (size_t)(end - nl1 - 1)) : NULL;
    if (!nl2 || nl1 - p > 200 || nl2 - nl1 > 200)
        return fail(u, err, errlen, "GLOBAL without two short newline-terminated names");
    char module[256], name[256];
    memcpy(module, p, (size_t)(nl1 - p));
    module[nl1 - p] = 0;
    memcpy(name, nl1 + 1, (size_t)(nl2 - nl1 - 1));
    name[nl2 - nl1 - 1] = 0;
    u->pos = (size_t)(nl2 + 1 - u->buf);
    return make_global(u, module, name, err, errlen);
}

// STACK_GLOBAL (protocol 4): module and name are the two strings on the stack
static int op_stack_global(Unpickler *u, char *err, size_t errlen) {
    PkObj *a, *b;
    if (!(b = pop(u, err, errlen)) || !(a = pop(u, err, errlen))) return -1;
    if (a->type != PK_STR || b->type != PK_STR)
        return fail(u, err, errlen, "STACK_GLOBAL needs two strings");
    return make_global(u, a->s, b->s, err, errlen);
}

// BUILD: only OrderedDict's attributes (_metadata), accepted and ignored
static int op_build(Unpickler *u, char *err, size_t errlen) {
    PkObj *a, *o;
    if (!(a = pop(u, err, errlen)) || !(o = top(u, err, errlen))) return -1;
    if (o->type != PK_DICT)
        return fail(u, err, errlen, "BUILD on a %s (only a dict's attributes may be set)",
                    pk_type_name(o));
    if (a->type != PK_DICT && a->type != PK_NONE && a->type != PK_TUPLE)
        return fail(u, err, errlen, "BUILD with a %s state", pk_type_name(a));
    return 0;
}

// SETITEM
static int op_setitem(Unpickler *u, char *err, size_t errlen) {
    PkObj *key, *value, *o;
    if (!(value = pop(u, err, errlen)) || !(key = pop(u, err, errlen)) ||
        !(o = top(u, err, errlen)))
        return -1;
    if (o->type != PK_DICT) return fail(u, err, errlen, "SETITEM on a %s", pk_type_name(o));
    obj_push_item(o, key);
    obj_push_item(o, value);
    return 0;
}

// SETITEMS: the keys and values above the innermost mark, into the dict below it
static int op_setitems(Unpickler *u, char *err, size_t errlen) {
    size_t start = 0;
    if (pop_mark(u, &start, err, errlen)) return -1;
    if (start == floor_sp(u) || (u->sp - start) % 2)
        return fail(u, err, errlen, "SETITEMS without a dict or with an odd number of items");
    PkObj *o = u->stack[start - 1];
    if (o->type != PK_DICT) return fail(u, err, errlen, "SETITEMS on a %s", pk_type_name(o));
    for (size_t i = start; i < u->sp; i++) obj_push_item(o, u->stack[i]);
    u->sp = start;
    return 0;
}

// APPEND
static int op_append(Unpickler *u, char *err, size_t errlen) {
    PkObj *a, *o;
    if (!(a = pop(u, err, errlen)) || !(o = top(u, err, errlen))) return -1;
    if (o->type != PK_LIST) return fail(u, err, errlen, "APPEND on a %s", pk_type_name(o));
    obj_push_item(o, a);
    return 0;
}

// APPENDS: the objects above the innermost mark, into the list below it
static int op_appends(Unpickler *u, char *err, size_t errlen) {
    size_t start = 0;
    if (pop_mark(u, &start, err, errlen)) return -1;
    if (start == floor_sp(u) || u->stack[start - 1]->type != PK_LIST)
        return fail(u, err, errlen, "APPENDS without a list");
    PkObj *o = u->stack[start - 1];
    for (size_t i = start; i < u->sp; i++) obj_push_item(o, u->stack[i]);
    u->sp = start;
    return 0;
}

// ----------------------------------------------------------------------------
// the opcode loop

typedef int (*OpFn)(Unpickler *u, char *err, size_t errlen);

// Every opcode a torch state dict uses, under protocols 2 to 5; STOP ends the loop. Any other
// opcode is refused.
static const OpFn ops[256] = {
    [0x80] = op_proto, [0x95] = op_frame,
    ['('] = op_mark, ['0'] = op_pop, ['1'] = op_pop_mark,
    ['}'] = op_empty, [']'] = op_empty, [')'] = op_empty,
    ['t'] = op_collect, ['l'] = op_collect, ['d'] = op_collect,
    [0x85] = op_tuple_n, [0x86] = op_tuple_n, [0x87] = op_tuple_n,
    ['X'] = op_str, ['T'] = op_str, [0x8c] = op_str, ['U'] = op_str, [0x8d] = op_str,
    ['J'] = op_int, ['K'] = op_int, ['M'] = op_int, [0x8a] = op_long1,
    ['N'] = op_none_bool, [0x88] = op_none_bool, [0x89] = op_none_bool, ['G'] = op_binfloat,
    ['c'] = op_global, [0x93] = op_stack_global, ['R'] = do_reduce, ['Q'] = do_persid,
    ['b'] = op_build,
    ['s'] = op_setitem, ['u'] = op_setitems, ['a'] = op_append, ['e'] = op_appends,
    ['q'] = op_put, ['r'] = op_put, [0x94] = op_memoize, ['h'] = op_get, ['j'] = op_get,
};

PkObj *unpickle(Unpickler *u, const uint8_t *buf, size_t n, char *err, size_t errlen) {
    u->buf = buf;
    u->n = n;
    u->pos = 0;
    while (1) {
        u->op_pos = u->pos;
        if (u->pos >= n) {
            u->op = 0;
            fail(u, err, errlen, "pickle ends without STOP (truncated)");
            return NULL;
        }
        u->op = buf[u->pos++];
        if (u->op == '.') return pop(u, err, errlen); // STOP: the top of the stack is the result
        if (!ops[u->op]) {
            fail(u, err, errlen, "unsupported pickle opcode (not used by torch state dicts)");
            return NULL;
        }
        if (ops[u->op](u, err, errlen)) return NULL;
    }
}


// ----------------------------------------------------------------------------
// the pickler: what Python's pickle (protocol 2) writes for torch 1.13's state dict

typedef struct {
    uint8_t *b;
    size_t n, cap;
    uint32_t memo; // next memo index
} Out;

static void out(Out *o, const void *p, size_t k) {
    grow(&o->b, &o->cap, o->n + k, 1);
    memcpy(o->b + o->n, p, k);
    o->n += k;
}
static void out1(Out *o, uint8_t c) { out(o, &c, 1); }
static void out32(Out *o, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    out(o, b, 4);
}

// Memoizes the object just written (BINPUT, or LONG_BINPUT past 255) and returns its index.
static uint32_t put(Out *o) {
    uint32_t i = o->memo++;
    if (i < 256) {
        out1(o, 'q');
        out1(o, (uint8_t)i);
    } else {
        out1(o, 'r');
        out32(o, i);
    }
    return i;
}

static void get(Out *o, uint32_t i) {
    if (i < 256) {
        out1(o, 'h');
        out1(o, (uint8_t)i);
    } else {
        out1(o, 'j');
        out32(o, i);
    }
}

static void put_str(Out *o, const char *s) {
    size_t k = strlen(s);
    out1(o, 'X');
    out32(o, (uint32_t)k);
    out(o, s, k);
    put(o);
}

// Python's save_long for protocol 2: BININT1/BININT2/BININT, else LONG1.
static void put_int(Out *o, int64_t v) {
    if (v >= 0 && v <= 0xFF) {
        out1(o, 'K');
        out1(o, (uint8_t)v);
    } else if (v >= 0 && v <= 0xFFFF) {
        out1(o, 'M');
        out1(o, (uint8_t)v);
        out1(o, (uint8_t)(v >> 8));
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        out1(o, 'J');
        out32(o, (uint32_t)(int32_t)v);
    } else { // minimal two's complement bytes (so that the sign bit is right)
        uint8_t b[9];
        int k = 0;
        uint64_t u = (uint64_t)v;
        do {
            b[k++] = (uint8_t)u;
            u = (uint64_t)((int64_t)u >> 8);
        } while (k < 8 && !((v >= 0 && u == 0 && !(b[k - 1] & 0x80)) ||
                            (v < 0 && u == ~0ull && (b[k - 1] & 0x80))));
        out1(o, 0x8a);
        out1(o, (uint8_t)k);
        out(o, b, (size_t)k);
    }
}

static void put_global(Out *o, const char *module, const char *name) {
    out1(o, 'c');
    out(o, module, strlen(module));
    out1(o, '\n');
    out(o, name, strlen(name));
    out1(o, '\n');
}

// An int tuple as Python writes it: EMPTY_TUPLE (not memoized), TUPLE1-3, or MARK ... TUPLE.
static void put_int_tuple(Out *o, const int64_t *v, int k) {
    if (k == 0) {
        out1(o, ')');
        return;
    }
    if (k > 3) out1(o, '(');
    for (int i = 0; i < k; i++) put_int(o, v[i]);
    out1(o, k > 3 ? 't' : (uint8_t)(0x84 + k));
    put(o);
}

uint8_t *pickle_state_dict(const StateDict *sd, size_t *n) {
    Out o = {0};
    int64_t od = -1, rebuild = -1, s_storage = -1, s_cpu = -1, stype[6] = {-1, -1, -1, -1, -1, -1};
    out1(&o, 0x80);
    out1(&o, 2);
    put_global(&o, "collections", "OrderedDict");
    od = put(&o);
    out1(&o, ')');
    out1(&o, 'R');
    put(&o);
    // Items go in batches of 1000 (pickle's _BATCHSIZE); a batch of one uses SETITEM.
    for (int b0 = 0; b0 < sd->n; b0 += 1000) {
        int b1 = sd->n - b0 < 1000 ? sd->n : b0 + 1000;
        if (b1 - b0 > 1) out1(&o, '(');
        for (int i = b0; i < b1; i++) {
            const PthTensor *t = &sd->t[i];
            put_str(&o, t->name);
            if (rebuild < 0) {
                put_global(&o, "torch._utils", "_rebuild_tensor_v2");
                rebuild = put(&o);
            } else {
                get(&o, (uint32_t)rebuild);
            }
            out1(&o, '(');
            // persistent id ('storage', torch.<T>Storage, key, 'cpu', numel)
            out1(&o, '(');
            if (s_storage < 0) {
                put_str(&o, "storage");
                s_storage = o.memo - 1;
            } else {
                get(&o, (uint32_t)s_storage);
            }
            if (stype[t->dtype] < 0) {
                put_global(&o, "torch", storage_name(t->dtype));
                stype[t->dtype] = put(&o);
            } else {
                get(&o, (uint32_t)stype[t->dtype]);
            }
            char key[24];
            snprintf(key, sizeof key, "%d", i);
            put_str(&o, key);
            if (s_cpu < 0) {
                put_str(&o, "cpu");
                s_cpu = o.memo - 1;
            } else {
                get(&o, (uint32_t)s_cpu);
            }
            put_int(&o, (int64_t)t->numel);
            out1(&o, 't');
            put(&o);
            out1(&o, 'Q');
            // storage_offset, size, stride (contiguous), requires_grad, backward_hooks
            put_int(&o, 0);
            int64_t stride[PTH_MAX_DIMS], s = 1;
            for (int d = t->ndim - 1; d >= 0; d--) {
                stride[d] = s;
                s *= t->shape[d] > 0 ? t->shape[d] : 1;
            }
            put_int_tuple(&o, t->shape, t->ndim);
            put_int_tuple(&o, stride, t->ndim);
            out1(&o, 0x89);
            get(&o, (uint32_t)od);
            out1(&o, ')');
            out1(&o, 'R');
            put(&o);
            out1(&o, 't');
            put(&o);
            out1(&o, 'R');
            put(&o);
        }
        out1(&o, b1 - b0 > 1 ? 'u' : 's');
    }
    out1(&o, '.');
    *n = o.n;
    return o.b;
}
