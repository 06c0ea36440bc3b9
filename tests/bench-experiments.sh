#!/bin/sh
# tests/bench-experiments.sh BUILD: the two training chapters, ours beside the tutorial's PyTorch
# loop (tests/bench_experiments.py) on the same data, on the same machine, in the same run.
#  1. The whole chapter-04 experiment: BUILD/04-feature-extraction in its default mode (features
#     computed once, with a fresh cache folder so that the feature pass is timed) against the
#     tutorial's loop, which recomputes the frozen backbone on every batch of every epoch.
#     Total seconds of each, ratio_experiment04_speedup = PyTorch's / ours (above 1 = faster).
#  2. Seconds per fine-tuning epoch: BUILD/05-fine-tuning against PyTorch's loop (every weight
#     trains, Adam 1e-4). Per-epoch times leave out one-off setup (our crop cache build, given as
#     finetune_setup_s); ratio_finetune_speedup compares them, ratio_finetune_total_speedup the
#     whole runs, setup included.
# Environment:
#   BENCH_EPOCHS=N          epochs of the 04 experiment, both sides (default 30, the tutorial's)
#   BENCH_PYTORCH_EPOCHS=K  run PyTorch's 04 loop for K < N epochs only and extrapolate its total
#                           to N epochs (printed as ..._extrapolated; for slow machines)
#   BENCH_FT_EPOCHS=N       fine-tuning epochs, both sides (default 2)
#   BENCH_DEVICE=cpu|cuda   (default cpu; on cuda PyTorch uses the tutorial's fp16 autocast)
#   PETS_ROOT=DIR           dataset (default data/oxford-iiit-pet if present, else
#                           ../shared/data/oxford-iiit-pet-3class)
# The real ImageNet weights are used when data/weights/resnet34-b627a593.pth exists, else both
# sides start from a random network (--weights random --seed 0; the speed is the same).
# PyTorch is optional: without Debian's python3-torch the comparison is skipped, with a message.
set -e
BUILD=${1:-build}
here=$(dirname "$0")
. "$here/bench_lib.sh"

EPOCHS=${BENCH_EPOCHS:-30}
PT_EPOCHS=${BENCH_PYTORCH_EPOCHS:-$EPOCHS}
FT_EPOCHS=${BENCH_FT_EPOCHS:-2}
DEVICE=${BENCH_DEVICE:-cpu}
for v in "$EPOCHS" "$PT_EPOCHS" "$FT_EPOCHS"; do
  case $v in '' | *[!0-9]*) echo "error: BENCH_*EPOCHS must be whole numbers (got '$v')" >&2; exit 2 ;; esac
done
[ "$PT_EPOCHS" -le "$EPOCHS" ] || PT_EPOCHS=$EPOCHS

if [ -n "$PETS_ROOT" ]; then
  ROOT=$PETS_ROOT
elif [ -f data/oxford-iiit-pet/annotations/trainval.txt ]; then
  ROOT=data/oxford-iiit-pet
else
  ROOT=../shared/data/oxford-iiit-pet-3class
fi
if [ ! -f "$ROOT/annotations/trainval.txt" ]; then
  echo "# experiments benchmark skipped: no dataset at $ROOT (run \`make data\`, or set PETS_ROOT)"
  exit 0
fi
WEIGHTS=data/weights/resnet34-b627a593.pth
[ -f "$WEIGHTS" ] || WEIGHTS=random
for p in 04-feature-extraction 05-fine-tuning; do
  if [ ! -x "$BUILD/$p" ]; then
    echo "error: $BUILD/$p not found: build first (make build)" >&2
    exit 1
  fi
done

py=/usr/bin/python3
have_torch=0
if [ -x "$py" ] && "$py" -c "import torch, torchvision, PIL" >/dev/null 2>&1; then have_torch=1; fi
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-experiments.XXXXXX")
trap 'rm -rf "$work" "$bench_ours" "$bench_theirs"' EXIT

now() { date +%s.%N; }
# json_get FILE KEY: a number of our flat results JSON (one "key": value per line)
json_get() { awk -v k="\"$2\":" '$1 == k { v = $2; sub(/,$/, "", v); print v }' "$1"; }
# ours NAME OUTKEY EPOCHS: runs BUILD/NAME on a fresh results + cache folder, echoing its output as
# comments, then appends OUTKEY_* key=value lines (wall time measured here) to $bench_ours
ours() {
  name=$1 key=$2 n=$3
  echo "# ours: $BUILD/$name --root $ROOT --weights $WEIGHTS --seed 0 --epochs $n --device $DEVICE" \
       "--results $work/$name (fresh cache)"
  t0=$(now)
  { rc=0
    "$BUILD/$name" --root "$ROOT" --weights "$WEIGHTS" --seed 0 --epochs "$n" --device "$DEVICE" \
      --results "$work/$name" --cache "$work/$name/cache" 2>&1 || rc=$?
    echo "$rc" >"$work/rc"; } |
    sed -u 's/^/#   /'
  t1=$(now)
  if [ "$(cat "$work/rc")" != 0 ]; then
    echo "error: $BUILD/$name failed (exit $(cat "$work/rc")): see its output above" >&2
    exit 1
  fi
  j=$work/$name/$name.json
  {
    echo "${key}_total_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
    echo "${key}_setup_s=$(json_get "$j" seconds_setup)"
    [ "$key" = experiment04 ] && echo "${key}_feature_pass_s=$(json_get "$j" seconds_features)"
    echo "${key}_epoch_s=$(json_get "$j" seconds_per_epoch)"
    echo "${key}_epochs=$(json_get "$j" epochs)"
    echo "${key}_final_val_acc=$(json_get "$j" final_val_acc)"
  } | tee -a "$bench_ours"
}
# theirs MODE EPOCHS: PyTorch's loop, its key=value lines appended to $bench_theirs
theirs() {
  echo "# PyTorch: $py $here/bench_experiments.py $1 --root $ROOT --weights $WEIGHTS --epochs $2" \
       "--device $DEVICE"
  "$py" "$here/bench_experiments.py" "$1" --root "$ROOT" --weights "$WEIGHTS" --epochs "$2" \
    --device "$DEVICE" >"$work/py.out" || { cat "$work/py.out"; echo "error: PyTorch's $1 loop failed" >&2; exit 1; }
  sed -n 's/^#/#  /p' "$work/py.out"
  grep -v '^#' "$work/py.out" | tee -a "$bench_theirs"
}
# speedup NAME THEIRS_KEY OURS_KEY: ratio_NAME = PyTorch's seconds / ours (above 1 = ours faster)
speedup() {
  awk -F= -v name="$1" -v tk="$2" -v ok="$3" '
    FNR == NR { ours[$1] = $2; next } { theirs[$1] = $2 }
    END { if ((ok in ours) && (tk in theirs) && ours[ok] > 0)
            printf "ratio_%s=%.3f\n", name, theirs[tk] / ours[ok] }' "$bench_ours" "$bench_theirs"
}

[ "$EPOCHS" = 30 ] || echo "# BENCH_EPOCHS=$EPOCHS: the 04 experiment runs $EPOCHS epochs, not the tutorial's 30"
echo "# data $ROOT, weights $WEIGHTS, device $DEVICE, $(nproc) cores; 04: $EPOCHS epochs, 05: $FT_EPOCHS epochs"

# 1. the whole 04 experiment
ours 04-feature-extraction experiment04 "$EPOCHS"
if [ "$have_torch" = 1 ]; then
  if [ "$PT_EPOCHS" -lt "$EPOCHS" ]; then
    echo "# BENCH_PYTORCH_EPOCHS=$PT_EPOCHS: PyTorch's 04 loop runs $PT_EPOCHS epochs; its total for" \
         "$EPOCHS is extrapolated (measured total + $((EPOCHS - PT_EPOCHS)) x its mean epoch)"
  fi
  theirs feature-extraction "$PT_EPOCHS"
  if [ "$PT_EPOCHS" -lt "$EPOCHS" ]; then
    awk -F= -v n="$((EPOCHS - PT_EPOCHS))" '
      { v[$1] = $2 }
      END { printf "pytorch_experiment04_total_s_extrapolated=%.3f\n",
                   v["pytorch_experiment04_total_s"] + n * v["pytorch_experiment04_epoch_s"] }' \
      "$bench_theirs" | tee -a "$bench_theirs"
  fi
fi

# 2. fine-tuning epochs
ours 05-fine-tuning finetune "$FT_EPOCHS"
if [ "$have_torch" = 0 ]; then
  echo "# PyTorch comparison skipped: $py cannot import torch, torchvision, PIL" \
       "(install Debian's python3-torch, python3-torchvision and python3-pil to compare)"
  exit 0
fi
theirs fine-tuning "$FT_EPOCHS"

# 3. ratios, PyTorch's seconds / ours: above 1 = ours faster
if [ "$PT_EPOCHS" -lt "$EPOCHS" ]; then
  speedup experiment04_speedup_extrapolated pytorch_experiment04_total_s_extrapolated experiment04_total_s
else
  speedup experiment04_speedup pytorch_experiment04_total_s experiment04_total_s
fi
speedup finetune_speedup pytorch_finetune_epoch_s finetune_epoch_s
speedup finetune_total_speedup pytorch_finetune_total_s finetune_total_s
