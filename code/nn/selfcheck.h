// selfcheck.h: the GPU self-check. Before --device auto or cuda trusts a GPU, the loaded network
// runs on one small input (1 x 3 x 64 x 64) on the GPU and on the CPU backend (the specification),
// and the logits are compared: fp32 tightly, fp16 (autocast numerics) loosely. Under a second.
// A mismatch or a GPU error makes --device auto fall back to the CPU and --device cuda stop, each
// with a message saying what differed and how to report it. --no-self-check skips it.
#ifndef SELFCHECK_H
#define SELFCHECK_H

#include <stddef.h>

#include "nn/resnet34.h"

typedef enum { SELF_CHECK_OK = 0, SELF_CHECK_MISMATCH = 1, SELF_CHECK_ERROR = 2 } SelfCheck;

// Compares m (on any backend) against a copy of its weights on the CPU backend. On a failure msg
// says what differed (or which GPU call failed).
SelfCheck resnet34_self_check(ResNet34 *m, char *msg, size_t len);

// The policy, for programs taking --device: returns 1 when the caller may go on with m. Nothing
// to check (a CPU backend) or skip = 1 (--no-self-check): 1. A failed check with device "cuda":
// dies with the message. With "auto": prints it as a warning and returns 0, having released m and
// its backend (or, after a GPU error, abandoned them: their device state is unknown); the caller
// then opens the CPU backend and loads the network again.
int resnet34_trust_gpu(ResNet34 *m, const char *device, int skip);

#endif // SELFCHECK_H
