// resnet34.c: torchvision's ResNet34 on top of the backend table (backend.h): parameters with
// torchvision's state-dict names and order, seeded initialisation, checkpoint loading and saving
// through pth.h, forward in train and eval mode, cross-entropy and backward with freezing.
//
// Activation memory. Every activation lives in a pool of backend tensors keyed by shape, made
// lazily for the batch shape of the forward pass and reused by later steps. The pool is sized by
// batch capacity: a smaller batch (an epoch's last) views the first samples of the same tensors
// (tensor_set_batch); only a larger batch or another image size empties it. A tensor goes back
// to the pool as soon as nothing needs it:
// - forward keeps only what backward reads (a conv's input, a batch norm's input, a relu's
//   output), and nothing at all below the lowest trainable layer (an eval pass or a frozen
//   backbone runs in a handful of buffers per shape);
// - backward hands each activation back when its last reader is done, and takes the gradients
//   of activations from the same pool, so they reuse the memory of activations already consumed.
// So the peak of a training step is the saved activations plus a few buffers.
//
// Fused eval path. An eval-mode forward that keeps nothing for backward (04's feature pass, every
// validation pass, predict) runs, where the backend has conv_bias_act_forward, on convolutions
// whose weights and bias have the following batch norm folded in (w' = w * gamma / sqrt(var +
// eps) per output channel, b' = beta - mean * gamma / sqrt(var + eps)), with the ReLU and the
// residual add done by the same op: conv(+bias+relu) -> ... -> avgpool -> fc, activations in the
// backend's own layout from layer to layer. The folded copies are recomputed when the model's
// version (bumped by everything that changes weights or BN statistics) has moved since the last
// fold. PETS_FUSED=0 (or resnet34_set_fused) selects the unfused path.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "nn/resnet34.h"
#include "core/rng.h"

#define NUM_BLOCKS 16
#define MAX_PARAMS 200

// ----------------------------------------------------------------------------
// model structure

typedef struct {
    BatchNorm bn;    // tensors point at the Params' values; save_* are the model's
    Param *weight, *bias, *running_mean, *running_var;
} BN;

typedef struct {
    Param *w;        // (K, C, R, S)
    int stride, pad;
    BN *bn;          // the batch norm that follows
    Tensor *fw, *fb; // fused path: w with bn folded in (K, C, R, S), and its bias (K, 1, 1, 1)
} Conv;

// One BasicBlock: out = relu(bn2(conv2(relu(bn1(conv1(a))))) + shortcut(a)), where the shortcut
// is the identity or bn_ds(conv_ds(a)) (1x1, stride) when the stride or the width changes.
typedef struct {
    Conv conv1, conv2, ds;  // ds.w == NULL: identity shortcut
    BN bn1, bn2, dsbn;
    int cin, cout, stride;
    // activations kept by the last forward for backward (pool tensors)
    Tensor *a;              // input (N, cin, H, W), the previous unit's output
    Tensor *c1, *b1, *c2;   // conv1 out, relu(bn1) out, conv2 out: (N, cout, H', W')
    Tensor *dsc;            // conv_ds out (N, cout, H', W')
    Tensor *out;            // block output (N, cout, H', W')
} Block;

typedef struct {
    Tensor *t;
    int used;
} PoolEntry;

struct ResNet34 {
    Backend *be;
    int num_classes;
    Param params[MAX_PARAMS];
    int nparams;
    Conv conv1;
    BN bn1;
    Block blocks[NUM_BLOCKS];
    Param *fc_w, *fc_b;

    // activation pool, for batches of up to pool_n images of pool_h x pool_w (its tensors hold
    // pool_n samples each)
    PoolEntry *pool;
    int npool, cap_pool;
    int pool_n, pool_h, pool_w;
    Tensor *x;                   // input (N, 3, H, W)
    Tensor *c0, *r0, *p0;        // stem: conv1 out, relu(bn1) out, maxpool out
    // head, for batches of head_n (its tensors hold head_cap samples)
    int head_n, head_cap;
    Tensor *feat, *dfeat;        // pooled features (N, 512, 1, 1) and their gradient
    Tensor *logits, *dlogits;    // (N, classes, 1, 1)
    // what the last forward did
    int have_forward;            // 0 none, 1 full network, 2 head only
    int saved_valid;             // the saved activations are unused by a backward so far
    int fwd_n;
    int fwd_train;
    int saved_from;              // lowest unit whose activations were kept (17: none)
    int keep_eval;               // eval-mode forwards keep activations too (for backward)
    // fused eval path
    int fused;                   // 1: eval forwards that keep nothing use it (if the backend can)
    unsigned long version;       // bumped whenever weights or BN statistics may have changed
    unsigned long folded_version; // version the folded weights were computed at (0: never)
};

// Units in forward order: 0 stem (conv1, bn1), 1..16 the blocks, 17 fc.
#define UNIT_FC (NUM_BLOCKS + 1)

static const int STAGE_BLOCKS[4] = {3, 4, 6, 3};
static const int STAGE_WIDTH[4] = {64, 128, 256, 512};

static Param *add_param(ResNet34 *m, const char *name, ParamKind kind, int ndim, int64_t d0,
                        int64_t d1, int64_t d2, int64_t d3) {
    if (m->nparams >= MAX_PARAMS) die("resnet34: too many parameters");
    Param *p = &m->params[m->nparams++];
    memset(p, 0, sizeof(*p));
    if (strlen(name) >= sizeof(p->name)) die("resnet34: parameter name '%s' too long", name);
    snprintf(p->name, sizeof(p->name), "%.63s", name);
    p->kind = kind;
    p->ndim = ndim;
    int64_t d[4] = {d0, d1, d2, d3};
    for (int i = 0; i < 4; i++) p->shape[i] = i < ndim ? d[i] : 0;
    p->value = m->be->tensor_new(m->be, (int)d0, ndim > 1 ? (int)d1 : 1, ndim > 2 ? (int)d2 : 1,
                                 ndim > 3 ? (int)d3 : 1);
    return p;
}

static void make_conv(ResNet34 *m, Conv *cv, const char *prefix, int k, int c, int r, int stride,
                      int pad, BN *bn) {
    cv->bn = bn;
    char name[96];
    snprintf(name, sizeof(name), "%.50s.weight", prefix);
    cv->w = add_param(m, name, PARAM_WEIGHT, 4, k, c, r, r);
    cv->stride = stride;
    cv->pad = pad;
}

static void make_bn(ResNet34 *m, BN *b, const char *prefix, int c) {
    static const char *suffix[4] = {"weight", "bias", "running_mean", "running_var"};
    Param *p[4];
    for (int i = 0; i < 4; i++) {
        char name[96];
        snprintf(name, sizeof(name), "%.50s.%s", prefix, suffix[i]);
        p[i] = add_param(m, name, i < 2 ? PARAM_WEIGHT : PARAM_BUFFER, 1, c, 0, 0, 0);
    }
    b->weight = p[0], b->bias = p[1], b->running_mean = p[2], b->running_var = p[3];
    memset(&b->bn, 0, sizeof(b->bn));
    b->bn.weight = p[0]->value;
    b->bn.bias = p[1]->value;
    b->bn.running_mean = p[2]->value;
    b->bn.running_var = p[3]->value;
    b->bn.save_mean = m->be->tensor_new(m->be, c, 1, 1, 1);
    b->bn.save_invstd = m->be->tensor_new(m->be, c, 1, 1, 1);
    b->bn.momentum = 0.1f;
    b->bn.eps = 1e-5f;
    b->bn.num_batches_tracked = 0;
    m->be->tensor_fill(p[0]->value, 1.0f);
    m->be->tensor_fill(p[3]->value, 1.0f);
}

ResNet34 *resnet34_create(Backend *be, int num_classes) {
    if (num_classes < 1 || num_classes > 1000000) die("resnet34_create: bad number of classes %d", num_classes);
    ResNet34 *m = xcalloc(1, sizeof(ResNet34));
    m->be = be;
    m->num_classes = num_classes;
    // The order of these calls is torchvision's state-dict order.
    make_conv(m, &m->conv1, "conv1", 64, 3, 7, 2, 3, &m->bn1);
    make_bn(m, &m->bn1, "bn1", 64);
    int cin = 64, bi = 0;
    for (int s = 0; s < 4; s++) {
        for (int j = 0; j < STAGE_BLOCKS[s]; j++, bi++) {
            Block *b = &m->blocks[bi];
            char pre[48], name[64];
            snprintf(pre, sizeof(pre), "layer%d.%d", s + 1, j);
            b->cin = cin;
            b->cout = STAGE_WIDTH[s];
            b->stride = (s > 0 && j == 0) ? 2 : 1;
            snprintf(name, sizeof(name), "%s.conv1", pre);
            make_conv(m, &b->conv1, name, b->cout, cin, 3, b->stride, 1, &b->bn1);
            snprintf(name, sizeof(name), "%s.bn1", pre);
            make_bn(m, &b->bn1, name, b->cout);
            snprintf(name, sizeof(name), "%s.conv2", pre);
            make_conv(m, &b->conv2, name, b->cout, b->cout, 3, 1, 1, &b->bn2);
            snprintf(name, sizeof(name), "%s.bn2", pre);
            make_bn(m, &b->bn2, name, b->cout);
            if (b->stride != 1 || cin != b->cout) {
                snprintf(name, sizeof(name), "%s.downsample.0", pre);
                make_conv(m, &b->ds, name, b->cout, cin, 1, b->stride, 0, &b->dsbn);
                snprintf(name, sizeof(name), "%s.downsample.1", pre);
                make_bn(m, &b->dsbn, name, b->cout);
            }
            cin = b->cout;
        }
    }
    m->fc_w = add_param(m, "fc.weight", PARAM_WEIGHT, 2, num_classes, RESNET34_FEATURES, 0, 0);
    m->fc_b = add_param(m, "fc.bias", PARAM_WEIGHT, 1, num_classes, 0, 0, 0);
    m->saved_from = UNIT_FC;
    const char *fused = getenv("PETS_FUSED");
    m->fused = !(fused && strcmp(fused, "0") == 0);
    m->version = 1;
    return m;
}

static void free_tensor(Backend *be, Tensor **t) {
    if (*t) be->tensor_free(*t);
    *t = NULL;
}

static void pool_clear(ResNet34 *m);

#define MAX_CONVS (1 + 3 * NUM_BLOCKS)

// Every convolution, in forward order (conv1, then per block conv1, conv2 and the downsample).
static int list_convs(ResNet34 *m, Conv **cv) {
    int n = 0;
    cv[n++] = &m->conv1;
    for (int i = 0; i < NUM_BLOCKS; i++) {
        cv[n++] = &m->blocks[i].conv1;
        cv[n++] = &m->blocks[i].conv2;
        if (m->blocks[i].ds.w) cv[n++] = &m->blocks[i].ds;
    }
    return n;
}

void resnet34_free(ResNet34 *m) {
    if (!m) return;
    Backend *be = m->be;
    pool_clear(m);
    free(m->pool);
    free_tensor(be, &m->x);
    free_tensor(be, &m->feat);
    free_tensor(be, &m->dfeat);
    free_tensor(be, &m->logits);
    free_tensor(be, &m->dlogits);
    for (int i = 0; i < m->nparams; i++) {
        Param *p = &m->params[i];
        free_tensor(be, &p->value);
        free_tensor(be, &p->grad);
        free_tensor(be, &p->adam_m);
        free_tensor(be, &p->adam_v);
    }
    // every batch norm follows exactly one convolution
    Conv *convs[MAX_CONVS];
    const int nc = list_convs(m, convs);
    for (int i = 0; i < nc; i++) {
        free_tensor(be, &convs[i]->fw);
        free_tensor(be, &convs[i]->fb);
        free_tensor(be, &convs[i]->bn->bn.save_mean);
        free_tensor(be, &convs[i]->bn->bn.save_invstd);
    }
    free(m);
}

int resnet34_num_classes(const ResNet34 *m) { return m->num_classes; }
int resnet34_num_params(const ResNet34 *m) { return m->nparams; }

Param *resnet34_param(ResNet34 *m, int i) {
    if (i < 0 || i >= m->nparams) die("resnet34_param: index %d outside [0, %d)", i, m->nparams);
    return &m->params[i];
}

Param *resnet34_find_param(ResNet34 *m, const char *name) {
    for (int i = 0; i < m->nparams; i++)
        if (strcmp(m->params[i].name, name) == 0) return &m->params[i];
    return NULL;
}

// The BatchNorm whose running_var Param is p (NULL if p is not one): num_batches_tracked lives
// in the BatchNorm, not in a Param, since it is an integer counter.
static BN *bn_of_running_var(ResNet34 *m, const Param *p) {
    if (m->bn1.running_var == p) return &m->bn1;
    for (int i = 0; i < NUM_BLOCKS; i++) {
        Block *b = &m->blocks[i];
        if (b->bn1.running_var == p) return &b->bn1;
        if (b->bn2.running_var == p) return &b->bn2;
        if (b->ds.w && b->dsbn.running_var == p) return &b->dsbn;
    }
    return NULL;
}

// The state-dict key of the num_batches_tracked counter beside running_var parameter p
// ("layer1.0.bn1.running_var" -> "layer1.0.bn1.num_batches_tracked").
static void nbt_key(const Param *p, char *key, size_t keylen) {
    snprintf(key, keylen, "%.*s.num_batches_tracked",
             (int)(strlen(p->name) - strlen(".running_var")), p->name);
}

// ----------------------------------------------------------------------------
// initialisation

static void upload_host(ResNet34 *m, Param *p, const float *v) { m->be->tensor_upload(p->value, v); }

static void init_fc(ResNet34 *m, Rng *r) {
    // nn.Linear.reset_parameters: kaiming_uniform_(a=sqrt(5)) gives U(-1/sqrt(fan_in), +), and
    // the bias U(-1/sqrt(fan_in), +) too.
    const double bound = 1.0 / sqrt((double)RESNET34_FEATURES);
    Param *ps[2] = {m->fc_w, m->fc_b};
    for (int j = 0; j < 2; j++) {
        size_t n = ps[j]->value->numel;
        float *v = xmalloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++) v[i] = (float)((2.0 * rng_uniform(r) - 1.0) * bound);
        upload_host(m, ps[j], v);
        free(v);
        if (ps[j]->adam_m) m->be->tensor_fill(ps[j]->adam_m, 0.0f);
        if (ps[j]->adam_v) m->be->tensor_fill(ps[j]->adam_v, 0.0f);
    }
}

void resnet34_params_changed(ResNet34 *m) { m->version++; }

void resnet34_set_fused(ResNet34 *m, int fused) { m->fused = fused; }

const char *resnet34_eval_path(const ResNet34 *m) {
    return m->fused && m->be->conv_bias_act_forward ? "fused" : "unfused";
}

void resnet34_init_random(ResNet34 *m, uint64_t seed) {
    m->version++;
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < m->nparams; i++) {
        Param *p = &m->params[i];
        if (p == m->fc_w || p == m->fc_b) continue;
        size_t n = p->value->numel;
        if (p->ndim == 4) {
            // kaiming_normal_(mode='fan_out', nonlinearity='relu'): std = sqrt(2 / (K R S))
            const double std = sqrt(2.0 / (double)(p->shape[0] * p->shape[2] * p->shape[3]));
            float *v = xmalloc(n * sizeof(float));
            for (size_t j = 0; j < n; j++) v[j] = (float)(rng_normal(&r) * std);
            upload_host(m, p, v);
            free(v);
        } else {
            // batch norm: weight 1, bias 0, running mean 0, running var 1
            const char *dot = strrchr(p->name, '.');
            float val = (strcmp(dot, ".weight") == 0 || strcmp(dot, ".running_var") == 0) ? 1.0f : 0.0f;
            m->be->tensor_fill(p->value, val);
            BN *bn = bn_of_running_var(m, p);
            if (bn) bn->bn.num_batches_tracked = 0;
        }
    }
    init_fc(m, &r);
}

void resnet34_reset_fc(ResNet34 *m, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    init_fc(m, &r);
}

// ----------------------------------------------------------------------------
// checkpoints

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { // subnormal: normalise
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400));
            bits = sign | (uint32_t)(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | man << 13;
    } else {
        bits = sign | (exp + 127 - 15) << 23 | man << 13;
    }
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

static int is_fc_key(const char *name) { return strncmp(name, "fc.", 3) == 0; }

int resnet34_load_state(ResNet34 *m, const StateDict *sd, int load_fc, char *err, size_t errlen) {
    char a[96], b[96];
    // 1. every key of the model is there, with the right shape and a float type
    for (int i = 0; i < m->nparams; i++) {
        Param *p = &m->params[i];
        if (!load_fc && is_fc_key(p->name)) continue;
        const PthTensor *t = sd_find(sd, p->name);
        shape_str(a, sizeof(a), p->ndim, p->shape);
        if (!t) return set_err(err, errlen, "checkpoint lacks key '%s' (the model expects shape %s)", p->name, a);
        shape_str(b, sizeof(b), t->ndim, t->shape);
        int same = t->ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++) same = t->shape[d] == p->shape[d];
        if (!same) {
            if (is_fc_key(p->name))
                return set_err(err, errlen,
                               "checkpoint key '%s' has shape %s but the model has %s: the checkpoint "
                               "has a head for a different number of classes (load it without its "
                               "fc layer, load_fc = 0, to start a new head)",
                               p->name, b, a);
            return set_err(err, errlen, "checkpoint key '%s' has shape %s but the model expects %s",
                           p->name, b, a);
        }
        if (t->dtype != PTH_F32 && t->dtype != PTH_F16 && t->dtype != PTH_F64)
            return set_err(err, errlen, "checkpoint key '%s' is not a floating-point tensor", p->name);
        if (t->numel != p->value->numel)
            return set_err(err, errlen, "checkpoint key '%s' holds %zu values, expected %zu", p->name,
                           t->numel, p->value->numel);
    }
    // 2. nothing unexpected: every key is a parameter, a num_batches_tracked, or an ignored fc.*
    for (int i = 0; i < sd->n; i++) {
        const PthTensor *t = &sd->t[i];
        if (!load_fc && is_fc_key(t->name)) continue;
        if (resnet34_find_param(m, t->name)) continue;
        const char *suffix = ".num_batches_tracked";
        size_t ln = strlen(t->name), ls = strlen(suffix);
        if (ln > ls && strcmp(t->name + ln - ls, suffix) == 0) {
            char rv[128];
            snprintf(rv, sizeof(rv), "%.*s.running_var", (int)(ln - ls), t->name);
            Param *p = resnet34_find_param(m, rv);
            if (p && bn_of_running_var(m, p)) {
                if (t->numel != 1 || (t->dtype != PTH_I64 && t->dtype != PTH_I32)) {
                    shape_str(b, sizeof(b), t->ndim, t->shape);
                    return set_err(err, errlen, "checkpoint key '%s' has shape %s: expected an "
                                   "integer scalar (shape [])", t->name, b);
                }
                continue;
            }
        }
        shape_str(b, sizeof(b), t->ndim, t->shape);
        return set_err(err, errlen, "checkpoint has unexpected key '%s' (shape %s): not part of "
                       "torchvision's resnet34", t->name, b);
    }
    // 3. copy (only now, so that a refused checkpoint leaves the model as it was)
    m->version++;
    for (int i = 0; i < m->nparams; i++) {
        Param *p = &m->params[i];
        if (!load_fc && is_fc_key(p->name)) continue;
        const PthTensor *t = sd_find(sd, p->name);
        float *v = xmalloc(t->numel * sizeof(float));
        for (size_t j = 0; j < t->numel; j++) {
            if (t->dtype == PTH_F32) v[j] = ((const float *)t->data)[j];
            else if (t->dtype == PTH_F64) v[j] = (float)((const double *)t->data)[j];
            else v[j] = half_to_float(((const uint16_t *)t->data)[j]);
        }
        upload_host(m, p, v);
        free(v);
        BN *bn = bn_of_running_var(m, p);
        if (bn) {
            char key[96];
            nbt_key(p, key, sizeof key);
            const PthTensor *nb = sd_find(sd, key);
            bn->bn.num_batches_tracked = 0;
            if (nb) bn->bn.num_batches_tracked = nb->dtype == PTH_I64 ? ((const int64_t *)nb->data)[0]
                                                                     : ((const int32_t *)nb->data)[0];
        }
    }
    return 0;
}

void resnet34_to_state(ResNet34 *m, StateDict *sd) {
    for (int i = 0; i < m->nparams; i++) {
        Param *p = &m->params[i];
        float *v = xmalloc(p->value->numel * sizeof(float));
        m->be->tensor_download(p->value, v);
        sd_add(sd, p->name, PTH_F32, p->ndim, p->shape, v);
        free(v);
        BN *bn = bn_of_running_var(m, p);
        if (bn) {
            char key[96];
            nbt_key(p, key, sizeof key);
            int64_t nbt = bn->bn.num_batches_tracked;
            sd_add(sd, key, PTH_I64, 0, NULL, &nbt);
        }
    }
}

// ----------------------------------------------------------------------------
// freezing

void resnet34_freeze_backbone(ResNet34 *m, int frozen) {
    for (int i = 0; i < m->nparams; i++) {
        Param *p = &m->params[i];
        if (p->kind != PARAM_WEIGHT || p == m->fc_w || p == m->fc_b) continue;
        p->frozen = frozen;
        if (frozen) free_tensor(m->be, &p->grad);
    }
}

static int trainable(const Param *p) { return p && p->kind == PARAM_WEIGHT && !p->frozen; }
static int bn_trainable(const BN *b) { return trainable(b->weight) || trainable(b->bias); }

static int unit_trainable(const ResNet34 *m, int u) {
    if (u == 0) return trainable(m->conv1.w) || bn_trainable(&m->bn1);
    if (u == UNIT_FC) return trainable(m->fc_w) || trainable(m->fc_b);
    const Block *b = &m->blocks[u - 1];
    return trainable(b->conv1.w) || bn_trainable(&b->bn1) || trainable(b->conv2.w) ||
           bn_trainable(&b->bn2) || (b->ds.w && (trainable(b->ds.w) || bn_trainable(&b->dsbn)));
}

// The lowest backbone unit with a trainable weight; UNIT_FC if the backbone is frozen.
static int lowest_trainable(const ResNet34 *m) {
    for (int u = 0; u < UNIT_FC; u++)
        if (unit_trainable(m, u)) return u;
    return UNIT_FC;
}

// Gradient tensors exist exactly for trainable weights (made on the first backward).
static void sync_grads(ResNet34 *m) {
    for (int i = 0; i < m->nparams; i++) {
        Param *p = &m->params[i];
        if (trainable(p) && !p->grad) {
            Tensor *v = p->value;
            p->grad = m->be->tensor_new(m->be, v->n, v->c, v->h, v->w);
        } else if (!trainable(p) && p->grad) {
            free_tensor(m->be, &p->grad);
        }
    }
}

// ----------------------------------------------------------------------------
// activation pool

static void pool_clear(ResNet34 *m) {
    for (int i = 0; i < m->npool; i++) m->be->tensor_free(m->pool[i].t);
    m->npool = 0;
}

static void pool_reset(ResNet34 *m) {
    for (int i = 0; i < m->npool; i++) m->pool[i].used = 0;
}

// A free pool tensor of shape (n, c, h, w), n <= pool_n: one of capacity pool_n viewing n samples.
static Tensor *pool_get(ResNet34 *m, int n, int c, int h, int w) {
    Tensor *t = NULL;
    for (int i = 0; i < m->npool && !t; i++) {
        Tensor *u = m->pool[i].t;
        if (!m->pool[i].used && u->c == c && u->h == h && u->w == w) {
            m->pool[i].used = 1;
            t = u;
        }
    }
    if (!t) {
        if (m->npool == m->cap_pool) {
            m->cap_pool = m->cap_pool ? 2 * m->cap_pool : 32;
            m->pool = xrealloc(m->pool, (size_t)m->cap_pool * sizeof(PoolEntry));
        }
        t = m->be->tensor_new(m->be, m->pool_n, c, h, w);
        m->pool[m->npool].t = t;
        m->pool[m->npool].used = 1;
        m->npool++;
    }
    if (t->n != n) m->be->tensor_set_batch(t, n);
    return t;
}

static Tensor *pool_like(ResNet34 *m, const Tensor *t) { return pool_get(m, t->n, t->c, t->h, t->w); }

static void pool_put(ResNet34 *m, Tensor *t) {
    if (!t) return;
    for (int i = 0; i < m->npool; i++) {
        if (m->pool[i].t == t) {
            if (!m->pool[i].used) die("resnet34: internal error: activation released twice");
            m->pool[i].used = 0;
            return;
        }
    }
    die("resnet34: internal error: releasing a tensor that is not an activation");
}

// ----------------------------------------------------------------------------
// forward

static int conv_out(int in, int k, int stride, int pad) { return (in + 2 * pad - k) / stride + 1; }

// The head's tensor *t of (head_n, c, 1, 1), made with capacity head_cap when missing.
static Tensor *head_tensor(ResNet34 *m, Tensor **t, int c) {
    if (!*t) *t = m->be->tensor_new(m->be, m->head_cap, c, 1, 1);
    if ((*t)->n != m->head_n) m->be->tensor_set_batch(*t, m->head_n);
    return *t;
}

static void head_alloc(ResNet34 *m, int n) {
    Backend *be = m->be;
    if (n > m->head_cap) {
        free_tensor(be, &m->feat);
        free_tensor(be, &m->dfeat);
        free_tensor(be, &m->logits);
        free_tensor(be, &m->dlogits);
        m->head_cap = n;
    }
    m->head_n = n;
    head_tensor(m, &m->feat, RESNET34_FEATURES);
    head_tensor(m, &m->logits, m->num_classes);
    if (m->dfeat) head_tensor(m, &m->dfeat, RESNET34_FEATURES);
    if (m->dlogits) head_tensor(m, &m->dlogits, m->num_classes);
}

static void block_forward(ResNet34 *m, Block *b, Tensor *a, int train, int keep) {
    Backend *be = m->be;
    const int n = a->n, ho = conv_out(a->h, 3, b->stride, 1), wo = conv_out(a->w, 3, b->stride, 1);
    b->a = a;
    // main path
    b->c1 = pool_get(m, n, b->cout, ho, wo);
    be->conv2d_forward(be, a, b->conv1.w->value, b->c1, b->stride, 1);
    b->b1 = pool_like(m, b->c1);
    be->batchnorm_forward(be, b->c1, &b->bn1.bn, b->b1, train);
    be->relu_forward(be, b->b1, b->b1);
    if (!keep) pool_put(m, b->c1), b->c1 = NULL;
    b->c2 = pool_like(m, b->b1);
    be->conv2d_forward(be, b->b1, b->conv2.w->value, b->c2, 1, 1);
    if (!keep) pool_put(m, b->b1), b->b1 = NULL;
    Tensor *t = pool_like(m, b->c2);  // bn2 out: consumed by the residual add
    be->batchnorm_forward(be, b->c2, &b->bn2.bn, t, train);
    if (!keep) pool_put(m, b->c2), b->c2 = NULL;
    // shortcut and residual add
    Tensor *shortcut = a, *e = NULL;
    if (b->ds.w) {
        b->dsc = pool_like(m, t);
        be->conv2d_forward(be, a, b->ds.w->value, b->dsc, b->stride, 0);
        e = pool_like(m, t);
        be->batchnorm_forward(be, b->dsc, &b->dsbn.bn, e, train);
        if (!keep) pool_put(m, b->dsc), b->dsc = NULL;
        shortcut = e;
    }
    b->out = pool_like(m, t);
    be->add_relu_forward(be, t, shortcut, b->out);
    pool_put(m, t);
    pool_put(m, e);
    if (!keep) pool_put(m, a), b->a = NULL;
}

// ----------------------------------------------------------------------------
// fused eval forward (see the top of the file)

// cv's folded weight and bias from its weight and its batch norm's running statistics, computed
// on the host with the same float arithmetic as an eval-mode batchnorm_forward:
// scale = gamma * (1 / sqrt(var + eps)), shift = beta - mean * scale.
static void fold_conv(ResNet34 *m, Conv *cv) {
    Backend *be = m->be;
    const Tensor *w = cv->w->value;
    const BatchNorm *bn = &cv->bn->bn;
    const int K = w->n;
    const size_t per = w->numel / (size_t)K;
    if (!cv->fw) {
        cv->fw = be->tensor_new(be, w->n, w->c, w->h, w->w);
        cv->fb = be->tensor_new(be, K, 1, 1, 1);
    }
    float *wv = xmalloc(w->numel * sizeof(float)), *st = xmalloc(4 * (size_t)K * sizeof(float));
    be->tensor_download(w, wv);
    const Tensor *parts[4] = {bn->weight, bn->bias, bn->running_mean, bn->running_var};
    for (int i = 0; i < 4; i++) be->tensor_download(parts[i], st + (size_t)i * K);
    float *gamma = st, *beta = st + K, *mean = st + 2 * K, *var = st + 3 * K;
    for (int k = 0; k < K; k++) {
        const float invstd = 1.0f / sqrtf(var[k] + bn->eps), scale = gamma[k] * invstd;
        for (size_t j = 0; j < per; j++) wv[(size_t)k * per + j] *= scale;
        beta[k] = beta[k] - mean[k] * scale; // the bias, written over beta
    }
    be->tensor_upload(cv->fw, wv);
    be->tensor_upload(cv->fb, beta);
    free(wv);
    free(st);
}

static void fold_all(ResNet34 *m) {
    if (m->folded_version == m->version) return;
    Conv *convs[MAX_CONVS];
    const int nc = list_convs(m, convs);
    for (int i = 0; i < nc; i++) fold_conv(m, convs[i]);
    m->folded_version = m->version;
}

static void forward_unfused(ResNet34 *m, int n, int hs, int ws, int hp, int wp, int bn_train,
                            int keep_from);

// conv(+bias+relu[+residual]) -> ... -> avgpool -> fc on the folded weights; keeps nothing.
// The input is in m->x; hs, ws: stem conv output size; hp, wp: after the max pool.
static void forward_eval_fused(ResNet34 *m, int n, int hs, int ws, int hp, int wp) {
    Backend *be = m->be;
    fold_all(m);
    Tensor *c0 = pool_get(m, n, 64, hs, ws);
    be->conv_bias_act_forward(be, m->x, m->conv1.fw, m->conv1.fb, NULL, c0, 2, 3, 1);
    Tensor *a = pool_get(m, n, 64, hp, wp);
    be->maxpool_forward(be, c0, a, 3, 2, 1);
    pool_put(m, c0);
    for (int i = 0; i < NUM_BLOCKS; i++) {
        Block *b = &m->blocks[i];
        const int ho = conv_out(a->h, 3, b->stride, 1), wo = conv_out(a->w, 3, b->stride, 1);
        Tensor *t = pool_get(m, n, b->cout, ho, wo); // relu(bn1(conv1(a)))
        be->conv_bias_act_forward(be, a, b->conv1.fw, b->conv1.fb, NULL, t, b->stride, 1, 1);
        Tensor *shortcut = a;
        if (b->ds.w) {
            shortcut = pool_like(m, t); // bn_ds(conv_ds(a))
            be->conv_bias_act_forward(be, a, b->ds.fw, b->ds.fb, NULL, shortcut, b->stride, 0, 0);
            pool_put(m, a);
        }
        // relu(bn2(conv2(t)) + shortcut), written over the shortcut
        be->conv_bias_act_forward(be, t, b->conv2.fw, b->conv2.fb, shortcut, shortcut, 1, 1, 1);
        pool_put(m, t);
        a = shortcut;
    }
    be->avgpool_forward(be, a, m->feat);
    pool_put(m, a);
    be->linear_forward(be, m->feat, m->fc_w->value, m->fc_b->value, m->logits);
    m->c0 = m->r0 = m->p0 = NULL;
    for (int i = 0; i < NUM_BLOCKS; i++) {
        Block *b = &m->blocks[i];
        b->a = b->c1 = b->b1 = b->c2 = b->dsc = b->out = NULL;
    }
}

void resnet34_forward(ResNet34 *m, const float *x, int n, int h, int w, int bn_train) {
    Backend *be = m->be;
    if (n < 1 || h < 1 || w < 1) die("resnet34_forward: bad batch shape (%d, 3, %d, %d)", n, h, w);
    // spatial sizes through the network: conv1 /2, maxpool /2, layer2..4 /2 each
    int hs = conv_out(h, 7, 2, 3), ws = conv_out(w, 7, 2, 3);
    int hp = hs >= 1 ? conv_out(hs, 3, 2, 1) : 0, wp = ws >= 1 ? conv_out(ws, 3, 2, 1) : 0;
    int h4 = hp, w4 = wp;
    for (int s = 1; s < 4; s++) h4 = h4 >= 1 ? conv_out(h4, 3, 2, 1) : 0, w4 = w4 >= 1 ? conv_out(w4, 3, 2, 1) : 0;
    if (hs < 1 || ws < 1 || hp < 1 || wp < 1 || h4 < 1 || w4 < 1)
        die("resnet34_forward: input %dx%d is too small for ResNet34", h, w);
    if (bn_train && (long)n * h4 * w4 < 2)
        die("resnet34_forward: batch norm in training mode needs more than one value per channel, "
            "but a batch of %d at %dx%d leaves %dx%d at layer4 (use a batch of 2 or more, or eval mode)",
            n, h, w, h4, w4);
    if (n > m->pool_n || h != m->pool_h || w != m->pool_w) {
        pool_clear(m);
        free_tensor(be, &m->x);
        m->x = be->tensor_new(be, n, 3, h, w);
        m->pool_n = n, m->pool_h = h, m->pool_w = w;
    }
    if (m->x->n != n) be->tensor_set_batch(m->x, n);
    pool_reset(m);
    head_alloc(m, n);
    // Units >= keep_from keep what backward reads: from the lowest trainable one, in train mode
    // (or in eval mode when asked for); an eval pass otherwise runs like torch.no_grad().
    const int keep_from = (bn_train || m->keep_eval) ? lowest_trainable(m) : UNIT_FC;

    be->tensor_upload(m->x, x);
    if (bn_train) m->version++; // the running statistics move
    if (!bn_train && !m->keep_eval && m->fused && be->conv_bias_act_forward) {
        forward_eval_fused(m, n, hs, ws, hp, wp);
    } else {
        forward_unfused(m, n, hs, ws, hp, wp, bn_train, keep_from);
    }
    m->have_forward = 1;
    m->saved_valid = 1;
    m->fwd_n = n;
    m->fwd_train = bn_train;
    m->saved_from = keep_from;
}

// The layer-by-layer forward (training, eval with activations kept, or the unfused eval path).
static void forward_unfused(ResNet34 *m, int n, int hs, int ws, int hp, int wp, int bn_train,
                            int keep_from) {
    Backend *be = m->be;
    // stem: conv1 7x7/2, bn1, relu, maxpool 3x3/2
    m->c0 = pool_get(m, n, 64, hs, ws);
    be->conv2d_forward(be, m->x, m->conv1.w->value, m->c0, 2, 3);
    m->r0 = pool_like(m, m->c0);
    be->batchnorm_forward(be, m->c0, &m->bn1.bn, m->r0, bn_train);
    be->relu_forward(be, m->r0, m->r0);
    m->p0 = pool_get(m, n, 64, hp, wp);
    be->maxpool_forward(be, m->r0, m->p0, 3, 2, 1);
    if (keep_from > 0) {
        pool_put(m, m->c0), pool_put(m, m->r0);
        m->c0 = m->r0 = NULL;
    }
    Tensor *a = m->p0;
    for (int i = 0; i < NUM_BLOCKS; i++) {
        block_forward(m, &m->blocks[i], a, bn_train, i + 1 >= keep_from);
        a = m->blocks[i].out;
    }
    be->avgpool_forward(be, a, m->feat);
    if (keep_from == UNIT_FC) pool_put(m, a), m->blocks[NUM_BLOCKS - 1].out = NULL;
    be->linear_forward(be, m->feat, m->fc_w->value, m->fc_b->value, m->logits);
}

void resnet34_keep_activations(ResNet34 *m, int keep) { m->keep_eval = keep; }

void resnet34_forward_head(ResNet34 *m, const float *features, int n) {
    if (n < 1) die("resnet34_forward_head: bad batch size %d", n);
    head_alloc(m, n);
    m->be->tensor_upload(m->feat, features);
    m->be->linear_forward(m->be, m->feat, m->fc_w->value, m->fc_b->value, m->logits);
    m->have_forward = 2;
    m->saved_valid = 1;
    m->fwd_n = n;
    m->fwd_train = 0;
    m->saved_from = UNIT_FC;
}

void resnet34_logits(ResNet34 *m, float *out) {
    if (!m->have_forward) die("resnet34_logits: no forward pass yet");
    m->be->tensor_download(m->logits, out);
}

void resnet34_features(ResNet34 *m, float *out) {
    if (!m->have_forward) die("resnet34_features: no forward pass yet");
    m->be->tensor_download(m->feat, out);
}

// ----------------------------------------------------------------------------
// backward

// Points a BatchNorm's gradient outputs at its trainable Params' gradients.
static void bn_bind_grads(BN *b) {
    b->bn.dweight = trainable(b->weight) ? b->weight->grad : NULL;
    b->bn.dbias = trainable(b->bias) ? b->bias->grad : NULL;
}

static Tensor *wgrad(const Conv *cv) { return trainable(cv->w) ? cv->w->grad : NULL; }

// Backward of one block. g: gradient of the block's output (a pool tensor, consumed).
// need_in: whether the gradient of the block's input is wanted; returns it (a pool tensor) or NULL.
static Tensor *block_backward(ResNet34 *m, Block *b, Tensor *g, int need_in, int train) {
    Backend *be = m->be;
    // g <- d(bn2 out + shortcut), through the final relu
    be->relu_backward(be, b->out, g, g);
    pool_put(m, b->out), b->out = NULL;

    // main path: bn2 <- conv2 <- relu <- bn1 <- conv1
    Tensor *da = NULL;
    const int need_c1 = need_in || trainable(b->conv1.w);
    const int need_b1 = need_c1 || bn_trainable(&b->bn1);
    const int need_c2 = need_b1 || trainable(b->conv2.w);
    bn_bind_grads(&b->bn2);
    Tensor *dc2 = need_c2 ? pool_like(m, g) : NULL;
    if (dc2 || bn_trainable(&b->bn2)) be->batchnorm_backward(be, b->c2, &b->bn2.bn, g, dc2, train);
    pool_put(m, b->c2), b->c2 = NULL;
    if (need_c2) {
        Tensor *db1 = need_b1 ? pool_like(m, g) : NULL;
        be->conv2d_backward(be, b->b1, b->conv2.w->value, dc2, db1, wgrad(&b->conv2), 1, 1);
        pool_put(m, dc2);
        if (need_b1) {
            be->relu_backward(be, b->b1, db1, db1);
            pool_put(m, b->b1), b->b1 = NULL;
            bn_bind_grads(&b->bn1);
            Tensor *dc1 = need_c1 ? pool_like(m, g) : NULL;
            be->batchnorm_backward(be, b->c1, &b->bn1.bn, db1, dc1, train);
            pool_put(m, db1);
            pool_put(m, b->c1), b->c1 = NULL;
            if (need_c1) {
                da = need_in ? pool_like(m, b->a) : NULL;
                be->conv2d_backward(be, b->a, b->conv1.w->value, dc1, da, wgrad(&b->conv1), b->stride, 1);
                pool_put(m, dc1);
            }
        }
    }
    pool_put(m, b->b1), b->b1 = NULL;
    pool_put(m, b->c1), b->c1 = NULL;

    // shortcut
    if (b->ds.w) {
        const int need_dsc = need_in || trainable(b->ds.w);
        bn_bind_grads(&b->dsbn);
        Tensor *ddsc = need_dsc ? pool_like(m, g) : NULL;
        if (ddsc || bn_trainable(&b->dsbn)) be->batchnorm_backward(be, b->dsc, &b->dsbn.bn, g, ddsc, train);
        pool_put(m, b->dsc), b->dsc = NULL;
        if (need_dsc) {
            Tensor *dda = need_in ? pool_like(m, b->a) : NULL;
            be->conv2d_backward(be, b->a, b->ds.w->value, ddsc, dda, wgrad(&b->ds), b->stride, 0);
            pool_put(m, ddsc);
            if (need_in) {
                be->add_forward(be, da, dda, da);
                pool_put(m, dda);
            }
        }
    } else if (need_in) {
        be->add_forward(be, da, g, da);
    }
    pool_put(m, g);
    return da;
}

static void network_backward(ResNet34 *m) {
    Backend *be = m->be;
    if (!be->add_forward) die("resnet34: backend '%s' lacks add_forward, needed by backward", be->name);
    sync_grads(m);
    const int lowest = lowest_trainable(m), train = m->fwd_train;
    if (lowest < m->saved_from) {
        if (m->have_forward == 2)
            die("resnet34: backward through the backbone after resnet34_forward_head: a forward "
                "over images is needed when backbone weights are trainable");
        if (!m->fwd_train && !m->keep_eval)
            die("resnet34: backward through trainable backbone weights after an eval-mode forward, "
                "which keeps no activations; call resnet34_keep_activations(m, 1) before the "
                "forward to train in eval mode");
        die("resnet34: weights were unfrozen between forward and backward; run the forward "
            "again after changing what is frozen");
    }
    // fc: logits = feat fc_w^T + fc_b
    Tensor *dfeat = NULL;
    if (lowest < UNIT_FC) {
        dfeat = head_tensor(m, &m->dfeat, RESNET34_FEATURES);
    }
    Tensor *dw = trainable(m->fc_w) ? m->fc_w->grad : NULL, *db = trainable(m->fc_b) ? m->fc_b->grad : NULL;
    if (dfeat || dw || db) be->linear_backward(be, m->feat, m->fc_w->value, m->dlogits, dfeat, dw, db);
    if (lowest == UNIT_FC) return;

    // avgpool, then the blocks top-down
    Block *last = &m->blocks[NUM_BLOCKS - 1];
    Tensor *g = pool_like(m, last->out);
    be->avgpool_backward(be, dfeat, g);
    for (int i = NUM_BLOCKS - 1; i >= 0 && i + 1 >= lowest; i--)
        g = block_backward(m, &m->blocks[i], g, lowest < i + 1, train);
    if (lowest > 0) return;

    // stem: maxpool <- relu <- bn1 <- conv1 (no gradient for the input image)
    Tensor *dr0 = pool_like(m, m->r0);
    be->maxpool_backward(be, m->r0, g, dr0, 3, 2, 1);
    pool_put(m, g);
    pool_put(m, m->p0), m->p0 = NULL;
    be->relu_backward(be, m->r0, dr0, dr0);
    pool_put(m, m->r0), m->r0 = NULL;
    bn_bind_grads(&m->bn1);
    Tensor *dc0 = trainable(m->conv1.w) ? pool_like(m, m->c0) : NULL;
    be->batchnorm_backward(be, m->c0, &m->bn1.bn, dr0, dc0, train);
    pool_put(m, dr0);
    pool_put(m, m->c0), m->c0 = NULL;
    if (dc0) {
        be->conv2d_backward(be, m->x, m->conv1.w->value, dc0, NULL, m->conv1.w->grad, 2, 3);
        pool_put(m, dc0);
    }
}

double resnet34_loss(ResNet34 *m, const int *labels, int mean, int backward, float loss_scale,
                     int *correct) {
    Backend *be = m->be;
    if (!m->have_forward) die("resnet34_loss: no forward pass yet");
    const int n = m->fwd_n, k = m->num_classes;
    for (int i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= k)
            die("resnet34_loss: label %d of sample %d is outside [0, %d)", labels[i], i, k);
    if (correct) {
        float *lg = xmalloc((size_t)n * k * sizeof(float));
        be->tensor_download(m->logits, lg);
        int c = 0;
        for (int i = 0; i < n; i++) {
            int best = 0;
            for (int j = 1; j < k; j++)
                if (lg[(size_t)i * k + j] > lg[(size_t)i * k + best]) best = j;
            c += best == labels[i];
        }
        free(lg);
        *correct = c;
    }
    if (!backward) return be->cross_entropy_forward_backward(be, m->logits, labels, NULL, 1.0f);
    if (!m->saved_valid)
        die("resnet34_loss: backward twice after one forward (the activations were consumed by "
            "the first backward); run the forward again");
    head_tensor(m, &m->dlogits, k);
    const float scale = mean ? loss_scale / (float)n : loss_scale;
    double loss = be->cross_entropy_forward_backward(be, m->logits, labels, m->dlogits, scale);
    network_backward(m);
    m->saved_valid = 0; // backward handed the saved activations back to the pool
    return loss;
}

int resnet34_grads_nonfinite(ResNet34 *m) {
    Tensor *grads[MAX_PARAMS];
    int n = 0;
    for (int i = 0; i < m->nparams; i++) {
        Param *p = &m->params[i];
        if (trainable(p) && p->grad) grads[n++] = p->grad;
    }
    return n ? m->be->tensors_nonfinite(m->be, grads, n) : 0; // one host synchronisation
}
