#!/bin/sh
# tests/test_comparison.sh BUILD SOURCE TMP: build/06-comparison on synthetic result files written
# here by hand (the contract of chapters 04 and 05: <name>.csv, <name>.json, <name>.predictions.csv)
# over the fake dataset of build/make-fake-pets (for the images of the most-wrong grid):
#   - the confusion matrices, per-class accuracies, the table and every JSON value, checked exactly
#     against what the fake predictions imply (worked out by hand below);
#   - a missing run is reported and skipped; no run at all is an error;
#   - a malformed CSV or predictions line is an error naming the file and line, leaving no output;
#   - the gnuplot scripts of chapters 4-6 draw every figure from these files.
set -u
BUILD=$1
SRC=$2
TMP=$3
rm -rf "$TMP"
mkdir -p "$TMP"
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
has() { grep -q -- "$2" "$1" || fail "$1 lacks '$2': $(cat "$1")"; }
same() { # FILE EXPECTED-CONTENT
    printf '%s\n' "$2" > "$TMP/expected"
    cmp -s "$1" "$TMP/expected" || fail "$1 differs from the expected:
$(diff "$TMP/expected" "$1")"
}
key() { # FILE KEY VALUE: the flat JSON file has "KEY": VALUE exactly
    grep -q "^  \"$2\": $3,\{0,1\}\$" "$1" || fail "$1: expected \"$2\": $3, got: $(grep "\"$2\"" "$1")"
}
num() { # FILE KEY VALUE: a number within 1e-12 (the JSON writer prints up to 17 significant digits)
    v=$(sed -n "s/^  \"$2\": \([^,]*\),\{0,1\}\$/\1/p" "$1")
    awk -v a="$v" -v b="$3" 'BEGIN { d = a - b; if (a == "" || d > 1e-12 || d < -1e-12) exit 1 }' ||
        fail "$1: expected \"$2\": $3, got '$v'"
}
P=$BUILD/06-comparison
"$P" --help > "$TMP/help" || fail "--help exited non-zero"
has "$TMP/help" "usage:"

FAKE=$TMP/fake
"$BUILD/make-fake-pets" "$FAKE" > /dev/null || fail "make-fake-pets failed"

# --- two runs, extract (04) and finetune (05); bntrain is missing.
# The fake test split: Abyssinian_9..11 (label 0), Bengal_9..11 (5), yorkshire_terrier_9..12 (36).
# extract gets 3 wrong: Abyssinian_10 -> Bengal (0.80), Bengal_10 -> Abyssinian (0.95),
# yorkshire_terrier_11 -> American Bulldog (label 1, a breed absent from the labels; 0.55).
R=$TMP/results
mkdir -p "$R"
cat > "$R/04-feature-extraction.csv" <<'X'
epoch,train_loss,val_loss,val_acc,lr,seconds
1,2.5,1.9,0.5,0.001,1.5
2,1.25,1.1,0.8,0.001,2.5
3,0.75,1.2,0.7,0.0001,2
X
cat > "$R/04-feature-extraction.predictions.csv" <<'X'
index,name,label,pred,prob_pred,prob_label,label_name,pred_name
0,Abyssinian_9,0,0,0.900000,0.900000,Abyssinian,Abyssinian
1,Abyssinian_10,0,5,0.800000,0.100000,Abyssinian,Bengal
2,Abyssinian_11,0,0,0.700000,0.700000,Abyssinian,Abyssinian
3,Bengal_9,5,5,0.600000,0.600000,Bengal,Bengal
4,Bengal_10,5,0,0.950000,0.010000,Bengal,Abyssinian
5,Bengal_11,5,5,0.990000,0.990000,Bengal,Bengal
6,yorkshire_terrier_9,36,36,0.500000,0.500000,Yorkshire Terrier,Yorkshire Terrier
7,yorkshire_terrier_10,36,36,0.500000,0.500000,Yorkshire Terrier,Yorkshire Terrier
8,yorkshire_terrier_11,36,1,0.550000,0.200000,Yorkshire Terrier,American Bulldog
9,yorkshire_terrier_12,36,36,0.800000,0.800000,Yorkshire Terrier,Yorkshire Terrier
X
cat > "$R/04-feature-extraction.json" <<X
{
  "mode": "cached-eval-bn",
  "device": "cpu",
  "precision": "fp32",
  "weights": "random",
  "weights_pretrained": 0,
  "root": "$FAKE",
  "epochs": 3,
  "seconds_epochs": 6.3,
  "seconds_total": 10
}
X
cat > "$R/05-fine-tuning.csv" <<'X'
epoch,train_loss,val_loss,val_acc,lr,seconds
1,1.5,0.5,0.9,0.0001,10
2,0.5,0.25,1,0.0001,14
X
# the older format without names: breeds come from the image names
sed -e 's/,label_name,pred_name$//' -e 's/,[A-Z][a-zA-Z ]*,[A-Z][a-zA-Z ]*$//' \
    -e 's/^\([0-9]*\),\([A-Za-z_]*\)_\([0-9]*\),\([0-9]*\),[0-9]*,/\1,\2_\3,\4,\4,/' \
    "$R/04-feature-extraction.predictions.csv" > "$R/05-fine-tuning.predictions.csv"
cat > "$R/05-fine-tuning.json" <<X
{"mode": "fine-tune", "device": "cuda", "precision": "fp16", "weights_pretrained": 1,
 "root": "$FAKE", "seconds_total": 30.5}
X
F=$TMP/figures
"$P" --results "$R" --figures "$F" > "$TMP/out" 2> "$TMP/err" || fail "06 failed: $(cat "$TMP/err")"
has "$TMP/out" "bntrain.*not found.*skipped"
J=$R/06-comparison.json
key "$J" runs 2
key "$J" runs_present '"extract finetune"'
key "$J" runs_missing '"bntrain"'
key "$J" bntrain_present 0
key "$J" weights_pretrained 0
key "$J" classes 3
key "$J" val_images 10
key "$J" extract_present 1
key "$J" extract_mode '"cached-eval-bn"'
key "$J" extract_weights_pretrained 0
key "$J" extract_epochs 3
num "$J" extract_first_val_acc 0.5
num "$J" extract_final_val_acc 0.7
num "$J" extract_best_val_acc 0.8
key "$J" extract_best_epoch 2
num "$J" extract_final_val_loss 1.2
num "$J" extract_lr_initial 0.001
num "$J" extract_lr_final 0.0001
key "$J" extract_lr_reductions 1
num "$J" extract_seconds_epochs 6.3   # the JSON's exact sum, not the CSV's 6 (milliseconds)
num "$J" extract_seconds_per_epoch 2.1
num "$J" extract_seconds_total 10
key "$J" extract_val_correct 7
key "$J" extract_val_wrong 3
num "$J" extract_mean_class_acc 0.69444444444444444 # (2/3 + 2/3 + 3/4) / 3
key "$J" extract_worst_class '"Abyssinian"'            # ties with Bengal at 2/3: the first
num "$J" extract_worst_class_acc 0.66666666666666667
key "$J" extract_most_wrong_shown 3
num "$J" extract_most_wrong_top_prob 0.95
key "$J" finetune_device '"cuda"'
key "$J" finetune_precision '"fp16"'
num "$J" finetune_final_val_acc 1
num "$J" finetune_mean_class_acc 1
key "$J" finetune_lr_reductions 0
num "$J" finetune_seconds_per_epoch 12
key "$J" finetune_most_wrong_shown 0
num "$J" finetune_minus_extract_acc 0.3
num "$J" finetune_over_extract_seconds_per_epoch 5.7142857142857143
grep -q bntrain_minus "$J" && fail "a comparison with the missing bntrain run"

same "$R/06-comparison.confusion-extract.csv" "true class,Abyssinian,American Bulldog,Bengal,Yorkshire Terrier
Abyssinian,2,0,1,0
American Bulldog,0,0,0,0
Bengal,1,0,2,0
Yorkshire Terrier,0,1,0,3"
same "$R/06-comparison.confusion-extract.dat" "true class,Abyssinian,American Bulldog,Bengal,Yorkshire Terrier
Abyssinian,0.666667,0.000000,0.333333,0.000000
American Bulldog,0.000000,0.000000,0.000000,0.000000
Bengal,0.333333,0.000000,0.666667,0.000000
Yorkshire Terrier,0.000000,0.250000,0.000000,0.750000"
same "$R/06-comparison.confusion-finetune.csv" "true class,Abyssinian,American Bulldog,Bengal,Yorkshire Terrier
Abyssinian,3,0,0,0
American Bulldog,0,0,0,0
Bengal,0,0,3,0
Yorkshire Terrier,0,0,0,4"
same "$R/06-comparison.per-class.csv" "class_id,class,images,feature extraction,fine-tuning
1,Abyssinian,3,0.666667,1.000000
6,Bengal,3,0.666667,1.000000
37,Yorkshire Terrier,4,0.750000,1.000000"
same "$R/06-comparison.csv" "run,method,epochs,final_val_acc,best_val_acc,best_epoch,final_val_loss,lr_reductions,seconds_per_epoch,seconds_total,mean_class_acc,worst_class,worst_class_acc
extract,feature extraction,3,0.7000,0.8000,2,1.2000,1,2.100,10.000,0.6944,Abyssinian,0.6667
finetune,fine-tuning,2,1.0000,1.0000,2,0.2500,0,12.000,30.500,1.0000,Abyssinian,1.0000"
has "$R/06-comparison.curves.dat" '^"feature extraction" train_loss val_loss val_acc lr seconds$'
has "$R/06-comparison.curves.dat" '^3 0.75 1.2 0.7 0.0001 2.000$'
for f in "$F/06-most-wrong-extract.png" "$F/06-most-wrong-finetune.png"; do
    [ "$(head -c 8 "$f" | od -An -tx1 | tr -d ' ')" = 89504e470d0a1a0a ] || fail "$f is not a PNG"
done
[ -s "$TMP/err" ] && fail "warnings on good input: $(cat "$TMP/err")"

# --- the images of the grid come from --root when given; a missing image gives a grey panel
"$P" --results "$R" --figures "$F" --root "$TMP/nowhere" > /dev/null 2> "$TMP/err" ||
    fail "06 failed without images: $(cat "$TMP/err")"
has "$TMP/err" "nowhere/images/Bengal_10.jpg"
has "$TMP/err" "pass --root DIR"

# --- bad input: an error naming file and line, a non-zero exit, the old results kept
cp "$J" "$TMP/good.json"
bad() { # FILE LINE-NUMBER NEW-LINE EXPECTED-MESSAGE
    cp "$1" "$TMP/saved"
    sed -i "$2c\\$3" "$1"
    if "$P" --results "$R" --figures "$F" > /dev/null 2> "$TMP/err"; then fail "accepted $3 in $1"; fi
    has "$TMP/err" "$4"
    cmp -s "$J" "$TMP/good.json" || fail "06-comparison.json changed by a failed run"
    cp "$TMP/saved" "$1"
}
bad "$R/04-feature-extraction.csv" 3 "2,1.25,abc,0.8,0.001,2.5" "04-feature-extraction.csv:3: expected epoch 2"
bad "$R/04-feature-extraction.csv" 4 "3,0.75,1.2,0.7" "04-feature-extraction.csv:4: expected epoch 3"
bad "$R/04-feature-extraction.csv" 1 "epoch,loss" "04-feature-extraction.csv:1: expected the header"
bad "$R/05-fine-tuning.predictions.csv" 5 "3,Bengal_9,5,40,0.6,0.6" "05-fine-tuning.predictions.csv:5: expected"
bad "$R/05-fine-tuning.predictions.csv" 6 "4,Bengal_10,5,5,1.5,0.6" "05-fine-tuning.predictions.csv:6: expected"
bad "$R/05-fine-tuning.json" 1 '{"mode": [1]' "05-fine-tuning.json"
mv "$R/05-fine-tuning.csv" "$TMP/saved.csv"
if "$P" --results "$R" --figures "$F" > /dev/null 2> "$TMP/err"; then fail "accepted a run without its CSV"; fi
has "$TMP/err" "05-fine-tuning.csv: cannot open"
mv "$TMP/saved.csv" "$R/05-fine-tuning.csv"
ls "$R" "$F" | grep -q '\.tmp\.' && fail "temporary files left behind"

# --- no run at all
mkdir -p "$TMP/empty"
if "$P" --results "$TMP/empty" --figures "$F" > /dev/null 2> "$TMP/err"; then fail "no runs accepted"; fi
has "$TMP/err" "no run found in $TMP/empty"

# --- the gnuplot figures of chapters 4-6 from these files
if ! command -v gnuplot > /dev/null; then
    fail "gnuplot is missing: install Debian's gnuplot-nox (make deps)"
else
    gp() { gnuplot -c "$SRC/figures/$1" "$2" "$3" "${4:-title}" 2> "$TMP/gp.err" || fail "$1: $(cat "$TMP/gp.err")"
           [ -s "$TMP/gp.err" ] && fail "$1 warned: $(cat "$TMP/gp.err")"; }
    gp 06-curves.gp "$R/06-comparison.curves.dat" "$F"
    gp 06-confusion.gp "$R/06-comparison.confusion-extract.dat" "$F/06-confusion-extract.pdf" "feature extraction"
    gp 06-per-class.gp "$R/06-comparison.per-class.csv" "$F/06-per-class.pdf"
    gp training-curves.gp "$R/04-feature-extraction.csv" "$F/04-training.pdf" "feature extraction"
    for f in 06-val-acc 06-val-loss 06-lr 06-seconds 06-confusion-extract 06-per-class 04-training; do
        [ "$(head -c 5 "$F/$f.pdf" 2> /dev/null)" = "%PDF-" ] || fail "gnuplot did not write $F/$f.pdf"
    done
fi

[ $fails -eq 0 ] && echo "comparison: all checks passed"
[ $fails -eq 0 ]
