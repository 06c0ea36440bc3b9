# tests/experiments_lib.sh: what the shell tests of chapters 04 and 05 share (sourced, not run).
#   . "$(dirname "$0")/experiments_lib.sh"; exp_setup BUILD TMP
# exp_setup: sets BUILD and TMP, defines fail(), makes TMP afresh with a synthetic dataset in
# TMP/fake (build/make-fake-pets: an undecodable and a missing image among them).
# same_run NAME DIR_A DIR_B: the results NAME in both folders are identical apart from the
# timings (CSV, predictions, final weights), and DIR_B holds no temporary file.
set -u
fail() { echo "FAIL: $*"; exit 1; }

exp_setup() {
    BUILD=$1
    TMP=$2
    rm -rf "$TMP"
    mkdir -p "$TMP" || fail "cannot create $TMP"
    "$BUILD/make-fake-pets" "$TMP/fake" > /dev/null || fail "make-fake-pets failed"
}

same_run() {
    for d in "$2" "$3"; do cut -d, -f1-5 "$d/$1.csv" > "$d/$1.csv.cut"; done
    cmp -s "$2/$1.csv.cut" "$3/$1.csv.cut" || { diff "$2/$1.csv.cut" "$3/$1.csv.cut"; fail "$1: per-epoch numbers differ"; }
    cmp -s "$2/$1.predictions.csv" "$3/$1.predictions.csv" || fail "$1: predictions differ"
    cmp -s "$2/$1.pth" "$3/$1.pth" || fail "$1: final weights differ"
    ls "$3"/*.tmp.* > /dev/null 2>&1 && fail "$1: temporary files left behind"
    echo "ok: $1: $(basename "$2") and $(basename "$3") give identical results (csv, predictions, weights)"
}
