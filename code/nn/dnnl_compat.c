// dnnl_compat.c: the oneDNN 2.x and 3.x versions of the calls in dnnl_compat.h; the preprocessor
// keeps the one that matches the installed headers (DNNL_VERSION_MAJOR).
#include "nn/dnnl_compat.h"

#include <string.h>

// ----------------------------------------------------------------------------
// memory descriptors

#if DNNL_VERSION_MAJOR >= 3
#define MD_INIT(md, dims, tag) dnnl_memory_desc_create_with_tag(md, 4, dims, dnnl_f32, tag)
#else
#define MD_INIT(md, dims, tag) dnnl_memory_desc_init_by_tag(md, 4, dims, dnnl_f32, tag)
#endif

dnnl_status_t dnnlc_conv_mds_init(DnnlConvMds *m, const dnnl_dims_t x, const dnnl_dims_t w,
                                  const dnnl_dims_t y) {
    memset(m, 0, sizeof *m);
    dnnl_status_t st;
    if ((st = MD_INIT(&m->ux, x, dnnl_nchw)) != dnnl_success ||
        (st = MD_INIT(&m->uw, w, dnnl_oihw)) != dnnl_success ||
        (st = MD_INIT(&m->uy, y, dnnl_nchw)) != dnnl_success ||
        (st = MD_INIT(&m->ax, x, dnnl_format_tag_any)) != dnnl_success ||
        (st = MD_INIT(&m->aw, w, dnnl_format_tag_any)) != dnnl_success ||
        (st = MD_INIT(&m->ay, y, dnnl_format_tag_any)) != dnnl_success)
        dnnlc_conv_mds_free(m);
    return st;
}

void dnnlc_conv_mds_free(DnnlConvMds *m) {
#if DNNL_VERSION_MAJOR >= 3
    dnnl_memory_desc_t *all[6] = {&m->ux, &m->uw, &m->uy, &m->ax, &m->aw, &m->ay};
    for (int i = 0; i < 6; i++)
        if (*all[i]) dnnl_memory_desc_destroy(*all[i]);
#endif
    memset(m, 0, sizeof *m);
}

// ----------------------------------------------------------------------------
// convolution primitive descriptors

#if DNNL_VERSION_MAJOR >= 3

dnnl_status_t dnnlc_conv_forward_pd(dnnl_primitive_desc_t *pd, dnnl_engine_t eng,
                                    const DnnlConvMds *m, int stride, int pad) {
    dnnl_dims_t strides = {stride, stride}, dil = {0, 0}, p = {pad, pad};
    return dnnl_convolution_forward_primitive_desc_create(
        pd, eng, dnnl_forward_training, dnnl_convolution_direct, m->ax, m->aw, NULL, m->ay,
        strides, dil, p, p, NULL);
}

dnnl_status_t dnnlc_conv_backward_pds(dnnl_primitive_desc_t *data, dnnl_primitive_desc_t *weights,
                                      dnnl_engine_t eng, const DnnlConvMds *m, int stride, int pad,
                                      const_dnnl_primitive_desc_t hint) {
    dnnl_dims_t strides = {stride, stride}, dil = {0, 0}, p = {pad, pad};
    dnnl_status_t st = dnnl_convolution_backward_data_primitive_desc_create(
        data, eng, dnnl_convolution_direct, m->ax, m->aw, m->ay, strides, dil, p, p, hint, NULL);
    if (st != dnnl_success) return st;
    return dnnl_convolution_backward_weights_primitive_desc_create(
        weights, eng, dnnl_convolution_direct, m->ax, m->aw, NULL, m->ay, strides, dil, p, p, hint,
        NULL);
}

#else // oneDNN 2.x: an operation descriptor, then the primitive descriptor

static dnnl_status_t pd_of(dnnl_status_t init, const dnnl_convolution_desc_t *d,
                           dnnl_primitive_desc_t *pd, dnnl_engine_t eng,
                           const_dnnl_primitive_desc_t hint) {
    return init != dnnl_success ? init : dnnl_primitive_desc_create(pd, d, NULL, eng, hint);
}

dnnl_status_t dnnlc_conv_forward_pd(dnnl_primitive_desc_t *pd, dnnl_engine_t eng,
                                    const DnnlConvMds *m, int stride, int pad) {
    dnnl_dims_t strides = {stride, stride}, p = {pad, pad};
    dnnl_convolution_desc_t d;
    return pd_of(dnnl_convolution_forward_desc_init(&d, dnnl_forward_training,
                                                    dnnl_convolution_direct, &m->ax, &m->aw, NULL,
                                                    &m->ay, strides, p, p),
                 &d, pd, eng, NULL);
}

dnnl_status_t dnnlc_conv_backward_pds(dnnl_primitive_desc_t *data, dnnl_primitive_desc_t *weights,
                                      dnnl_engine_t eng, const DnnlConvMds *m, int stride, int pad,
                                      const_dnnl_primitive_desc_t hint) {
    dnnl_dims_t strides = {stride, stride}, p = {pad, pad};
    dnnl_convolution_desc_t d;
    dnnl_status_t st = pd_of(dnnl_convolution_backward_data_desc_init(
                                 &d, dnnl_convolution_direct, &m->ax, &m->aw, &m->ay, strides, p, p),
                             &d, data, eng, hint);
    if (st != dnnl_success) return st;
    return pd_of(dnnl_convolution_backward_weights_desc_init(&d, dnnl_convolution_direct, &m->ax,
                                                             &m->aw, NULL, &m->ay, strides, p, p),
                 &d, weights, eng, hint);
}

#endif

// ----------------------------------------------------------------------------
// fused inference convolutions

#if DNNL_VERSION_MAJOR >= 3
dnnl_status_t dnnlc_md_init(dnnl_memory_desc_t *md, int ndims, const dnnl_dims_t dims,
                            dnnl_format_tag_t tag) {
    *md = NULL;
    return dnnl_memory_desc_create_with_tag(md, ndims, dims, dnnl_f32, tag);
}

void dnnlc_md_free(dnnl_memory_desc_t *md) {
    if (*md) dnnl_memory_desc_destroy(*md);
    *md = NULL;
}
#else
dnnl_status_t dnnlc_md_init(dnnl_memory_desc_t *md, int ndims, const dnnl_dims_t dims,
                            dnnl_format_tag_t tag) {
    memset(md, 0, sizeof *md);
    return dnnl_memory_desc_init_by_tag(md, ndims, dims, dnnl_f32, tag);
}

void dnnlc_md_free(dnnl_memory_desc_t *md) { memset(md, 0, sizeof *md); }
#endif

dnnl_status_t dnnlc_attr_sum_relu(dnnl_primitive_attr_t *attr, int sum, int relu) {
    *attr = NULL;
    if (!sum && !relu) return dnnl_success;
    dnnl_post_ops_t ops;
    dnnl_status_t st = dnnl_post_ops_create(&ops);
    if (st != dnnl_success) return st;
#if DNNL_VERSION_MAJOR >= 3
    if (sum) st = dnnl_post_ops_append_sum(ops, 1.0f, 0, dnnl_data_type_undef);
    if (st == dnnl_success && relu)
        st = dnnl_post_ops_append_eltwise(ops, dnnl_eltwise_relu, 0.0f, 0.0f);
#else
    if (sum) st = dnnl_post_ops_append_sum(ops, 1.0f);
    if (st == dnnl_success && relu)
        st = dnnl_post_ops_append_eltwise(ops, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f);
#endif
    if (st == dnnl_success) st = dnnl_primitive_attr_create(attr);
    if (st == dnnl_success) st = dnnl_primitive_attr_set_post_ops(*attr, ops);
    dnnl_post_ops_destroy(ops);
    if (st != dnnl_success && *attr) dnnl_primitive_attr_destroy(*attr), *attr = NULL;
    return st;
}

dnnl_status_t dnnlc_conv_inference_pd(dnnl_primitive_desc_t *pd, dnnl_engine_t eng, DnnlMd src,
                                      DnnlMd wei, DnnlMd bias, DnnlMd dst, int stride, int pad,
                                      const_dnnl_primitive_attr_t attr) {
    dnnl_dims_t strides = {stride, stride}, p = {pad, pad};
#if DNNL_VERSION_MAJOR >= 3
    dnnl_dims_t dil = {0, 0};
    return dnnl_convolution_forward_primitive_desc_create(pd, eng, dnnl_forward_inference,
                                                          dnnl_convolution_direct, src, wei, bias,
                                                          dst, strides, dil, p, p, attr);
#else
    dnnl_convolution_desc_t d;
    dnnl_status_t st = dnnl_convolution_forward_desc_init(&d, dnnl_forward_inference,
                                                          dnnl_convolution_direct, src, wei, bias,
                                                          dst, strides, p, p);
    return st != dnnl_success ? st : dnnl_primitive_desc_create(pd, &d, attr, eng, NULL);
#endif
}
