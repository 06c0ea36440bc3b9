// pickle.c: an allowlist unpickler for torch state dicts and the matching pickler (see pickle.h).
// The unpickler is a plain loop over opcodes with an explicit stack, mark stack and memo; it
// never recurses, so hostile nesting cannot overflow the C stack. Every object it makes costs at
// least one input byte, and the memo index is capped by the pickle's length, so memory stays
// proportional to the input.
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
// the opcode loop

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

static int memo_put(Unpickler *u, size_t idx, size_t n, char *err, size_t errlen) {
    PkObj *o = top(u, err, errlen);
    if (!o) return -1;
    // A real pickle numbers memo entries 0, 1, 2, ...: an index can never exceed the input size.
    if (idx >= n) return fail(u, err, errlen, "memo index %zu out of range", idx);
    if (idx >= u->capmemo) {
        size_t old = u->capmemo;
        grow(&u->memo, &u->capmemo, idx + 1, sizeof *u->memo);
        memset(u->memo + old, 0, (u->capmemo - old) * sizeof *u->memo);
    }
    if (!u->memo[idx]) u->nmemo++;
    u->memo[idx] = o;
    return 0;
}

static int memo_get(Unpickler *u, size_t idx, char *err, size_t errlen) {
    if (idx >= u->capmemo || !u->memo[idx])
        return fail(u, err, errlen, "memo index %zu was never stored (corrupt pickle)", idx);
    push(u, u->memo[idx]);
    return 0;
}

static PkObj *make_str(Unpickler *u, const uint8_t *p, size_t len) {
    PkObj *o = new_obj(u, PK_STR);
    o->s = xmalloc(len + 1);
    memcpy(o->s, p, len);
    o->s[len] = 0;
    o->slen = len;
    return o;
}

// Pops the objects above the innermost mark into a new tuple or list.
static int collect(Unpickler *u, PkType t, char *err, size_t errlen) {
    size_t start = 0;
    if (pop_mark(u, &start, err, errlen)) return -1;
    PkObj *o = new_obj(u, t);
    for (size_t i = start; i < u->sp; i++) obj_push_item(o, u->stack[i]);
    u->sp = start;
    push(u, o);
    return 0;
}

PkObj *unpickle(Unpickler *u, const uint8_t *buf, size_t n, char *err, size_t errlen) {
    size_t pos = 0;
#define NEED(k)                                                                                   \
    do {                                                                                          \
        if (n - pos < (size_t)(k)) {                                                              \
            fail(u, err, errlen, "pickle ends in the middle of an opcode (truncated)");           \
            return NULL;                                                                          \
        }                                                                                         \
    } while (0)
#define TRY(x)                                                                                    \
    do {                                                                                          \
        if ((x) != 0) return NULL;                                                                \
    } while (0)
    while (1) {
        if (pos >= n) {
            u->op_pos = pos;
            u->op = 0;
            fail(u, err, errlen, "pickle ends without STOP (truncated)");
            return NULL;
        }
        u->op_pos = pos;
        u->op = buf[pos++];
        PkObj *o, *a, *b;
        size_t len, start = 0;
        switch (u->op) {
        case 0x80: // PROTO
            NEED(1);
            if (buf[pos] > 5) {
                fail(u, err, errlen, "unknown pickle protocol %u", buf[pos]);
                return NULL;
            }
            pos += 1;
            break;
        case 0x95: // FRAME (protocol 4): a length hint only
            NEED(8);
            pos += 8;
            break;
        case '.': // STOP
            if (!(o = pop(u, err, errlen))) return NULL;
            return o;
        case '(': // MARK
            grow(&u->marks, &u->capmarks, u->nmarks + 1, sizeof *u->marks);
            u->marks[u->nmarks++] = u->sp;
            break;
        case '0': // POP
            if (!pop(u, err, errlen)) return NULL;
            break;
        case '1': // POP_MARK
            TRY(pop_mark(u, &start, err, errlen));
            u->sp = start;
            break;
        case '}': push(u, new_obj(u, PK_DICT)); break;                // EMPTY_DICT
        case ']': push(u, new_obj(u, PK_LIST)); break;                // EMPTY_LIST
        case ')': push(u, new_obj(u, PK_TUPLE)); break;               // EMPTY_TUPLE
        case 't': TRY(collect(u, PK_TUPLE, err, errlen)); break;      // TUPLE
        case 'l': TRY(collect(u, PK_LIST, err, errlen)); break;       // LIST
        case 0x85: case 0x86: case 0x87: {                            // TUPLE1, TUPLE2, TUPLE3
            size_t k = (size_t)(u->op - 0x84);
            if (u->sp < floor_sp(u) + k) {
                fail(u, err, errlen, "stack underflow (corrupt pickle)");
                return NULL;
            }
            o = new_obj(u, PK_TUPLE);
            for (size_t i = u->sp - k; i < u->sp; i++) obj_push_item(o, u->stack[i]);
            u->sp -= k;
            push(u, o);
            break;
        }
        case 'd': // DICT
            TRY(collect(u, PK_DICT, err, errlen));
            if (u->stack[u->sp - 1]->n % 2) {
                fail(u, err, errlen, "DICT with an odd number of items");
                return NULL;
            }
            break;
        case 'X': // BINUNICODE
        case 'T': // BINSTRING
            NEED(4);
            len = le32(buf + pos);
            pos += 4;
            NEED(len);
            push(u, make_str(u, buf + pos, len));
            pos += len;
            break;
        case 0x8c: // SHORT_BINUNICODE
        case 'U':  // SHORT_BINSTRING
            NEED(1);
            len = buf[pos++];
            NEED(len);
            push(u, make_str(u, buf + pos, len));
            pos += len;
            break;
        case 0x8d: { // BINUNICODE8
            NEED(8);
            uint64_t l64 = le64(buf + pos);
            pos += 8;
            if (l64 > n - pos) NEED(n - pos + 1);
            push(u, make_str(u, buf + pos, (size_t)l64));
            pos += (size_t)l64;
            break;
        }
        case 'J': // BININT
            NEED(4);
            o = new_obj(u, PK_INT);
            o->i = (int32_t)le32(buf + pos);
            pos += 4;
            push(u, o);
            break;
        case 'K': // BININT1
            NEED(1);
            o = new_obj(u, PK_INT);
            o->i = buf[pos++];
            push(u, o);
            break;
        case 'M': // BININT2
            NEED(2);
            o = new_obj(u, PK_INT);
            o->i = le16(buf + pos);
            pos += 2;
            push(u, o);
            break;
        case 0x8a: { // LONG1: little-endian two's complement, n bytes
            NEED(1);
            len = buf[pos++];
            NEED(len);
            if (len > 8) {
                fail(u, err, errlen, "integer of %zu bytes is too large", len);
                return NULL;
            }
            uint64_t v = 0;
            for (size_t i = 0; i < len; i++) v |= (uint64_t)buf[pos + i] << (8 * i);
            if (len > 0 && len < 8 && (buf[pos + len - 1] & 0x80)) v |= ~0ull << (8 * len);
            o = new_obj(u, PK_INT);
            o->i = (int64_t)v;
            pos += len;
            push(u, o);
            break;
        }
        case 'N': push(u, new_obj(u, PK_NONE)); break; // NONE
        case 0x88: case 0x89:                          // NEWTRUE, NEWFALSE
            o = new_obj(u, PK_BOOL);
            o->i = u->op == 0x88;
            push(u, o);
            break;
        case 'G': { // BINFLOAT (big-endian)
            NEED(8);
            uint64_t v = 0;
            for (int i = 0; i < 8; i++) v = v << 8 | buf[pos + i];
            o = new_obj(u, PK_FLOAT);
            memcpy(&o->f, &v, 8);
            pos += 8;
            push(u, o);
            break;
        }
        case 'c': { // GLOBAL "module\nname\n"
            const uint8_t *nl1 = memchr(buf + pos, '\n', n - pos);
            const uint8_t *nl2 = nl1 ? memchr(nl1 + 1, '\n', (size_t)(buf + n - nl1 - 1)) : NULL;
            if (!nl2 || nl1 - (buf + pos) > 200 || nl2 - nl1 > 200) {
                fail(u, err, errlen, "GLOBAL without two short newline-terminated names");
                return NULL;
            }
            char module[256], name[256];
            memcpy(module, buf + pos, (size_t)(nl1 - (buf + pos)));
            module[nl1 - (buf + pos)] = 0;
            memcpy(name, nl1 + 1, (size_t)(nl2 - nl1 - 1));
            name[nl2 - nl1 - 1] = 0;
            pos = (size_t)(nl2 + 1 - buf);
            TRY(make_global(u, module, name, err, errlen));
            break;
        }
        case 0x93: // STACK_GLOBAL
            if (!(b = pop(u, err, errlen)) || !(a = pop(u, err, errlen))) return NULL;
            if (a->type != PK_STR || b->type != PK_STR) {
                fail(u, err, errlen, "STACK_GLOBAL needs two strings");
                return NULL;
            }
            TRY(make_global(u, a->s, b->s, err, errlen));
            break;
        case 'R': TRY(do_reduce(u, err, errlen)); break;  // REDUCE
        case 'Q': TRY(do_persid(u, err, errlen)); break;  // BINPERSID
        case 'b': // BUILD: only OrderedDict's attributes (_metadata), accepted and ignored
            if (!(a = pop(u, err, errlen)) || !(o = top(u, err, errlen))) return NULL;
            if (o->type != PK_DICT) {
                fail(u, err, errlen, "BUILD on a %s (only a dict's attributes may be set)",
                     pk_type_name(o));
                return NULL;
            }
            if (a->type != PK_DICT && a->type != PK_NONE && a->type != PK_TUPLE) {
                fail(u, err, errlen, "BUILD with a %s state", pk_type_name(a));
                return NULL;
            }
            break;
        case 's': // SETITEM
            if (!(b = pop(u, err, errlen)) || !(a = pop(u, err, errlen)) ||
                !(o = top(u, err, errlen)))
                return NULL;
            if (o->type != PK_DICT) {
                fail(u, err, errlen, "SETITEM on a %s", pk_type_name(o));
                return NULL;
            }
            obj_push_item(o, a);
            obj_push_item(o, b);
            break;
        case 'u': // SETITEMS
            TRY(pop_mark(u, &start, err, errlen));
            if (start == floor_sp(u) || (u->sp - start) % 2) {
                fail(u, err, errlen, "SETITEMS without a dict or with an odd number of items");
                return NULL;
            }
            o = u->stack[start - 1];
            if (o->type != PK_DICT) {
                fail(u, err, errlen, "SETITEMS on a %s", pk_type_name(o));
                return NULL;
            }
            for (size_t i = start; i < u->sp; i++) obj_push_item(o, u->stack[i]);
            u->sp = start;
            break;
        case 'a': // APPEND
            if (!(a = pop(u, err, errlen)) || !(o = top(u, err, errlen))) return NULL;
            if (o->type != PK_LIST) {
                fail(u, err, errlen, "APPEND on a %s", pk_type_name(o));
                return NULL;
            }
            obj_push_item(o, a);
            break;
        case 'e': // APPENDS
            TRY(pop_mark(u, &start, err, errlen));
            if (start == floor_sp(u) || u->stack[start - 1]->type != PK_LIST) {
                fail(u, err, errlen, "APPENDS without a list");
                return NULL;
            }
            o = u->stack[start - 1];
            for (size_t i = start; i < u->sp; i++) obj_push_item(o, u->stack[i]);
            u->sp = start;
            break;
        case 'q': // BINPUT
            NEED(1);
            TRY(memo_put(u, buf[pos], n, err, errlen));
            pos += 1;
            break;
        case 'r': // LONG_BINPUT
            NEED(4);
            TRY(memo_put(u, le32(buf + pos), n, err, errlen));
            pos += 4;
            break;
        case 0x94: // MEMOIZE (protocol 4): memo[len(memo)] = top, as Python's pickle does
            TRY(memo_put(u, u->nmemo, n, err, errlen));
            break;
        case 'h': // BINGET
            NEED(1);
            TRY(memo_get(u, buf[pos], err, errlen));
            pos += 1;
            break;
        case 'j': // LONG_BINGET
            NEED(4);
            TRY(memo_get(u, le32(buf + pos), err, errlen));
            pos += 4;
            break;
        default:
            fail(u, err, errlen, "unsupported pickle opcode (not used by torch state dicts)");
            return NULL;
        }
    }
#undef NEED
#undef TRY
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
