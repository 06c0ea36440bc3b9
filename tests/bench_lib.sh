# tests/bench_lib.sh: sourced by the tests/bench-*.sh scripts (not run by tests/bench.sh: the
# name has no dash). One benchmark, ours beside PyTorch's in the same run on the same arguments:
#   bench_run BUILD PROGRAM PYSCRIPT MODULES PACKAGES [ARGS...]
#       runs BUILD/PROGRAM ARGS, then (if /usr/bin/python3 can `import MODULES`) tests/PYSCRIPT
#       ARGS, both printing key=value lines; without PyTorch it says what to install and exits 0
#   bench_ratios SPEC...
#       prints ratio_NAME=%.3f = ours[OURS_KEY] / PyTorch's pytorch_KEY for each SPEC, either
#       KEY (NAME = OURS_KEY = KEY) or NAME:OURS_KEY:KEY; a missing or zero value prints nothing

bench_ours=$(mktemp)
bench_theirs=$(mktemp)
trap 'rm -f "$bench_ours" "$bench_theirs"' EXIT

bench_run() {
  build=$1 program=$2 pyscript=$3 modules=$4 packages=$5
  shift 5
  if [ ! -x "$build/$program" ]; then
    echo "error: $build/$program not found: build first (make build)" >&2
    exit 1
  fi
  "$build/$program" "$@" | tee "$bench_ours"
  py=/usr/bin/python3
  if [ -x "$py" ] && "$py" -c "import $modules" >/dev/null 2>&1; then
    "$py" "$(dirname "$0")/$pyscript" "$@" | tee "$bench_theirs"
  else
    echo "# PyTorch comparison skipped: $py cannot import $modules" \
         "(install Debian's $packages to compare)"
    exit 0
  fi
}

bench_ratios() {
  awk -F= -v specs="$*" '
    FNR == NR { if ($1 !~ /^#/) ours[$1] = $2; next }
    $1 ~ /^pytorch_/ { theirs[substr($1, 9)] = $2 }
    END {
      n = split(specs, spec, " ")
      for (i = 1; i <= n; i++) {
        if (split(spec[i], f, ":") != 3) { f[1] = spec[i]; f[2] = spec[i]; f[3] = spec[i] }
        if ((f[2] in ours) && (f[3] in theirs) && theirs[f[3]] > 0)
          printf "ratio_%s=%.3f\n", f[1], ours[f[2]] / theirs[f[3]]
      }
    }' "$bench_ours" "$bench_theirs"
}
