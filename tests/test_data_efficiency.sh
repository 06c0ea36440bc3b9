#!/bin/sh
# tests/test_data_efficiency.sh BUILD SCRATCH SHARED: build/07-data-efficiency end to end on the
# real 3-breed subset SHARED with random weights and tiny settings (24 images per split, k = 1, 2
# and all, 2 seeds, 2 epochs, fine-tuning only at k = 1):
#   1. the CSV: header, 26 rows (3 k x 2 seeds x prototype, knn1, knn5, fe; ft at k = 1 only),
#      every field of the expected kind; the summary CSV and the JSON;
#   2. the subsets: k images of each breed, the same images for the same seed in another
#      invocation, other images for another seed, none of them in the test split;
#   3. a rerun skips every run and leaves the CSV as it was; a fresh run with one seed repeats
#      the first run's numbers for that seed (determinism);
#   4. a sweep killed (kill -9) after a few runs and started again keeps the runs it had and ends
#      with the numbers of the uninterrupted sweep;
#   5. bad options: a clear message and exit status 2.
# Exits 77 (skipped) when SHARED is absent.
set -eu
BUILD=$1 SCRATCH=$2 SHARED=$3
if [ ! -f "$SHARED/annotations/trainval.txt" ]; then
  echo "skipped: no 3-class subset at $SHARED"
  exit 77
fi
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH"
fail() { echo "FAIL: $*"; exit 1; }
P=$BUILD/07-data-efficiency
ARGS="--root $SHARED --weights random --limit 24 --per-class 1,2,all --epochs 2 --ft-max-k 1 --cache $SCRATCH/cache"
run() { # run DIR [options]: a sweep into DIR (the caches are shared by every run)
  d=$1
  shift
  "$P" $ARGS --results "$d" "$@" >"$d.log" 2>&1 || { cat "$d.log"; fail "$P failed"; }
}
# the CSV without its seconds column (10th): what a rerun must repeat exactly
numbers() { cut -d, -f1-9,11 "$1"; }

# --- 1. the tables
R1=$SCRATCH/r1
run "$R1" --seeds 2
CSV=$R1/07-data-efficiency.csv
[ "$(head -1 "$CSV")" = "method,per_class,seed,train_images,test_images,epochs,steps,accuracy,loss,seconds,config" ] ||
  fail "CSV header: $(head -1 "$CSV")"
[ "$(tail -n +2 "$CSV" | wc -l)" -eq 26 ] || fail "$(tail -n +2 "$CSV" | wc -l) rows, expected 26"
for m in prototype knn1 knn5 fe; do
  [ "$(grep -c "^$m," "$CSV")" -eq 6 ] || fail "$m: $(grep -c "^$m," "$CSV") rows, expected 6"
done
[ "$(grep -c '^ft,1,' "$CSV")" -eq 2 ] && [ "$(grep -c '^ft,' "$CSV")" -eq 2 ] ||
  fail "ft: expected 2 rows, both at k = 1 (--ft-max-k 1)"
awk -F, 'NR > 1 {
  ok = NF == 11 && ($2 == "1" || $2 == "2" || $2 == "all") && ($3 == "0" || $3 == "1") && $5 == 24 &&
       $4 == ($2 == "all" ? 24 : 3 * $2) && $8 >= 0 && $8 <= 1 && $10 >= 0 && $11 ~ /^[0-9a-f]+$/ && length($11) == 16
  trained = $1 == "fe" || $1 == "ft"
  ok = ok && (trained ? $6 == 2 && $7 > 0 && $9 > 0 : $6 == 0 && $7 == 0 && $9 == "nan")
  if (!ok) { print "bad row " NR ": " $0; bad = 1 }
} END { exit bad }' "$CSV" || fail "malformed rows"
# fe with 2 epochs: one batch per epoch below 32 images
grep -q '^fe,all,0,24,24,2,2,' "$CSV" || fail "fe k=all: expected 24 images, 2 epochs, 2 steps"
[ "$(tail -n +2 "$R1/07-data-efficiency.summary.csv" | wc -l)" -eq 13 ] || fail "summary: not 13 rows"
grep -q '^fe,1,1,2,' "$R1/07-data-efficiency.summary.csv" || fail "summary: fe k=1 (1 image per class, 2 runs)"
J=$R1/07-data-efficiency.json
for k in '"weights_pretrained": 0' '"runs": 26' '"classes": 3' '"fe_k1_acc_mean"' '"ft_k1_acc_std"' \
         '"knn5_kall_acc_mean"' '"fe_k90"' '"ft_k90": "not measured' '"ft_max_k": "1"'; do
  grep -qF "$k" "$J" || fail "JSON lacks $k"
done
# the mean in the JSON is the mean of the CSV's rows
mean=$(awk -F, '$1 == "knn1" && $2 == "2" { s += $8; n++ } END { printf "%.6f", s / n }' "$CSV")
json=$(sed -n 's/.*"knn1_k2_acc_mean": *\([0-9.e-]*\).*/\1/p' "$J")
[ "$(printf '%.6f' "$json")" = "$mean" ] || fail "knn1 k=2 mean: JSON $json, CSV rows $mean"

# --- 2. the subsets
S=$R1/07-data-efficiency.subsets.csv
[ "$(head -1 "$S")" = "per_class,seed,name" ] || fail "subsets header"
# breed = the name without its trailing _number; k of each of the 3 breeds per (k, seed)
tail -n +2 "$S" | sed 's/_[0-9]*$//' | sort | uniq -c | awk '{ split($2, f, ","); if ($1 != f[1]) { print; bad = 1 } } END { exit bad }' ||
  fail "a subset has not k images of a breed"
[ "$(tail -n +2 "$S" | sed 's/_[0-9]*$//' | sort -u | wc -l)" -eq 12 ] || fail "subsets: not 3 breeds x 4 (k, seed)"
[ "$(tail -n +2 "$S" | wc -l)" -eq 18 ] || fail "subsets: $(tail -n +2 "$S" | wc -l) names, expected 2 x (3 + 6)"
tail -n +2 "$S" | cut -d, -f3 | while read -r name; do
  grep -q "^$name " "$SHARED/annotations/test.txt" && fail "$name is in a subset and in the test split"
  grep -q "^$name " "$SHARED/annotations/trainval.txt" || fail "$name is not a trainval image"
done
[ "$(grep '^2,0,' "$S" | cut -d, -f3)" != "$(grep '^2,1,' "$S" | cut -d, -f3)" ] ||
  fail "seeds 0 and 1 drew the same images"
for n in $(grep '^1,0,' "$S" | cut -d, -f3); do
  grep -q "^2,0,$n\$" "$S" || fail "$n of k=1 is not in the subset of k=2 (same seed)"
done

# --- 3. rerun: nothing to do; a fresh run repeats the numbers
cp "$CSV" "$SCRATCH/r1.csv"
run "$R1" --seeds 2
grep -q "sweep: 26 runs, 26 done before" "$R1.log" || fail "rerun did not reuse the runs: $(cat "$R1.log")"
cmp -s "$CSV" "$SCRATCH/r1.csv" || fail "a rerun changed the CSV"
R2=$SCRATCH/r2
run "$R2" --seeds 1
[ "$(tail -n +2 "$R2/07-data-efficiency.csv" | wc -l)" -eq 13 ] || fail "--seeds 1: not 13 rows"
numbers "$R2/07-data-efficiency.csv" >"$SCRATCH/r2.numbers"
numbers "$CSV" | awk -F, 'NR == 1 || $3 == 0' >"$SCRATCH/r1.numbers"
diff "$SCRATCH/r1.numbers" "$SCRATCH/r2.numbers" || fail "a fresh run with the same seed gave other numbers"
grep '^[12],0,' "$S" >"$SCRATCH/s1"
tail -n +2 "$R2/07-data-efficiency.subsets.csv" >"$SCRATCH/s2"
cmp -s "$SCRATCH/s1" "$SCRATCH/s2" || fail "the same seed drew other images in another invocation"

# --- 4. resume: kill -9 after some runs, start again
R3=$SCRATCH/r3
"$P" $ARGS --results "$R3" --seeds 2 >"$R3.log" 2>&1 &
pid=$!
i=0
until [ -f "$R3/07-data-efficiency.csv" ] && [ "$(tail -n +2 "$R3/07-data-efficiency.csv" | wc -l)" -ge 4 ]; do
  kill -0 $pid 2>/dev/null || fail "the sweep ended before it could be interrupted"
  i=$((i + 1))
  [ $i -lt 3000 ] || { kill -9 $pid; fail "no 4 runs after 300 s"; }
  sleep 0.1
done
kill -9 $pid
wait $pid 2>/dev/null || true
cp "$R3/07-data-efficiency.csv" "$SCRATCH/killed.csv"
had=$(tail -n +2 "$SCRATCH/killed.csv" | wc -l)
[ "$had" -ge 4 ] && [ "$had" -lt 26 ] || fail "$had rows when killed"
run "$R3" --seeds 2
grep -q "sweep: 26 runs, $had done before" "$R3.log" || fail "resume did not keep the $had runs: $(head -20 "$R3.log")"
numbers "$R3/07-data-efficiency.csv" >"$SCRATCH/r3.numbers"
numbers "$CSV" >"$SCRATCH/r1.all"
diff "$SCRATCH/r1.all" "$SCRATCH/r3.numbers" || fail "the resumed sweep ended with other numbers"
head -n $((had + 1)) "$R3/07-data-efficiency.csv" | cmp -s - "$SCRATCH/killed.csv" ||
  fail "the runs finished before the kill were not kept as they were"

# --- 5. bad options
for bad in "--per-class 0" "--per-class 1,x" "--methods fe,svm" "--seeds 0" "--ft-max-k none"; do
  rc=0
  "$P" $ARGS --results "$SCRATCH/bad" $bad >"$SCRATCH/bad.log" 2>&1 || rc=$?
  [ $rc -eq 2 ] || fail "$bad: exit status $rc, expected 2"
  grep -q "^error: .*--" "$SCRATCH/bad.log" || fail "$bad: no error message: $(cat "$SCRATCH/bad.log")"
done

echo "data-efficiency: all checks passed ($SCRATCH)"
