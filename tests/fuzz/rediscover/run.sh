#!/usr/bin/env bash
# tests/fuzz/rediscover/run.sh PATCH TARGET [SECONDS] [SEED]: can a fuzz target find a fault class
# by itself? Applies PATCH (one of the checks of image.c, or another parser's, taken out) to a
# temporary git worktree of HEAD, leaves out tests/fuzz/regress/ (the known inputs), builds the
# targets there with tests/fuzz/run.sh's build, and runs TARGET from the committed seed corpus
# alone until the first crash or SECONDS (default 600). Prints how many executions it took and the
# crashing input; the unpatched code must refuse that input (see README.md). Not part of CI.
set -uo pipefail
cd "$(dirname "$0")/../../.."
[ $# -ge 2 ] || { echo "usage: $0 PATCH TARGET [SECONDS] [SEED]" >&2; exit 2; }
patch=$(realpath "$1") target=$2 secs=${3:-600} seed=${4:-1}
data=${target%_msan}; data=${data#fuzz_}
wt=$(mktemp -d /tmp/rediscover.XXXXXX)
trap 'git worktree remove --force "$wt" >/dev/null 2>&1; rm -rf "$wt"' EXIT
git worktree add -q --detach "$wt" HEAD || exit 1
(cd "$wt" && git apply "$patch") || { echo "rediscover: $1 does not apply to HEAD" >&2; exit 1; }
rm -rf "$wt/tests/fuzz/regress"
(cd "$wt" && FUZZ_SECONDS=1 tests/fuzz/run.sh "$target" >/dev/null 2>&1)   # builds build-fuzz/
[ -x "$wt/build-fuzz/$target" ] || { echo "rediscover: $target did not build" >&2; exit 1; }
out=build-fuzz/rediscover
mkdir -p "$out"
rm -rf "$wt/corpus-work" && mkdir "$wt/corpus-work"
"$wt/build-fuzz/$target" -seed="$seed" -max_total_time="$secs" -timeout=25 -rss_limit_mb=2560 \
  -dict="tests/fuzz/dict/$data.dict" -artifact_prefix="$out/$target-" -print_final_stats=1 \
  "$wt/corpus-work" "tests/fuzz/corpus/$data" >"$out/$target.log" 2>&1
rc=$?
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$target.log" | tail -1)
if [ $rc -eq 0 ]; then
  echo "rediscover: $target did not find it in ${secs}s ($execs executions, seed $seed)"
  exit 1
fi
grep -E 'SUMMARY' "$out/$target.log" | head -1
echo "rediscover: $target found a crash after $execs executions (seed $seed): $(ls -t "$out/$target-"* | head -1)"
