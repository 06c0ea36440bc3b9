#!/usr/bin/env python3
"""tests/ref_transfer.py: the tutorial's own PyTorch training loop, run as the reference for
chapters 04 and 05 (a developer tool, never needed by `make test`).

It trains on ../shared/data/oxford-iiit-pet-3class (CPU, float32, Debian's python3-torch 1.13) in
the three variants our programs implement, from the same starting checkpoint and in the same
batch order, and writes the per-epoch numbers that tests/test_experiments_parity.sh compares ours
against:
  cached-eval-bn  chapter 04's default: frozen backbone with BatchNorm in eval mode (model.eval()
                  for the training pass too), only fc trains (features recomputed every epoch
                  here, cached by our program: the numbers must agree);
  bn-train        04 --bn-train: the tutorial's code as written, model.train() with a frozen
                  backbone, so BatchNorm uses batch statistics and its running statistics drift;
  fine-tune       chapter 05: every weight trains, BatchNorm in train mode.
All use CrossEntropyLoss(reduction='sum'), Adam and ReduceLROnPlateau(factor=0.1, patience=2)
stepped on the mean validation loss; losses are reported as sums / number of samples.

The starting checkpoint: a seeded random-init torchvision ResNet34 with a 37-way fc, written by
our build/test-experiments-start (both sides load the very same file; ours with --keep-fc). A
random network's BatchNorm running statistics are (0, 1), which makes eval-mode BatchNorm the
identity and the features explode with depth; so this script first calibrates them (cumulative
batch statistics over the training images, BatchNorm momentum=None), commits them as
bn_stats.f32 (68 KB), and the start file is rebuilt from seed + statistics, by the C helper, both
here and in the test.

Inputs, three ways:
  ours         the uint8 224x224 crops that our programs decode and cache (read from the cache
               file that `build/05-fine-tuning --epochs 0` writes), normalized as torchvision does:
               only the network and training arithmetic differ between the two sides;
  torchvision  PIL decoding + ResNet34_Weights.IMAGENET1K_V1.transforms(): also covers the JPEG
               decoder difference (libjpeg vs stb_image, at most 3/255 per pixel);
  ours-fp64    our crops, and the whole loop (model, inputs, optimizer) in float64;
  ours-jitter  our crops, each value moved by about one float32 rounding step (relative 2^-24
               times a normal draw, seeded), the loop in float32.
               These two (run for --fp64-variants only) measure how far float32 rounding alone
               moves a run: the scale against which our own float32 run is judged (see
               tests/fixtures/transfer/README.md).
The batch order is loader_permutation(seed, epoch) of code/data/loader.c (tests/loader_permutation.py).

Usage (from the repository root, after building into build/):
  /usr/bin/python3 tests/ref_transfer.py [--build build] [--root DIR] [--out tests/fixtures/transfer]
"""
import argparse
import hashlib
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from loader_permutation import permutation  # noqa: E402

VARIANTS = ("cached-eval-bn", "bn-train", "fine-tune")


def read_split(root, split):
    """(names, labels) of annotations/<split>.txt in file order, as code/data/dataset.c reads it."""
    names, labels = [], []
    for line in open(Path(root) / "annotations" / f"{split}.txt"):
        f = line.split()
        if not f or f[0].startswith("#"):
            continue
        names.append(f[0])
        labels.append(int(f[1]) - 1)
    return names, labels


def read_crop_cache(path):
    """The uint8 crops of a PETCACHE file (layout documented in code/experiment/experiment.c)."""
    b = Path(path).read_bytes()
    assert b[:8] == b"PETCACHE", path
    version, kind, n, _ = struct.unpack_from("<4I", b, 8)
    (sb,) = struct.unpack_from("<Q", b, 24)
    assert version in (1, 2) and kind == 1 and sb == 224 * 224 * 3, (version, kind, sb)
    lab = (n * 4 + 63) // 64 * 64
    labels = np.frombuffer(b, "<i4", n, 128)
    data = np.frombuffer(b, np.uint8, n * sb, 128 + lab).reshape(n, 224, 224, 3)
    ok = np.frombuffer(b, np.uint8, n, 128 + lab + n * sb)
    assert ok.all(), f"{path}: some images failed to decode"
    return data, labels


def normalize_u8(crops):
    """torchvision's ConvertImageDtype + Normalize on our uint8 crops: (x / 255 - mean) / std."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div(255)
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float32).view(1, 3, 1, 1)
    return x.sub(mean).div(std).contiguous()


def torchvision_inputs(root, names):
    tf = torchvision.models.ResNet34_Weights.IMAGENET1K_V1.transforms()
    return torch.stack([tf(Image.open(Path(root) / "images" / f"{n}.jpg").convert("RGB"))
                        for n in names])


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def calibrate_bn(init_path, x_train, batch):
    """Cumulative-average BatchNorm statistics of the random network over the training images."""
    model = torchvision.models.resnet34(num_classes=37)
    model.load_state_dict(torch.load(init_path, weights_only=True))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(x_train), batch):
            model(x_train[i:i + batch])
    parts = [v.numpy().astype("<f4") for k, v in model.state_dict().items()
             if k.endswith(".running_mean") or k.endswith(".running_var")]
    return np.concatenate(parts).tobytes()


def train(variant, start_sd, xs, ys, epochs, lr, seed, batch, dtype=torch.float32):
    """The tutorial's loop. Returns [(epoch, train_loss, val_loss, val_acc, lr)]."""
    (x_tr, x_va), (y_tr, y_va) = xs, ys
    model = torchvision.models.resnet34(num_classes=37)
    model.load_state_dict(start_sd)  # the fc of the start file is kept (our --keep-fc)
    if dtype != torch.float32:  # the same loop in float64: how far float32 rounding moves it
        model.to(dtype)
        x_tr, x_va = x_tr.to(dtype), x_va.to(dtype)
    if variant != "fine-tune":
        for p in model.parameters():
            p.requires_grad = False
        for p in model.fc.parameters():
            p.requires_grad = True
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    criterion = nn.CrossEntropyLoss(reduction="sum")
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=2,
                                                           verbose=True)
    n, nv = len(y_tr), len(y_va)
    rows = []
    for epoch in range(epochs):
        t0 = time.time()
        lr_used = optimizer.param_groups[0]["lr"]
        if variant == "cached-eval-bn":
            model.eval()
        else:
            model.train()
        order = torch.tensor(permutation(n, seed, epoch))
        train_loss = 0.0
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            optimizer.zero_grad()
            loss = criterion(model(x_tr[idx]), y_tr[idx])
            loss.backward()
            optimizer.step()
            train_loss += loss.item()
        model.eval()
        val_loss, correct = 0.0, 0
        with torch.no_grad():
            for i in range(0, nv, batch):
                out = model(x_va[i:i + batch])
                val_loss += criterion(out, y_va[i:i + batch]).item()
                correct += (out.argmax(1) == y_va[i:i + batch]).sum().item()
        scheduler.step(val_loss / nv)
        rows.append((epoch + 1, train_loss / n, val_loss / nv, correct / nv, lr_used))
        print(f"  {variant}: Epoch: {epoch + 1:2d}/{epochs} | Epoch Duration: "
              f"{time.time() - t0:.3f} sec | Val Loss: {val_loss / nv:.5f} | "
              f"Val Acc: {correct / nv:.3f} |", flush=True)
    return rows


def write_reference(ref, rows, merge):
    """Writes rows (variant, input, epoch, train_loss, val_loss, val_acc, lr) to ref, atomically;
    with merge, the rows of the existing file for other (variant, input) pairs are kept."""
    lines = [f"{r[0]},{r[1]},{r[2]},{r[3]:.9g},{r[4]:.9g},{r[5]:.9g},{r[6]:.9g}" for r in rows]
    if merge and ref.exists():
        done = {(r[0], r[1]) for r in rows}
        kept = [l for l in ref.read_text().splitlines()[1:]
                if tuple(l.split(",")[:2]) not in done]
        lines = kept + lines
    tmp = ref.with_name(ref.name + ".tmp")
    with open(tmp, "w") as f:
        f.write("variant,input,epoch,train_loss,val_loss,val_acc,lr\n")
        f.write("".join(l + "\n" for l in lines))
    os.replace(tmp, ref)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=str(REPO / "build"))
    ap.add_argument("--root", default=str(REPO.parent / "shared/data/oxford-iiit-pet-3class"))
    ap.add_argument("--out", default=str(REPO / "tests/fixtures/transfer"))
    ap.add_argument("--init-seed", type=int, default=7, help="seed of the random start network")
    ap.add_argument("--seed", type=int, default=1, help="seed of the batch order (our --seed)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", default="cached-eval-bn=12,bn-train=2,fine-tune=2")
    ap.add_argument("--inputs", default="ours,torchvision,ours-fp64,ours-jitter",
                    help="ours: our decoded crops; torchvision: PIL + transforms(); ours-fp64: "
                         "our crops with the whole loop in float64; ours-jitter: our crops moved "
                         "by a float32 rounding step (these two for --fp64-variants only)")
    ap.add_argument("--fp64-variants", default="bn-train,fine-tune",
                    help="variants also run as ours-fp64 and ours-jitter")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="variants to run")
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of reference.csv that this run does not recompute, and "
                         "reuse the committed bn_stats.f32")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    epochs = {k: int(v) for k, v in (kv.split("=") for kv in args.epochs.split(","))}
    lrs = {"cached-eval-bn": 1e-3, "bn-train": 1e-3, "fine-tune": 1e-4}  # our programs' defaults
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    build = Path(args.build)
    tmp = Path(tempfile.mkdtemp(prefix="ref_transfer."))

    # 1. the random network, and our decoded crops (05-fine-tuning --epochs 0 builds the caches)
    init = tmp / "init.pth"
    subprocess.run([build / "test-experiments-start", "--seed", str(args.init_seed),
                    "--classes", "37", "--out", init], check=True)
    subprocess.run([build / "05-fine-tuning", "--root", args.root, "--weights", init, "--keep-fc",
                    "--epochs", "0", "--device", "cpu", "--results", tmp / "results"], check=True)
    names = {s: read_split(args.root, s) for s in ("trainval", "test")}
    crops = {}
    for s in ("trainval", "test"):
        (path,) = (tmp / "results/cache").glob(f"crops-{s}-*.u8")
        data, labels = read_crop_cache(path)
        assert list(labels) == names[s][1], "cache labels differ from the annotations"
        crops[s] = data
    ys = (torch.tensor(names["trainval"][1]), torch.tensor(names["test"][1]))

    # 2. calibrated BatchNorm statistics -> the start checkpoint
    x_ours = (normalize_u8(crops["trainval"]), normalize_u8(crops["test"]))
    stats = out / "bn_stats.f32"
    if not (args.merge and stats.exists()):
        stats.write_bytes(calibrate_bn(init, x_ours[0], args.batch))
    start = tmp / "start.pth"
    subprocess.run([build / "test-experiments-start", "--seed", str(args.init_seed), "--classes",
                    "37", "--bn-stats", stats, "--out", start], check=True)
    start_sd = torch.load(start, weights_only=True)

    # 3. the reference runs; reference.csv is rewritten after each one, so that a long
    # regeneration can stop and continue with --merge and the runs still to do (--inputs,
    # --variants): the float64 fine-tuning alone takes most of an hour on 2 cores
    rows = []
    write_reference(out / "reference.csv", rows, args.merge)  # without --merge: starts it afresh
    fp64_variants = args.fp64_variants.split(",")
    for inp in args.inputs.split(","):
        dtype = torch.float64 if inp == "ours-fp64" else torch.float32
        if inp in ("ours", "ours-fp64"):
            xs = x_ours
        elif inp == "ours-jitter":  # every input value moved by about one float32 rounding step
            g = torch.Generator().manual_seed(0)
            xs = tuple(x * (1 + 2.0 ** -24 * torch.randn(x.shape, generator=g)) for x in x_ours)
            d = (xs[0] - x_ours[0]).abs()
            print(f"jitter: {(d > 0).float().mean():.3f} of the inputs moved, max |diff| {d.max():.3g}")
        else:
            xs = (torchvision_inputs(args.root, names["trainval"][0]),
                  torchvision_inputs(args.root, names["test"][0]))
            d = (xs[0] - x_ours[0]).abs()
            print(f"torchvision vs our decoding, normalized inputs: max |diff| {d.max():.4f}, "
                  f"mean {d.mean():.6f}")
        for v in args.variants.split(","):
            if inp in ("ours-fp64", "ours-jitter") and v not in fp64_variants:
                continue
            print(f"{v} on {inp} inputs, {epochs[v]} epochs, lr {lrs[v]}", flush=True)
            for r in train(v, start_sd, xs, ys, epochs[v], lrs[v], args.seed, args.batch, dtype):
                rows.append((v, inp) + r)
            write_reference(out / "reference.csv", rows, True)

    with open(out / "params.txt", "w") as f:
        f.write(f"init_seed={args.init_seed}\nseed={args.seed}\nbatch_size={args.batch}\n"
                f"epochs={args.epochs}\nlr_04=0.001\nlr_05=0.0001\n"
                f"start_sha256={sha256(start)}\n"
                f"torch={torch.__version__}\ntorchvision={torchvision.__version__}\n")
    print(f"wrote {out}/reference.csv, bn_stats.f32, params.txt")


if __name__ == "__main__":
    main()
