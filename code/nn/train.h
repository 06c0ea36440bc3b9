// train.h: the training pieces with PyTorch's exact semantics: torch.optim.Adam (its scalar
// arithmetic in adam.h, which the backends share), ReduceLROnPlateau and GradScaler's dynamic
// loss scaling. The seeded RNG is core/rng.h.
#ifndef TRAIN_H
#define TRAIN_H

#include <stdint.h>

#include "nn/resnet34.h"

// ----------------------------------------------------------------------------
// torch.optim.Adam (defaults: betas 0.9, 0.999, eps 1e-8, weight_decay 0) over the trainable
// parameters of a model; state (m, v) lives on the model's backend.
typedef struct {
    float lr, beta1, beta2, eps;
    long step;
} Adam;
void adam_init(Adam *opt, float lr);
// One step; inv_grad_scale unscales fp16 gradients (1 in fp32).
void adam_step(Adam *opt, ResNet34 *m, float inv_grad_scale);

// ----------------------------------------------------------------------------
// torch.optim.lr_scheduler.ReduceLROnPlateau, mode 'min', threshold_mode 'rel'.
typedef struct {
    double factor, threshold, min_lr, eps;
    int patience, cooldown;
    double best;
    int num_bad_epochs, cooldown_counter;
    long last_epoch;
} Plateau;
void plateau_init(Plateau *p, double factor, int patience); // threshold 1e-4, cooldown 0, min_lr 0
// Feeds one epoch's metric; may lower *lr. Returns 1 when it reduced the rate (and prints
// PyTorch's "Epoch N: reducing learning rate of group 0 to X." line when verbose).
int plateau_step(Plateau *p, double metric, float *lr, int verbose);

// ----------------------------------------------------------------------------
// torch.cuda.amp.GradScaler: init scale 65536, growth 2 every 2000 clean steps, backoff 0.5.
typedef struct {
    float scale;
    int growth_interval, good_steps;
    int enabled;
} GradScaler;
void scaler_init(GradScaler *s, int enabled);
// After backward: returns 1 if the step should be taken (gradients finite), updates the scale.
int scaler_update(GradScaler *s, int grads_nonfinite);
// One training step on the last forward of m, as the tutorial's
//   loss = criterion(outputs, labels)            (reduction 'sum')
//   scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()
// Backward on the loss scaled by GradScaler (1 when disabled), then an Adam step on unscaled
// gradients unless they overflowed. Returns the (unscaled) summed loss.
double train_step(ResNet34 *m, Adam *opt, GradScaler *s, const int *labels);

#endif // TRAIN_H
