#!/bin/sh
# tests/test_experiments_parity.sh: runs a training chapter end to end on the real 3-class subset
# and compares its per-epoch numbers with the tutorial's PyTorch loop (tests/ref_transfer.py,
# committed in tests/fixtures/transfer/reference.csv).
#   test_experiments_parity.sh BUILD TMP SHARED VARIANT
# VARIANT: cached-eval-bn (04), bn-train (04 --bn-train) or fine-tune (05). Exits 77 (skipped)
# without the shared subset.
#
# Both sides start from the same checkpoint (build/test-experiments-start: seeded random ResNet34 +
# committed calibrated BatchNorm statistics; our programs keep its fc with --keep-fc), use the
# same batch order (loader_permutation) and, for the main comparison, the same pixels (the
# reference fed our decoded crops). Tolerances (relative, per epoch; measured values and the
# reasoning in tests/fixtures/transfer/README.md):
# - 04 (cached-eval-bn, bn-train), same pixels: losses 1e-4, accuracy 1 image of 298. The math is
#   the same float32 math in another order; measured here: <= 7e-8 and 0 images. Other CPUs pick
#   other oneDNN kernels (other summation orders, ~1e-6 per forward), hence the margin; any real
#   mistake (BatchNorm mode, loss reduction, batch order, scheduler) moves them by > 1e-2.
# - 05 (fine-tune): train loss 5e-3 in epoch 1 then 3e-2, val loss 0.1 then 0.5, accuracy 20
#   images. Training every layer of a random network is chaotic: moving PyTorch's own inputs by
#   one float32 rounding step (the ours-jitter rows) moves its first-epoch training loss by
#   1.9e-3, its validation loss by 5% then 9% and its accuracy by up to 8 images, so only the
#   first epoch's training loss can be held fairly tightly (ours: 1.5e-3; the bound was 2e-3
#   under the earlier batch order, where the jitter moved it by only 3e-4); the looser bounds
#   still catch a broken backward pass, optimizer or BatchNorm update, which change the losses by
#   far more.
# - against PyTorch fed torchvision's own decoding (libjpeg vs stb_image, <= 3/255 per pixel):
#   the same-pixel tolerances plus, per epoch, the distance between PyTorch's own two runs (its
#   torchvision-pixel run against its our-pixel run, from reference.csv): if ours is within
#   tolerance of PyTorch on the same pixels, it is within that sum of PyTorch on other pixels
#   (triangle inequality). A fixed bound here was a guess: in 05, where one rounding step of the
#   inputs already moves the first epoch's loss by 3e-4, the other pixels moved PyTorch's own
#   epoch-1 train loss by 1.7e-3, and ours on Debian 13 (oneDNN 3.7: other summation orders)
#   landed 2.6e-3 from PyTorch's torchvision-pixel run while 9.2e-4 from its same-pixel run.
#
# What the fine-tune comparison CANNOT catch: any mistake that moves 05's numbers by less than
# those bounds. It is not checked against a float64 reference (ours-fp64 rows, printed as [info]
# where the fixture has them: for bn-train; fine-tune's take an hour and are not regenerated),
# since float32 rounding alone moves the validation loss by several percent. For
# example a biased running variance (BatchNorm's running_var updated with the batch variance over
# n instead of n - 1) changes running_var by at most 1/(32*7*7 - 1) = 6.4e-4 relative here (the
# smallest n, layer4, 7x7 per image), and the losses by far less than the 0.1 / 0.5 allowed: this
# test passes with it. The running statistics are checked where such a mistake shows:
# test_backend_cpu.c (the unbiased update, per channel, 1e-5) and test_resnet34.c (train64:
# every running_mean/var after one training step against PyTorch, rtol 1e-4, where layer4 sees
# n = 2*2*2 = 8 values, a bias of 14%). Likewise Adam's moments and the loss scaling are checked
# in test_train_nn.c, the backward pass in test_resnet34.c; this test shows that the pieces are
# put together as the tutorial's loop (batch order, modes, reduction, scheduler).
set -u
BUILD=$1
TMP=$2
SHARED=$3
VARIANT=$4
HERE=$(cd "$(dirname "$0")" && pwd)
FIX=$HERE/fixtures/transfer
fail() { echo "FAIL: $*"; exit 1; }

[ -f "$SHARED/annotations/trainval.txt" ] || { echo "SKIP: $SHARED not found"; exit 77; }
[ -f "$FIX/reference.csv" ] || fail "$FIX/reference.csv missing: run tests/ref_transfer.py"
rm -rf "$TMP" && mkdir -p "$TMP" || fail "cannot create $TMP"

param() { sed -n "s/^$1=//p" "$FIX/params.txt"; }
INIT_SEED=$(param init_seed)
SEED=$(param seed)

# the starting checkpoint, rebuilt from seed + committed statistics: it must be the reference's
"$BUILD/test-experiments-start" --seed "$INIT_SEED" --classes 37 --bn-stats "$FIX/bn_stats.f32" \
    --out "$TMP/start.pth" || fail "test-experiments-start failed"
SUM=$(sha256sum "$TMP/start.pth" | cut -d' ' -f1)
[ "$SUM" = "$(param start_sha256)" ] ||
    fail "the starting checkpoint differs from the reference's ($SUM); resnet34_init_random or the pth writer changed: rerun tests/ref_transfer.py"

# tolerances: train-loss rtol, val-loss rtol, accuracy images (same pixels; against torchvision's
# pixels, plus PyTorch's own distance between the two)
case $VARIANT in
cached-eval-bn | bn-train) TOL="1e-4 1e-4 1" ;;
fine-tune) TOL="5e-3,3e-2 0.1,0.5 20" ;;
esac
case $VARIANT in
cached-eval-bn) PROG=04-feature-extraction; EXTRA=""; NAME=04-feature-extraction; EPOCHS=12 ;;
bn-train) PROG=04-feature-extraction; EXTRA="--bn-train"; NAME=04-feature-extraction-bn-train; EPOCHS=2 ;;
fine-tune) PROG=05-fine-tuning; EXTRA=""; NAME=05-fine-tuning; EPOCHS=2 ;;
*) fail "unknown variant $VARIANT" ;;
esac
# PETS_TEST_QUICK=1 (`make sanitize` sets it: everything runs 10x slower or more there): the
# same program and checks of its outputs, but 1 epoch on 16 images of each split (--limit 16),
# so the comparisons with PyTorch's numbers (which are for the whole subset) are skipped.
NVAL=298
QUICK=0
LIMIT=""
if [ "${PETS_TEST_QUICK:-0}" = 1 ]; then
    QUICK=1
    echo "SKIP (PETS_TEST_QUICK=1): 1 epoch on 16 images per split instead of $EPOCHS on the subset; no comparison with PyTorch"
    EPOCHS=1
    NVAL=16
    LIMIT="--limit 16"
    EXTRA="$EXTRA $LIMIT"
fi

R=$TMP/results
# shellcheck disable=SC2086
"$BUILD/$PROG" --root "$SHARED" --weights "$TMP/start.pth" --keep-fc --seed "$SEED" \
    --epochs "$EPOCHS" --device cpu $EXTRA --results "$R" > "$TMP/out" 2> "$TMP/err" ||
    fail "$PROG failed: $(tail -5 "$TMP/err")"
cat "$TMP/out"

# the outputs chapter 06 and the report read
for f in csv json pth predictions.csv ckpt; do
    [ -s "$R/$NAME.$f" ] || fail "$R/$NAME.$f missing"
done
ls "$R"/*.tmp.* > /dev/null 2>&1 && fail "temporary files left in $R"
head -1 "$R/$NAME.csv" | grep -qx 'epoch,train_loss,val_loss,val_acc,lr,seconds' || fail "csv header"
[ "$(wc -l < "$R/$NAME.csv")" -eq $((EPOCHS + 1)) ] || fail "csv should have $EPOCHS epochs"
[ "$(wc -l < "$R/$NAME.predictions.csv")" -eq $((NVAL + 1)) ] || fail "predictions should have $NVAL rows"
grep -q "\"mode\": \"$VARIANT\"" "$R/$NAME.json" || fail "json mode"
grep -q '"weights_pretrained": 0' "$R/$NAME.json" || fail "json weights_pretrained"
grep -q "\"val_images\": $NVAL" "$R/$NAME.json" || fail "json val_images"
grep -c '^Epoch: ' "$TMP/out" | grep -qx "$EPOCHS" || fail "expected $EPOCHS epoch lines"
# the saved model is a 37-class torchvision state dict that our programs load again
# shellcheck disable=SC2086
"$BUILD/05-fine-tuning" --root "$SHARED" --weights "$R/$NAME.pth" --keep-fc --epochs 0 --device cpu $LIMIT \
    --results "$TMP/reload" > /dev/null 2> "$TMP/err" || fail "cannot reload $NAME.pth: $(cat "$TMP/err")"
[ $QUICK = 1 ] && { echo "PASS (quick)"; exit 0; }

# shellcheck disable=SC2086
"$BUILD/test-experiments-compare" "$FIX/reference.csv" "$VARIANT" ours "$R/$NAME.csv" 298 $TOL ||
    fail "$VARIANT differs from PyTorch (same pixels)"
# shellcheck disable=SC2086
"$BUILD/test-experiments-compare" "$FIX/reference.csv" "$VARIANT" torchvision "$R/$NAME.csv" 298 $TOL ours ||
    fail "$VARIANT differs from PyTorch (torchvision's decoding)"
for input in ours-fp64 ours-jitter; do # information: PyTorch in float64, PyTorch jittered
    grep -q "^$VARIANT,$input," "$FIX/reference.csv" &&
        "$BUILD/test-experiments-compare" "$FIX/reference.csv" "$VARIANT" $input "$R/$NAME.csv" \
            298 1 1 298 | sed 's/^/  [info] /'
done
echo "PASS"
