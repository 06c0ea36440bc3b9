// train.h: the training pieces with PyTorch's exact semantics: a seeded RNG, torch.optim.Adam,
// ReduceLROnPlateau and GradScaler's dynamic loss scaling.
#ifndef TRAIN_H
#define TRAIN_H

#include <stdint.h>

#include "nn/resnet34.h"

// ----------------------------------------------------------------------------
// RNG: xoshiro256** seeded through splitmix64; identical streams on every machine.
typedef struct {
    uint64_t s[4];
} Rng;
void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_u64(Rng *r);
double rng_uniform(Rng *r);            // [0, 1)
double rng_normal(Rng *r);             // N(0, 1)
uint64_t splitmix64(uint64_t *state);  // also used to derive per-purpose seeds

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

// The scalars of one torch.optim.Adam step as PyTorch computes them, for backends' adam_update.
// PyTorch's lr and betas are Python doubles (0.9, 0.999), not the float32 values a backend
// receives: 1 - (double)0.999f = 0.00099998713 where PyTorch has 1 - 0.999 = 0.001, which leaves
// exp_avg_sq 1.3e-5 too small. So each float is read back as the shortest decimal (<= 6
// significant digits) that rounds to it, then everything is computed in double and rounded to
// float once, as PyTorch's element kernels do:
//   one_minus_b1 = 1 - beta1, one_minus_b2 = 1 - beta2,
//   step_size = lr / (1 - beta1^step), bc2_sqrt = sqrt(1 - beta2^step).
// The update is then m = beta1 m + one_minus_b1 g; v = beta2 v + one_minus_b2 g g;
// p -= step_size * m / (sqrt(v) / bc2_sqrt + eps)   (with beta1, beta2, eps the floats given).
typedef struct {
    float one_minus_b1, one_minus_b2, step_size, bc2_sqrt;
} AdamScalars;
AdamScalars adam_scalars(float lr, float beta1, float beta2, long step);
// The decimal a float was written as (0.999f -> 0.999): the shortest decimal of at most 6
// significant digits that rounds back to f; f itself if there is none.
double float_as_decimal(float f);

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
