// adam.h: the scalar arithmetic of one torch.optim.Adam step, shared by every backend's
// adam_update (backend.h) and by the optimizer (train.h). A leaf: includes nothing of the project.
#ifndef ADAM_H
#define ADAM_H

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

#endif // ADAM_H
