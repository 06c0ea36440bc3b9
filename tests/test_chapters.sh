#!/bin/sh
# tests/test_chapters.sh BUILD TMP [SHARED]: chapters 01-03 end to end.
#   - on a synthetic dataset (build/make-fake-pets): counts, unreadable files reported by name and
#     reason (a truncated JPEG, a missing file), the figures and result files;
#   - bad input: a missing root, a missing annotation file, a malformed annotation line: a clear
#     message, a non-zero exit, and no result file (partial or not) left behind;
#   - --help of each program; --dump of one tensor (and its refusal of a truncated JPEG);
#   - on the real 3-class subset SHARED when it exists: 300 + 298 images, class ids 1 2 6, nothing
#     unreadable, the PNG-with-alpha and GIF files decode.
set -u
BUILD=$1
TMP=$2
SHARED=${3:-}
rm -rf "$TMP"
mkdir -p "$TMP"
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
has() { grep -q -- "$2" "$1" || fail "$1 lacks '$2': $(cat "$1")"; }
key() { # FILE KEY VALUE: the flat JSON file has "KEY": VALUE
    grep -q "^  \"$2\": $3,\{0,1\}\$" "$1" || fail "$1: expected \"$2\": $3, got: $(grep "\"$2\"" "$1")"
}
no_results() { # DIR: nothing was written there
    if [ -d "$1" ] && [ -n "$(ls -A "$1")" ]; then fail "files left in $1: $(ls -A "$1")"; fi
}
P01=$BUILD/01-data-loading P02=$BUILD/02-visualization P03=$BUILD/03-preprocessing

# --- --help
for p in $P01 $P02 $P03; do
    "$p" --help > "$TMP/help" 2>&1 || fail "$p --help exited non-zero"
    has "$TMP/help" "usage:"
    has "$TMP/help" "--root DIR"
done

# --- the synthetic dataset
FAKE=$TMP/fake
"$BUILD/make-fake-pets" "$FAKE" || fail "make-fake-pets failed"
R=$TMP/results
"$P01" --root "$FAKE" --results "$R" > "$TMP/out" 2> "$TMP/err" || fail "01 failed on the fake set: $(cat "$TMP/err")"
J=$R/01-data-loading.json
key "$J" trainval_images 24
key "$J" test_images 10
key "$J" num_classes 3
key "$J" class_ids '"1 6 37"'
key "$J" class_37_name '"Yorkshire Terrier"'
key "$J" class_6_test 3
key "$J" trainval_unreadable 1
key "$J" test_unreadable 1
key "$J" decoded_images 32
key "$J" unreferenced_list '"Abyssinian_100.mat"'
has "$J" '"unreadable_files": "Bengal_3.jpg (.*truncated.*); Bengal_9.jpg (.*Bengal_9.jpg.*)"'
has "$TMP/err" "unreadable: .*Bengal_3.jpg"
has "$TMP/err" "unreadable: .*Bengal_9.jpg"
has "$R/01-data-loading.csv" "^37,Yorkshire Terrier,dog,8,4$"

"$P02" --root "$FAKE" --results "$R" --out "$TMP/figs/pets.png" > "$TMP/out" 2> "$TMP/err" || fail "02 failed on the fake set: $(cat "$TMP/err")"
[ -s "$TMP/figs/pets.png" ] || fail "02 wrote no figure"
key "$R/02-visualization.json" indices '"0 1 2 3 4 6 7 8 9 10 12 13 14 15 16 18 19 20 21 22"'
key "$R/02-visualization.json" unreadable 1
has "$TMP/err" "Bengal_3.jpg"

"$P03" --root "$FAKE" --results "$R" --out "$TMP/figs/prep.png" > "$TMP/out" 2> "$TMP/err" || fail "03 failed on the fake set: $(cat "$TMP/err")"
[ -s "$TMP/figs/prep.png" ] || fail "03 wrote no figure"
key "$R/03-preprocessing.json" samples_used 23
key "$R/03-preprocessing.json" unreadable 1
key "$R/03-preprocessing.json" crop_size 224
"$P03" --image "$FAKE/images/Abyssinian_2.jpg" --dump "$TMP/t.f32" > /dev/null || fail "--dump failed"
[ "$(wc -c < "$TMP/t.f32")" = 602112 ] || fail "--dump wrote $(wc -c < "$TMP/t.f32") bytes, expected 3*224*224*4"
if "$P03" --image "$FAKE/images/Bengal_3.jpg" --dump "$TMP/bad.f32" 2> "$TMP/err"; then fail "--dump of a truncated JPEG succeeded"; fi
has "$TMP/err" "Bengal_3.jpg.*truncated"
[ -e "$TMP/bad.f32" ] && fail "--dump left a file for a truncated JPEG"
ls "$TMP" "$R" "$TMP/figs" | grep -q '\.tmp\.' && fail "temporary files left behind"

# --- bad input: each program fails cleanly and writes nothing
check_bad() { # ROOT EXPECTED-MESSAGE
    for p in $P01 $P02 $P03; do
        out=$TMP/bad-results
        rm -rf "$out"
        extra=""
        [ "$p" = "$P01" ] || extra="--out $out/fig.png"
        if "$p" --root "$1" --results "$out" $extra > /dev/null 2> "$TMP/err"; then
            fail "$(basename "$p") succeeded on a bad root ($2)"
        fi
        has "$TMP/err" "$2"
        no_results "$out"
    done
}
check_bad "$TMP/nowhere" "dataset root '$TMP/nowhere' not found: run \`make data\`.*--root DIR"
cp -r "$FAKE" "$TMP/noann" && rm "$TMP/noann/annotations/test.txt" "$TMP/noann/annotations/trainval.txt"
check_bad "$TMP/noann" "noann/annotations/trainval.txt: cannot open.*make data"
cp -r "$FAKE" "$TMP/notest" && rm "$TMP/notest/annotations/test.txt"
rm -rf "$TMP/bad-results"
if "$P01" --root "$TMP/notest" --results "$TMP/bad-results" 2> "$TMP/err" > /dev/null; then fail "01 succeeded without test.txt"; fi
has "$TMP/err" "notest/annotations/test.txt: cannot open"
no_results "$TMP/bad-results"
cp -r "$FAKE" "$TMP/malformed" && sed -i '4s/.*/Abyssinian_2 1 cat 1/' "$TMP/malformed/annotations/trainval.txt"
check_bad "$TMP/malformed" "malformed/annotations/trainval.txt:4: malformed annotation line"

# --- the real 3-class subset
if [ -n "$SHARED" ] && [ -d "$SHARED/images" ]; then
    S=$TMP/shared-results
    "$P01" --root "$SHARED" --results "$S" > "$TMP/out" 2> "$TMP/err" || fail "01 failed on $SHARED: $(cat "$TMP/err")"
    J=$S/01-data-loading.json
    key "$J" trainval_images 300
    key "$J" test_images 298
    key "$J" class_ids '"1 2 6"'
    key "$J" unreadable 0
    key "$J" decoded_images 598
    key "$J" class_2_name '"American Bulldog"'
    has "$J" '"unreferenced_list": "Abyssinian_100.mat Abyssinian_101.mat Abyssinian_102.mat Abyssinian_34.jpg'
    "$P02" --root "$SHARED" --results "$S" --out "$TMP/shared-pets.png" > /dev/null 2> "$TMP/err" || fail "02 failed on $SHARED: $(cat "$TMP/err")"
    key "$S/02-visualization.json" indices '"0 15 30 45 60 75 90 105 120 135 150 165 180 195 210 225 240 255 270 285"'
    key "$S/02-visualization.json" unreadable 0
    "$P03" --root "$SHARED" --results "$S" --out "$TMP/shared-prep.png" > /dev/null 2> "$TMP/err" || fail "03 failed on $SHARED: $(cat "$TMP/err")"
    key "$S/03-preprocessing.json" samples_used 300
    for f in Abyssinian_5.jpg Abyssinian_34.jpg; do # a PNG with alpha, a GIF
        "$P03" --image "$SHARED/images/$f" --dump "$TMP/$f.f32" > /dev/null 2> "$TMP/err" || fail "$f does not decode: $(cat "$TMP/err")"
        [ "$(wc -c < "$TMP/$f.f32")" = 602112 ] || fail "$f: wrong dump size"
    done
    if "$P03" --image "$SHARED/images/Abyssinian_100.mat" --dump "$TMP/mat.f32" 2> "$TMP/err"; then fail "a .mat file decoded"; fi
    has "$TMP/err" "Abyssinian_100.mat"
else
    echo "note: $SHARED not found; the real-data checks were skipped"
fi

if [ $fails -ne 0 ]; then echo "test_chapters: $fails failure(s)"; exit 1; fi
echo "test_chapters: all checks passed"
