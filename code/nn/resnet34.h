// resnet34.h: torchvision's ResNet34, built only on the backend table (backend.h), so the same
// code runs on the CPU and on the GPU. conv1 7x7/2, bn1, relu, maxpool 3x3/2 pad 1, layer1..layer4
// of 3, 4, 6, 3 BasicBlocks (1x1 conv + BN downsample where stride or width changes), adaptive
// average pool, fc with a replaceable number of classes (1000 for ImageNet, 37 for the pets).
// Parameters carry torchvision's state-dict names, so checkpoints load and save by key.
#ifndef RESNET34_H
#define RESNET34_H

#include <stdint.h>

#include "nn/backend.h"
#include "checkpoint/tensor.h"

#define RESNET34_FEATURES 512

typedef enum { PARAM_WEIGHT = 0, PARAM_BUFFER = 1 } ParamKind;

typedef struct {
    char name[64];       // state-dict key: "layer1.0.conv1.weight", "bn1.running_mean", ...
    ParamKind kind;      // weights get gradients; buffers (running stats) do not
    int ndim;            // as in the state dict (conv weight 4, bn/fc bias 1, fc weight 2)
    int64_t shape[4];
    Tensor *value;
    Tensor *grad;        // NULL for buffers and for frozen weights
    Tensor *adam_m, *adam_v; // optimizer state, created by the optimizer on first use
    int frozen;
} Param;

typedef struct ResNet34 ResNet34;

ResNet34 *resnet34_create(Backend *be, int num_classes);
void resnet34_free(ResNet34 *m);
int resnet34_num_classes(const ResNet34 *m);
int resnet34_num_params(const ResNet34 *m);           // weights and buffers, state-dict order
Param *resnet34_param(ResNet34 *m, int i);
Param *resnet34_find_param(ResNet34 *m, const char *name);

// torchvision's initialisation from a seed: conv kaiming_normal_(fan_out, relu), BN weight 1 and
// bias 0, fc as nn.Linear's default. Same distributions as PyTorch, not the same numbers.
void resnet34_init_random(ResNet34 *m, uint64_t seed);
// nn.Linear's default init of a new head: weight and bias ~ U(-1/sqrt(512), 1/sqrt(512)).
void resnet34_reset_fc(ResNet34 *m, uint64_t seed);
// Loads a torchvision state dict. With load_fc = 0 the fc.* keys are ignored (a new head).
// Missing, unexpected or mis-shaped keys fail with a message naming the key and both shapes.
// num_batches_tracked is optional.
int resnet34_load_state(ResNet34 *m, const StateDict *sd, int load_fc, char *err, size_t errlen);
// Builds a torchvision state dict (with num_batches_tracked) from the current weights.
void resnet34_to_state(ResNet34 *m, StateDict *sd);

// Freezes (1) or unfreezes (0) every weight outside fc. A frozen weight gets no gradient, and
// backward stops below the first trainable layer.
void resnet34_freeze_backbone(ResNet34 *m, int frozen);

// Forward over a host batch x (n, 3, h, w) float32. bn_train = 1 uses batch statistics and
// updates the running ones (PyTorch's model.train()); 0 is model.eval().
void resnet34_forward(ResNet34 *m, const float *x, int n, int h, int w, int bn_train);
// What a forward keeps for backward: in train mode (bn_train = 1), the activations from the lowest
// trainable layer up; in eval mode nothing (like torch.no_grad(): validation needs little memory)
// unless keep = 1 here, which makes eval-mode forwards keep them too (backward in eval mode
// through trainable backbone weights; fc alone never needs it).
void resnet34_keep_activations(ResNet34 *m, int keep);
// Eval-mode forwards that keep nothing run the fused path (batch norm folded into the
// convolutions, relu and the residual add fused) where the backend has conv_bias_act_forward;
// fused = 0 selects the unfused path (default: PETS_FUSED=0 in the environment, else 1).
void resnet34_set_fused(ResNet34 *m, int fused);
// Which path an eval forward that keeps nothing takes: "fused" or "unfused" (part of the
// feature caches' key: the two differ by rounding).
const char *resnet34_eval_path(const ResNet34 *m);
// Code that writes parameter or buffer values directly (Param.value) calls this afterwards, so that
// the fused path folds them again. resnet34_load_state, resnet34_init_random, train-mode forwards
// and adam_step do it themselves.
void resnet34_params_changed(ResNet34 *m);
// Runs only the head: features (n, 512) float32 from host -> logits (for cached features).
void resnet34_forward_head(ResNet34 *m, const float *features, int n);
// Results of the last forward, copied to host: logits (n, classes), pooled features (n, 512).
void resnet34_logits(ResNet34 *m, float *out);
void resnet34_features(ResNet34 *m, float *out);
// Cross-entropy of the last forward against labels; returns the summed loss and counts correct
// top-1 predictions in *correct (may be NULL). With backward = 1 also computes the gradients of
// every trainable weight (reduction 'sum' unless mean = 1; scaled by loss_scale for fp16).
double resnet34_loss(ResNet34 *m, const int *labels, int mean, int backward, float loss_scale,
                     int *correct);
// 1 if any trainable gradient holds inf or nan (GradScaler's check).
int resnet34_grads_nonfinite(ResNet34 *m);

#endif // RESNET34_H
