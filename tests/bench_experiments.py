#!/usr/bin/python3
"""tests/bench_experiments.py: PyTorch's side of `make bench` for chapters 04 and 05
(tests/bench-experiments.sh runs it beside build/04-feature-extraction and build/05-fine-tuning on
the same data, in the same run, and prints the ratios).

The tutorial's loop as written, so that the comparison is with what a PyTorch user runs:
torchvision resnet34, a Dataset over annotations/<split>.txt that opens each JPEG with PIL and
applies ResNet34_Weights.IMAGENET1K_V1.transforms(), DataLoader(batch 32, shuffled training set,
num_workers = cores), CrossEntropyLoss(reduction='sum'), Adam, ReduceLROnPlateau(factor 0.1,
patience 2) stepped on the mean validation loss, model.train() for the training batches and
model.eval() + no_grad for validation, fp16 autocast + GradScaler on a GPU (fp32 on the CPU).
  feature-extraction  every backbone weight requires_grad=False, a new nn.Linear(512, 37),
                      Adam lr 1e-3: the frozen backbone is recomputed on every batch, every epoch
                      (under model.train(), as the tutorial does);
  fine-tuning         every weight trains, Adam lr 1e-4.

  /usr/bin/python3 tests/bench_experiments.py feature-extraction|fine-tuning --root DIR
      [--weights PATH|random] [--epochs N] [--batch-size 32] [--device cpu|cuda]
      [--threads N] [--workers N] [--seed 0]

Prints the tutorial's per-epoch lines as `#` comments, then key=value lines, prefixed
pytorch_experiment04_ or pytorch_finetune_:
  total_s          wall seconds from the script's start (`import torch` included, also given
                   apart as import_s) to the end of the last epoch
  epoch_s          mean seconds per epoch (training + validation, DataLoader start included:
                   the tutorial's loaders start their worker processes anew every epoch)
  first_epoch_s    seconds of epoch 1, loader_wait_s mean seconds per epoch spent waiting for
                   the DataLoader (decoding that did not overlap the network)
  setup_s          model construction and weight loading
  epochs, final_val_acc
"""
import argparse
import os
import sys
import time

T_START = time.perf_counter()

import torch  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

T_IMPORTED = time.perf_counter()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_transfer import read_split  # noqa: E402  (names, labels) of annotations/<split>.txt


class PetSplit(torch.utils.data.Dataset):
    """One split of Oxford-IIIT Pet: (transformed image, label) pairs, decoded on every access."""

    def __init__(self, root, split, transform):
        self.root, self.transform = root, transform
        self.names, self.labels = read_split(root, split)

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        with Image.open(os.path.join(self.root, "images", self.names[i] + ".jpg")) as im:
            x = self.transform(im.convert("RGB"))
        return x, self.labels[i]


def build_model(args, dev):
    model = torchvision.models.resnet34()
    if args.weights != "random":
        model.load_state_dict(torch.load(args.weights, map_location="cpu"))
    if args.mode == "feature-extraction":
        for p in model.parameters():
            p.requires_grad = False
    model.fc = nn.Linear(model.fc.in_features, 37)  # new, trainable
    return model.to(dev)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=("feature-extraction", "fine-tuning"))
    ap.add_argument("--root", required=True)
    ap.add_argument("--weights", default="random")
    ap.add_argument("--epochs", type=int, default=None, help="default 30 (04) or 2 (05)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=None, help="default 1e-3 (04) or 1e-4 (05)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    fe = args.mode == "feature-extraction"
    epochs = args.epochs if args.epochs is not None else (30 if fe else 2)
    lr = args.lr if args.lr is not None else (1e-3 if fe else 1e-4)
    prefix = "pytorch_experiment04_" if fe else "pytorch_finetune_"

    # torch 1.13 may default to fewer threads than cores; ours uses every core
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cuda = args.device == "cuda"
    dev = torch.device(args.device)
    if cuda:
        torch.backends.cudnn.benchmark = True

    t0 = time.perf_counter()
    model = build_model(args, dev)
    tf = torchvision.models.ResNet34_Weights.IMAGENET1K_V1.transforms()
    train_ds = PetSplit(args.root, "trainval", tf)
    val_ds = PetSplit(args.root, "test", tf)
    train_loader = torch.utils.data.DataLoader(train_ds, batch_size=args.batch_size, shuffle=True,
                                               num_workers=args.workers, pin_memory=cuda)
    val_loader = torch.utils.data.DataLoader(val_ds, batch_size=args.batch_size, shuffle=False,
                                             num_workers=args.workers, pin_memory=cuda)
    optimizer = torch.optim.Adam((p for p in model.parameters() if p.requires_grad), lr=lr)
    criterion = nn.CrossEntropyLoss(reduction="sum")
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=2)
    scaler = torch.cuda.amp.GradScaler(enabled=cuda)
    setup_s = time.perf_counter() - t0
    print("# pytorch %s, torchvision %s: %s, %d epochs, batch %d, lr %g, %s%s, %d threads, "
          "%d DataLoader workers, weights %s, %d train / %d val images"
          % (torch.__version__, torchvision.__version__, args.mode, epochs, args.batch_size, lr,
             args.device, " fp16 autocast" if cuda else " fp32", args.threads, args.workers,
             args.weights, len(train_ds), len(val_ds)), flush=True)

    durations, waits = [], []
    val_acc = float("nan")
    for epoch in range(epochs):
        te = time.perf_counter()
        wait = 0.0
        model.train()  # the tutorial's: BatchNorm uses batch statistics, even when frozen
        tw = time.perf_counter()
        for x, y in train_loader:
            wait += time.perf_counter() - tw
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            optimizer.zero_grad()
            with torch.autocast("cuda", enabled=cuda):
                loss = criterion(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            tw = time.perf_counter()
        model.eval()
        val_loss, correct = 0.0, 0
        tw = time.perf_counter()
        with torch.no_grad():
            for x, y in val_loader:
                wait += time.perf_counter() - tw
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                with torch.autocast("cuda", enabled=cuda):
                    out = model(x)
                val_loss += criterion(out.float(), y).item()
                correct += (out.argmax(1) == y).sum().item()
                tw = time.perf_counter()
        val_loss /= len(val_ds)
        val_acc = correct / len(val_ds)
        lr_before = optimizer.param_groups[0]["lr"]
        scheduler.step(val_loss)
        if cuda:
            torch.cuda.synchronize()
        durations.append(time.perf_counter() - te)
        waits.append(wait)
        print("# Epoch: %2d/%d | Epoch Duration: %.3f sec | Val Loss: %.5f | Val Acc: %.3f |"
              % (epoch + 1, epochs, durations[-1], val_loss, val_acc), flush=True)
        if optimizer.param_groups[0]["lr"] < lr_before:
            print("# Epoch %5d: reducing learning rate of group 0 to %.4e."
                  % (epoch + 1, optimizer.param_groups[0]["lr"]), flush=True)
    total = time.perf_counter() - T_START

    print("%simport_s=%.3f" % (prefix, T_IMPORTED - T_START))
    print("%ssetup_s=%.3f" % (prefix, setup_s))
    print("%sepochs=%d" % (prefix, epochs))
    if epochs:
        print("%sfirst_epoch_s=%.3f" % (prefix, durations[0]))
        print("%sepoch_s=%.3f" % (prefix, sum(durations) / epochs))
        print("%sloader_wait_s=%.3f" % (prefix, sum(waits) / epochs))
        print("%sfinal_val_acc=%.4f" % (prefix, val_acc))
    print("%stotal_s=%.3f" % (prefix, total))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
