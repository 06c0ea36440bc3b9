#!/bin/sh
# tests/bench.sh BUILD: `make bench`. Runs each benchmark of the package beside PyTorch's
# equivalent (when Debian's python3-torch is installed) in the same run; prints ratios.
set -e
BUILD=${1:-build}
for b in tests/bench-*.sh; do
  [ -f "$b" ] || continue
  echo "== $b"
  sh "$b" "$BUILD"
done
