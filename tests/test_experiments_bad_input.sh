#!/bin/sh
# tests/test_experiments_bad_input.sh: the training chapters on bad input. Each case must fail
# with a clear message (checked by content) and a non-zero exit, or succeed where it should.
#   test_experiments_bad_input.sh BUILD TMP
# - a missing weights file: says to run `make data` or pass --weights random (never a silent switch);
# - --keep-fc with a 10-class checkpoint: refused, naming both fc shapes; without --keep-fc the
#   same checkpoint is a valid start (its fc is replaced);
# - bad options: exit 2 with a message; --precision bf16 (not implemented, never emulated):
#   refused naming the reason (no native bf16 on this CPU, or not implemented yet);
# - the default --precision auto resolves to fp32 on the CPU and the results JSON records it;
# - --resume with other settings (another seed): refused, showing both configurations;
# - a damaged (truncated) checkpoint: refused naming the file;
# - a full disk while writing results (simulated with `ulimit -f`, which makes writes past the
#   limit fail with EFBIG): exit non-zero, the previous .pth and .json left byte for byte as they
#   were, no temporary file left behind;
# - a diverging run (--lr 1e38): stops in epoch 1 with exit 3 and a message, results marked
#   diverged, no final .pth.
# shellcheck source=tests/experiments_lib.sh
. "$(dirname "$0")/experiments_lib.sh"
exp_setup "$1" "$2"
P04=$BUILD/04-feature-extraction
P05=$BUILD/05-fine-tuning
FAKE="--root $TMP/fake --device cpu --batch-size 8"

expect_fail() { # WHAT EXPECTED_RC PATTERN... -- COMMAND...
    what=$1; want=$2; shift 2
    pats=""
    while [ "$1" != "--" ]; do pats="$pats
$1"; shift; done
    shift
    "$@" > "$TMP/out" 2> "$TMP/err"
    rc=$?
    [ $rc -eq "$want" ] || fail "$what: exit $rc, expected $want; stderr: $(cat "$TMP/err")"
    echo "$pats" | while IFS= read -r p; do
        [ -z "$p" ] && continue
        grep -qF -- "$p" "$TMP/err" || { echo "FAIL: $what: message lacks '$p': $(cat "$TMP/err")"; exit 1; }
    done || exit 1
    echo "ok: $what: $(grep -m1 error "$TMP/err")"
}

# shellcheck disable=SC2086
expect_fail "missing weights" 1 "$TMP/none.pth" "make data" "--weights random" -- \
    "$P04" $FAKE --weights "$TMP/none.pth" --results "$TMP/r0"
# shellcheck disable=SC2086
expect_fail "missing weights (05)" 1 "make data" "--weights random" -- \
    "$P05" $FAKE --weights "$TMP/none.pth" --results "$TMP/r0"
[ -e "$TMP/r0/04-feature-extraction.json" ] && fail "a failed run left results"

"$BUILD/test-experiments-start" --seed 3 --classes 10 --out "$TMP/ten.pth" || fail "test-experiments-start"
# shellcheck disable=SC2086
expect_fail "10-class checkpoint with --keep-fc" 1 "fc.weight (10, 512)" "fc.weight (37, 512)" -- \
    "$P05" $FAKE --weights "$TMP/ten.pth" --keep-fc --epochs 0 --results "$TMP/r1"
# shellcheck disable=SC2086
"$P05" $FAKE --weights "$TMP/ten.pth" --epochs 0 --results "$TMP/r1" > "$TMP/out" 2>&1 ||
    fail "a 10-class checkpoint without --keep-fc should start a new head: $(cat "$TMP/out")"
grep -q "new 512->37 head" "$TMP/out" || fail "should say it starts a new head"
echo "ok: 10-class checkpoint without --keep-fc gets a new head"

expect_fail "bad --epochs" 2 "--epochs" -- "$P04" --epochs abc
expect_fail "unknown option" 2 "unknown option '--frobnicate'" -- "$P05" --frobnicate
expect_fail "--bn-train is 04's" 2 "unknown option '--bn-train'" -- "$P05" --bn-train
expect_fail "bad --precision" 2 "--precision" -- "$P04" --precision fp8
# shellcheck disable=SC2086
expect_fail "--precision bf16 (04)" 1 "--precision bf16: " "native bf16" -- \
    "$P04" $FAKE --weights random --precision bf16 --epochs 0 --results "$TMP/rb"
# shellcheck disable=SC2086
expect_fail "--precision bf16 (05)" 1 "--precision bf16: " "native bf16" -- \
    "$P05" $FAKE --weights random --precision bf16 --epochs 0 --results "$TMP/rb"
"$P04" --help > "$TMP/out" 2>&1 || fail "--help should exit 0"
grep -q -- "--bn-train" "$TMP/out" || fail "04 --help should document --bn-train"

# a complete run, then resume cases
# shellcheck disable=SC2086
"$P04" $FAKE --weights random --seed 5 --epochs 1 --results "$TMP/r2" > "$TMP/out" 2>&1 ||
    fail "04 on the fake set failed: $(cat "$TMP/out")"
grep -q "precision float32.*(--precision auto)" "$TMP/out" ||
    fail "04 should say it chose float32 by --precision auto: $(grep device: "$TMP/out")"
J="$TMP/r2/04-feature-extraction.json"
grep -q '"precision": *"fp32"' "$J" && grep -q '"precision_requested": *"auto"' "$J" &&
    grep -q '"precision_choice": *"float32' "$J" ||
    fail "the results JSON should record precision fp32 chosen by auto: $(grep precision "$J")"
echo "ok: --precision auto -> $(grep -m1 device: "$TMP/out"), recorded in the JSON"
# shellcheck disable=SC2086
expect_fail "--resume with another seed" 1 "other settings" "seed=5" "seed=6" -- \
    "$P04" $FAKE --weights random --seed 6 --epochs 2 --resume --results "$TMP/r2"
cp "$TMP/r2/04-feature-extraction.ckpt" "$TMP/ckpt.good"
head -c 300 "$TMP/ckpt.good" > "$TMP/r2/04-feature-extraction.ckpt"
# shellcheck disable=SC2086
expect_fail "truncated checkpoint" 1 "04-feature-extraction.ckpt" -- \
    "$P04" $FAKE --weights random --seed 5 --epochs 2 --resume --results "$TMP/r2"
cp "$TMP/ckpt.good" "$TMP/r2/04-feature-extraction.ckpt"

# full disk: the results of the first run must survive a failing second run
cp "$TMP/r2/04-feature-extraction.pth" "$TMP/pth.before"
cp "$TMP/r2/04-feature-extraction.json" "$TMP/json.before"
# 20 MB: enough for the caches and the small files, not for the 85 MB model
(
    trap '' XFSZ
    ulimit -f 20480
    exec "$P04" --root "$TMP/fake" --device cpu --batch-size 8 --weights random --seed 5 \
        --epochs 2 --results "$TMP/r2"
) > "$TMP/out" 2> "$TMP/err"
rc=$?
[ $rc -ne 0 ] || fail "a failing write must give a non-zero exit"
grep -q "04-feature-extraction.pth.*write" "$TMP/err" || fail "full disk: message should name the file and the failed write: $(cat "$TMP/err")"
grep -q "left as it was" "$TMP/err" || fail "full disk: message should say the old file is kept: $(cat "$TMP/err")"
cmp -s "$TMP/pth.before" "$TMP/r2/04-feature-extraction.pth" || fail "full disk: the previous .pth was damaged"
cmp -s "$TMP/json.before" "$TMP/r2/04-feature-extraction.json" || fail "full disk: the previous .json was damaged"
ls "$TMP/r2"/*.tmp.* > /dev/null 2>&1 && fail "full disk: temporary files left behind"
echo "ok: full disk: $(grep error "$TMP/err")"

# divergence: an absurd --lr makes the loss non-finite in epoch 1; the run stops there (exit 3)
# with a message, a JSON marked diverged, and no final model (the previous run's .pth is removed)
[ -f "$TMP/r2/04-feature-extraction.pth" ] || fail "divergence: the earlier run's .pth should exist"
# shellcheck disable=SC2086
expect_fail "--lr 1e38 diverges" 3 "diverged in epoch 1 of 3" "training loss is nan" "lower --lr" \
    "removed $TMP/r2/04-feature-extraction.pth" -- \
    "$P04" $FAKE --weights random --seed 5 --epochs 3 --lr 1e38 --results "$TMP/r2"
grep -q '"status": "diverged"' "$TMP/r2/04-feature-extraction.json" || fail "divergence: JSON not marked"
grep -q '"diverged_epoch": 1' "$TMP/r2/04-feature-extraction.json" || fail "divergence: JSON lacks the epoch"
grep -q '"model": ""' "$TMP/r2/04-feature-extraction.json" || fail "divergence: JSON names a model"
grep -q '"predictions": ""' "$TMP/r2/04-feature-extraction.json" || fail "divergence: JSON names predictions"
[ -e "$TMP/r2/04-feature-extraction.predictions.csv" ] && fail "divergence: the earlier run's predictions are left"
[ -e "$TMP/r2/04-feature-extraction.pth" ] && fail "divergence: a .pth is left as if trained"
[ "$(wc -l < "$TMP/r2/04-feature-extraction.csv")" -eq 2 ] || fail "divergence: the CSV should hold epoch 1"
echo PASS
