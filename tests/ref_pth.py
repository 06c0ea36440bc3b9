#!/usr/bin/python3
"""ref_pth.py: PyTorch-side fixtures and checks for the C checkpoint code (code/checkpoint/pth.c).

Run by developers with Debian's python3-torch (/usr/bin/python3); `make test` never needs it.

  /usr/bin/python3 tests/ref_pth.py                 # (re)write tests/fixtures/pth/*
  /usr/bin/python3 tests/ref_pth.py --check F.pth [--expect F.txt]
      torch.load(F.pth, weights_only=True) (full torch.load for protocol 4+); compare with the values in F.txt (if given); if the
      keys are a ResNet34's, load them into torchvision's resnet34(num_classes=K) (strict).
  /usr/bin/python3 tests/ref_pth.py --torch-expect F.pth F.txt
      write F.txt, the expected values of a checkpoint that C wrote (c_written.pth), from what
      torch.load reads in it: so test-pth checks the C writer against PyTorch, not against itself.
  /usr/bin/python3 tests/ref_pth.py --resnet OUT.pth [--classes K] [--no-nbt]
      torch.save a torchvision resnet34 state dict (random init, seeded), for timing and round
      trips (87 MB: keep it out of the repository).

Fixture files (small): NAME.pth written by torch.save, NAME.txt the expected values, one tensor a
line: "<name> <dtype> <ndim> <dims...> : <values...>" (floats as exact decimal repr).
"""
import argparse
import collections
import os
import pickle
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "fixtures", "pth")
DTYPES = {torch.float32: "f32", torch.float16: "f16", torch.float64: "f64", torch.int64: "i64",
          torch.int32: "i32", torch.uint8: "u8"}


def write_expect(path, sd):
    with open(path, "w") as f:
        for k, v in sd.items():
            v = v.detach()
            vals = v.contiguous().reshape(-1)
            if v.dtype.is_floating_point:
                vals = [repr(float(x)) for x in vals.double().tolist()]
            else:
                vals = [str(int(x)) for x in vals.tolist()]
            dims = " ".join(str(d) for d in v.shape)
            f.write(f"{k} {DTYPES[v.dtype]} {v.dim()}{' ' + dims if dims else ''} : "
                    f"{' '.join(vals)}\n")


def read_expect(path):
    out = collections.OrderedDict()
    for line in open(path):
        head, _, vals = line.rstrip("\n").partition(" : ")
        parts = head.split()
        name, dt, nd = parts[0], parts[1], int(parts[2])
        shape = [int(x) for x in parts[3:3 + nd]]
        out[name] = (dt, shape, vals.split())
    return out


def gen(seed):
    return torch.Generator().manual_seed(seed)


def save(name, sd, protocol=2):
    path = os.path.join(FIX, name + ".pth")
    torch.save(sd, path, pickle_protocol=protocol)
    write_expect(os.path.join(FIX, name + ".txt"), sd)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def make_fixtures():
    os.makedirs(FIX, exist_ok=True)
    g = gen(1)
    # dtypes: every supported dtype, scalars, an empty tensor, views with offsets and strides,
    # an nn.Parameter, and a module-style _metadata set through BUILD.
    sd = collections.OrderedDict()
    sd["conv.weight"] = torch.randn(2, 3, 2, 2, generator=g)
    sd["half"] = torch.randn(5, generator=g).half()
    sd["double"] = torch.randn(2, 2, generator=g).double()
    sd["bn.num_batches_tracked"] = torch.tensor(7)
    sd["neg_long"] = torch.tensor([-3, 2**40, -(2**62)], dtype=torch.int64)
    sd["int"] = torch.tensor([1, -2, 3], dtype=torch.int32)
    sd["bytes"] = torch.tensor([0, 1, 254, 255], dtype=torch.uint8)
    sd["scalar_f"] = torch.tensor(1.5)
    sd["empty"] = torch.zeros(0, 3)
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    sd["transposed"] = base.t()            # strides (1, 4): a non-contiguous view
    sd["row_view"] = base[1]               # storage offset 4 into the shared 12-element storage
    sd["param"] = torch.nn.Parameter(torch.randn(3, generator=g))
    sd["wide"] = torch.arange(300, dtype=torch.float32)  # BININT2 sizes
    sd._metadata = collections.OrderedDict([("", {"version": 1}), ("bn", {"version": 2})])
    save("dtypes", sd)

    # many: > 256 memo entries (LONG_BINPUT / LONG_BINGET), plain dict without _metadata, as
    # the reference for the byte-exact round trip.
    g = gen(2)
    sd = collections.OrderedDict()
    for i in range(120):
        kind = i % 4
        if kind == 0:
            sd[f"layer{i}.weight"] = torch.randn(3, 2, generator=g)
        elif kind == 1:
            sd[f"layer{i}.bias"] = torch.randn(3, generator=g).half()
        elif kind == 2:
            sd[f"layer{i}.num_batches_tracked"] = torch.tensor(i, dtype=torch.int64)
        else:
            sd[f"layer{i}.w4"] = torch.randn(1, 2, 1, 2, 1, generator=g).double()
    save("many", sd)

    # many_meta: _metadata after > 256 memo entries, so its repeated "version" key comes back
    # through LONG_BINGET (as in torchvision's resnet34 checkpoint).
    g = gen(3)
    sd = collections.OrderedDict()
    for i in range(40):
        sd[f"m{i}.weight"] = torch.randn(1, generator=g)
    sd._metadata = collections.OrderedDict([(f"m{i}", {"version": 2}) for i in range(40)])
    save("many_meta", sd)

    # proto2 .. proto5: one state dict saved with each pickle protocol torch.load reads (torch's
    # default is 2; 4 and 5 add FRAME, SHORT_BINUNICODE, STACK_GLOBAL and MEMOIZE). Over 256 memo
    # entries, so protocols 4 and 5 number them with MEMOIZE past BINGET's one-byte range.
    for protocol in (2, 3, 4, 5):
        g = gen(4)
        sd = collections.OrderedDict()
        sd["w"] = torch.randn(2, 3, generator=g)
        sd["half"] = torch.randn(3, generator=g).half()
        sd["double"] = torch.randn(2, generator=g).double()
        sd["nbt"] = torch.tensor(-(2**40))
        sd["int"] = torch.tensor([7, -8], dtype=torch.int32)
        sd["bytes"] = torch.tensor([0, 200], dtype=torch.uint8)
        sd["empty"] = torch.zeros(3, 0)
        base = torch.arange(6, dtype=torch.float32).reshape(2, 3)
        sd["transposed"] = base.t()
        sd["row"] = base[1]
        sd["param"] = torch.nn.Parameter(torch.randn(2, generator=g))
        for i in range(24):
            sd[f"m{i}.weight"] = torch.randn(1, generator=g)
        sd._metadata = collections.OrderedDict([("", {"version": 1}), ("m0", {"version": 2})])
        save(f"proto{protocol}", sd, protocol)

    # legacy: the pre-1.6 format, which must be refused with a re-save hint.
    path = os.path.join(FIX, "legacy.pth")
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    print(f"wrote {path}")


RESNET_KEY = "layer4.2.bn2.running_var"


def check(path, expect):
    try:
        sd = torch.load(path, weights_only=True)
        how = "weights_only=True"
    except pickle.UnpicklingError as e:
        # torch 1.13's weights_only unpickler lacks protocol 4's FRAME opcode (0x95); our own
        # proto4/proto5 fixtures are then read by the full unpickler.
        if "Unsupported operand 149" not in str(e):
            raise
        sd = torch.load(path)
        how = "weights_only=False: torch 1.13's weights_only cannot read protocol 4+"
    assert isinstance(sd, dict), f"{path}: top level is {type(sd)}"
    print(f"{path}: torch.load({how}) ok, {len(sd)} tensors")
    bad = 0
    if expect:
        ref = read_expect(expect)
        if list(ref.keys()) != list(sd.keys()):
            print("key mismatch:", list(ref.keys())[:5], list(sd.keys())[:5])
            return 1
        for k, (dt, shape, vals) in ref.items():
            t = sd[k]
            if DTYPES[t.dtype] != dt or list(t.shape) != shape:
                print(f"{k}: {DTYPES[t.dtype]} {list(t.shape)} != {dt} {shape}")
                bad += 1
                continue
            flat = t.reshape(-1)
            if t.dtype.is_floating_point:
                got = [float(x) for x in flat.double().tolist()]
                want = [float(x) for x in vals]
            else:
                got = [int(x) for x in flat.tolist()]
                want = [int(x) for x in vals]
            if got != want:
                print(f"{k}: values differ")
                bad += 1
        print(f"{len(ref)} tensors compared with {expect}: {bad} mismatches")
    if RESNET_KEY in sd:
        import torchvision
        k = sd["fc.weight"].shape[0]
        m = torchvision.models.resnet34(num_classes=k)
        m.load_state_dict(sd, strict=True)
        print(f"loaded into torchvision resnet34(num_classes={k}) (strict)")
    return 1 if bad else 0


# ----------------------------------------------------------------------------
# the expected values of the C-written fixture, as PyTorch reads them

def torch_expect(pth, txt):
    sd = torch.load(pth, weights_only=True)
    assert isinstance(sd, dict), f"{pth}: top level is {type(sd)}"
    write_expect(txt + ".tmp", sd)
    os.replace(txt + ".tmp", txt)
    print(f"wrote {txt}: {len(sd)} tensors as torch.load reads {pth}")


def make_resnet(out, classes, nbt):
    import torchvision
    torch.manual_seed(0)
    sd = torchvision.models.resnet34(num_classes=classes).state_dict()
    if not nbt:
        for k in [k for k in sd if k.endswith("num_batches_tracked")]:
            del sd[k]
    torch.save(sd, out)
    print(f"wrote {out} ({os.path.getsize(out)} bytes, {len(sd)} tensors)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check")
    ap.add_argument("--expect")
    ap.add_argument("--resnet")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--no-nbt", action="store_true")
    ap.add_argument("--torch-expect", nargs=2, metavar=("PTH", "TXT"))
    a = ap.parse_args()
    if a.torch_expect:
        torch_expect(*a.torch_expect)
        return
    if a.check:
        sys.exit(check(a.check, a.expect))
    if a.resnet:
        make_resnet(a.resnet, a.classes, not a.no_nbt)
        return
    make_fixtures()


if __name__ == "__main__":
    main()
