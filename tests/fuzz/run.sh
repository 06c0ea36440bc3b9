#!/usr/bin/env bash
# run.sh: builds the libFuzzer targets of tests/fuzz/ with clang into their own build folder and
# runs each for FUZZ_SECONDS seconds (default 60), starting from the committed seeds
# (tests/fuzz/corpus/<target>/) and the inputs of past findings (tests/fuzz/regress/<target>/,
# which must all pass), with the target's dictionary. Prints executions and coverage per target;
# a crash, leak, timeout or out-of-memory input is kept under <build>/crashes/ and fails the run.
#   usage: tests/fuzz/run.sh [target...]      (default: all targets)
#   environment: FUZZ_SECONDS (per target), FUZZ_BUILD (default build-fuzz), CC (default clang),
#   FUZZ_SEED (libFuzzer's -seed: CI sets one, so that a red run is repeated exactly by the same
#   command; unset, every run explores new mutations)
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
BUILD=${FUZZ_BUILD:-build-fuzz}
ALL="fuzz_pth fuzz_image fuzz_image_msan fuzz_dataset fuzz_flatjson fuzz_runfiles fuzz_docgen"
TARGETS=${*:-$ALL}

CC=${CC:-clang} cmake -S tests/fuzz -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null || exit 1
cmake --build "$BUILD" -j "$(nproc 2>/dev/null || echo 2)" || exit 1
mkdir -p "$BUILD/crashes" "$BUILD/logs"

export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
failed=""
printf '%-17s %10s %8s %8s %6s  %s\n' target executions exec/s cov ft result
for t in $TARGETS; do
  data=${t%_msan}; data=${data#fuzz_}              # fuzz_image_msan shares fuzz_image's inputs
  work="$BUILD/corpus/$t"
  mkdir -p "$work"
  dirs=("$work" "tests/fuzz/corpus/$data")
  [ -d "tests/fuzz/regress/$data" ] && dirs+=("tests/fuzz/regress/$data")
  log="$BUILD/logs/$t.log"
  "$BUILD/$t" -max_total_time="$SECONDS_PER_TARGET" -timeout=25 -rss_limit_mb=2560 \
    -dict="tests/fuzz/dict/$data.dict" -artifact_prefix="$BUILD/crashes/$t-" \
    -print_final_stats=1 ${FUZZ_SEED:+-seed="$FUZZ_SEED"} "${dirs[@]}" >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  if [ $rc -eq 0 ]; then result=ok; else
    result="FAILED (exit $rc)"
    failed="$failed $t"
  fi
  printf '%-17s %10s %8s %8s %6s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$result"
  if [ $rc -ne 0 ]; then
    grep -E 'ERROR|SUMMARY|runtime error|Assertion|Test unit written|==[0-9]+==' "$log" | head -20 | sed 's/^/    /'
    echo "    full log: $log; inputs kept: $(ls "$BUILD/crashes/$t-"* 2>/dev/null | tr '\n' ' ')"
    echo "    rerun one: $BUILD/$t <input>"
  fi
done
if [ -n "$failed" ]; then
  echo "fuzz: FAILED:$failed (each failing input is under $BUILD/crashes/; once fixed, copy it to"
  echo "      tests/fuzz/regress/<target>/ and add a test for it)"
  exit 1
fi
echo "fuzz: all targets ran ${SECONDS_PER_TARGET}s each without a crash, leak or timeout"
