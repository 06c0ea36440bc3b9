# Makefile: the entry points. `make report` (the main job), `make test`, `make bench`, `make data`.
# Each first runs `deps`, which installs the Debian packages the project needs.
BUILD     ?= build
PETS_ROOT ?= data/oxford-iiit-pet
JOBS      ?= $(shell nproc 2>/dev/null || echo 2)
# Extra cmake options for the build, e.g. CMAKE_ARGS=-DPETS_WERROR=ON (CI and developers).
CMAKE_ARGS ?=

# Debian packages, the same names on Debian 12 (bookworm) and 13 (trixie), enough for a minimal
# image (`debootstrap --variant=minbase`, installed with --no-install-recommends): compiler, C
# library headers and build tools, image decoding (stb), plots, the PDF report (also checked by
# `make test`), the CPU compute library (oneDNN 2.x on Debian 12, 3.x on 13), downloads.
DEB_PACKAGES = gcc libc6-dev make cmake pkg-config libstb-dev gnuplot-nox pandoc poppler-utils \
  texlive-latex-base texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended \
  lmodern fonts-dejavu-core libdnnl-dev curl ca-certificates

.PHONY: all deps build test report bench data clean fuzz fuzz-deps sanitize

all: build

# SKIP_DEPS=1: you installed the equivalents yourself (a system without dpkg and apt-get).
deps:
	@if [ "$(SKIP_DEPS)" = 1 ]; then exit 0; fi; \
	if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make deps: no dpkg/apt-get here, so it cannot install what the build needs. Install"; \
	  echo "the equivalents of these Debian packages yourself:"; \
	  echo "  $(DEB_PACKAGES)"; \
	  echo "(a C11 compiler with OpenMP, CMake, oneDNN 2.x or 3.x, stb_image.h, gnuplot, pandoc,"; \
	  echo "LaTeX, poppler-utils, curl), then run make with SKIP_DEPS=1."; \
	  exit 1; \
	fi; \
	missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo"; \
	else echo "These Debian packages are missing:$$missing"; \
	     echo "Install them with:"; \
	     echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends$$missing"; \
	     exit 1; fi; \
	echo "installing Debian packages:$$missing"; \
	$$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q --no-install-recommends $$missing

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS)
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# With the default dataset location, a first `make report` fetches the dataset and the weights
# (`make data`); later runs, or PETS_ROOT=DIR, go straight to the report.
report: build
	@if [ "$(PETS_ROOT)" = data/oxford-iiit-pet ] && { [ ! -f data/oxford-iiit-pet/images/.extracted ] || \
	    [ ! -f data/oxford-iiit-pet/annotations/.extracted ] || \
	    { [ "$(WEIGHTS)" != random ] && [ ! -f data/weights/resnet34-b627a593.pth ]; }; }; then \
	  echo "no dataset or weights under data/ yet: running \`make data\` first"; \
	  $(MAKE) -f data/Makefile || exit 1; \
	fi
	$(MAKE) -f Makefile.doc BUILD=$(BUILD) PETS_ROOT=$(PETS_ROOT)

bench: build
	sh tests/bench.sh $(BUILD)

data: deps
	$(MAKE) -f data/Makefile

# Coverage-guided fuzzing of every parser of outside input (tests/fuzz/): builds the libFuzzer
# targets with clang in build-fuzz/ and runs each for FUZZ_SECONDS; fails on a crash, leak or
# timeout (the input is kept under build-fuzz/crashes/). Needs clang and its runtimes.
# FUZZ_SEED=N fixes libFuzzer's random seed (CI does: a failure repeats with the same command).
FUZZ_SECONDS ?= 60
FUZZ_SEED ?=
FUZZ_PACKAGES = clang libclang-rt-dev
fuzz: deps
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(FUZZ_PACKAGES)"
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_SEED=$(FUZZ_SEED) tests/fuzz/run.sh

# The whole tree with AddressSanitizer + UndefinedBehaviorSanitizer (any report is fatal) in
# build-sanitize/, then the CTest suite there; PETS_TEST_QUICK=1 shortens the long parity tests.
# Not the `report` test: pandoc and LaTeX around the same programs, past its 300 s limit there
# (its C programs and docgen run under the sanitizers in the chapters, experiments and docgen tests).
SANITIZE_FLAGS = -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
sanitize: deps
	cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=Sanitize -DPETS_CUDA=OFF \
	  -DCMAKE_C_FLAGS="$(SANITIZE_FLAGS)" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined"
	cmake --build build-sanitize -j $(JOBS)
	cd build-sanitize && PETS_TEST_QUICK=1 \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=0 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/sanitize/lsan.supp:print_suppressions=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS) -E '^report$$'

clean:
	rm -rf $(BUILD) build-fuzz build-sanitize
