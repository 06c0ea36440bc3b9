// dnnl_compat.h: the oneDNN calls whose C API differs between oneDNN 2 (Debian 12: 2.6) and
// oneDNN 3 (Debian 13: 3.7; Ubuntu 24.04: 3.1), chosen at compile time from DNNL_VERSION_MAJOR, so
// that cpu_conv_dnnl.c is written once for both and does not know which it gets:
// - a memory descriptor is a struct in 2.x and an opaque handle, created and destroyed, in 3.x.
//   DnnlMd is how every call takes one (`const dnnl_memory_desc_t *` in 2.x,
//   `const_dnnl_memory_desc_t` in 3.x); with it the calls on memory objects, reorders and
//   primitive descriptor queries have the same signature in both;
// - a convolution primitive descriptor comes from an operation descriptor
//   (dnnl_convolution_*_desc_init, then dnnl_primitive_desc_create) in 2.x, from one
//   dnnl_convolution_*_primitive_desc_create call in 3.x. Same primitives, same kernels.
#ifndef DNNL_COMPAT_H
#define DNNL_COMPAT_H

#include <oneapi/dnnl/dnnl.h>

#if DNNL_VERSION_MAJOR >= 3
typedef const_dnnl_memory_desc_t DnnlMd;
#elif DNNL_VERSION_MAJOR == 2
typedef const dnnl_memory_desc_t *DnnlMd;
#else
#error "oneDNN 2.x or 3.x is needed (Debian's libdnnl-dev)"
#endif

// The float32 memory descriptors of one convolution x (N, C, H, W), w (K, C, R, S),
// y (N, K, P, Q): in the caller's layouts (NCHW activations, OIHW weights) and in format "any"
// (oneDNN picks). Owned: dnnlc_conv_mds_free releases them.
typedef struct {
    dnnl_memory_desc_t ux, uw, uy; // user: NCHW, OIHW, NCHW
    dnnl_memory_desc_t ax, aw, ay; // any
} DnnlConvMds;

dnnl_status_t dnnlc_conv_mds_init(DnnlConvMds *m, const dnnl_dims_t x, const dnnl_dims_t w,
                                  const dnnl_dims_t y);
void dnnlc_conv_mds_free(DnnlConvMds *m);

// One of the descriptors above as DnnlMd.
static inline DnnlMd dnnlc_md(const dnnl_memory_desc_t *m) {
#if DNNL_VERSION_MAJOR >= 3
    return *m;
#else
    return m;
#endif
}

// Direct convolution primitive descriptors on the "any" descriptors, no bias, no dilation, the
// same stride and padding (both sides) in both spatial dimensions. The backward ones (data and
// weights, made together) take the forward descriptor (forward_training) as hint.
dnnl_status_t dnnlc_conv_forward_pd(dnnl_primitive_desc_t *pd, dnnl_engine_t eng,
                                    const DnnlConvMds *m, int stride, int pad);
dnnl_status_t dnnlc_conv_backward_pds(dnnl_primitive_desc_t *data, dnnl_primitive_desc_t *weights,
                                      dnnl_engine_t eng, const DnnlConvMds *m, int stride, int pad,
                                      const_dnnl_primitive_desc_t hint);

// -- fused inference convolutions (the eval path: conv + bias + sum + relu) ----------------

// A float32 memory descriptor of ndims (1 or 4) dims in the given format tag (dnnl_nchw,
// dnnl_nChw8c, dnnl_nChw16c, dnnl_a, dnnl_format_tag_any). Owned: dnnlc_md_free releases it.
dnnl_status_t dnnlc_md_init(dnnl_memory_desc_t *md, int ndims, const dnnl_dims_t dims,
                            dnnl_format_tag_t tag);
void dnnlc_md_free(dnnl_memory_desc_t *md);

// Attributes whose post-ops are, in order: sum (dst += the value dst held before, scale 1) when
// sum, then eltwise relu when relu. *attr is NULL when neither (no attributes needed).
dnnl_status_t dnnlc_attr_sum_relu(dnnl_primitive_attr_t *attr, int sum, int relu);

// A direct forward_inference convolution with bias and attributes (attr may be NULL).
dnnl_status_t dnnlc_conv_inference_pd(dnnl_primitive_desc_t *pd, dnnl_engine_t eng, DnnlMd src,
                                      DnnlMd wei, DnnlMd bias, DnnlMd dst, int stride, int pad,
                                      const_dnnl_primitive_attr_t attr);

#endif // DNNL_COMPAT_H
