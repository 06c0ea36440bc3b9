#!/bin/sh
# tests/test_chapters.sh BUILD TMP [SHARED]: chapters 01-03 end to end.
#   - on a synthetic dataset (build/make-fake-pets): counts, unreadable files reported by name and
#     reason (a truncated JPEG, a missing file), files counted by content (grayscale and CMYK
#     JPEGs, PNG and GIF files named .jpg, listed or not, a MATLAB file), the figures and result
#     files; 03 --compare with none of its fixture images in the dataset;
#   - 02's choice of samples on large splits: 1001 trainval images give the tutorial's
#     dataset[i*50], i = 1..20; 1000 give 20 evenly spaced ones;
#   - bad input: a missing root, a missing annotation file, a malformed annotation line: a clear
#     message, a non-zero exit, and no result file (partial or not) left behind;
#   - --help of each program; --dump of one tensor (and its refusal of a truncated JPEG);
#   - on the real 3-class subset SHARED when it exists: 300 + 298 images, class ids 1 2 6, nothing
#     unreadable, the PNG-with-alpha and GIF files decode and are counted as such; 03 --compare
#     measures the differences from torchvision's crops (tests/fixtures/preprocess/real).
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
FIXTURES=$(cd "$(dirname "$0")" && pwd)/fixtures/preprocess

# --- --help
for p in $P01 $P02 $P03; do
    "$p" --help > "$TMP/help" 2>&1 || fail "$p --help exited non-zero"
    has "$TMP/help" "usage:"
    has "$TMP/help" "--root DIR"
done

# --- the synthetic dataset
FAKE=$TMP/fake
"$BUILD/make-fake-pets" "$FAKE" || fail "make-fake-pets failed"
# odd files of the real dataset, named .jpg: grayscale and CMYK JPEGs, a GIF (listed, in place of
# a PNG), and a GIF that no split lists
cp "$FIXTURES/formats/gray.jpg" "$FAKE/images/Abyssinian_1.jpg"
cp "$FIXTURES/formats/cmyk.jpg" "$FAKE/images/Abyssinian_3.jpg"
cp "$FIXTURES/formats/palette.gif" "$FAKE/images/yorkshire_terrier_2.jpg"
cp "$FIXTURES/formats/gray.gif" "$FAKE/images/Abyssinian_50.jpg"
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
key "$J" unreferenced_files 2
key "$J" unreferenced_list '"Abyssinian_100.mat, Abyssinian_50.jpg"'
key "$J" image_folder_files 35
key "$J" jpeg_files 17
key "$J" grayscale_jpegs 1
key "$J" grayscale_list '"Abyssinian_1.jpg"'
key "$J" cmyk_jpegs 1
key "$J" cmyk_list '"Abyssinian_3.jpg"'
key "$J" png_files 15
key "$J" gif_files 2
key "$J" gif_list '"yorkshire_terrier_2.jpg, Abyssinian_50.jpg"'
key "$J" non_image_files 1
key "$J" non_image_list '"Abyssinian_100.mat"'
has "$TMP/out" "by content: 17 JPEG (1 grayscale, 1 CMYK), 15 PNG, 2 GIF, 1 not images"
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
# --compare: none of the fixture images is in the synthetic set: all skipped, counts 0
"$P03" --root "$FAKE" --results "$R" --out "$TMP/figs/prep.png" --samples 4 --compare "$FIXTURES/real" > "$TMP/out" 2> "$TMP/err" || fail "03 --compare failed on the fake set: $(cat "$TMP/err")"
key "$R/03-preprocessing.json" tv_images 0
has "$TMP/out" "Abyssinian_5.jpg: not the file the fixture was made from, skipped"
has "$TMP/out" "Abyssinian_34.jpg: not in this dataset, skipped"
rm -rf "$TMP/bad-results"
if "$P03" --root "$FAKE" --results "$TMP/bad-results" --out "$TMP/bad-results/p.png" --compare "$TMP/nofixtures" 2> "$TMP/err" > /dev/null; then fail "03 accepted a missing --compare folder"; fi
has "$TMP/err" "cannot open .*nofixtures/sources.sha256"
no_results "$TMP/bad-results"
"$P03" --image "$FAKE/images/Abyssinian_2.jpg" --dump "$TMP/t.f32" > /dev/null || fail "--dump failed"
[ "$(wc -c < "$TMP/t.f32")" = 602112 ] || fail "--dump wrote $(wc -c < "$TMP/t.f32") bytes, expected 3*224*224*4"
if "$P03" --image "$FAKE/images/Bengal_3.jpg" --dump "$TMP/bad.f32" 2> "$TMP/err"; then fail "--dump of a truncated JPEG succeeded"; fi
has "$TMP/err" "Bengal_3.jpg.*truncated"
[ -e "$TMP/bad.f32" ] && fail "--dump left a file for a truncated JPEG"
ls "$TMP" "$R" "$TMP/figs" | grep -q '\.tmp\.' && fail "temporary files left behind"

# --- 02's samples on large splits: the tutorial's dataset[i*50], i = 1..20, needs 1001 images
"$BUILD/make-fake-pets" "$TMP/many" --trainval 1001 || fail "make-fake-pets --trainval 1001 failed"
"$P02" --root "$TMP/many" --results "$TMP/many-r" --out "$TMP/many-r/pets.png" > /dev/null 2> "$TMP/err" || fail "02 failed on 1001 images: $(cat "$TMP/err")"
key "$TMP/many-r/02-visualization.json" split_images 1001
key "$TMP/many-r/02-visualization.json" indices '"50 100 150 200 250 300 350 400 450 500 550 600 650 700 750 800 850 900 950 1000"'
key "$TMP/many-r/02-visualization.json" tutorial_indices 1
# trainval lines 1-333 are Abyssinian, 334-666 Bengal, 667-1001 Yorkshire Terrier
A="Abyssinian, " B="Bengal, " Y="Yorkshire Terrier"
has "$TMP/many-r/02-visualization.json" "\"breeds\": \"$A$A$A$A$A$A$B$B$B$B$B$B$B$Y, $Y, $Y, $Y, $Y, $Y, $Y\""
rm -rf "$TMP/many" && "$BUILD/make-fake-pets" "$TMP/many" --trainval 1000 || fail "make-fake-pets --trainval 1000 failed"
"$P02" --root "$TMP/many" --results "$TMP/many-r" --out "$TMP/many-r/pets.png" > /dev/null 2> "$TMP/err" || fail "02 failed on 1000 images: $(cat "$TMP/err")"
key "$TMP/many-r/02-visualization.json" indices '"0 50 100 150 200 250 300 350 400 450 500 550 600 650 700 750 800 850 900 950"'
key "$TMP/many-r/02-visualization.json" tutorial_indices 0
rm -rf "$TMP/many"

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
    key "$J" image_folder_files 603
    key "$J" jpeg_files 598
    key "$J" png_files 1
    key "$J" png_list '"Abyssinian_5.jpg"'
    key "$J" gif_files 1
    key "$J" gif_list '"Abyssinian_34.jpg"'
    key "$J" grayscale_jpegs 0
    key "$J" cmyk_jpegs 0
    key "$J" non_image_files 3
    key "$J" unreferenced_list '"Abyssinian_100.mat, Abyssinian_101.mat, Abyssinian_102.mat, Abyssinian_34.jpg, Abyssinian_82.jpg"'
    key "$J" non_image_list '"Abyssinian_100.mat, Abyssinian_101.mat, Abyssinian_102.mat"'
    "$P02" --root "$SHARED" --results "$S" --out "$TMP/shared-pets.png" > /dev/null 2> "$TMP/err" || fail "02 failed on $SHARED: $(cat "$TMP/err")"
    key "$S/02-visualization.json" indices '"0 15 30 45 60 75 90 105 120 135 150 165 180 195 210 225 240 255 270 285"'
    key "$S/02-visualization.json" unreadable 0
    "$P03" --root "$SHARED" --results "$S" --out "$TMP/shared-prep.png" --compare "$FIXTURES/real" > "$TMP/out" 2> "$TMP/err" || fail "03 failed on $SHARED: $(cat "$TMP/err")"
    J=$S/03-preprocessing.json
    key "$J" samples_used 300
    key "$J" tv_images 14
    key "$J" tv_png_images 1
    key "$J" tv_png_max_abs_diff 0
    key "$J" tv_gif_images 1
    key "$J" tv_gif_max_abs_diff 0
    key "$J" tv_jpeg_images 12
    key "$J" tv_within_limits 1
    has "$TMP/out" "compare: Abyssinian_5.jpg .* PNG  RGBA max abs diff 0.000000"
    jmax=$(sed -n 's/.*"tv_jpeg_max_abs_diff": \([0-9.e-]*\).*/\1/p' "$J")
    awk "BEGIN { exit !($jmax > 0 && $jmax < 0.07) }" || fail "JPEG max abs diff from torchvision $jmax, expected in (0, 0.07)"
    for f in Abyssinian_5.jpg Abyssinian_34.jpg; do # a PNG with alpha, a GIF
        "$P03" --image "$SHARED/images/$f" --dump "$TMP/$f.f32" > /dev/null 2> "$TMP/err" || fail "$f does not decode: $(cat "$TMP/err")"
        [ "$(wc -c < "$TMP/$f.f32")" = 602112 ] || fail "$f: wrong dump size"
    done
    if "$P03" --image "$SHARED/images/Abyssinian_100.mat" --dump "$TMP/mat.f32" 2> "$TMP/err"; then fail "a .mat file decoded"; fi
    has "$TMP/err" "Abyssinian_100.mat"
else
    echo "SKIP: the real-data checks: the 3-class subset $SHARED was not found"
fi

if [ $fails -ne 0 ]; then echo "test_chapters: $fails failure(s)"; exit 1; fi
echo "test_chapters: all checks passed"
