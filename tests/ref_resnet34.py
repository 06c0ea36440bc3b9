#!/usr/bin/python3
"""tests/ref_resnet34.py: PyTorch reference fixtures for the C ResNet34 (tests/test_resnet34.c).

Run by developers (Debian's python3-torch 1.13 + python3-torchvision 0.14), never by `make test`:
    /usr/bin/python3 tests/ref_resnet34.py [OUTDIR [CASE...]]   (default tests/fixtures/resnet34, all)

Instead of committing 83 MB of weights, both sides build the same network from a formula: every
value comes from a 64-bit integer hash (splitmix64's finaliser) of (case seed, tensor index,
element index), mapped to [0, 1) exactly as the C test does, so the C model starts from
bit-identical weights and inputs. For each case the fixture holds what torchvision's resnet34 makes
of them: logits, the cross-entropy (sum and mean), the gradient of every trainable parameter after
one backward of the summed loss (in full for tensors up to 20000 values, otherwise as sum, sum of
|g|, sum of g^2 and 32 elements at hashed positions), the batch-norm running statistics after the
step, num_batches_tracked, and the losses of 5 steps of torch.optim.Adam(lr=1e-3). Cases: all
weights trainable in train mode and in eval mode, a frozen backbone (only fc trainable) in eval and
in train mode, and a 224x224 eval forward with torchvision's 1000-way head.

File format (little-endian), version 1:
    "RN34FIX\\0" (8 bytes), uint32 version, uint32 record count, then records:
    char name[64] (NUL-padded), uint32 dtype (0 float32, 1 float64, 2 int64, 3 bytes), uint32 0,
    uint64 count, count values.
"""
import math
import os
import struct
import sys

import numpy as np
import torch
import torchvision

MAGIC = b"RN34FIX\0"
VERSION = 1
FULL_MAX = 20000   # gradients of tensors up to this size are stored in full
SAMPLES = 32       # sampled elements of larger gradients

M64 = (1 << 64) - 1


# ---------------------------------------------------------------------------------------------
# the deterministic formula (mirrored in tests/test_resnet34.c)

def mix_np(z):
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def mix_int(z):
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def uniform(stream, n):
    """n values in [0, 1): (mix((stream << 32) | i) >> 11) * 2^-53, as float64."""
    with np.errstate(over="ignore"):
        keys = (np.uint64(stream) << np.uint64(32)) | np.arange(n, dtype=np.uint64)
        h = mix_np(keys)
    return (h >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)


def param_stream(case_seed, t):
    return case_seed * 0x10000 + t


def init_values(name, shape, case_seed, t):
    """The formula for parameter/buffer number t (state-dict order without num_batches_tracked)."""
    n = int(np.prod(shape))
    u = uniform(param_stream(case_seed, t), n)
    s = 2.0 * u - 1.0
    if len(shape) == 4:                      # conv: He-uniform, bound sqrt(6 / fan_in)
        v = s * math.sqrt(6.0 / (shape[1] * shape[2] * shape[3]))
    elif name.startswith("fc."):             # nn.Linear-like bound 1/sqrt(512)
        v = s * (1.0 / math.sqrt(512.0))
    elif name.endswith("running_mean"):
        v = s * 0.1
    elif name.endswith("running_var"):
        v = 0.75 + 0.5 * u
    elif name.endswith("bn2.weight"):        # the residual branch's last gain: small, so that an
        v = 0.3 + 0.1 * s                    # eval-mode forward stays in a sane range
    elif name.endswith("weight"):            # other batch-norm gains
        v = 1.0 + 0.25 * s
    else:                                    # batch-norm shifts
        v = 0.1 * s
    return v.astype(np.float32).reshape(shape)


def make_input(case_seed, n, h, w):
    u = uniform(case_seed * 0x10000 + 0xFFFF, n * 3 * h * w)
    return (1.5 * (2.0 * u - 1.0)).astype(np.float32).reshape(n, 3, h, w)


def make_labels(case_seed, n, k):
    return [mix_int(((case_seed * 0x10000 + 0xFFFE) << 32) | i) % k for i in range(n)]


def sample_indices(t, numel):
    return [mix_int((0x5A5A0000 + t) << 32 | j) % numel for j in range(SAMPLES)]


def build_model(k, case_seed):
    model = torchvision.models.resnet34(num_classes=k)
    sd = model.state_dict()
    new = {}
    t = 0
    for name, v in sd.items():
        if name.endswith("num_batches_tracked"):
            new[name] = torch.zeros_like(v)
            continue
        new[name] = torch.from_numpy(init_values(name, tuple(v.shape), case_seed, t))
        t += 1
    model.load_state_dict(new)
    return model


def float_names(model):
    return [n for n in model.state_dict().keys() if not n.endswith("num_batches_tracked")]


# ---------------------------------------------------------------------------------------------
# fixture writing

class Fixture:
    def __init__(self):
        self.records = []

    def add(self, name, values, dtype):
        assert len(name) < 64, name
        arr = np.asarray(values, dtype={0: np.float32, 1: np.float64, 2: np.int64, 3: np.uint8}[dtype]).ravel()
        self.records.append((name, dtype, arr))

    def write(self, path):
        with open(path + ".tmp", "wb") as f:
            f.write(MAGIC + struct.pack("<II", VERSION, len(self.records)))
            for name, dtype, arr in self.records:
                f.write(name.encode().ljust(64, b"\0") + struct.pack("<IIQ", dtype, 0, arr.size))
                f.write(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
        os.replace(path + ".tmp", path)
        print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(self.records)} records)")


def run_case(outdir, tag, case_seed, n, h, w, k, bn_train, frozen, grads=True, adam_steps=5):
    torch.manual_seed(0)
    fx = Fixture()
    fx.add("config", [case_seed, n, h, w, k, bn_train, frozen, adam_steps], 2)
    model = build_model(k, case_seed)
    # torchvision's state-dict keys in order (text, one per line) and shapes (ndim, dims...)
    sd = model.state_dict()
    fx.add("state_dict_keys", np.frombuffer("\n".join(sd.keys()).encode(), dtype=np.uint8), 3)
    fx.add("state_dict_shapes", [d for v in sd.values() for d in [v.dim()] + list(v.shape)], 2)
    names = float_names(model)
    # checksums of the generated weights, so that the C test can tell a formula mismatch apart
    sums = []
    for name in names:
        v = model.state_dict()[name].double()
        sums += [v.sum().item(), (v * v).sum().item()]
    fx.add("init_checksums", sums, 1)
    x = torch.from_numpy(make_input(case_seed, n, h, w))
    fx.add("input_checksum", [x.double().sum().item(), (x.double() ** 2).sum().item()], 1)
    labels = torch.tensor(make_labels(case_seed, n, k), dtype=torch.int64)
    fx.add("labels", labels.numpy(), 2)

    def set_mode(m):
        m.train(bool(bn_train))
        for pname, p in m.named_parameters():
            p.requires_grad_(not (frozen and not pname.startswith("fc.")))

    set_mode(model)
    captured = {}
    hook = model.avgpool.register_forward_hook(lambda mod, inp, out: captured.update(f=out))
    logits = model(x)
    hook.remove()
    loss_sum = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
    loss_mean = torch.nn.functional.cross_entropy(logits, labels, reduction="mean")
    fx.add("logits", logits.detach().numpy(), 0)
    fx.add("loss_sum", [loss_sum.item()], 1)
    fx.add("loss_mean", [loss_mean.item()], 1)
    fx.add("features", captured["f"].detach().numpy(), 0)
    if grads:
        loss_sum.backward()
        params = dict(model.named_parameters())
        for t, name in enumerate(names):
            p = params.get(name)
            if p is None or p.grad is None:
                continue
            g = p.grad.detach().double().numpy().ravel()
            if g.size <= FULL_MAX:
                fx.add("grad:" + name, g, 0)
            else:
                idx = sample_indices(t, g.size)
                fx.add("gsum:" + name, [g.sum(), np.abs(g).sum(), (g * g).sum()] +
                       [g[i] for i in idx], 1)
        sd = model.state_dict()
        for name in names:
            if name.endswith("running_mean") or name.endswith("running_var"):
                fx.add("after:" + name, sd[name].numpy(), 0)
        fx.add("num_batches_tracked", [sd["bn1.num_batches_tracked"].item()], 2)
    if adam_steps:
        model = build_model(k, case_seed)
        set_mode(model)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        losses = []
        for _ in range(adam_steps):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), labels, reduction="sum")
            loss.backward()
            opt.step()
            losses.append(loss.item())
        fx.add("adam_losses", losses, 1)
        print(f"{tag}: adam losses {['%.4f' % l for l in losses]}")
    print(f"{tag}: loss_sum {loss_sum.item():.6f}, |logits| max {logits.abs().max().item():.3f}")
    fx.write(os.path.join(outdir, tag + ".bin"))


CASES = {
    #                   seed  n  h    w    k     bn_train frozen
    "train64":         (1,    2, 64,  64,  37,   1,       0),
    "frozen64_eval":   (2,    4, 64,  64,  37,   0,       1),
    "frozen64_train":  (3,    4, 64,  64,  37,   1,       1),
    "eval64_trainable": (5,   2, 64,  64,  37,   0,       0),
    "eval224":         (4,    2, 224, 224, 1000, 0,       1),
}


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "fixtures", "resnet34")
    tags = sys.argv[2:] or list(CASES)
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    for tag in tags:
        seed, n, h, w, k, bn_train, frozen = CASES[tag]
        big = tag == "eval224"
        adam = 0 if big or tag == "eval64_trainable" else 5
        run_case(outdir, tag, seed, n, h, w, k, bn_train, frozen, grads=not big, adam_steps=adam)


if __name__ == "__main__":
    main()
