#!/usr/bin/python3
# tests/ref_train.py: writes the PyTorch reference fixtures for the training pieces (train.c and
# the backends' cross-entropy and Adam kernels) into tests/fixtures/train/. Run by developers with
# Debian's python3-torch 1.13 (/usr/bin/python3 tests/ref_train.py); `make test` only reads the
# committed fixtures (tests/test_train.c).
#
# Fixture format (little endian), version 1: b"PFIX", u32 version, u32 count, then per array:
# u32 name length, name bytes, u32 ndim, ndim x i64 dims, numel x f64 values (row-major).
# Messages that PyTorch prints go into plain text files beside them.
import contextlib
import io
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "train")
VERSION = 1


def write_fixture(name, arrays):
    path = os.path.join(OUT, name)
    with open(path + ".tmp", "wb") as f:
        f.write(b"PFIX" + struct.pack("<II", VERSION, len(arrays)))
        for key, value in arrays.items():
            a = np.asarray(value, dtype=np.float64)
            kb = key.encode()
            f.write(struct.pack("<I", len(kb)) + kb + struct.pack("<I", a.ndim))
            f.write(struct.pack("<%dq" % a.ndim, *a.shape))
            f.write(np.ascontiguousarray(a).astype("<f8").tobytes())
    os.replace(path + ".tmp", path)
    print("wrote", path, "(%d arrays)" % len(arrays))


def f32(x):
    return np.asarray(x, dtype=np.float32)


# ----------------------------------------------------------------------------
# cross-entropy: F.cross_entropy in float32, reduction sum and mean, and d loss / d logits.
def cross_entropy():
    g = torch.Generator().manual_seed(1234)
    cases = {}
    # ordinary logits
    cases["small"] = (torch.randn(6, 5, generator=g) * 3.0, torch.tensor([0, 4, 2, 2, 1, 3]))
    # a 37-way head, batch 8
    cases["pets"] = (torch.randn(8, 37, generator=g) * 2.0,
                     torch.randint(0, 37, (8,), generator=g))
    # large magnitudes: exp() of these overflows float32 unless the max is subtracted; a row of
    # ties; a label whose logit is far below the max (loss ~ 2000)
    big = torch.tensor([[1000.0, -1000.0, 999.5, 0.0, 12.0, -3.0, 998.0],
                        [-1000.0, 1000.0, 1000.0, 1000.0, -1000.0, 0.0, 5.0],
                        [5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0],
                        [1.0e4, -1.0e4, 3.0e3, -2.5e3, 7.0e3, 1.0e4, 0.0],
                        [-88.0, 88.0, 89.0, -104.0, 0.0, 1.0, 2.0]])
    cases["large"] = (big, torch.tensor([1, 0, 3, 5, 3]))
    arrays = {}
    for name, (logits, labels) in cases.items():
        logits = logits.float()
        arrays[name + ".logits"] = logits.numpy()
        arrays[name + ".labels"] = labels.numpy()
        for red in ("sum", "mean"):
            x = logits.clone().requires_grad_(True)
            loss = F.cross_entropy(x, labels, reduction=red)
            loss.backward()
            arrays["%s.loss_%s" % (name, red)] = np.array([loss.item()])
            arrays["%s.grad_%s" % (name, red)] = x.grad.numpy()
    write_fixture("ce.bin", arrays)


# ----------------------------------------------------------------------------
# Adam on small tensors with varying gradients (for the backend's adam_update), and on a 37-way
# fc whose values come from a formula that test_train.c evaluates too (for adam_step).
def adam_small():
    g = torch.Generator().manual_seed(99)
    arrays = {}
    # case a: (3, 4), lr 1e-3, gradients of very different sizes, one all-zero step
    scales = [1.0, 1e-3, 0.0, 100.0, 1e-6, 1.0, -5.0]
    p = torch.randn(3, 4, generator=g)
    arrays["a.p0"] = p.numpy().copy()
    param = p.clone().requires_grad_(True)
    opt = torch.optim.Adam([param], lr=1e-3)
    grads, traj = [], []
    for s in scales:
        gr = (torch.randn(3, 4, generator=g) * s).float()
        grads.append(gr.numpy().copy())
        param.grad = gr.clone()
        opt.step()
        traj.append(param.detach().numpy().copy())
    st = opt.state[param]
    arrays["a.grads"] = np.stack(grads)
    arrays["a.params"] = np.stack(traj)
    arrays["a.m"] = st["exp_avg"].numpy()
    arrays["a.v"] = st["exp_avg_sq"].numpy()
    arrays["a.lr"] = np.array([f32(1e-3)])

    # case b: (5,), lr 0.1, gradients scaled by 65536 as under GradScaler and unscaled by the
    # float32 reciprocal of the scale before the step (what GradScaler.unscale_ does)
    scale = np.float32(65536.0)
    inv = np.float32(1.0) / scale
    p = torch.randn(5, generator=g)
    arrays["b.p0"] = p.numpy().copy()
    param = p.clone().requires_grad_(True)
    opt = torch.optim.Adam([param], lr=0.1)
    grads, traj = [], []
    for t in range(5):
        gr = (torch.randn(5, generator=g) * (10.0 ** (t - 2)) * float(scale)).float()
        grads.append(gr.numpy().copy())
        param.grad = gr.clone() * torch.tensor(inv)
        opt.step()
        traj.append(param.detach().numpy().copy())
    arrays["b.grads"] = np.stack(grads)  # scaled gradients, as the backward pass left them
    arrays["b.params"] = np.stack(traj)
    # the moments too: the step itself barely depends on the scale (Adam divides m by sqrt(v)),
    # the moments are off by the scale and its square when it is ignored
    st = opt.state[param]
    arrays["b.m"] = st["exp_avg"].numpy()
    arrays["b.v"] = st["exp_avg_sq"].numpy()
    arrays["b.inv_scale"] = np.array([inv])
    arrays["b.lr"] = np.array([f32(0.1)])
    write_fixture("adam.bin", arrays)


# The formula shared with test_train.c (fc_value): float32 of a double expression.
def fc_values(kind, t, n):
    i = np.arange(n, dtype=np.float64)
    if kind == "w0":
        v = 0.05 * np.sin(0.37 * i + 0.1)
    elif kind == "b0":
        v = 0.02 * np.cos(0.5 * i)
    elif kind == "gw":
        v = np.cos(0.011 * i * t + t) * 10.0 ** (t % 3 - 1)
    else:  # gb
        v = np.sin(0.3 * i * t)
    return f32(v)


def adam_fc():
    K, C = 37, 512
    w = torch.tensor(fc_values("w0", 0, K * C)).reshape(K, C).requires_grad_(True)
    b = torch.tensor(fc_values("b0", 0, K)).requires_grad_(True)
    opt = torch.optim.Adam([w, b], lr=1e-3)
    lrs = [1e-3, 1e-3, 1e-4, 1e-4, 1e-5]  # as if ReduceLROnPlateau lowered the rate between steps
    for t, lr in enumerate(lrs, start=1):
        for group in opt.param_groups:
            group["lr"] = float(np.float32(lr))
        w.grad = torch.tensor(fc_values("gw", t, K * C)).reshape(K, C)
        b.grad = torch.tensor(fc_values("gb", t, K))
        opt.step()
    wf = w.detach().numpy().reshape(-1)
    idx = np.arange(0, K * C, 97)
    write_fixture("adam_fc.bin", {
        "lrs": f32(lrs), "w_index": idx, "w": wf[idx], "w_sum": np.array([wf.astype(np.float64).sum()]),
        "b": b.detach().numpy(),
        "w_m": opt.state[w]["exp_avg"].numpy().reshape(-1)[idx],
        "w_v": opt.state[w]["exp_avg_sq"].numpy().reshape(-1)[idx],
    })


# ----------------------------------------------------------------------------
# ReduceLROnPlateau: several loss sequences, the rate after every step and PyTorch's messages.
def plateau():
    seqs = {
        # the tutorial's settings: factor 0.1, patience 2; plateaus, exact repeats, improvements
        # smaller than the 1e-4 relative threshold, a NaN
        "tutorial": dict(lr=1e-3, factor=0.1, patience=2, cooldown=0, min_lr=0.0, losses=[
            2.0, 1.5, 1.2, 1.2, 1.2, 1.2, 1.19995, 1.19990, 1.1998, 1.0, 1.0, 0.99995, 0.9999,
            0.99985, 0.9, float("nan"), 0.95, 0.91, 0.905, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8,
            0.8, 0.8, 0.8, 0.8]),
        # patience 0: every non-improving epoch reduces
        "patience0": dict(lr=0.1, factor=0.5, patience=0, cooldown=0, min_lr=0.0, losses=[
            1.0, 1.0, 0.99991, 0.9, 0.90001, 0.5, 0.5, 0.49999, 0.49, 0.48]),
        # cooldown 1 and a floor: min_lr stops the reductions
        "cooldown": dict(lr=1e-2, factor=0.1, patience=1, cooldown=1, min_lr=1e-4, losses=[
            3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 2.0, 2.0, 2.0, 2.0]),
        # eps: a reduction smaller than 1e-8 is not applied
        "eps": dict(lr=5e-8, factor=0.1, patience=0, cooldown=0, min_lr=0.0, losses=[
            1.0, 1.0, 1.0, 1.0, 1.0]),
        # negative losses: the relative threshold works on best * (1 - 1e-4)
        "negative": dict(lr=1e-3, factor=0.1, patience=1, cooldown=0, min_lr=0.0, losses=[
            -1.0, -1.00005, -1.0002, -1.0002, -1.0002, -2.0, -2.0, -2.0]),
    }
    arrays = {}
    messages = []
    for name, s in seqs.items():
        param = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([param], lr=float(np.float32(s["lr"])))
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=s["factor"], patience=s["patience"], cooldown=s["cooldown"],
            min_lr=s["min_lr"], verbose=True)
        lrs = []
        for loss in s["losses"]:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                sched.step(loss)
            messages.append(buf.getvalue())
            lrs.append(opt.param_groups[0]["lr"])
        arrays[name + ".config"] = [s["lr"], s["factor"], s["patience"], s["cooldown"], s["min_lr"]]
        arrays[name + ".losses"] = s["losses"]
        arrays[name + ".lrs"] = lrs
    write_fixture("plateau.bin", arrays)
    path = os.path.join(OUT, "plateau_messages.txt")
    with open(path, "w") as f:
        f.write("".join(messages))
    print("wrote", path)


# ----------------------------------------------------------------------------
# GradScaler. torch 1.13 has no CPU kernel for _amp_update_scale_ (it exists for CUDA only), so
# this is a line-by-line transcription of that kernel (aten/src/ATen/native/cuda/AmpKernels.cu)
# and of GradScaler.step's skip rule, in float32 as the scale tensor is.
def scaler():
    def run(flags, init=65536.0, interval=2000):
        scale = np.float32(init)
        tracker = 0
        scales, steps = [], []
        for found_inf in flags:
            steps.append(0 if found_inf else 1)  # step() skips optimizer.step() on inf/nan
            if found_inf:
                scale = np.float32(scale * np.float32(0.5))
                tracker = 0
            else:
                successful = tracker + 1
                if successful == interval:
                    with np.errstate(over="ignore"):
                        new_scale = np.float32(scale * np.float32(2.0))
                    if math.isfinite(new_scale):
                        scale = new_scale
                    tracker = 0
                else:
                    tracker = successful
            scales.append(float(scale))
        return scales, steps

    def changes(scales, init):
        # (step index, new scale) wherever the scale changed: compact for thousands of steps
        out, prev = [], init
        for i, sc in enumerate(scales):
            if sc != prev:
                out.append([i, sc])
                prev = sc
        return out

    def runs(flags):
        # run-length encoding of the overflow flags: [flag, count] pairs
        out = []
        for f in flags:
            if out and out[-1][0] == f:
                out[-1][1] += 1
            else:
                out.append([f, 1])
        return out

    rs = np.random.RandomState(7)
    arrays = {}
    cases = {
        # default interval: overflows early (as at the start of fp16 training), then long clean
        # runs: 2000 clean steps double the scale, an overflow resets the count
        "default": ([1, 1, 0, 1] + [0] * 2500 + [1] + [0] * 1999 + [0] * 2001
                    + list(rs.rand(200) < 0.05), 65536.0, 2000),
        # interval 3, random overflows
        "short": (list(rs.rand(60) < 0.3), 65536.0, 3),
        # near float32's largest power of two: growth stops rather than overflowing to inf
        "huge": ([0] * 6, 2.0 ** 125, 1),
    }
    for name, (flags, init, interval) in cases.items():
        flags = [int(f) for f in flags]
        scales, steps = run(flags, init=init, interval=interval)
        arrays[name + ".config"] = [init, interval, len(flags)]
        arrays[name + ".flag_runs"] = runs(flags)
        arrays[name + ".scale_changes"] = changes(scales, init)
        arrays[name + ".steps_taken"] = [sum(steps)]
    write_fixture("scaler.bin", arrays)


# ----------------------------------------------------------------------------
# RNG known answers: an independent Python xoshiro256** / splitmix64.
def rng():
    M = (1 << 64) - 1

    def splitmix(state):
        state = (state + 0x9E3779B97F4A7C15) & M
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
        return state, z ^ (z >> 31)

    def rotl(x, k):
        return ((x << k) | (x >> (64 - k))) & M

    arrays = {}
    for seed in (0, 42, 2**64 - 1):
        st, s = seed, []
        for _ in range(4):
            st, z = splitmix(st)
            s.append(z)
        out = []
        for _ in range(8):
            result = (rotl((s[1] * 5) & M, 7) * 9) & M
            t = (s[1] << 17) & M
            s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t
            s[3] = rotl(s[3], 45)
            out.append(result)
        # u64 values do not fit a double: store them as 4 x 16-bit pieces, high first
        arrays["seed%d.u64" % (seed & 0xFFFF)] = [[(v >> sh) & 0xFFFF for sh in (48, 32, 16, 0)]
                                                  for v in out]
        arrays["seed%d.uniform" % (seed & 0xFFFF)] = [(v >> 11) * 2.0 ** -53 for v in out]
    write_fixture("rng.bin", arrays)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    print("torch", torch.__version__, file=sys.stderr)
    cross_entropy()
    adam_small()
    adam_fc()
    plateau()
    scaler()
    rng()
