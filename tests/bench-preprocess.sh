#!/bin/sh
# tests/bench-preprocess.sh BUILD [options]: decode + preprocess speed (file -> normalized
# 3x224x224 float32), ours (build/bench-preprocess: 1 thread and all threads) beside torchvision's
# PIL pipeline (tests/bench_preprocess.py, 1 thread) on the same files in the same run. Options
# (--root DIR, --repeat R) go to both sides. Prints both sets of key=value lines, then
# ratio_preprocess_img_per_s_1thread = ours / PIL's per thread (above 1 = faster).
# PyTorch is optional: without Debian's python3-torchvision the comparison is skipped, with a message.
set -e
BUILD=${1:-build}
[ $# -gt 0 ] && shift
. "$(dirname "$0")/bench_lib.sh"

bench_run "$BUILD" bench-preprocess bench_preprocess.py "torch, torchvision, PIL" \
  "python3-torchvision and python3-pil" "$@"
bench_ratios preprocess_img_per_s_1thread \
  preprocess_img_per_s_all_vs_pil_1thread:preprocess_img_per_s_all:preprocess_img_per_s_1thread
