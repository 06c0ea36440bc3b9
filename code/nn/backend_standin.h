// backend_standin.h: a CPU stand-in for the GPU backend, for tests on machines without one.
// PETS_CUDA_STANDIN=1 makes --device cuda / auto open it instead of the device (backend.c). It is
// the CPU backend with what the GPU backend does differently:
// - it presents itself as a GPU (device DEVICE_CUDA, name "cuda-standin") and accepts fp16;
// - fp16 models backend_cuda.cu's autocast numerics: a convolution's and the fc layer's operands
//   are rounded to fp16, products accumulate in fp32, results are rounded to fp16 (forward and
//   gradients), so overflows appear where the GPU has them;
// - it counts what costs on a GPU: host synchronisations (every read back to the host:
//   tensor_download, tensor_nonfinite, tensors_nonfinite, the loss, synchronize) and tensor
//   allocations (BackendStandinStats);
// - PETS_STANDIN_FAULT plants a fault, for the self-check's tests: "relu" (ReLU lets a quarter of
//   each negative input through: a wrong kernel), "error" (the first convolution fails like a CUDA error).
#ifndef BACKEND_STANDIN_H
#define BACKEND_STANDIN_H

#include "nn/backend.h"

typedef struct {
    long syncs;   // host synchronisations
    long allocs;  // tensor_new calls
} BackendStandinStats;

// backend_standin_enabled and backend_standin_create are declared in backend.h (backend.c opens
// the stand-in).
// The counters of a stand-in backend (NULL for any other backend).
BackendStandinStats *backend_standin_stats(Backend *be);
// fp32 -> fp16 -> fp32, round to nearest even (overflow to inf, subnormals kept), as
// __float2half_rn.
float round_to_half(float x);

#endif // BACKEND_STANDIN_H
