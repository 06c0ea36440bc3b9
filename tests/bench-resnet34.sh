#!/bin/sh
# tests/bench-resnet34.sh BUILD [options]: the ResNet34 core's speed, ours beside PyTorch's in the
# same run on the same machine (all cores, batch 32, 224x224 unless options say otherwise: they
# go to both sides, e.g. --iters 3 --threads 2). Prints both sets of key=value lines, then the
# ratios ours / PyTorch (above 1 = faster; for memory, below 1 = less).
# PyTorch is optional: without Debian's python3-torch the comparison is skipped, with a message.
set -e
BUILD=${1:-build}
[ $# -gt 0 ] && shift
BENCH="$BUILD/bench-resnet34"
if [ ! -x "$BENCH" ]; then
  echo "error: $BENCH not found: build first (make build)" >&2
  exit 1
fi
PY=/usr/bin/python3
DIR=$(dirname "$0")
ours=$(mktemp)
theirs=$(mktemp)
trap 'rm -f "$ours" "$theirs"' EXIT

"$BENCH" "$@" | tee "$ours"
if [ -x "$PY" ] && "$PY" -c 'import torch, torchvision' >/dev/null 2>&1; then
  "$PY" "$DIR/bench_resnet34.py" "$@" | tee "$theirs"
else
  echo "# PyTorch comparison skipped: $PY cannot import torch and torchvision" \
       "(install Debian's python3-torch and python3-torchvision to compare)"
  exit 0
fi

# ratio KEY: ours / PyTorch's value of KEY
awk -F= '
  FNR == NR { if ($1 !~ /^#/) ours[$1] = $2; next }
  $1 ~ /^pytorch_/ { k = substr($1, 9); if (k in ours) theirs[k] = $2 }
  END {
    n = split("resnet34_eval_img_per_s resnet34_train_img_per_s resnet34_train_peak_rss_mib resnet34_eval_peak_rss_mib", keys, " ")
    for (i = 1; i <= n; i++) {
      k = keys[i]
      if ((k in ours) && (k in theirs) && theirs[k] > 0)
        printf "ratio_%s=%.3f\n", k, ours[k] / theirs[k]
    }
  }' "$ours" "$theirs"
