#!/bin/sh
# tests/test_self_check.sh BUILD TMP: the GPU self-check through the programs, on the CPU stand-in
# of the GPU (PETS_CUDA_STANDIN=1) with a planted wrong kernel (PETS_STANDIN_FAULT=relu) or a
# planted GPU error (PETS_STANDIN_FAULT=error):
#   --device auto   falls back to the CPU, exit 0, a warning saying what differed and how to report;
#   --device cuda   stops, exit 1, the same message;
#   --no-self-check trusts the GPU; a sound stand-in passes silently.
# predict runs it fully; 04, 05 and bench-resnet34 are checked to take --no-self-check (they call
# the same resnet34_trust_gpu, tested in test_self_check.c).
set -u
BUILD=${1:?usage: test_self_check.sh BUILD TMP}
TMP=${2:?usage: test_self_check.sh BUILD TMP}
rm -rf "$TMP" && mkdir -p "$TMP" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }
X=$TMP/x.f32
dd if=/dev/zero of="$X" bs=602112 count=1 2>/dev/null # one 3x224x224 float32 image of zeros
export PETS_CUDA_STANDIN=1 OMP_WAIT_POLICY=PASSIVE
predict() { "$BUILD/predict" --weights random --classes 10 --tensor "$X" --batch 1 --top 1 "$@"; }

for fault in relu error; do
  PETS_STANDIN_FAULT=$fault predict --device auto > "$TMP/out" 2> "$TMP/err"; rc=$?
  echo "-- fault $fault, --device auto: exit $rc"; cat "$TMP/err"
  [ $rc = 0 ] || bad "$fault: --device auto must fall back to the CPU and succeed (exit $rc)"
  grep -q "self-check failed" "$TMP/err" || bad "$fault: auto: no self-check warning"
  grep -q "Using the CPU" "$TMP/err" || bad "$fault: auto: the warning does not say it uses the CPU"
  grep -q "report" "$TMP/err" || bad "$fault: auto: the warning does not say how to report it"
  grep -q "^device: CPU" "$TMP/err" || bad "$fault: auto: the run did not move to the CPU"
  [ $fault = relu ] && { grep -q "logits differ" "$TMP/err" || bad "relu: the message does not say what differed"; }
  [ $fault = error ] && { grep -q "CUDNN_STATUS_EXECUTION_FAILED" "$TMP/err" || bad "error: the message lacks the failing call"; }

  PETS_STANDIN_FAULT=$fault predict --device cuda > "$TMP/out" 2> "$TMP/err"; rc=$?
  echo "-- fault $fault, --device cuda: exit $rc"; cat "$TMP/err"
  [ $rc = 1 ] || bad "$fault: --device cuda must stop with exit 1 (got $rc)"
  grep -q "^error: --device cuda: the GPU self-check failed" "$TMP/err" || bad "$fault: cuda: no clear error"
  grep -q "report" "$TMP/err" || bad "$fault: cuda: the error does not say how to report it"
done

PETS_STANDIN_FAULT=relu predict --device cuda --no-self-check > "$TMP/out" 2> "$TMP/err"; rc=$?
echo "-- fault relu, --device cuda --no-self-check: exit $rc"
[ $rc = 0 ] || bad "--no-self-check: exit $rc"
grep -q "self-check" "$TMP/err" && bad "--no-self-check still ran the self-check"
predict --device cuda > "$TMP/out" 2> "$TMP/err"; rc=$?
echo "-- sound stand-in, --device cuda: exit $rc"
[ $rc = 0 ] || bad "a sound GPU: exit $rc"
grep -q "self-check" "$TMP/err" && bad "a sound GPU got a self-check message: $(cat "$TMP/err")"

for prog in 04-feature-extraction 05-fine-tuning; do
  "$BUILD/$prog" --no-self-check --help > "$TMP/help" 2>&1 || bad "$prog does not take --no-self-check"
  grep -q -- "--no-self-check" "$TMP/help" || bad "$prog --help does not list --no-self-check"
done
"$BUILD/bench-resnet34" --help | grep -q -- "--no-self-check" || bad "bench-resnet34 --help does not list --no-self-check"
PETS_STANDIN_FAULT=relu "$BUILD/bench-resnet34" --device cuda --size 32 --batch 2 --iters 1 --warmup 0 \
  --no-peak > "$TMP/out" 2> "$TMP/err"; rc=$?
echo "-- bench-resnet34, fault relu, --device cuda: exit $rc"
[ $rc = 1 ] && grep -q "self-check failed" "$TMP/err" || bad "bench-resnet34 --device cuda must stop on a failed self-check (exit $rc)"
rm -rf "$TMP"
[ $fail = 0 ] && echo "self-check: auto falls back, cuda stops, --no-self-check skips"
exit $fail
