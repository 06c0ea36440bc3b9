// cpu_conv_dnnl.c: oneDNN convolutions behind plain NCHW buffers (see cpu_conv_dnnl.h).
//
// For each shape we build, once, a "plan": the forward primitive with every memory format left
// to oneDNN ("any", which on AVX-512 picks nChw16c activations and OIhw16i16o-style weights), the
// two backward primitives created with the forward one as hint, and the reorders between the user
// layouts (NCHW activations, OIHW = PyTorch's (K, C, R, S) weights) and the primitives' layouts.
// A reorder whose two layouts are equal is skipped (e.g. the 3-channel input of conv1, which the
// kernels read as NCHW). Reordered copies live in scratch buffers owned by the CpuConv, grown to
// the largest shape seen and reused by every call. The calls whose API differs between oneDNN 2
// and 3 (memory descriptors, convolution descriptors) go through dnnl_compat.h.
#include "nn/cpu_conv_dnnl.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "nn/dnnl_compat.h"

#define MAX_PLANS 64
// A forward whose reordered input or output would need more scratch than this runs on
// sub-batches (both NCHW and the blocked layouts keep each image contiguous), so conv1's
// (32, 64, 112, 112) output never needs a 103 MB blocked copy; 32 MB chunks also stay in L3.
#define CHUNK_BYTES ((size_t)32 << 20)

// ----------------------------------------------------------------------------
// errors and scratch buffers

#define DNNL_CHECK(call, sh)                                                                       \
    do {                                                                                           \
        dnnl_status_t st_ = (call);                                                                \
        if (st_ != dnnl_success) dnnl_fail(#call, st_, sh);                                        \
    } while (0)

__attribute__((noreturn)) static void dnnl_fail(const char *what, dnnl_status_t st,
                                                const ConvShape *sh) {
    if (sh)
        die("cpu_conv_dnnl.c: oneDNN call %s failed (status %d) for the convolution x (%d, %d, %d, "
            "%d), w (%d, %d, %d, %d), stride %d, pad %d; run with PETS_CPU_REFERENCE=1 to use the "
            "reference kernels instead",
            what, (int)st, sh->n, sh->c, sh->h, sh->w, sh->k, sh->c, sh->r, sh->s, sh->stride,
            sh->pad);
    die("cpu_conv_dnnl.c: oneDNN call %s failed (status %d); is oneDNN (Debian's libdnnl-dev) "
        "installed and working?",
        what, (int)st);
}

typedef struct {
    void *p;
    size_t cap;
} Buf;

static void *buf_get(Buf *b, size_t bytes) {
    if (bytes > b->cap) {
        free(b->p);
        size_t cap = (bytes + 4095) & ~(size_t)4095;
        b->p = aligned_alloc(64, cap);
        if (!b->p) die("cpu_conv_dnnl.c: out of memory allocating a %zu-byte scratch buffer", cap);
        b->cap = cap;
    }
    return b->p;
}

// ----------------------------------------------------------------------------
// plans

typedef struct {
    dnnl_primitive_t prim; // NULL: the two layouts are the same, no copy needed
    dnnl_memory_t from, to;
    size_t bytes;          // size of the primitive-side buffer
} Reorder;

typedef struct {
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
} Stage;

typedef struct {
    ConvShape sh;
    unsigned long last_use;
    Stage fwd, bwd_d, bwd_w;
    dnnl_memory_t m_src, m_wei, m_dst;         // forward arguments, handles set per call
    dnnl_memory_t m_dsrc, m_bwei, m_ddst;      // backward data
    dnnl_memory_t m_wsrc, m_dwei, m_wddst;     // backward weights
    Reorder x_in, w_in, y_out;                 // forward
    Reorder dy_in, wd_in, dx_out;              // backward data
    Reorder xw_in, dyw_in, dw_out;             // backward weights
    int dyw_same;                              // bwd_w reads dy in bwd_d's layout
    int have_bwd;
} Plan;

// A fused forward_inference convolution (bias, optional sum and relu post-ops) for one shape and
// choice of layouts.
typedef struct {
    ConvShape sh;
    int x_blocked, y_blocked, sum, relu;
    int w_fixed;              // the primitive reads weights in wei_tag() (else: reordered per call)
    unsigned long last_use;
    Stage fwd;
    dnnl_memory_t m_src, m_wei, m_bias, m_dst;
    Reorder w_in;
} FusedPlan;

// A reorder between NCHW and the blocked layout for one shape and direction.
typedef struct {
    int n, c, h, w, to_blocked, weights;
    Reorder r;
} Relayout;

#define MAX_RELAYOUTS 32

struct CpuConv {
    int threads;
    int block;                 // 8 or 16: the channel block of the fused path's layout
    FusedPlan *fplans[MAX_PLANS];
    int nfplans;
    Relayout relayouts[MAX_RELAYOUTS];
    int nrelayouts;
    Buf brel;                  // relayout scratch
    dnnl_engine_t eng;
    dnnl_stream_t stream;
    Plan *plans[MAX_PLANS];
    int nplans;
    unsigned long tick;
    Buf bx, by, by2, bw, bdw; // scratch: x-shaped, y-shaped (twice), weights, weight gradient
};

static int shape_eq(const ConvShape *a, const ConvShape *b) {
    return a->n == b->n && a->c == b->c && a->h == b->h && a->w == b->w && a->k == b->k &&
           a->r == b->r && a->s == b->s && a->p == b->p && a->q == b->q &&
           a->stride == b->stride && a->pad == b->pad;
}

static dnnl_memory_t mem_none(CpuConv *cc, DnnlMd md, const ConvShape *sh) {
    dnnl_memory_t m;
    DNNL_CHECK(dnnl_memory_create(&m, md, cc->eng, DNNL_MEMORY_NONE), sh);
    return m;
}

static void reorder_init(CpuConv *cc, Reorder *r, DnnlMd from, DnnlMd to, const ConvShape *sh) {
    memset(r, 0, sizeof *r);
    if (dnnl_memory_desc_equal(from, to)) return;
    dnnl_primitive_desc_t pd;
    DNNL_CHECK(dnnl_reorder_primitive_desc_create(&pd, from, cc->eng, to, cc->eng, NULL), sh);
    DNNL_CHECK(dnnl_primitive_create(&r->prim, pd), sh);
    dnnl_primitive_desc_destroy(pd);
    r->from = mem_none(cc, from, sh);
    r->to = mem_none(cc, to, sh);
    r->bytes = dnnl_memory_desc_get_size(to);
}

static void reorder_free(Reorder *r) {
    if (!r->prim) return;
    dnnl_primitive_destroy(r->prim);
    dnnl_memory_destroy(r->from);
    dnnl_memory_destroy(r->to);
}

static void reorder_run(CpuConv *cc, Reorder *r, const void *from, void *to, const ConvShape *sh) {
    DNNL_CHECK(dnnl_memory_set_data_handle(r->from, (void *)from), sh);
    DNNL_CHECK(dnnl_memory_set_data_handle(r->to, to), sh);
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, r->from}, {DNNL_ARG_TO, r->to}};
    DNNL_CHECK(dnnl_primitive_execute(r->prim, cc->stream, 2, args), sh);
}

// User data -> primitive layout: the user pointer itself, or a scratch copy.
static void *stage_in(CpuConv *cc, Reorder *r, const float *user, Buf *b, const ConvShape *sh) {
    if (!r->prim) return (void *)user;
    void *dst = buf_get(b, r->bytes);
    reorder_run(cc, r, user, dst, sh);
    return dst;
}

// Where a primitive writes an output: the user buffer itself, or scratch reordered afterwards.
static void *out_buf(Reorder *r, float *user, Buf *b) {
    return r->prim ? buf_get(b, r->bytes) : (void *)user;
}

// An output reorder goes primitive layout -> user layout; its scratch has the primitive's size.
static void reorder_init_out(CpuConv *cc, Reorder *r, DnnlMd prim_md, DnnlMd user_md,
                             const ConvShape *sh) {
    reorder_init(cc, r, prim_md, user_md, sh);
    if (r->prim) r->bytes = dnnl_memory_desc_get_size(prim_md);
}

// The user (NCHW, OIHW) and "any" memory descriptors of a shape; dnnlc_conv_mds_free after use.
static void conv_mds(const ConvShape *sh, DnnlConvMds *m) {
    dnnl_dims_t xd = {sh->n, sh->c, sh->h, sh->w}, wd = {sh->k, sh->c, sh->r, sh->s},
                yd = {sh->n, sh->k, sh->p, sh->q};
    DNNL_CHECK(dnnlc_conv_mds_init(m, xd, wd, yd), sh);
}

static DnnlMd pd_md(dnnl_primitive_desc_t pd, dnnl_query_t what) {
    return dnnl_primitive_desc_query_md(pd, what, 0);
}

static void plan_build_fwd(CpuConv *cc, Plan *pl) {
    const ConvShape *sh = &pl->sh;
    DnnlConvMds m;
    conv_mds(sh, &m);
    DNNL_CHECK(dnnlc_conv_forward_pd(&pl->fwd.pd, cc->eng, &m, sh->stride, sh->pad), sh);
    DNNL_CHECK(dnnl_primitive_create(&pl->fwd.prim, pl->fwd.pd), sh);
    DnnlMd px = pd_md(pl->fwd.pd, dnnl_query_src_md), pw = pd_md(pl->fwd.pd, dnnl_query_weights_md),
           py = pd_md(pl->fwd.pd, dnnl_query_dst_md);
    pl->m_src = mem_none(cc, px, sh);
    pl->m_wei = mem_none(cc, pw, sh);
    pl->m_dst = mem_none(cc, py, sh);
    reorder_init(cc, &pl->x_in, dnnlc_md(&m.ux), px, sh);
    reorder_init(cc, &pl->w_in, dnnlc_md(&m.uw), pw, sh);
    reorder_init_out(cc, &pl->y_out, py, dnnlc_md(&m.uy), sh);
    dnnlc_conv_mds_free(&m);
}

static void plan_build_bwd(CpuConv *cc, Plan *pl) {
    const ConvShape *sh = &pl->sh;
    DnnlConvMds m;
    conv_mds(sh, &m);
    DNNL_CHECK(dnnlc_conv_backward_pds(&pl->bwd_d.pd, &pl->bwd_w.pd, cc->eng, &m, sh->stride,
                                       sh->pad, pl->fwd.pd), sh);
    DNNL_CHECK(dnnl_primitive_create(&pl->bwd_d.prim, pl->bwd_d.pd), sh);
    DNNL_CHECK(dnnl_primitive_create(&pl->bwd_w.prim, pl->bwd_w.pd), sh);

    DnnlMd dsrc = pd_md(pl->bwd_d.pd, dnnl_query_diff_src_md),
           bwei = pd_md(pl->bwd_d.pd, dnnl_query_weights_md),
           ddst = pd_md(pl->bwd_d.pd, dnnl_query_diff_dst_md),
           wsrc = pd_md(pl->bwd_w.pd, dnnl_query_src_md),
           dwei = pd_md(pl->bwd_w.pd, dnnl_query_diff_weights_md),
           wddst = pd_md(pl->bwd_w.pd, dnnl_query_diff_dst_md);
    pl->m_dsrc = mem_none(cc, dsrc, sh);
    pl->m_bwei = mem_none(cc, bwei, sh);
    pl->m_ddst = mem_none(cc, ddst, sh);
    pl->m_wsrc = mem_none(cc, wsrc, sh);
    pl->m_dwei = mem_none(cc, dwei, sh);
    pl->m_wddst = mem_none(cc, wddst, sh);
    DnnlMd ux = dnnlc_md(&m.ux), uw = dnnlc_md(&m.uw), uy = dnnlc_md(&m.uy);
    reorder_init(cc, &pl->dy_in, uy, ddst, sh);
    reorder_init(cc, &pl->wd_in, uw, bwei, sh);
    reorder_init_out(cc, &pl->dx_out, dsrc, ux, sh);
    reorder_init(cc, &pl->xw_in, ux, wsrc, sh);
    reorder_init(cc, &pl->dyw_in, uy, wddst, sh);
    reorder_init_out(cc, &pl->dw_out, dwei, uw, sh);
    pl->dyw_same = dnnl_memory_desc_equal(ddst, wddst);
    pl->have_bwd = 1;
    dnnlc_conv_mds_free(&m);
}

static void plan_free(Plan *pl) {
    Stage *stages[3] = {&pl->fwd, &pl->bwd_d, &pl->bwd_w};
    for (int i = 0; i < 3; i++) {
        if (stages[i]->prim) dnnl_primitive_destroy(stages[i]->prim);
        if (stages[i]->pd) dnnl_primitive_desc_destroy(stages[i]->pd);
    }
    dnnl_memory_t mems[9] = {pl->m_src, pl->m_wei, pl->m_dst, pl->m_dsrc, pl->m_bwei,
                             pl->m_ddst, pl->m_wsrc, pl->m_dwei, pl->m_wddst};
    for (int i = 0; i < 9; i++)
        if (mems[i]) dnnl_memory_destroy(mems[i]);
    Reorder *rs[9] = {&pl->x_in, &pl->w_in, &pl->y_out, &pl->dy_in, &pl->wd_in,
                      &pl->dx_out, &pl->xw_in, &pl->dyw_in, &pl->dw_out};
    for (int i = 0; i < 9; i++) reorder_free(rs[i]);
    free(pl);
}

static void shape_check(const ConvShape *sh) {
    if (sh->n <= 0 || sh->c <= 0 || sh->h <= 0 || sh->w <= 0 || sh->k <= 0 || sh->r <= 0 ||
        sh->s <= 0 || sh->stride <= 0 || sh->pad < 0 ||
        sh->p != (sh->h + 2 * sh->pad - sh->r) / sh->stride + 1 ||
        sh->q != (sh->w + 2 * sh->pad - sh->s) / sh->stride + 1)
        die("cpu_conv_dnnl.c: inconsistent convolution shapes: x (%d, %d, %d, %d), w (%d, %d, "
            "%d, %d), y (%d, %d, %d, %d), stride %d, pad %d",
            sh->n, sh->c, sh->h, sh->w, sh->k, sh->c, sh->r, sh->s, sh->n, sh->k, sh->p, sh->q,
            sh->stride, sh->pad);
}

static Plan *plan_get(CpuConv *cc, const ConvShape *sh, int need_bwd) {
    Plan *pl = NULL;
    for (int i = 0; i < cc->nplans; i++)
        if (shape_eq(&cc->plans[i]->sh, sh)) {
            pl = cc->plans[i];
            break;
        }
    if (!pl) {
        shape_check(sh);
        if (cc->nplans == MAX_PLANS) { // evict the least recently used plan
            int old = 0;
            for (int i = 1; i < cc->nplans; i++)
                if (cc->plans[i]->last_use < cc->plans[old]->last_use) old = i;
            plan_free(cc->plans[old]);
            cc->plans[old] = cc->plans[--cc->nplans];
        }
        pl = xcalloc(1, sizeof *pl);
        pl->sh = *sh;
        plan_build_fwd(cc, pl);
        cc->plans[cc->nplans++] = pl;
    }
    if (need_bwd && !pl->have_bwd) plan_build_bwd(cc, pl);
    pl->last_use = ++cc->tick;
    return pl;
}

// ----------------------------------------------------------------------------
// fused inference plans: forward_inference with bias, sum and relu post-ops, explicit layouts

static dnnl_format_tag_t act_tag(const CpuConv *cc, int blocked) {
    return !blocked ? dnnl_nchw : cc->block == 16 ? dnnl_nChw16c : dnnl_nChw8c;
}

// The blocked weight layout that matches act_tag's activations (what oneDNN's direct float32
// kernels read): OIhw8i8o / OIhw16i16o, or Ohwi8o / Ohwi16o when C is not a multiple of the block
// (conv1's 3 input channels). 0 (none) when K is not a multiple of the block (padded: a
// different size).
static dnnl_format_tag_t wei_tag(const CpuConv *cc, int k, int c) {
    if (k % cc->block) return dnnl_format_tag_undef;
    if (c % cc->block == 0) return cc->block == 16 ? dnnl_OIhw16i16o : dnnl_OIhw8i8o;
    return cc->block == 16 ? dnnl_Ohwi16o : dnnl_Ohwi8o;
}

static void fplan_free(FusedPlan *fp) {
    if (fp->fwd.prim) dnnl_primitive_destroy(fp->fwd.prim);
    if (fp->fwd.pd) dnnl_primitive_desc_destroy(fp->fwd.pd);
    dnnl_memory_t mems[4] = {fp->m_src, fp->m_wei, fp->m_bias, fp->m_dst};
    for (int i = 0; i < 4; i++)
        if (mems[i]) dnnl_memory_destroy(mems[i]);
    reorder_free(&fp->w_in);
    free(fp);
}

static void fplan_build(CpuConv *cc, FusedPlan *fp) {
    const ConvShape *sh = &fp->sh;
    dnnl_dims_t xd = {sh->n, sh->c, sh->h, sh->w}, wd = {sh->k, sh->c, sh->r, sh->s},
                yd = {sh->n, sh->k, sh->p, sh->q}, bd = {sh->k};
    dnnl_memory_desc_t mx, mw, muw, mb, my;
    DNNL_CHECK(dnnlc_md_init(&mx, 4, xd, act_tag(cc, fp->x_blocked)), sh);
    DNNL_CHECK(dnnlc_md_init(&mw, 4, wd, dnnl_format_tag_any), sh);
    DNNL_CHECK(dnnlc_md_init(&muw, 4, wd, dnnl_oihw), sh);
    DNNL_CHECK(dnnlc_md_init(&mb, 1, bd, dnnl_a), sh);
    DNNL_CHECK(dnnlc_md_init(&my, 4, yd, act_tag(cc, fp->y_blocked)), sh);
    dnnl_primitive_attr_t attr;
    DNNL_CHECK(dnnlc_attr_sum_relu(&attr, fp->sum, fp->relu), sh);
    // weights in the fixed blocked layout if the kernels take it (then the caller keeps them in
    // it from call to call); else in the layout oneDNN picks, reordered per call
    dnnl_format_tag_t wt = wei_tag(cc, sh->k, sh->c);
    dnnl_memory_desc_t mfw;
    if (wt != dnnl_format_tag_undef && dnnlc_md_init(&mfw, 4, wd, wt) == dnnl_success) {
        fp->w_fixed = dnnlc_conv_inference_pd(&fp->fwd.pd, cc->eng, dnnlc_md(&mx), dnnlc_md(&mfw),
                                              dnnlc_md(&mb), dnnlc_md(&my), sh->stride, sh->pad,
                                              attr) == dnnl_success;
        dnnlc_md_free(&mfw);
    }
    if (!fp->w_fixed)
        DNNL_CHECK(dnnlc_conv_inference_pd(&fp->fwd.pd, cc->eng, dnnlc_md(&mx), dnnlc_md(&mw),
                                           dnnlc_md(&mb), dnnlc_md(&my), sh->stride, sh->pad, attr),
                   sh);
    if (attr) dnnl_primitive_attr_destroy(attr);
    DNNL_CHECK(dnnl_primitive_create(&fp->fwd.prim, fp->fwd.pd), sh);
    DnnlMd pw = pd_md(fp->fwd.pd, dnnl_query_weights_md);
    fp->m_src = mem_none(cc, dnnlc_md(&mx), sh);
    fp->m_wei = mem_none(cc, pw, sh);
    fp->m_bias = mem_none(cc, dnnlc_md(&mb), sh);
    fp->m_dst = mem_none(cc, dnnlc_md(&my), sh);
    if (!fp->w_fixed) reorder_init(cc, &fp->w_in, dnnlc_md(&muw), pw, sh);
    dnnl_memory_desc_t *all[5] = {&mx, &mw, &muw, &mb, &my};
    for (int i = 0; i < 5; i++) dnnlc_md_free(all[i]);
}

static FusedPlan *fplan_get(CpuConv *cc, const ConvShape *sh, int x_blocked, int y_blocked,
                            int sum, int relu) {
    for (int i = 0; i < cc->nfplans; i++) {
        FusedPlan *fp = cc->fplans[i];
        if (shape_eq(&fp->sh, sh) && fp->x_blocked == x_blocked && fp->y_blocked == y_blocked &&
            fp->sum == sum && fp->relu == relu) {
            fp->last_use = ++cc->tick;
            return fp;
        }
    }
    shape_check(sh);
    if (cc->nfplans == MAX_PLANS) { // evict the least recently used plan
        int old = 0;
        for (int i = 1; i < cc->nfplans; i++)
            if (cc->fplans[i]->last_use < cc->fplans[old]->last_use) old = i;
        fplan_free(cc->fplans[old]);
        cc->fplans[old] = cc->fplans[--cc->nfplans];
    }
    FusedPlan *fp = xcalloc(1, sizeof *fp);
    fp->sh = *sh;
    fp->x_blocked = x_blocked, fp->y_blocked = y_blocked, fp->sum = sum, fp->relu = relu;
    fplan_build(cc, fp);
    fp->last_use = ++cc->tick;
    cc->fplans[cc->nfplans++] = fp;
    return fp;
}

// weights = 0: an activation (N, C, H, W) between nchw and act_tag; 1: a weight (K, C, R, S)
// between oihw and wei_tag.
static Reorder *relayout_get(CpuConv *cc, int n, int c, int h, int w, int to_blocked,
                             int weights) {
    for (int i = 0; i < cc->nrelayouts; i++) {
        Relayout *rl = &cc->relayouts[i];
        if (rl->n == n && rl->c == c && rl->h == h && rl->w == w && rl->to_blocked == to_blocked &&
            rl->weights == weights)
            return &rl->r;
    }
    if (cc->nrelayouts == MAX_RELAYOUTS) { // rare: drop them all
        for (int i = 0; i < cc->nrelayouts; i++) reorder_free(&cc->relayouts[i].r);
        cc->nrelayouts = 0;
    }
    Relayout *rl = &cc->relayouts[cc->nrelayouts++];
    rl->n = n, rl->c = c, rl->h = h, rl->w = w, rl->to_blocked = to_blocked, rl->weights = weights;
    dnnl_dims_t d = {n, c, h, w};
    dnnl_memory_desc_t plain, blocked;
    if (weights && wei_tag(cc, n, c) == dnnl_format_tag_undef)
        die("cpu_conv_dnnl.c: internal error: no blocked layout for weights (%d, %d, %d, %d)", n, c, h, w);
    DNNL_CHECK(dnnlc_md_init(&plain, 4, d, weights ? dnnl_oihw : dnnl_nchw), NULL);
    DNNL_CHECK(dnnlc_md_init(&blocked, 4, d, weights ? wei_tag(cc, n, c) : act_tag(cc, 1)), NULL);
    if (to_blocked) reorder_init(cc, &rl->r, dnnlc_md(&plain), dnnlc_md(&blocked), NULL);
    else reorder_init(cc, &rl->r, dnnlc_md(&blocked), dnnlc_md(&plain), NULL);
    dnnlc_md_free(&plain);
    dnnlc_md_free(&blocked);
    return &rl->r;
}

// ----------------------------------------------------------------------------
// public API

// oneDNN's OpenMP kernels run on the calling thread's OpenMP thread count (omp_get_max_threads()),
// both when a plan is built (the kernels are tuned to it) and when it runs: each public call sets
// this CpuConv's count and gives the caller's back at the end, leaving the caller's default alone.
static int threads_enter(const CpuConv *cc) {
    int saved = omp_get_max_threads();
    if (saved != cc->threads) omp_set_num_threads(cc->threads);
    return saved;
}

static void threads_leave(const CpuConv *cc, int saved) {
    if (saved != cc->threads) omp_set_num_threads(saved);
}

CpuConv *cpu_conv_create(int threads) {
    CpuConv *cc = xcalloc(1, sizeof *cc);
    cc->threads = threads > 0 ? threads : 1;
    DNNL_CHECK(dnnl_engine_create(&cc->eng, dnnl_cpu, 0), NULL);
    DNNL_CHECK(dnnl_stream_create(&cc->stream, cc->eng, dnnl_stream_default_flags), NULL);
    // the blocked layout oneDNN's float32 kernels use: 16 channels with AVX-512, else 8
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    cc->block = ((int)isa & (int)dnnl_cpu_isa_avx512_core) == (int)dnnl_cpu_isa_avx512_core ? 16 : 8;
    return cc;
}

void cpu_conv_free(CpuConv *cc) {
    if (!cc) return;
    for (int i = 0; i < cc->nplans; i++) plan_free(cc->plans[i]);
    for (int i = 0; i < cc->nfplans; i++) fplan_free(cc->fplans[i]);
    for (int i = 0; i < cc->nrelayouts; i++) reorder_free(&cc->relayouts[i].r);
    free(cc->brel.p);
    dnnl_stream_destroy(cc->stream);
    dnnl_engine_destroy(cc->eng);
    Buf *bufs[5] = {&cc->bx, &cc->by, &cc->by2, &cc->bw, &cc->bdw};
    for (int i = 0; i < 5; i++) free(bufs[i]->p);
    free(cc);
}

static void run3(CpuConv *cc, Stage *s, int a0, dnnl_memory_t m0, void *p0, int a1,
                 dnnl_memory_t m1, void *p1, int a2, dnnl_memory_t m2, void *p2,
                 const ConvShape *sh) {
    DNNL_CHECK(dnnl_memory_set_data_handle(m0, p0), sh);
    DNNL_CHECK(dnnl_memory_set_data_handle(m1, p1), sh);
    DNNL_CHECK(dnnl_memory_set_data_handle(m2, p2), sh);
    dnnl_exec_arg_t args[3] = {{a0, m0}, {a1, m1}, {a2, m2}};
    DNNL_CHECK(dnnl_primitive_execute(s->prim, cc->stream, 3, args), sh);
}

static void conv_forward(CpuConv *cc, const ConvShape *sh, const float *x, const float *w,
                         float *y) {
    Plan *pl = plan_get(cc, sh, 0);
    size_t big = pl->x_in.prim ? pl->x_in.bytes : 0;
    if (pl->y_out.prim && pl->y_out.bytes > big) big = pl->y_out.bytes;
    if (big > CHUNK_BYTES && sh->n > 1) {
        int chunks = (int)((big + CHUNK_BYTES - 1) / CHUNK_BYTES);
        if (chunks > sh->n) chunks = sh->n;
        int per = (sh->n + chunks - 1) / chunks;
        size_t xs = (size_t)sh->c * sh->h * sh->w, ys = (size_t)sh->k * sh->p * sh->q;
        for (int n0 = 0; n0 < sh->n; n0 += per) {
            ConvShape part = *sh;
            part.n = sh->n - n0 < per ? sh->n - n0 : per;
            conv_forward(cc, &part, x + n0 * xs, w, y + n0 * ys);
        }
        return;
    }
    void *px = stage_in(cc, &pl->x_in, x, &cc->bx, sh);
    void *pw = stage_in(cc, &pl->w_in, w, &cc->bw, sh);
    void *py = out_buf(&pl->y_out, y, &cc->by);
    run3(cc, &pl->fwd, DNNL_ARG_SRC, pl->m_src, px, DNNL_ARG_WEIGHTS, pl->m_wei, pw, DNNL_ARG_DST,
         pl->m_dst, py, sh);
    if (pl->y_out.prim) reorder_run(cc, &pl->y_out, py, y, sh);
    DNNL_CHECK(dnnl_stream_wait(cc->stream), sh);
}

void cpu_conv_forward(CpuConv *cc, const ConvShape *sh, const float *x, const float *w, float *y) {
    int saved = threads_enter(cc);
    conv_forward(cc, sh, x, w, y);
    threads_leave(cc, saved);
}

static void conv_backward(CpuConv *cc, const ConvShape *sh, const float *x, const float *w,
                          const float *dy, float *dx, float *dw) {
    Plan *pl = plan_get(cc, sh, 1);
    void *pdy = stage_in(cc, &pl->dy_in, dy, &cc->by, sh);
    if (dw) {
        void *pdyw = pl->dyw_same ? pdy : stage_in(cc, &pl->dyw_in, dy, &cc->by2, sh);
        void *px = stage_in(cc, &pl->xw_in, x, &cc->bx, sh);
        void *pdw = out_buf(&pl->dw_out, dw, &cc->bdw);
        run3(cc, &pl->bwd_w, DNNL_ARG_SRC, pl->m_wsrc, px, DNNL_ARG_DIFF_DST, pl->m_wddst, pdyw,
             DNNL_ARG_DIFF_WEIGHTS, pl->m_dwei, pdw, sh);
        if (pl->dw_out.prim) reorder_run(cc, &pl->dw_out, pdw, dw, sh);
    }
    if (dx) {
        void *pw = stage_in(cc, &pl->wd_in, w, &cc->bw, sh);
        void *pdx = out_buf(&pl->dx_out, dx, &cc->bx); // bwd_w is done with bx
        run3(cc, &pl->bwd_d, DNNL_ARG_DIFF_DST, pl->m_ddst, pdy, DNNL_ARG_WEIGHTS, pl->m_bwei, pw,
             DNNL_ARG_DIFF_SRC, pl->m_dsrc, pdx, sh);
        if (pl->dx_out.prim) reorder_run(cc, &pl->dx_out, pdx, dx, sh);
    }
    DNNL_CHECK(dnnl_stream_wait(cc->stream), sh);
}

void cpu_conv_backward(CpuConv *cc, const ConvShape *sh, const float *x, const float *w,
                       const float *dy, float *dx, float *dw) {
    if (!dx && !dw) return;
    int saved = threads_enter(cc);
    conv_backward(cc, sh, x, w, dy, dx, dw);
    threads_leave(cc, saved);
}

int cpu_conv_block(const CpuConv *cc) { return cc->block; }

int cpu_conv_fused_weights_blocked(CpuConv *cc, const ConvShape *sh, int x_blocked,
                                   int y_blocked, int sum, int relu) {
    int saved = threads_enter(cc);
    FusedPlan *fp = fplan_get(cc, sh, x_blocked, y_blocked, sum, relu);
    threads_leave(cc, saved);
    return fp->w_fixed;
}

void cpu_conv_fused_forward(CpuConv *cc, const ConvShape *sh, const float *x, int x_blocked,
                            const float *w, const float *bias, float *y, int y_blocked, int sum,
                            int relu) {
    int saved = threads_enter(cc);
    FusedPlan *fp = fplan_get(cc, sh, x_blocked, y_blocked, sum, relu);
    void *pw = fp->w_fixed ? (void *)w : stage_in(cc, &fp->w_in, w, &cc->bw, sh);
    DNNL_CHECK(dnnl_memory_set_data_handle(fp->m_src, (void *)x), sh);
    DNNL_CHECK(dnnl_memory_set_data_handle(fp->m_wei, pw), sh);
    DNNL_CHECK(dnnl_memory_set_data_handle(fp->m_bias, (void *)bias), sh);
    DNNL_CHECK(dnnl_memory_set_data_handle(fp->m_dst, y), sh);
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, fp->m_src}, {DNNL_ARG_WEIGHTS, fp->m_wei},
                               {DNNL_ARG_BIAS, fp->m_bias}, {DNNL_ARG_DST, fp->m_dst}};
    DNNL_CHECK(dnnl_primitive_execute(fp->fwd.prim, cc->stream, 4, args), sh);
    DNNL_CHECK(dnnl_stream_wait(cc->stream), sh);
    threads_leave(cc, saved);
}

void cpu_conv_relayout(CpuConv *cc, int n, int c, int h, int w, const float *src, float *dst,
                       int to_blocked, int weights) {
    int saved = threads_enter(cc);
    Reorder *r = relayout_get(cc, n, c, h, w, to_blocked, weights);
    if (r->prim) {
        size_t bytes = (size_t)n * c * h * w * sizeof(float);
        if (dst == src) {
            void *tmp = buf_get(&cc->brel, r->bytes);
            reorder_run(cc, r, src, tmp, NULL);
            DNNL_CHECK(dnnl_stream_wait(cc->stream), NULL);
            if (r->bytes != bytes) die("cpu_conv_dnnl.c: relayout of (%d, %d, %d, %d) changes its size", n, c, h, w);
            memcpy(dst, tmp, bytes);
        } else {
            reorder_run(cc, r, src, dst, NULL);
            DNNL_CHECK(dnnl_stream_wait(cc->stream), NULL);
        }
    } else if (dst != src) {
        memcpy(dst, src, (size_t)n * c * h * w * sizeof(float));
    }
    threads_leave(cc, saved);
}

const char *cpu_conv_impl(CpuConv *cc, const ConvShape *sh, int which) {
    int saved = threads_enter(cc);
    Plan *pl = plan_get(cc, sh, which > 0);
    threads_leave(cc, saved);
    dnnl_primitive_desc_t pd = which == 0 ? pl->fwd.pd : which == 1 ? pl->bwd_d.pd : pl->bwd_w.pd;
    const char *s = "?";
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s);
    return s;
}

const char *cpu_conv_onednn_version(void) {
    static char buf[48];
    const dnnl_version_t *v = dnnl_version();
    snprintf(buf, sizeof buf, "%d.%d.%d", v->major, v->minor, v->patch);
    return buf;
}

const char *cpu_conv_isa(int *native_bf16) {
    // the ISA values are cumulative bit masks: each includes the bits of those it extends
    static const struct {
        dnnl_cpu_isa_t isa;
        const char *name;
        int bf16;
    } known[] = {
        {dnnl_cpu_isa_avx512_core_amx, "avx512_core_amx", 1},
        {dnnl_cpu_isa_avx512_core_bf16, "avx512_core_bf16", 1},
        {dnnl_cpu_isa_avx512_core_vnni, "avx512_core_vnni", 0},
        {dnnl_cpu_isa_avx512_core, "avx512_core", 0},
        {dnnl_cpu_isa_avx2, "avx2", 0},
        {dnnl_cpu_isa_sse41, "sse41", 0},
    };
    const unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if ((isa & (unsigned)known[i].isa) == (unsigned)known[i].isa) {
            if (native_bf16) *native_bf16 = known[i].bf16;
            return known[i].name;
        }
    if (native_bf16) *native_bf16 = 0;
    return "unknown";
}
