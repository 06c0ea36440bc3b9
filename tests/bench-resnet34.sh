#!/bin/sh
# tests/bench-resnet34.sh BUILD [options]: the ResNet34 core's speed, ours beside PyTorch's in the
# same run on the same machine (all cores, batch 32, 224x224 unless options say otherwise: they
# go to both sides, e.g. --iters 3 --threads 2). Prints both sets of key=value lines, then the
# ratios ours / PyTorch (above 1 = faster; for memory, below 1 = less).
# PyTorch is optional: without Debian's python3-torch the comparison is skipped, with a message.
set -e
BUILD=${1:-build}
[ $# -gt 0 ] && shift
. "$(dirname "$0")/bench_lib.sh"

bench_run "$BUILD" bench-resnet34 bench_resnet34.py "torch, torchvision" \
  "python3-torch and python3-torchvision" "$@"
bench_ratios resnet34_eval_img_per_s resnet34_train_img_per_s resnet34_train_peak_rss_mib \
  resnet34_eval_peak_rss_mib
