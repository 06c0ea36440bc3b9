#!/usr/bin/env python3
"""tests/loader_permutation.py: loader_permutation() of code/data/loader.c in Python.

The C loader shuffles each epoch with a Fisher-Yates permutation driven by splitmix64, started from
a hash of (seed, epoch) (the exact algorithm is documented in code/data/loader.h). Reference scripts that train with PyTorch
import `permutation` from here so that PyTorch sees the same batches in the same order as the C
programs. Run directly, it prints the permutations that tests/test_loader.c hard-codes:
    python3 tests/loader_permutation.py
"""
M64 = (1 << 64) - 1


def splitmix64(state):
    """Advances state; returns (new_state, output)."""
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


def epoch_state(seed, epoch):
    """The starting state of an epoch's shuffle: seed mixed by splitmix64, xored with the epoch
    (two's complement), mixed again; so no (seed, epoch) shuffles like (seed + 1, epoch - 1)."""
    _, h = splitmix64(seed & M64)
    _, state = splitmix64(h ^ (epoch & M64))
    return state


def permutation(n, seed, epoch):
    order = list(range(n))
    state = epoch_state(seed, epoch)
    for i in range(n - 1, 0, -1):
        state, r = splitmix64(state)
        j = r % (i + 1)
        order[i], order[j] = order[j], order[i]
    return order


if __name__ == "__main__":
    for n, seed, epoch in [(10, 42, 0), (10, 42, 1), (20, 0xDEADBEEFCAFEF00D, 3), (7, 0, -1)]:
        print(f"n={n} seed={seed:#x} epoch={epoch}: {{{', '.join(map(str, permutation(n, seed, epoch)))}}}")
