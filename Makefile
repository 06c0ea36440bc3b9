# Makefile: the entry points. `make report` (the main job), `make test`, `make bench`, `make data`.
# Each first runs `deps`, which installs the Debian packages the project needs.
BUILD     ?= build
PETS_ROOT ?= data/oxford-iiit-pet
JOBS      ?= $(shell nproc 2>/dev/null || echo 2)
# Extra cmake options for the build, e.g. CMAKE_ARGS=-DPETS_WERROR=ON (CI and developers).
CMAKE_ARGS ?=

# Debian 12 packages: compiler and build, image decoding (stb), plots, the PDF report, the CPU
# compute library.
DEB_PACKAGES = gcc make cmake pkg-config libstb-dev gnuplot-nox pandoc poppler-utils \
  texlive-latex-base texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended \
  lmodern fonts-dejavu-core libdnnl-dev curl ca-certificates

.PHONY: all deps build test report bench data clean

all: build

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
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

clean:
	rm -rf $(BUILD)
