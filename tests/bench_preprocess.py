#!/usr/bin/python3
"""bench_preprocess.py [--root DIR] [--repeat R]: torchvision's PIL pipeline, single-threaded, on
the files that build/bench-preprocess times (DIR/images/*.jpg, sorted): Image.open + convert('RGB')
+ ResNet34_Weights.IMAGENET1K_V1.transforms(). Prints pytorch_preprocess_img_per_s_1thread=<v>
(tests/bench-preprocess.sh prints it beside ours, with the ratio)."""
import argparse
import glob
import os
import sys
import time

import torch
from PIL import Image
from torchvision.models import ResNet34_Weights

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "shared", "data", "oxford-iiit-pet-3class")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=None)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="ignored: PIL runs single-threaded")
    a = ap.parse_args()
    root = a.root or (SHARED if os.path.isdir(os.path.join(SHARED, "images")) else "data/oxford-iiit-pet")
    paths = sorted(glob.glob(os.path.join(root, "images", "*.jpg")))
    if not paths:
        sys.exit("error: %s/images: no .jpg files to time" % root)
    torch.set_num_threads(1)
    tf = ResNet34_Weights.IMAGENET1K_V1.transforms()

    def one(p):
        with Image.open(p) as im:
            return tf(im.convert("RGB"))

    for p in paths[:16]:  # warm-up, as ours does
        one(p)
    t0 = time.perf_counter()
    for _ in range(a.repeat):
        for p in paths:
            one(p)
    dt = time.perf_counter() - t0
    print("pytorch_preprocess_images=%d" % len(paths))
    print("pytorch_preprocess_img_per_s_1thread=%.1f" % (len(paths) * a.repeat / dt))


if __name__ == "__main__":
    main()
