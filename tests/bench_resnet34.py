#!/usr/bin/python3
# tests/bench_resnet34.py: PyTorch's side of `make bench` for the ResNet34 core (tests/bench-resnet34.sh
# runs it beside build/bench-resnet34 and prints ratios). The same two measurements, each in a
# fresh Python process so that its peak RSS is its own:
#   eval:  torchvision resnet34 in eval mode under torch.no_grad(), batch of random images;
#   train: model.train(), CrossEntropyLoss(reduction='sum'), backward, torch.optim.Adam step.
# Prints pytorch_resnet34_<eval|train>_img_per_s=, _gflop_per_s= and _peak_rss_mib= lines.
#   /usr/bin/python3 tests/bench_resnet34.py [--batch 32] [--iters 5] [--threads N] [--size 224]
# On a GPU (tests/gpu/device-check.sh): --device cuda --precision fp16 uses the tutorial's
# autocast + GradScaler, and --channels-last the NHWC memory format; peak memory is then the
# GPU's (torch.cuda.max_memory_allocated).
import argparse
import os
import resource
import subprocess
import sys
import time


def run_phase(args):
    import torch
    import torchvision

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cuda = args.device == "cuda"
    dev = torch.device("cuda" if cuda else "cpu")
    amp = cuda and args.precision == "fp16"
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    if cuda:
        torch.backends.cudnn.benchmark = True
    model = torchvision.models.resnet34(num_classes=args.classes).to(dev, memory_format=fmt)
    x = torch.randn(args.batch, 3, args.size, args.size, device=dev).to(memory_format=fmt)
    y = torch.randint(0, args.classes, (args.batch,), device=dev)
    if args.phase == "eval":
        model.eval()

        def step():
            with torch.no_grad(), torch.autocast("cuda", enabled=amp):
                model(x)
    else:
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")
        scaler = torch.cuda.amp.GradScaler(enabled=amp)

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", enabled=amp):
                loss = loss_fn(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(args.warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        step()
    sync()
    dt = time.perf_counter() - t0
    if cuda:
        mem = torch.cuda.max_memory_allocated() / 2**20
    else:
        mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    print("%.6f %.3f" % (args.batch * args.iters / dt, mem))


def resnet34_macs(size, classes):
    # multiply-adds of every convolution and of fc, as build/bench-resnet34 counts them
    def conv(cin, cout, k, stride, pad, h):
        h = (h + 2 * pad - k) // stride + 1
        return h, h * h * cout * cin * k * k

    h, first = conv(3, 64, 7, 2, 3, size)
    total = first
    h = (h + 2 - 3) // 2 + 1
    cin = 64
    for blocks, width, stride0 in ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)):
        for b in range(blocks):
            stride = stride0 if b == 0 else 1
            h1, m1 = conv(cin, width, 3, stride, 1, h)
            h2, m2 = conv(width, width, 3, 1, 1, h1)
            total += m1 + m2
            if stride != 1 or cin != width:
                total += conv(cin, width, 1, stride, 0, h)[1]
            h, cin = h2, width
    return total + 512 * classes, first


def main():
    ap = argparse.ArgumentParser(description="PyTorch ResNet34 eval and training-step speed")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--only", choices=("eval", "train"))
    ap.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    ap.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--phase", choices=("eval", "train"), help=argparse.SUPPRESS)  # child
    # options only build/bench-resnet34 knows (--no-peak, ...) are ignored here
    args, _ = ap.parse_known_args()
    if args.phase:
        run_phase(args)
        return

    import torch
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    macs, first = resnet34_macs(args.size, args.classes)
    flops = {"eval": 2 * macs, "train": 2 * (3 * macs - first)}
    print("# pytorch %s: batch %d, %dx%d, %d classes, %d timed iterations after %d warm-up, "
          "%d threads, %s %s%s" % (torch.__version__, args.batch, args.size, args.size, args.classes,
                                   args.iters, args.warmup, args.threads, args.device,
                                   "amp" if args.precision == "fp16" else "fp32",
                                   ", channels_last" if args.channels_last else ""))
    sys.stdout.flush()
    failed = 0
    for phase in ("eval", "train"):
        if args.only and phase != args.only:
            continue
        cmd = [sys.executable, os.path.abspath(__file__), "--phase", phase] + [
            "--%s=%s" % (k, getattr(args, k)) for k in ("batch", "iters", "warmup", "threads",
                                                         "size", "classes", "device", "precision")]
        if args.channels_last:
            cmd.append("--channels-last")
        r = subprocess.run(cmd, stdout=subprocess.PIPE, universal_newlines=True)
        if r.returncode != 0:
            print("error: PyTorch %s measurement failed" % phase, file=sys.stderr)
            failed = 1
            continue
        img_s, rss = map(float, r.stdout.split()[-2:])
        print("pytorch_resnet34_%s_img_per_s=%.2f" % (phase, img_s))
        print("pytorch_resnet34_%s_gflop_per_s=%.1f" % (phase, img_s * flops[phase] / 1e9))
        print("pytorch_resnet34_%s_peak_%s_mib=%.0f" % (phase, "gpu" if args.device == "cuda" else "rss", rss))
        sys.stdout.flush()
    sys.exit(failed)


if __name__ == "__main__":
    main()
