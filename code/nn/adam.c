// adam.c: the scalars of one torch.optim.Adam step (adam.h), computed as PyTorch does from the
// Python doubles its hyper-parameters are. Checked by tests/test_train.c.
#include "nn/adam.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

double float_as_decimal(float f) {
    char buf[32];
    for (int digits = 1; digits <= 6; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)f);
        double d = strtod(buf, NULL);
        if ((float)d == f) return d;
    }
    return (double)f;
}

AdamScalars adam_scalars(float lr, float beta1, float beta2, long step) {
    double b1 = float_as_decimal(beta1), b2 = float_as_decimal(beta2);
    double bc1 = 1.0 - pow(b1, (double)step), bc2 = 1.0 - pow(b2, (double)step);
    AdamScalars s = {
        .one_minus_b1 = (float)(1.0 - b1),
        .one_minus_b2 = (float)(1.0 - b2),
        .step_size = (float)(float_as_decimal(lr) / bc1),
        .bc2_sqrt = (float)sqrt(bc2),
    };
    return s;
}
