#!/usr/bin/env bash
# tests/gpu/device-check.sh DIR: the GPU check, for a machine with an NVIDIA GPU (CUDA 13 and
# PyTorch expected there). Builds the project with the cuDNN backend, runs the tests labelled
# `gpu` and the GPU benchmark beside PyTorch AMP (channels_last), in under 5 minutes, and writes
# its log into DIR (DIR/device-check.log, plus one file per step).
#
# Debian packages the build needs but a bare GPU machine may lack (libstb-dev, libdnnl-dev) can be
# brought as .deb files in .devdeps/ (`apt-get download libstb-dev libdnnl-dev libdnnl2.6` here,
# then carry .devdeps): they are unpacked into a private prefix, never over /.
# If the system has no libcudnn, the one inside the PyTorch install (nvidia-cudnn wheel) is used.
set -uo pipefail
OUT=${1:?usage: tests/gpu/device-check.sh DIR}
mkdir -p "$OUT"
LOG="$OUT/device-check.log"
cd "$(dirname "$0")/../.."
exec > >(tee -a "$LOG") 2>&1
step() { echo; echo "== $* ($(date +%T))"; }
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || PY=/usr/bin/python3

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi failed"
nproc; ls /usr/local/cuda/bin/nvcc 2>/dev/null || echo "no nvcc under /usr/local/cuda"

step "dependencies"
PREFIX=$PWD/.devdeps/root
if ls .devdeps/*.deb >/dev/null 2>&1; then
  mkdir -p "$PREFIX"
  for f in .devdeps/*.deb; do dpkg -x "$f" "$PREFIX"; done
  export CPATH="$PREFIX/usr/include:${CPATH:-}"
  export LIBRARY_PATH="$PREFIX/usr/lib/x86_64-linux-gnu:${LIBRARY_PATH:-}"
  export LD_LIBRARY_PATH="$PREFIX/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  EXTRA="-DCMAKE_PREFIX_PATH=$PREFIX/usr -DCMAKE_INCLUDE_PATH=$PREFIX/usr/include/stb;$PREFIX/usr/include"
fi
CUDNN_ARGS=""
if ! ldconfig -p | grep -q libcudnn.so && ! ls /usr/local/cuda/lib64/libcudnn.so* >/dev/null 2>&1; then
  CUDNN_DIR=$("$PY" -c 'import os, nvidia.cudnn as c; print(os.path.dirname(c.__file__))' 2>/dev/null)
  if [ -n "$CUDNN_DIR" ]; then
    echo "using the cuDNN of the PyTorch install: $CUDNN_DIR"
    [ -e "$CUDNN_DIR/lib/libcudnn.so" ] || ln -sf "$(ls "$CUDNN_DIR"/lib/libcudnn.so.* | head -1)" "$CUDNN_DIR/lib/libcudnn.so"
    export LD_LIBRARY_PATH="$CUDNN_DIR/lib:${LD_LIBRARY_PATH:-}"
    CUDNN_ARGS="-DCUDNN_INCLUDE_DIR=$CUDNN_DIR/include -DCUDNN_LIBRARY=$CUDNN_DIR/lib/libcudnn.so"
  else
    echo "no libcudnn found on this machine nor in the PyTorch install"
  fi
fi

step "build"
# Only the sm of this GPU: a quicker build.
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d .)
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release ${ARCH:+-DCMAKE_CUDA_ARCHITECTURES=$ARCH} \
  ${EXTRA:+"$EXTRA"} $CUDNN_ARGS > "$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
grep -i "cudnn backend" "$OUT/cmake.log"
cmake --build build-gpu -j "$(nproc)" > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "build ok"

step "gpu tests"
(cd build-gpu && timeout 150 ctest -L gpu --output-on-failure) | tee "$OUT/gpu-tests.log"
tests_rc=${PIPESTATUS[0]}

step "benchmark: ResNet34 batch 256, fp16, ours"
if [ -x build-gpu/bench-resnet34 ]; then
  timeout 60 build-gpu/bench-resnet34 --device cuda --precision fp16 --batch 256 --iters 10 | tee "$OUT/bench-ours.log"
fi
step "benchmark: PyTorch AMP channels_last"
if [ -f tests/bench_resnet34.py ]; then
  timeout 90 "$PY" tests/bench_resnet34.py --device cuda --amp --channels-last --batch 256 --iters 10 | tee "$OUT/bench-torch.log"
fi

step "summary"
echo "gpu tests exit code: $tests_rc"
exit "$tests_rc"
