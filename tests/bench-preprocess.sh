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
BENCH="$BUILD/bench-preprocess"
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
if [ -x "$PY" ] && "$PY" -c 'import torch, torchvision, PIL' >/dev/null 2>&1; then
  "$PY" "$DIR/bench_preprocess.py" "$@" | tee "$theirs"
else
  echo "# PyTorch comparison skipped: $PY cannot import torch, torchvision and PIL" \
       "(install Debian's python3-torchvision and python3-pil to compare)"
  exit 0
fi

awk -F= '
  FNR == NR { if ($1 !~ /^#/) ours[$1] = $2; next }
  $1 ~ /^pytorch_/ { k = substr($1, 9); theirs[k] = $2 }
  END {
    k = "preprocess_img_per_s_1thread"
    if ((k in ours) && (k in theirs) && theirs[k] > 0)
      printf "ratio_%s=%.3f\n", k, ours[k] / theirs[k]
    if (("preprocess_img_per_s_all" in ours) && (k in theirs) && theirs[k] > 0)
      printf "ratio_preprocess_img_per_s_all_vs_pil_1thread=%.3f\n", ours["preprocess_img_per_s_all"] / theirs[k]
  }' "$ours" "$theirs"
