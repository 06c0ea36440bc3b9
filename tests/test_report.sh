#!/bin/sh
# tests/test_report.sh SRC BUILD SHARED SCRATCH: `make report`'s document half (Makefile.doc) end to
# end, with every output redirected into SCRATCH so that the developer's results/, figures/ and
# report.pdf are left alone.
#   1. chapters 01-03 on the real 3-breed subset SHARED (04-07 too, on random weights and tiny
#      settings): the programs run, report.pdf is rendered,
#      its text holds the numbers of results/*.json and no unexpanded placeholder;
#   2. make's dependencies: a second run does nothing; a newer results file of chapter 03 redoes
#      that chapter's text and the PDF only, no program;
#   3. a dataset root that does not exist fails with a message saying what to do;
#   4. the random-weights mark: a synthetic chapter whose results say "weights_pretrained": 0 has
#      the warning in the header of every one of its pages, and the introduction has none.
# Exits 77 (skipped) when SHARED is absent.
set -eu
SRC=$1 BUILD=$2 SHARED=$3 SCRATCH=$4
if [ ! -f "$SHARED/annotations/trainval.txt" ]; then
  echo "SKIP: no 3-class subset at $SHARED"
  exit 77
fi
for tool in pandoc pdflatex pdftotext pdfinfo; do
  command -v $tool >/dev/null || { echo "FAIL: $tool is missing (make deps installs it)"; exit 1; }
done
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH"
cd "$SRC"
fail() { echo "FAIL: $*"; exit 1; }

OUT="RESULTS=$SCRATCH/results FIGURES=$SCRATCH/figures REPORT=$SCRATCH/report.pdf DOCBUILD=$SCRATCH/doc"
# chapters 04-07 with a random backbone (no ImageNet weights here), 2 epochs on 32 images per split;
# 07 with k = 1 and all, 2 seeds (fine-tuning at k = 1 only, the default FT_MAX_K)
TRAIN="WEIGHTS=random EPOCHS04=2 EPOCHS05=2 EPOCHS07=2"
doc() { make --no-print-directory -f Makefile.doc BUILD="$BUILD" PETS_ROOT="$SHARED" $OUT $TRAIN \
          "TRAIN_ARGS=--limit 32" "ARGS07=--per-class 1,all --seeds 2" "$@"; }

# --- 1. the report of chapters 01-03
doc >"$SCRATCH/make.log" 2>&1 || { cat "$SCRATCH/make.log"; fail "make -f Makefile.doc failed"; }
[ -s "$SCRATCH/report.pdf" ] || fail "no report.pdf"
for f in 01-data-loading.json 01-data-loading.csv 02-visualization.json 03-preprocessing.json; do
  [ -s "$SCRATCH/results/$f" ] || fail "results/$f not written"
done
for f in pets.png preprocessing.png; do [ -s "$SCRATCH/figures/$f" ] || fail "figures/$f not written"; done
pdftotext "$SCRATCH/report.pdf" - | tr -s ' \n' '  ' >"$SCRATCH/report.txt"
has() { grep -qF -- "$1" "$SCRATCH/report.txt" || fail "report.pdf lacks \"$1\""; }
# the subset's known counts (see its ABOUT.md), as the prose states them from results/
has "split files list 300 training and 298 validation images of 3 breeds (class ids 1 2 6)"
has "Abyssinian_34.jpg"
has "Abyssinian_100.mat"
has "Figure 1: Training images 0 15 30"
has "Preprocessing Abyssinian_100.jpg"
has "lines"
grep -qE '\{\{([0-9][0-9]-[a-z0-9-]+|code|table|figure):' "$SCRATCH/report.txt" &&
  fail "report.pdf holds an unexpanded placeholder"
pages=$(pdfinfo "$SCRATCH/report.pdf" | awk '/^Pages:/ {print $2}')
[ "$pages" -ge 8 ] || fail "report.pdf has only $pages pages"
# a number of the prose equals the results file's
mean=$(sed -n 's/.*"pixel_mean_r": *\([0-9.]*\).*/\1/p' "$SCRATCH/results/03-preprocessing.json")
pdftotext -layout "$SCRATCH/report.pdf" - | grep -qE "^ *red +$(printf '%.3f' "$mean") " ||
  fail "the table of chapter 03 lacks red's pixel mean $(printf '%.3f' "$mean")"
# chapter 01's files by content, chapter 03's measured differences from torchvision (its table)
pdftotext -layout "$SCRATCH/report.pdf" "$SCRATCH/report-layout.txt"
grep -qE "^ *PNG named .jpg +1 +Abyssinian_5.jpg" "$SCRATCH/report-layout.txt" ||
  fail "chapter 01's table of files by content lacks the PNG Abyssinian_5.jpg"
grep -qE "^ *not an image +3 +Abyssinian_100.mat, Abyssinian_101.mat" "$SCRATCH/report-layout.txt" ||
  fail "chapter 01's table of files by content lacks the MATLAB files"
jmax=$(sed -n 's/.*"tv_jpeg_max_abs_diff": *\([0-9.e-]*\).*/\1/p' "$SCRATCH/results/03-preprocessing.json")
grep -qE "^ *JPEG +12 +$(printf '%.4f' "$jmax") +0\.000[0-9]+ +[1-9] levels" "$SCRATCH/report-layout.txt" ||
  fail "chapter 03's comparison with torchvision lacks the JPEG row (max $(printf '%.4f' "$jmax"))"
grep -qE "^ *PNG +1 +0 +0 +0 levels" "$SCRATCH/report-layout.txt" ||
  fail "chapter 03's comparison with torchvision: the PNG is not exact"
# chapters 04-06: their results and figures; every one of their pages carries the random-weights
# mark (they ran with WEIGHTS=random), no page of chapters 01-03 does
for f in 04-feature-extraction.json 04-feature-extraction-bn-train.json 05-fine-tuning.json \
         06-comparison.json 06-comparison.csv 07-data-efficiency.json 07-data-efficiency.csv \
         07-data-efficiency.summary.csv; do
  [ -s "$SCRATCH/results/$f" ] || fail "results/$f not written"
done
for f in 04-training.pdf 05-training.pdf 06-val-acc.pdf 06-lr.pdf 06-confusion-finetune.pdf \
         06-per-class.pdf 06-most-wrong-extract.png 07-data-efficiency.pdf; do
  [ -s "$SCRATCH/figures/$f" ] || fail "figures/$f not written"
done
has "Feature extraction against fine-tuning"
# chapter 07: its title, and a number of its prose and of its comparison table from its results
has "How much data does transfer learning need?"
fe1=$(sed -n 's/.*"fe_k1_acc_mean": *\([0-9.e-]*\).*/\1/p' "$SCRATCH/results/07-data-efficiency.json")
has "With one image per breed, feature extraction reached $(awk -v v="$fe1" 'BEGIN { printf "%.1f", 100 * v }') %"
acc05=$(sed -n 's/.*"final_val_acc": *\([0-9.e-]*\).*/\1/p' "$SCRATCH/results/05-fine-tuning.json")
grep -qE "^ *chapter 5: fine-tuning, its recipe +all +$(awk -v v="$acc05" 'BEGIN { printf "%.1f", 100 * v }')\b" \
  "$SCRATCH/report-layout.txt" || fail "chapter 07's table lacks chapter 05's accuracy"
in_random=0
p=1
while [ $p -le "$pages" ]; do
  text=$(pdftotext -f $p -l $p "$SCRATCH/report.pdf" - | tr -s ' \n' '  ')
  case "$text" in *"Not the ImageNet backbone."*) in_random=1 ;; esac
  case "$text" in
    *"RANDOM BACKBONE WEIGHTS, NOT IMAGENET"*) [ $in_random = 1 ] || fail "page $p (chapters 01-03) carries the random-weights mark" ;;
    *) [ $in_random = 0 ] || fail "page $p (chapters 04-06, random weights) lacks the warning header" ;;
  esac
  p=$((p + 1))
done
[ $in_random = 1 ] || fail "no chapter says that its backbone is random"

# --- 2. dependencies: nothing to do, then only what a newer results file affects
doc -q || fail "a second run would redo something (make -q says out of date)"
sleep 1
touch "$SCRATCH/results/03-preprocessing.json"
doc -n >"$SCRATCH/plan.txt" 2>&1
grep -q "docgen .*03-preprocessing.md" "$SCRATCH/plan.txt" || fail "chapter 03 text not redone: $(cat "$SCRATCH/plan.txt")"
grep -q "^pandoc " "$SCRATCH/plan.txt" || fail "PDF not redone"
grep -q "docgen .*0[012]-[a-z-]*.md" "$SCRATCH/plan.txt" && fail "other chapters redone: $(cat "$SCRATCH/plan.txt")"
grep -q "$BUILD/0[123]-" "$SCRATCH/plan.txt" && fail "a chapter program reruns: $(cat "$SCRATCH/plan.txt")"
doc >/dev/null 2>&1 || fail "rerun failed"
doc -q || fail "not up to date after the rerun"
# a newer log of chapter 05 redoes its figure and the comparison (06), but trains nothing
sleep 1
touch "$SCRATCH/results/05-fine-tuning.csv"
doc -n >"$SCRATCH/plan.txt" 2>&1
grep -q "06-comparison --results" "$SCRATCH/plan.txt" || fail "06 not redone: $(cat "$SCRATCH/plan.txt")"
grep -q "training-curves.gp .*05-fine-tuning.csv" "$SCRATCH/plan.txt" || fail "05's figure not redone"
grep -qE "$BUILD/0[45]-" "$SCRATCH/plan.txt" && fail "a training program reruns: $(cat "$SCRATCH/plan.txt")"
doc >/dev/null 2>&1 || fail "rerun failed"
doc -q || fail "not up to date after the rerun"

# --- 3. no dataset: a clear message
if make --no-print-directory -f Makefile.doc BUILD="$BUILD" PETS_ROOT="$SCRATCH/nowhere" \
     RESULTS="$SCRATCH/r3" FIGURES="$SCRATCH/f3" REPORT="$SCRATCH/r3.pdf" DOCBUILD="$SCRATCH/d3" \
     results >"$SCRATCH/nodata.log" 2>&1; then
  fail "a missing dataset was accepted"
fi
grep -q "no Oxford-IIIT Pet dataset at PETS_ROOT=$SCRATCH/nowhere.*make data" "$SCRATCH/nodata.log" \
  || fail "unclear message for a missing dataset: $(cat "$SCRATCH/nodata.log")"

# --- 4. random backbone weights: the warning on every page of the chapter
R=$SCRATCH/random
mkdir -p "$R/chapters" "$R/results"
printf '# Introduction\n\nNo results here.\n' >"$R/chapters/00-introduction.md"
printf '{"weights_pretrained": 0, "weights": "random", "best_val_acc": 0.0625}\n' \
  >"$R/results/04-fake.json"
{
  printf '# Fake training\n\nBest accuracy {{04-fake:best_val_acc|*100|%%.1f}} %%.\n\n'
  i=0
  while [ $i -lt 120 ]; do
    printf 'Paragraph %d of filler text that makes this chapter run over several pages. ' $i
    printf 'The accuracy was {{04-fake:best_val_acc|%%.4f}}.\n\n'
    i=$((i + 1))
  done
} >"$R/chapters/04-fake.md"
make --no-print-directory -f Makefile.doc BUILD="$BUILD" PROGRAMS= CHAPTERS_DIR="$R/chapters" \
  RESULTS="$R/results" FIGURES="$R/figures" REPORT="$R/report.pdf" DOCBUILD="$R/doc" \
  >"$R/make.log" 2>&1 || { cat "$R/make.log"; fail "rendering the random-weights chapter failed"; }
pages=$(pdfinfo "$R/report.pdf" | awk '/^Pages:/ {print $2}')
[ "$pages" -ge 4 ] || fail "the random-weights test report has only $pages pages"
marked=0
p=1
while [ $p -le "$pages" ]; do
  text=$(pdftotext -f $p -l $p "$R/report.pdf" - | tr -s ' \n' '  ')
  case "$text" in
    *"Paragraph"*)
      case "$text" in *"RANDOM BACKBONE WEIGHTS, NOT IMAGENET"*) marked=$((marked + 1)) ;;
        *) fail "page $p of the random-weights chapter lacks the warning header" ;; esac ;;
    *"RANDOM BACKBONE"*) fail "page $p (no random-weights results) carries the warning" ;;
  esac
  p=$((p + 1))
done
[ $marked -ge 3 ] || fail "only $marked pages of the random-weights chapter found"
pdftotext "$R/report.pdf" - | tr -s ' \n' '  ' | grep -qF "Not the ImageNet backbone." \
  || fail "the boxed note is missing"
pdftotext "$R/report.pdf" - | tr -s ' \n' '  ' | grep -qF "Best accuracy 6.2 %" \
  || fail "the value in the random-weights chapter is wrong"

echo "report: all checks passed ($SCRATCH)"
