// preprocess.h: the ImageNet preprocessing of torchvision's ResNet34_Weights.IMAGENET1K_V1.transforms(),
// reproduced exactly: resize the shorter side to 256 with Pillow's antialiased bilinear filter
// (Pillow's separable fixed-point arithmetic, horizontal pass first), center crop 224x224,
// scale to [0, 1], normalize with the ImageNet mean and std, and lay out as CHW float32.
#ifndef PREPROCESS_H
#define PREPROCESS_H

#include <stdint.h>

#include "data/image.h"

#define PREP_RESIZE 256
#define PREP_CROP 224
#define PREP_FLOATS (3 * PREP_CROP * PREP_CROP) // floats in one preprocessed image

extern const float PREP_MEAN[3]; // 0.485, 0.456, 0.406
extern const float PREP_STD[3];  // 0.229, 0.224, 0.225

// How far our normalized tensors may be from torchvision's (max / mean absolute difference over
// the 3 x 224 x 224 values), checked by tests/test_preprocess_real.c and measured again by
// 03-preprocessing --compare: on PNG and GIF input both decode the same pixels, so only float
// rounding may differ; on JPEG input stb_image and libjpeg reconstruct slightly different pixels.
#define PREP_TV_EXACT_LIMIT 1e-5
#define PREP_TV_JPEG_MAX_LIMIT 0.07
#define PREP_TV_JPEG_MEAN_LIMIT 0.002

// Resizes so that the shorter side is `size` (longer side int(size*long/short)), as
// torchvision.transforms.functional.resize(img, size) with PIL bilinear + antialias. Returns 0 or -1.
int resize_shorter_side(const Image *in, int size, Image *out);
// Resizes to exactly (out_w, out_h) with Pillow's bilinear filter (antialiased when shrinking).
int resize_bilinear(const Image *in, int out_w, int out_h, Image *out);
// The plain scalar version of resize_bilinear (Pillow's algorithm step by step, no SIMD, no
// cropping shortcut): the specification that the fast path is tested against.
int resize_bilinear_ref(const Image *in, int out_w, int out_h, Image *out);
// Which passes resize_bilinear runs (on this CPU, in this build): "AVX-512" (vectorised horizontal and vertical
// passes) or "scalar" (the reference passes; only the cropping shortcut differs). For tests.
const char *resize_fast_passes(void);
// 1 when resize_bilinear runs its AVX-512 passes on this CPU (chosen at run time; PETS_SIMD=scalar
// or cpu_simd_override(CPU_SIMD_SCALAR) rules them out), 0 when it runs the scalar ones.
int resize_uses_avx512(void);
// The size torchvision's resize(img, size) gives a w x h image: shorter side `size`, longer side
// int(size * long / short).
void resized_size(int w, int h, int size, int *out_w, int *out_h);
// Top-left corner of torchvision's center crop of a w x h image (w, h >= size):
// int(round((w - size) / 2.0)) with Python's round (halves to even).
void center_crop_offsets(int w, int h, int size, int *left, int *top);
// Center crop to size x size, offsets rounded as torchvision does (Python's round()).
// Pads with zeros if the image is smaller, as torchvision does.
int center_crop(const Image *in, int size, Image *out);
// uint8 HWC RGB crop (PREP_CROP x PREP_CROP) -> normalized float CHW (3, 224, 224).
void normalize_chw(const uint8_t *hwc, float *chw);
// Resize + crop: the uint8 (224, 224, 3) image that the float tensor is computed from
// (what chapter 05 caches). Returns 0 or -1.
int preprocess_u8(const Image *in, uint8_t *hwc);
// The whole pipeline: image -> (3, 224, 224) float32. Returns 0 or -1.
int preprocess_image(const Image *in, float *chw);

#endif // PREPROCESS_H
