#!/bin/sh
# tests/test_predict.sh BUILD SRC: build/predict end to end.
# - a checkpoint written by our pth writer, read back by predict, gives bit-identical logits and
#   features to the in-memory model that wrote it; --weights random --seed S gives the same
#   network (and the same bits on every run);
# - the top-5 lines name the right classes (pet breeds for 37 classes, ImageNet names for 1000,
#   "class N" otherwise) with softmax probabilities computed independently;
# - bad input: a tensor file of the wrong size, a missing weights file (the message says how to
#   get it), an unreadable image (named; other images still predicted; with --logits nothing is
#   written).
set -u
BUILD=$1
SRC=$2
P="$BUILD/predict"
H="$BUILD/test-predict-helper"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }

"$H" make "$T" 7 37 || { echo "FAIL: helper could not build the model"; exit 1; }
IMG_BYTES=$((3 * 224 * 224 * 4))

# --- checkpoint round trip and determinism --------------------------------------------------
if "$P" --quiet --weights "$T/model.pth" --tensor "$T/x.f32" --batch 2 \
     --logits "$T/l.f32" --features "$T/f.f32" > "$T/out_ckpt.txt"; then
  cmp -s "$T/l.f32" "$T/ref_logits.f32" && ok "checkpoint logits identical to in-memory" \
    || fail "logits from the checkpoint differ from the in-memory model's"
  cmp -s "$T/f.f32" "$T/ref_features.f32" && ok "checkpoint features identical" \
    || fail "features from the checkpoint differ"
  [ "$(wc -c < "$T/l.f32")" -eq $((2 * 37 * 4)) ] || fail "logits file size"
  [ "$(wc -c < "$T/f.f32")" -eq $((2 * 512 * 4)) ] || fail "features file size"
else
  fail "predict on our checkpoint failed"
fi

# --- --device and --precision, as the training programs ---------------------------------------
# fp32 asked for explicitly on the CPU: the same logits; the default (auto) says what it chose
if "$P" --device cpu --precision fp32 --weights "$T/model.pth" --tensor "$T/x.f32" --batch 2 \
     --logits "$T/l32.f32" > /dev/null 2> "$T/e32.txt"; then
  cmp -s "$T/l32.f32" "$T/ref_logits.f32" && ok "--device cpu --precision fp32: same logits" \
    || fail "--precision fp32 logits differ from the in-memory model's"
  grep -q "precision float32 (--precision fp32)" "$T/e32.txt" && ok "device line names fp32" \
    || { fail "--precision fp32: the device line does not say float32:"; cat "$T/e32.txt"; }
else
  fail "predict --device cpu --precision fp32 failed: $(cat "$T/e32.txt")"
fi
if "$P" --device cpu --weights "$T/model.pth" --tensor "$T/x.f32" --batch 2 > /dev/null 2> "$T/eauto.txt"; then
  grep -q "precision float32.*(--precision auto)" "$T/eauto.txt" \
    && ok "default --precision auto on the CPU: $(grep device: "$T/eauto.txt")" \
    || { fail "--precision auto on the CPU should choose float32:"; cat "$T/eauto.txt"; }
else
  fail "predict --device cpu (precision auto) failed: $(cat "$T/eauto.txt")"
fi
# bf16 is not implemented (and never emulated): refused, saying why, on every CPU
if "$P" --device cpu --precision bf16 --weights "$T/model.pth" --tensor "$T/x.f32" --batch 2 \
     > /dev/null 2> "$T/ebf.txt"; then
  fail "--precision bf16: exit status 0"
else
  grep -Eq -- "--precision bf16: (this CPU has no native bf16 \(oneDNN ISA: |not implemented yet)" "$T/ebf.txt" \
    && ok "--precision bf16 refused: $(head -n 1 "$T/ebf.txt")" \
    || { fail "--precision bf16: unclear message:"; cat "$T/ebf.txt"; }
fi
for run in 1 2; do
  "$P" --quiet --weights random --seed 7 --classes 37 --tensor "$T/x.f32" --batch 2 \
    --logits "$T/r$run.f32" > "$T/out_random$run.txt" || fail "predict --weights random failed"
done
cmp -s "$T/r1.f32" "$T/r2.f32" && ok "random weights deterministic across runs" \
  || fail "two runs with --seed 7 differ"
cmp -s "$T/r1.f32" "$T/ref_logits.f32" && ok "--weights random --seed 7 = resnet34_init_random(7)" \
  || fail "--weights random --seed 7 differs from the helper's model with seed 7"
cmp -s "$T/out_random1.txt" "$T/out_ckpt.txt" || fail "printed predictions differ between random and checkpoint"
"$P" --quiet --weights random --seed 8 --classes 37 --tensor "$T/x.f32" --batch 2 \
  --logits "$T/r8.f32" > /dev/null
cmp -s "$T/r8.f32" "$T/r1.f32" && fail "seeds 7 and 8 give the same network" || ok "seeds differ"

# --- top-5 format and values ----------------------------------------------------------------
# expected: each label line, then 5 lines "  PPP.PP%  NAME"
check_top() { # OUT LOGITS CLASSES NAMES_FILE LABEL0 LABEL1
  "$H" top "$2" "$3" 5 > "$T/top.txt"
  awk -v names="$4" -v l0="$5" -v l1="$6" -v classes="$3" '
    BEGIN { n = 0; while ((getline line < names) > 0) name[n++] = line
            if (names == "") for (i = 0; i < classes; i++) name[i] = "class " i }
    FNR == NR { want_idx[NR] = $1; want_pct[NR] = $2; next }
    { lines[++m] = $0 }
    END {
      bad = 0
      if (m != 12) { print "expected 12 lines, got " m; bad = 1 }
      if (lines[1] != l0 || lines[7] != l1) { print "label lines: " lines[1] " / " lines[7]; bad = 1 }
      k = 0
      for (i = 1; i <= m; i++) {
        if (i == 1 || i == 7) continue
        k++
        s = lines[i]
        if (s !~ /^  [ 0-9][ 0-9][0-9]\.[0-9][0-9]%  [^ ]/) { print "bad line: [" s "]"; bad = 1; continue }
        pct = substr(s, 3, 6) + 0
        nm = substr(s, 12)
        wn = name[want_idx[k]]
        d = pct - want_pct[k]; if (d < 0) d = -d
        if (nm != wn || d > 0.011) { print "line " i ": [" s "], want " want_pct[k] "% " wn; bad = 1 }
      }
      exit bad
    }' "$T/top.txt" "$1"
}
check_top "$T/out_ckpt.txt" "$T/ref_logits.f32" 37 "$SRC/data/pets_classes.txt" \
  "$T/x.f32[0]" "$T/x.f32[1]" && ok "top-5 lines: pet breeds, probabilities" || fail "top-5 (37 classes)"
"$P" --quiet --weights random --seed 3 --tensor "$T/x.f32" --batch 2 --logits "$T/in.f32" > "$T/out_in.txt" \
  && check_top "$T/out_in.txt" "$T/in.f32" 1000 "$SRC/data/imagenet_classes.txt" "$T/x.f32[0]" "$T/x.f32[1]" \
  && ok "top-5 lines: ImageNet names for 1000 classes" || fail "top-5 (1000 classes)"
"$P" --quiet --weights random --seed 3 --classes 10 --tensor "$T/x.f32" --batch 2 --logits "$T/c10.f32" > "$T/out_10.txt" \
  && check_top "$T/out_10.txt" "$T/c10.f32" 10 "" "$T/x.f32[0]" "$T/x.f32[1]" \
  && ok "top-5 lines: 'class N' for 10 classes" || fail "top-5 (10 classes)"
"$P" --quiet --weights random --classes 3 --top 5 --tensor "$T/x.f32" --batch 1 --logits "$T/c3.f32" 2>/dev/null >/dev/null \
  && fail "--batch 1 accepted for a 2-image file" || true
head -c "$IMG_BYTES" "$T/x.f32" > "$T/x1.f32"
n=$("$P" --quiet --weights random --classes 3 --tensor "$T/x1.f32" --batch 1 | wc -l)
[ "$n" -eq 4 ] && ok "--top is capped at the number of classes" || fail "3 classes: $n lines, want 4"

# --- bad input ------------------------------------------------------------------------------
expect_fail() { # DESCRIPTION PATTERN COMMAND...
  desc=$1; pat=$2; shift 2
  if "$@" > "$T/o.txt" 2> "$T/e.txt"; then fail "$desc: exit status 0"; return; fi
  grep -q -- "$pat" "$T/e.txt" && ok "$desc: $(head -n 1 "$T/e.txt")" \
    || { fail "$desc: message lacks '$pat':"; cat "$T/e.txt"; }
}
head -c $((2 * IMG_BYTES - 4)) "$T/x.f32" > "$T/short.f32"
expect_fail "truncated tensor file" "bytes, but --batch 2 needs $((2 * IMG_BYTES))" \
  "$P" --weights random --tensor "$T/short.f32" --batch 2
expect_fail "--batch larger than the file" "--batch 3 needs" \
  "$P" --weights random --tensor "$T/x.f32" --batch 3
expect_fail "--tensor without --batch" "needs --batch" "$P" --weights random --tensor "$T/x.f32"
expect_fail "missing tensor file" "$T/none.f32" "$P" --weights random --tensor "$T/none.f32" --batch 1
expect_fail "missing weights" "make data" "$P" --weights "$T/nope/resnet34.pth" "$T/img.png"
expect_fail "default weights missing" "make data" sh -c "cd '$T' && '$(cd "$BUILD" && pwd)/predict' img.png"
printf 'not a checkpoint' > "$T/bad.pth"
expect_fail "corrupt weights" "bad.pth" "$P" --weights "$T/bad.pth" "$T/img.png"
expect_fail "no input" "no input" "$P" --weights random
expect_fail "unknown option" "unknown option" "$P" --weights random --frobnicate 1 "$T/img.png"
expect_fail "bad --device" "--device gpu" "$P" --weights random --device gpu "$T/img.png"

# --- images ---------------------------------------------------------------------------------
printf 'hello' > "$T/bad.jpg"
if "$P" --quiet --weights "$T/model.pth" "$T/img.png" > "$T/o.txt" 2> "$T/e.txt"; then
  [ "$(wc -l < "$T/o.txt")" -eq 6 ] && head -n 1 "$T/o.txt" | grep -qx "$T/img.png" \
    && ok "image input: label and 5 classes" || { fail "image output:"; cat "$T/o.txt"; }
else
  fail "predict on a PNG failed: $(cat "$T/e.txt")"
fi
"$P" --quiet --weights "$T/model.pth" "$T/bad.jpg" "$T/img.png" > "$T/o.txt" 2> "$T/e.txt"
rc=$?
[ $rc -ne 0 ] && grep -q "bad.jpg" "$T/e.txt" && [ "$(wc -l < "$T/o.txt")" -eq 6 ] \
  && ok "unreadable image named, the others predicted, exit $rc" \
  || { fail "unreadable image: rc $rc"; cat "$T/e.txt" "$T/o.txt"; }
rm -f "$T/li.f32"
"$P" --quiet --weights "$T/model.pth" --logits "$T/li.f32" "$T/img.png" "$T/bad.jpg" > /dev/null 2>&1 \
  && fail "unreadable image with --logits: exit 0"
[ ! -e "$T/li.f32" ] && [ -z "$(ls "$T" | grep 'li.f32.tmp')" ] \
  && ok "unreadable image with --logits: nothing written" || fail "partial logits file left behind"
# real pet pictures when the shared subset is there: the PNG-with-alpha and the GIF named .jpg
PETS="$SRC/../shared/data/oxford-iiit-pet-3class/images"
if [ -d "$PETS" ]; then
  "$P" --quiet --weights "$T/model.pth" "$PETS/Abyssinian_5.jpg" "$PETS/Abyssinian_34.jpg" \
    "$PETS/Bengal_1.jpg" > "$T/o.txt" && [ "$(wc -l < "$T/o.txt")" -eq 18 ] \
    && ok "real pet images (PNG, GIF, JPEG)" || fail "real pet images"
else
  echo "SKIP: real pet images (PNG, GIF, JPEG): the 3-class subset $PETS was not found"
fi

"$P" --help | grep -q -- "--tensor FILE.f32" && ok "--help" || fail "--help"
if [ $fails -ne 0 ]; then echo "$fails check(s) failed"; exit 1; fi
echo "all predict checks passed"
