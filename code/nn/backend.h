// backend.h: the table of layer operations that every compute backend implements (CPU in
// backend_cpu.c, cuDNN + CUDA runtime in backend_cuda.cu). The ResNet34 core (resnet34.c) is
// written only against this table, so chapter programs choose the device at run time and never
// change. Tensors are 4-d (N, C, H, W) handles owned by a backend; their memory layout
// (NCHW, NHWC, blocked, fp16 copies...) is the backend's private choice. Data crosses the boundary
// only through tensor_upload/tensor_download, always as NCHW float32 in host memory.
//
// Conventions shared by every backend (the CPU backend is the specification):
// - Shapes in comments are logical: x (N, C, H, W); a conv weight is (K, C, R, S) as in PyTorch.
// - *_backward writes (overwrites, never accumulates) the gradients it is given; a NULL output
//   gradient pointer means "not needed" and its work is skipped.
// - Numerics follow PyTorch: batch norm uses the biased variance to normalize and updates the
//   running variance with the unbiased one; eps 1e-5, momentum 0.1 unless told otherwise.
#ifndef BACKEND_H
#define BACKEND_H

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { DEVICE_CPU = 0, DEVICE_CUDA = 1 } DeviceKind;
typedef enum { PREC_FP32 = 0, PREC_FP16 = 1 } Precision;

// What --precision asked for and what it became (backend_open_precision fills it in).
typedef struct {
    char requested[8];  // "auto", "fp32", "fp16"
    char choice[128];   // for people: "float32", "float32 (bf16 capable, not yet implemented)",
                        // "float16 mixed precision (autocast)"
} PrecisionInfo;

typedef struct Backend Backend;

typedef struct Tensor {
    int n, c, h, w;   // logical shape (N, C, H, W); a vector of length K is (K, 1, 1, 1)
    size_t numel;     // n * c * h * w
    int cap_n;        // samples its memory holds: the n it was created with (tensor_set_batch)
    void *data;       // backend memory, layout private to the backend
    Backend *be;      // owner
    void *priv;       // backend-specific state (descriptors, low-precision copies, ...)
    int layout;       // backend-private layout tag; 0 = the backend's default layout
} Tensor;

// Batch-norm layer state: parameters, running statistics, and what forward saves for backward.
typedef struct {
    Tensor *weight, *bias;               // gamma, beta: (C)
    Tensor *running_mean, *running_var;  // (C)
    Tensor *save_mean, *save_invstd;     // (C), written by a training-mode forward
    Tensor *dweight, *dbias;             // (C), NULL when frozen
    float momentum, eps;                 // 0.1, 1e-5
    int64_t num_batches_tracked;
} BatchNorm;

struct Backend {
    const char *name;      // "cpu", "cuda"
    DeviceKind device;
    Precision precision;   // fp16 = autocast-style mixed precision (CUDA only)
    char description[128]; // "CPU: 2 threads, oneDNN" / "CUDA: NVIDIA H100 80GB, cuDNN 9.x"
    // Which kernel table computes (part of the caches' keys and of a checkpoint's identity, so
    // that results of one table are never taken for another's): "cpu-reference", "cpu-fast
    // onednn 3.0.0"; "" = the description says it (the CUDA backend).
    char kernels[64];
    PrecisionInfo prec_info; // set by backend_open_precision (zero otherwise)
    void *priv;
    void *wrapper; // state of a table wrapped around this one (the tests' CUDA stand-in), so that
                   // the wrapped kernels still find their own priv

    // -- tensors ---------------------------------------------------------------------------
    Tensor *(*tensor_new)(Backend *be, int n, int c, int h, int w); // zero-filled
    void (*tensor_free)(Tensor *t);
    void (*tensor_upload)(Tensor *t, const float *src);   // src: NCHW float32, t->numel values
    void (*tensor_download)(const Tensor *t, float *dst); // dst: NCHW float32
    void (*tensor_fill)(Tensor *t, float value);
    void (*tensor_copy)(Tensor *dst, const Tensor *src);  // same shape
    int (*tensor_nonfinite)(const Tensor *t);             // 1 if any inf or nan
    // 1 if any of the count tensors (NULL entries skipped) holds an inf or nan: GradScaler's
    // check over all gradients, with one host synchronisation on a GPU (not one per tensor).
    int (*tensors_nonfinite)(Backend *be, Tensor *const *ts, int count);
    // Views the first n samples of t (1 <= n <= t->cap_n): t->n and t->numel change, the memory
    // stays, the contents of those n samples are kept. Lets a smaller last batch reuse the
    // activation memory of the full ones.
    void (*tensor_set_batch)(Tensor *t, int n);

    // -- layers ----------------------------------------------------------------------------
    // y = conv(x, w), no bias. x (N, C, H, W), w (K, C, R, S), y (N, K, P, Q) with
    // P = (H + 2 pad - R) / stride + 1.
    void (*conv2d_forward)(Backend *be, const Tensor *x, const Tensor *w, Tensor *y, int stride,
                           int pad);
    void (*conv2d_backward)(Backend *be, const Tensor *x, const Tensor *w, const Tensor *dy,
                            Tensor *dx, Tensor *dw, int stride, int pad);
    // Inference only (eval mode, no backward): the fused convolution of a folded conv + batch
    // norm, y = act(conv(x, w) + b + residual), act = relu when relu else identity, b (K, 1, 1, 1),
    // residual (N, K, P, Q) or NULL. y may be residual itself (the sum is taken in place).
    // The backend may leave y (and, in place, x and residual) in a private layout (t->layout);
    // every op accepts such tensors. Optional: NULL where a backend lacks it (resnet34.c then
    // runs the unfused ops).
    void (*conv_bias_act_forward)(Backend *be, const Tensor *x, const Tensor *w, const Tensor *b,
                                  const Tensor *residual, Tensor *y, int stride, int pad, int relu);
    // training = 1: batch statistics (saved in bn->save_*), running stats updated, counter += 1.
    // training = 0: running statistics.
    void (*batchnorm_forward)(Backend *be, const Tensor *x, BatchNorm *bn, Tensor *y, int training);
    // Gradients of a batchnorm_forward with the same `training`; fills bn->dweight/dbias if set.
    void (*batchnorm_backward)(Backend *be, const Tensor *x, BatchNorm *bn, const Tensor *dy,
                               Tensor *dx, int training);
    void (*relu_forward)(Backend *be, const Tensor *x, Tensor *y); // in place allowed (x == y)
    // dx = dy where y > 0, else 0; in place allowed (dx == dy).
    void (*relu_backward)(Backend *be, const Tensor *y, const Tensor *dy, Tensor *dx); // uses y>0
    // y = relu(a + b): the end of a residual block. Backward is relu_backward on y.
    void (*add_relu_forward)(Backend *be, const Tensor *a, const Tensor *b, Tensor *y);
    // y = a + b, same shapes; in place allowed (y == a or y == b). Backward of a residual block
    // sums the gradients of its two paths with it.
    void (*add_forward)(Backend *be, const Tensor *a, const Tensor *b, Tensor *y);
    // 3x3 / stride 2 / pad 1 in ResNet; backward routes dy to the first max in each window
    // (PyTorch's rule), recomputed from x.
    void (*maxpool_forward)(Backend *be, const Tensor *x, Tensor *y, int k, int stride, int pad);
    void (*maxpool_backward)(Backend *be, const Tensor *x, const Tensor *dy, Tensor *dx, int k,
                             int stride, int pad);
    // Adaptive average pool to 1x1: x (N, C, H, W) -> y (N, C, 1, 1).
    void (*avgpool_forward)(Backend *be, const Tensor *x, Tensor *y);
    void (*avgpool_backward)(Backend *be, const Tensor *dy, Tensor *dx);
    // y = x w^T + b. x (N, K, 1, 1), w (M, K, 1, 1), b (M, 1, 1, 1), y (N, M, 1, 1).
    void (*linear_forward)(Backend *be, const Tensor *x, const Tensor *w, const Tensor *b, Tensor *y);
    void (*linear_backward)(Backend *be, const Tensor *x, const Tensor *w, const Tensor *dy,
                            Tensor *dx, Tensor *dw, Tensor *db);
    // Softmax cross-entropy. logits (N, M, 1, 1); labels: host ints (N). Returns the summed loss
    // (float64 accumulation). If dlogits != NULL writes grad_scale * d(sum loss)/d logits
    // (for reduction 'mean' the caller passes grad_scale / N).
    double (*cross_entropy_forward_backward)(Backend *be, const Tensor *logits, const int *labels,
                                             Tensor *dlogits, float grad_scale);
    // torch.optim.Adam on one tensor (weight_decay 0, amsgrad off): g = grad * inv_grad_scale,
    // m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2, p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps).
    void (*adam_update)(Backend *be, Tensor *param, const Tensor *grad, Tensor *m, Tensor *v,
                        float lr, float beta1, float beta2, float eps, long step,
                        float inv_grad_scale);

    // -- lifetime --------------------------------------------------------------------------
    void (*synchronize)(Backend *be);
    void (*destroy)(Backend *be);
};

// Opens a backend: device "cpu", "cuda" or "auto" (a usable GPU if any, else the CPU; prints one
// line saying which device it uses unless quiet). Returns NULL with a clear message in err when the
// device cannot be used (e.g. "--device cuda: no CUDA GPU found (cudaGetDeviceCount: ...)").
Backend *backend_open(const char *device, Precision precision, int quiet, char *err, size_t errlen);
// The same, with the precision given as the programs' --precision: "auto" (or NULL; the
// default): the tutorial's mixed precision where the device runs it natively (fp16 autocast on
// CUDA; on a CPU it would be bf16 where oneDNN reports avx512_core_bf16 or AMX, which is not
// implemented yet, so float32), float32 otherwise; "fp32"; "fp16" (CUDA; the CPU computes fp32);
// "bf16": refused with a message saying why (no native bf16 on this CPU, or not implemented yet).
// The device line says which precision was chosen; be->prec_info records it.
Backend *backend_open_precision(const char *device, const char *precision, int quiet, char *err,
                                size_t errlen);
void backend_close(Backend *be);

// Backend constructors (backend_cuda_create exists only when CUDA was found at build time; see
// backend.c). Each returns NULL with err set on failure.
Backend *backend_cpu_create(Precision precision, char *err, size_t errlen);
Backend *backend_cuda_create(Precision precision, char *err, size_t errlen);
int backend_cuda_available(void); // 1 when compiled in and a GPU is usable
// The same for the real device only (backend_cuda.cu; stubs without CUDA). The two above go to the
// CPU stand-in of the GPU instead when PETS_CUDA_STANDIN=1 (nn/backend_standin.h: tests only).
Backend *backend_cuda_device_create(Precision precision, char *err, size_t errlen);
int backend_cuda_device_available(void);
// The CPU stand-in of the GPU (backend_standin.c, tests only): PETS_CUDA_STANDIN=1, and its
// constructor.
int backend_standin_enabled(void);
Backend *backend_standin_create(Precision precision, char *err, size_t errlen);

// Helpers for backends: the shape bookkeeping of tensor_set_batch (dies naming the op when n is
// outside 1..cap_n), and a failure inside a backend (a CUDA, cuDNN or cuBLAS error): dies with the
// message, unless backend_trap armed a recovery point (the GPU self-check), where it jumps back.
void backend_set_batch_shape(Tensor *t, int n);
__attribute__((noreturn, format(printf, 1, 2))) void backend_fail(const char *fmt, ...);
// Arms (jb != NULL) or disarms (jb == NULL) backend_fail's recovery point for this thread: a
// failure then writes its message into msg and longjmps to jb. The backend that failed must not
// be used again, nor freed (its device state is unknown): the caller abandons it.
void backend_trap(jmp_buf *jb, char *msg, size_t len);

#endif // BACKEND_H
