#!/usr/bin/env bash
# tests/gpu/device-check.sh DIR: the GPU check, for a machine with an NVIDIA GPU (CUDA 13 and
# PyTorch expected there). Builds the targets the check needs with the cuDNN backend (only this
# GPU's architecture), runs the tests labelled `gpu`, then the ResNet34 benchmark at batch 256
# beside PyTorch AMP (channels_last), in about 5 minutes on 16 cores, and writes its log into DIR
# (DIR/device-check.log, plus one file per step). Exit status: that of the gpu tests (0 = passed),
# or 2 when the machine lacks what the build needs.
#
# A bare GPU machine receives a copy of the working tree, not the build folder. What it may lack,
# and how to bring it (in .devdeps/, ignored by git; pass it as a carried path):
#   Debian packages (stb headers, oneDNN 2.6 and its OpenCL loader), fetched on a Debian 12
#   machine with `apt-get download`, unpacked here into a private prefix, never over /:
#     mkdir -p .devdeps && (cd .devdeps && apt-get download libstb-dev libstb0 libdnnl-dev \
#         libdnnl2 ocl-icd-libopencl1)
#   CMake, if the machine has none: PyPI's self-contained cmake wheel, unzipped here:
#     pip download --no-deps --only-binary=:all: --platform manylinux2014_x86_64 cmake==3.31.6 -d .devdeps
#   cuDNN headers, if neither /usr/local/cuda nor the PyTorch install has cudnn.h:
#     mkdir -p .devdeps/cudnn-include && cp /usr/local/cuda/include/cudnn*.h .devdeps/cudnn-include/
# If the system has no libcudnn, the one inside the PyTorch install (nvidia-cudnn wheel) is used.
#
# For testing the dependency handling on a machine without a GPU: DEVICE_CHECK_STOP=configure
# stops after cmake's configure step, DEVICE_CHECK_IGNORE_SYSTEM=1 ignores the system's stb,
# oneDNN and cmake (uses .devdeps), PETS_GPU_ARCH=90 sets the architecture nvidia-smi would give.
set -uo pipefail
OUT=${1:?usage: tests/gpu/device-check.sh DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/device-check.log"
cd "$(dirname "$0")/../.."
ROOT=$PWD
exec > >(tee -a "$LOG") 2>&1
step() { echo; echo "== $* ($(date +%T))"; }
fail() { echo "device-check: $*" >&2; exit 2; }
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || PY=/usr/bin/python3
JOBS=$(nproc)

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader ||
  echo "nvidia-smi failed"
echo "cores: $JOBS"
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
NVCC=$(command -v nvcc || true)
[ -x "$CUDA_HOME/bin/nvcc" ] && NVCC=$CUDA_HOME/bin/nvcc
[ -n "$NVCC" ] || fail "no nvcc (CUDA toolkit) under $CUDA_HOME or on PATH"
"$NVCC" --version | tail -1
command -v gcc >/dev/null && command -v g++ >/dev/null || fail "no gcc/g++ (nvcc's host compiler)"
"$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN", torch.backends.cudnn.version())' 2>/dev/null ||
  echo "PyTorch not importable with $PY: the PyTorch benchmark will be skipped"

step "dependencies"
CMAKE_ARGS=()
PREFIX=$ROOT/.devdeps/root
LIBDIR=$PREFIX/usr/lib/x86_64-linux-gnu
unpack_debs() {
  [ -d "$PREFIX/usr" ] && return 0
  ls .devdeps/*.deb >/dev/null 2>&1 || return 1
  mkdir -p "$PREFIX"
  for f in .devdeps/*.deb; do
    if command -v dpkg-deb >/dev/null; then dpkg-deb -x "$f" "$PREFIX"
    else # no dpkg: a .deb is an ar archive holding data.tar.*
      (t=$(mktemp -d) && cd "$t" && ar x "$ROOT/$f" && tar -xf data.tar.* -C "$PREFIX" && rm -rf "$t")
    fi || fail "cannot unpack $f"
  done
  echo "unpacked $(ls .devdeps/*.deb | wc -l) .deb files into $PREFIX"
}
# stb headers
SYS=1
[ "${DEVICE_CHECK_IGNORE_SYSTEM:-}" = 1 ] && SYS=0
if [ $SYS = 1 ] && { [ -f /usr/include/stb/stb_image.h ] || [ -f /usr/include/stb_image.h ]; }; then
  echo "stb: system"
elif unpack_debs && [ -f "$PREFIX/usr/include/stb/stb_image.h" ]; then
  echo "stb: $PREFIX/usr/include/stb"
  CMAKE_ARGS+=("-DSTB_INCLUDE_DIR=$PREFIX/usr/include/stb")
else
  fail "stb_image.h not found: install libstb-dev, or bring its .deb in .devdeps/ (see the header of $0)"
fi
# oneDNN (the CPU backend that the gpu tests compare against)
if [ $SYS = 1 ] && [ -f /usr/include/dnnl.h ] && [ -e /usr/lib/x86_64-linux-gnu/libdnnl.so ]; then
  echo "oneDNN: system"
elif unpack_debs && [ -f "$PREFIX/usr/include/dnnl.h" ] && [ -e "$LIBDIR/libdnnl.so" ]; then
  echo "oneDNN: $LIBDIR"
  CMAKE_ARGS+=("-DDNNL_INCLUDE_DIR=$PREFIX/usr/include" "-DDNNL_LIBRARY=$LIBDIR/libdnnl.so")
else
  fail "oneDNN (dnnl.h, libdnnl.so) not found: install libdnnl-dev, or bring the .debs in .devdeps/"
fi
[ -d "$LIBDIR" ] && export LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# CMake
CMAKE=$(command -v cmake || true)
[ $SYS = 0 ] && ls .devdeps/cmake-*.whl >/dev/null 2>&1 && CMAKE=""
if [ -z "$CMAKE" ]; then
  WHL=$(ls .devdeps/cmake-*.whl 2>/dev/null | head -1)
  [ -n "$WHL" ] || fail "no cmake: install it, or bring PyPI's cmake wheel in .devdeps/"
  if [ ! -x .devdeps/cmake/cmake/data/bin/cmake ]; then
    "$PY" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$WHL" .devdeps/cmake ||
      fail "cannot unzip $WHL"
    chmod +x .devdeps/cmake/cmake/data/bin/*
  fi
  CMAKE=$ROOT/.devdeps/cmake/cmake/data/bin/cmake
  CTEST=$ROOT/.devdeps/cmake/cmake/data/bin/ctest
fi
CTEST=${CTEST:-$(dirname "$CMAKE")/ctest}
"$CMAKE" --version | head -1
# cuDNN: the library (libcudnn.so.9) from the toolkit, the system, or the PyTorch install
# (nvidia-cudnn-cu* wheel, which has no libcudnn.so link); the headers from the same places or
# .devdeps/cudnn-include. Both are passed to cmake explicitly.
LIB=""
for d in "$CUDA_HOME/lib64" "$CUDA_HOME/lib" "$CUDA_HOME/targets/x86_64-linux/lib"; do
  [ -z "$LIB" ] && LIB=$(ls "$d"/libcudnn.so.9* 2>/dev/null | sort | head -1)
done
[ -z "$LIB" ] && LIB=$(ldconfig -p 2>/dev/null | awk '/libcudnn\.so\.9 / {print $NF; exit}')
SITE=$("$PY" -c 'import site; print(" ".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null)
for d in $SITE; do
  [ -z "$LIB" ] && [ -d "$d/nvidia" ] && LIB=$(find "$d/nvidia" -name 'libcudnn.so.9*' 2>/dev/null | sort | head -1)
done
[ -n "$LIB" ] || fail "no libcudnn.so.9 in $CUDA_HOME, the system or the PyTorch install"
CUDNN_LIB=$(dirname "$LIB")
CUDNN_INC=""
for f in "$CUDA_HOME/include/cudnn.h" /usr/include/cudnn.h /usr/include/x86_64-linux-gnu/cudnn.h \
         "$(dirname "$CUDNN_LIB")/include/cudnn.h" "$ROOT/.devdeps/cudnn-include/cudnn.h"; do
  [ -z "$CUDNN_INC" ] && [ -f "$f" ] && CUDNN_INC=$(dirname "$f")
done
[ -n "$CUDNN_INC" ] || fail "libcudnn found ($LIB) but no cudnn.h: bring the headers in .devdeps/cudnn-include/"
mkdir -p .devdeps/cudnn-lib
ln -sf "$LIB" .devdeps/cudnn-lib/libcudnn.so
export LD_LIBRARY_PATH="$CUDNN_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
CMAKE_ARGS+=("-DCUDNN_INCLUDE_DIR=$CUDNN_INC" "-DCUDNN_LIBRARY=$ROOT/.devdeps/cudnn-lib/libcudnn.so")
echo "cuDNN: $LIB, headers $CUDNN_INC ($(grep -hE '^#define CUDNN_(MAJOR|MINOR) ' "$CUDNN_INC"/cudnn_version.h 2>/dev/null | awk '{printf "%s ", $3}'))"

step "configure"
ARCH=${PETS_GPU_ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ')}
[ -n "$ARCH" ] && CMAKE_ARGS+=("-DCMAKE_CUDA_ARCHITECTURES=$ARCH")
CMAKE_ARGS+=("-DCMAKE_CUDA_COMPILER=$NVCC")
echo "cmake ${CMAKE_ARGS[*]}"
"$CMAKE" -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release "${CMAKE_ARGS[@]}" > "$OUT/cmake.log" 2>&1 ||
  { tail -30 "$OUT/cmake.log"; fail "cmake configure failed (log: $OUT/cmake.log)"; }
grep -i "cudnn backend" "$OUT/cmake.log"
grep -qi "cudnn backend: ON" "$OUT/cmake.log" || fail "the cuDNN backend was not enabled (see $OUT/cmake.log)"
[ "${DEVICE_CHECK_STOP:-}" = configure ] && { echo "stopping after configure (DEVICE_CHECK_STOP)"; exit 0; }

step "build"
TARGETS=(nn test-cuda-backend test-cuda-resnet34 test-train-nn bench-resnet34)
"$CMAKE" --build build-gpu -j "$JOBS" --target "${TARGETS[@]}" > "$OUT/build.log" 2>&1 ||
  { grep -E "error|Error" "$OUT/build.log" | head -30; fail "build failed (log: $OUT/build.log)"; }
echo "build ok"

step "gpu tests"
(cd build-gpu && timeout 200 "$CTEST" -L gpu --output-on-failure --timeout 150) 2>&1 | tee "$OUT/gpu-tests.log"
tests_rc=${PIPESTATUS[0]}
# the per-layer numbers, for the note
for t in fp32 fp16; do
  timeout 60 build-gpu/test-cuda-backend $t > "$OUT/cuda-backend-$t.log" 2>&1
done

step "benchmark: ResNet34 batch 256, fp16, ours"
timeout 150 build-gpu/bench-resnet34 --device cuda --precision fp16 --batch 256 --iters 10 --warmup 2 \
  --no-peak 2>&1 | tee "$OUT/bench-ours.log"
step "benchmark: PyTorch AMP channels_last, same batch"
if "$PY" -c 'import torch, torchvision' 2>/dev/null; then
  timeout 180 "$PY" tests/bench_resnet34.py --device cuda --precision fp16 --channels-last \
    --batch 256 --iters 10 --warmup 2 2>&1 | tee "$OUT/bench-torch.log"
else
  echo "PyTorch/torchvision not importable with $PY: skipped"
fi

step "summary"
grep -h "img_per_s" "$OUT/bench-ours.log" "$OUT/bench-torch.log" 2>/dev/null
echo "gpu tests exit code: $tests_rc"
exit "$tests_rc"
