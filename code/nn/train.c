// train.c: the training pieces with PyTorch's exact semantics (train.h): torch.optim.Adam over a
// model's trainable parameters (each tensor's update is the backend's adam_update),
// torch.optim.lr_scheduler.ReduceLROnPlateau and torch.cuda.amp.GradScaler's dynamic loss scale.
// Each piece is checked against PyTorch 1.13 by tests/test_train.c on fixtures written by
// tests/ref_train.py.
#include "nn/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "nn/backend.h"

// ----------------------------------------------------------------------------
// Adam: torch.optim.Adam(params, lr) with its defaults (betas (0.9, 0.999), eps 1e-8,
// weight_decay 0, amsgrad off, maximize off). The arithmetic of one tensor's update lives in the
// backend (adam_update), so the state never leaves the device; here we only walk the parameters.
//
// PyTorch keeps a step count per parameter; we keep one per optimizer. The two agree whenever the
// same set of parameters receives gradients at every step, which is how every program of this
// package trains (a fixed frozen/trainable split for the optimizer's lifetime). A step skipped by
// the GradScaler is not counted, as in PyTorch (optimizer.step() is not called).

void adam_init(Adam *opt, float lr) {
    opt->lr = lr;
    opt->beta1 = 0.9f;
    opt->beta2 = 0.999f;
    opt->eps = 1e-8f;
    opt->step = 0;
}

void adam_step(Adam *opt, ResNet34 *m, float inv_grad_scale) {
    opt->step++;
    int np = resnet34_num_params(m);
    for (int i = 0; i < np; i++) {
        Param *p = resnet34_param(m, i);
        // Buffers and frozen weights have no gradient: PyTorch skips parameters whose .grad is
        // None, and so do we.
        if (p->kind != PARAM_WEIGHT || p->frozen || !p->grad) continue;
        Tensor *t = p->value;
        Backend *be = t->be;
        // Optimizer state is created zero-filled on first use, as PyTorch's lazy state init.
        if (!p->adam_m) p->adam_m = be->tensor_new(be, t->n, t->c, t->h, t->w);
        if (!p->adam_v) p->adam_v = be->tensor_new(be, t->n, t->c, t->h, t->w);
        be->adam_update(be, t, p->grad, p->adam_m, p->adam_v, opt->lr, opt->beta1, opt->beta2,
                        opt->eps, opt->step, inv_grad_scale);
    }
    resnet34_params_changed(m); // the fused eval path folds the new weights again
}

// ----------------------------------------------------------------------------
// ReduceLROnPlateau(optimizer, mode='min', factor, patience, threshold=1e-4,
// threshold_mode='rel', cooldown=0, min_lr=0, eps=1e-8), transcribed from torch 1.13's
// lr_scheduler.py:
//   better  <=>  metric < best * (1 - threshold)          (best starts at +inf)
//   better: best = metric, num_bad_epochs = 0; else num_bad_epochs += 1
//   in cooldown: cooldown_counter -= 1, num_bad_epochs = 0
//   num_bad_epochs > patience: new_lr = max(lr * factor, min_lr), applied only if
//       lr - new_lr > eps; then cooldown_counter = cooldown, num_bad_epochs = 0
// A NaN metric is never better (the comparison is false), so it counts as a bad epoch, as in
// PyTorch. The rate is computed in double, as Python does, then stored into the float *lr.

void plateau_init(Plateau *p, double factor, int patience) {
    p->factor = factor;
    p->patience = patience;
    p->threshold = 1e-4;
    p->min_lr = 0.0;
    p->eps = 1e-8;
    p->cooldown = 0;
    p->best = INFINITY;
    p->num_bad_epochs = 0;
    p->cooldown_counter = 0;
    p->last_epoch = 0;
}

int plateau_step(Plateau *p, double metric, float *lr, int verbose) {
    long epoch = ++p->last_epoch;
    if (metric < p->best * (1.0 - p->threshold)) {
        p->best = metric;
        p->num_bad_epochs = 0;
    } else {
        p->num_bad_epochs++;
    }
    if (p->cooldown_counter > 0) {
        p->cooldown_counter--;
        p->num_bad_epochs = 0; // bad epochs in cooldown are ignored
    }
    int reduced = 0;
    if (p->num_bad_epochs > p->patience) {
        double old_lr = (double)*lr;
        double new_lr = old_lr * p->factor;
        if (new_lr < p->min_lr) new_lr = p->min_lr;
        if (old_lr - new_lr > p->eps) {
            *lr = (float)new_lr;
            reduced = 1;
            // PyTorch: 'Epoch {:5d}' via "%.5d" (zero padded), rate as '{:.4e}'.
            if (verbose)
                printf("Epoch %.5ld: reducing learning rate of group 0 to %.4e.\n", epoch, new_lr);
        }
        p->cooldown_counter = p->cooldown;
        p->num_bad_epochs = 0;
    }
    return reduced;
}

// ----------------------------------------------------------------------------
// GradScaler: torch.cuda.amp.GradScaler(init_scale=2**16, growth_factor=2.0, backoff_factor=0.5,
// growth_interval=2000). scaler.step() skips optimizer.step() when any gradient is inf/nan;
// scaler.update() then runs torch's _amp_update_scale_ kernel:
//   found_inf: scale *= 0.5, growth_tracker = 0
//   else:      growth_tracker += 1; when it reaches growth_interval: scale *= 2 (kept only if
//              the new scale is finite), growth_tracker = 0
// The scale is a float32 tensor in PyTorch, so it is a float here too.
// Usage: loss is scaled by s->scale in backward; read inv = 1 / s->scale BEFORE calling
// scaler_update (which may change the scale), then `if (scaler_update(s, nonfinite))
// adam_step(opt, m, inv)`. A disabled scaler (fp32) has scale 1 and never skips, as PyTorch's
// GradScaler(enabled=False), whose step() simply calls optimizer.step().

void scaler_init(GradScaler *s, int enabled) {
    s->enabled = enabled;
    s->scale = enabled ? 65536.0f : 1.0f;
    s->growth_interval = 2000;
    s->good_steps = 0;
}

int scaler_update(GradScaler *s, int grads_nonfinite) {
    if (!s->enabled) return 1;
    if (grads_nonfinite) {
        s->scale = s->scale * 0.5f;
        s->good_steps = 0;
        return 0;
    }
    s->good_steps++;
    if (s->good_steps == s->growth_interval) {
        float grown = s->scale * 2.0f;
        if (isfinite(grown)) s->scale = grown;
        s->good_steps = 0;
    }
    return 1;
}

double train_step(ResNet34 *m, Adam *opt, GradScaler *s, const int *labels) {
    float scale = s->enabled ? s->scale : 1.0f;
    double loss = resnet34_loss(m, labels, /*mean=*/0, /*backward=*/1, scale, NULL);
    int overflow = s->enabled && resnet34_grads_nonfinite(m);
    if (scaler_update(s, overflow)) adam_step(opt, m, 1.0f / scale);
    return loss;
}
