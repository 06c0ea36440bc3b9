#!/bin/sh
# tests/test_check_layers.sh: shows that tests/check_layers.sh can fail (CTest `layers-selftest`).
# Runs it on small synthetic trees that use the real code/layers.txt: a clean tree must pass; an
# upward include (also from a .cu file), an include between sibling groups, a cycle between two
# modules of one group, an include of a missing file and a file outside every layer must each fail
# with a message naming the file and line.
#   usage: sh tests/test_check_layers.sh SOURCE_DIR WORK_DIR
set -eu
src=$1
work=$2
check=$src/tests/check_layers.sh
fails=0

# tree NAME: a fresh clean tree (core < data < nn backend < model < train < programs)
tree() {
    t=$work/$1
    rm -rf "$t"
    mkdir -p "$t/core" "$t/data" "$t/checkpoint" "$t/nn"
    cp "$src/code/layers.txt" "$t/"
    printf '#include <stdint.h>\n' > "$t/core/common.h"
    printf '#include "core/common.h"\n' > "$t/core/common.c"
    printf '#include "core/common.h"\n' > "$t/data/loader.h"
    printf '#include "checkpoint/tensor.h"\n' > "$t/checkpoint/pth.h"
    printf '#include "core/common.h"\n' > "$t/checkpoint/tensor.h"
    printf '#include "tensor.h"\n#include "pth.h"\n' > "$t/checkpoint/pth.c"
    printf '#include "core/common.h"\n' > "$t/nn/backend.h"
    printf '#include "nn/backend.h"\n' > "$t/nn/backend_cuda.cu"
    printf '#include "nn/backend.h"\n#include "checkpoint/pth.h"\n' > "$t/nn/resnet34.h"
    printf '#include "nn/resnet34.h"\n' > "$t/nn/train.h"
    printf '#include "nn/train.h"\n#include "data/loader.h"\n' > "$t/01-demo.c"
}

# expect NAME STATUS PATTERN: check_layers on tree NAME exits STATUS and says PATTERN
expect() {
    out=$(sh "$check" "$work/$1" 2>&1) && rc=0 || rc=$?
    if [ "$rc" -ne "$2" ] || ! printf '%s\n' "$out" | grep -q -- "$3"; then
        echo "FAIL $1: expected exit $2 and a line matching '$3', got exit $rc:"
        printf '%s\n' "$out"
        fails=$((fails + 1))
    else
        echo "ok   $1: $(printf '%s\n' "$out" | grep -- "$3" | head -n 1)"
    fi
}

tree clean
expect clean 0 "keep the layers"

tree upward
printf '#include "core/common.h"\n#include "nn/train.h"\n' > "$work/upward/core/common.c"
expect upward 1 "core/common.c:2: core (layer 0) includes nn/train.h of train (layer 4)"

tree upward-cu
printf '#include "nn/backend.h"\n#include "nn/train.h"\n' > "$work/upward-cu/nn/backend_cuda.cu"
expect upward-cu 1 "nn/backend_cuda.cu:2: backend (layer 2) includes nn/train.h of train (layer 4)"

tree sibling
printf '#include "core/common.h"\n#include "checkpoint/pth.h"\n' > "$work/sibling/data/loader.h"
expect sibling 1 "data/loader.h:2: data (layer 1) includes checkpoint/pth.h of checkpoint (layer 1)"

tree cycle # pickle.h includes pth.h while pth.c includes pickle.h: one group, so only a cycle
printf '#include "checkpoint/pth.h"\n' > "$work/cycle/checkpoint/pickle.h"
printf '#include "checkpoint/pickle.h"\n#include "checkpoint/pth.h"\n' > "$work/cycle/checkpoint/pth.c"
expect cycle 1 "include cycle between modules: checkpoint/p.*checkpoint/p"

tree missing
printf '#include "nn/train.h"\n#include "nn/trian.h"\n' > "$work/missing/01-demo.c"
expect missing 1 "01-demo.c:2: includes \"nn/trian.h\", which is no file of code/"

tree stray
mkdir -p "$work/stray/misc"
printf '#include "core/common.h"\n' > "$work/stray/misc/extra.c"
expect stray 1 "misc/extra.c: matches no line of"

[ "$fails" -eq 0 ] || { echo "$fails case(s) failed"; exit 1; }
echo "check_layers: every synthetic case behaves"
