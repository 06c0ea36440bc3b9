#!/bin/sh
# tests/test_experiments_resume.sh: an interrupted training run, resumed with --resume, ends with
# exactly the numbers and the bytes of an uninterrupted one.
#   test_experiments_resume.sh BUILD TMP
# On a synthetic dataset (build/make-fake-pets) limited to 12 training images (every second one:
# 11 decodable plus a truncated JPEG) and its 10 validation images (one missing), random weights,
# batches of 4 (several Adam steps per epoch, a short last batch):
# - 05-fine-tuning: run A does 2 epochs; run B is killed with SIGKILL during its 2nd epoch (as soon
#   as the first checkpoint appears), then resumed. The CSVs (every column but the seconds), the
#   validation predictions and the final .pth must be identical, byte for byte.
#   Temporaries that a kill during a write would leave are removed when the run starts again.
# - 04-feature-extraction --bn-train and the cached default: stopped after 1 epoch (--epochs 1),
#   then resumed with --epochs 2: same comparison against an uninterrupted 2-epoch run.
# shellcheck source=tests/experiments_lib.sh
. "$(dirname "$0")/experiments_lib.sh"
exp_setup "$1" "$2"
COMMON="--root $TMP/fake --limit 12 --weights random --seed 5 --batch-size 4 --device cpu"


# --- 05: kill -9 in the middle of epoch 2
# shellcheck disable=SC2086
"$BUILD/05-fine-tuning" $COMMON --epochs 2 --results "$TMP/a" > "$TMP/a.out" 2>&1 ||
    fail "05 run A failed: $(tail -5 "$TMP/a.out")"
grep -q '"train_failed": 1' "$TMP/a/05-fine-tuning.json" || fail "the truncated JPEG should be counted"
grep -q '"val_failed": 1' "$TMP/a/05-fine-tuning.json" || fail "the missing image should be counted"
# shellcheck disable=SC2086
"$BUILD/05-fine-tuning" $COMMON --epochs 2 --results "$TMP/b" > "$TMP/b.out" 2>&1 &
PID=$!
i=0
while [ ! -f "$TMP/b/05-fine-tuning.ckpt" ]; do
    kill -0 $PID 2> /dev/null || fail "05 run B ended before its first checkpoint: $(tail -5 "$TMP/b.out")"
    i=$((i + 1)); [ $i -lt 6000 ] || { kill -9 $PID; fail "no checkpoint after 10 minutes"; }
    sleep 0.1
done
kill -9 $PID
wait $PID 2> /dev/null
[ -f "$TMP/b/05-fine-tuning.json" ] && fail "run B finished before it could be interrupted"
grep -c '^Epoch: ' "$TMP/b.out" | grep -qx 1 || fail "run B should have been killed in epoch 2"
# what a kill -9 in the middle of a write leaves: a temporary of a process that no longer exists
echo partial > "$TMP/b/05-fine-tuning.ckpt.tmp.2147483646"
echo partial > "$TMP/b/cache/crops-test-0.u8.tmp.2147483646"
# shellcheck disable=SC2086
"$BUILD/05-fine-tuning" $COMMON --epochs 2 --resume --results "$TMP/b" > "$TMP/b2.out" 2>&1 ||
    fail "05 --resume failed: $(tail -5 "$TMP/b2.out")"
grep -q 'continuing .* after epoch 1 of 2' "$TMP/b2.out" || fail "05 --resume did not continue after epoch 1"
grep -q '"resumed_from_epoch": 1' "$TMP/b/05-fine-tuning.json" || fail "json resumed_from_epoch"
same_run 05-fine-tuning "$TMP/a" "$TMP/b"
ls "$TMP/b/cache"/*.tmp.* > /dev/null 2>&1 && fail "stale cache temporaries not removed"
grep -q "removed .*ckpt.tmp.2147483646" "$TMP/b2.out" || fail "the resumed run should say it removed the stale temporary"

# --- 04, both variants: stop after epoch 1, extend to 2
for variant in "" "--bn-train"; do
    name=04-feature-extraction${variant:+-bn-train}
    # shellcheck disable=SC2086
    "$BUILD/04-feature-extraction" $COMMON $variant --epochs 2 --results "$TMP/c" > "$TMP/c.out" 2>&1 ||
        fail "$name run failed: $(tail -5 "$TMP/c.out")"
    # shellcheck disable=SC2086
    "$BUILD/04-feature-extraction" $COMMON $variant --epochs 1 --results "$TMP/d" > "$TMP/d.out" 2>&1 ||
        fail "$name 1 epoch failed: $(tail -5 "$TMP/d.out")"
    # shellcheck disable=SC2086
    "$BUILD/04-feature-extraction" $COMMON $variant --epochs 2 --resume --results "$TMP/d" > "$TMP/d2.out" 2>&1 ||
        fail "$name --resume failed: $(tail -5 "$TMP/d2.out")"
    grep -q 'continuing .* after epoch 1 of 2' "$TMP/d2.out" || fail "$name --resume did not continue"
    same_run "$name" "$TMP/c" "$TMP/d"
done
echo PASS
