# totemcast developer commands. `make help` lists them; `make test` is what CI runs.
.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

VENV ?= .venv
PY := $(VENV)/bin/python
# One interpreter for every PyO3 build (clippy, maturin), so PyO3 is not rebuilt back and forth.
export PYO3_PYTHON := $(abspath $(PY))
export CARGO_TERM_COLOR ?= always
PYTHON_DIRS := python tests benches

.PHONY: help  ## List the targets
help:
	@grep -E '^.PHONY: .*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ".PHONY: |  ## "}; {printf "  make %-12s %s\n", $$2, $$3}'

$(VENV)/.installed: requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

.PHONY: install  ## Create .venv with the build, test and lint tools (requirements-dev.txt)
install: $(VENV)/.installed system-deps

.PHONY: system-deps  ## Debian packages the network-namespace tests use (iproute2: ip, tc), when root
system-deps:
	@if ! command -v ip >/dev/null || ! command -v tc >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && apt-get install -y -qq --no-install-recommends iproute2; \
		else \
			echo "note: iproute2 (ip, tc) is missing and this is not root: the netns tests will skip"; \
		fi; \
	fi

.PHONY: build  ## Build the extension from source (debug) and install it into .venv
build: install
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --quiet

.PHONY: build-release  ## Build the extension with optimizations into .venv
build-release: install
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --quiet --release

.PHONY: lint  ## rustfmt --check, clippy -D warnings, ruff, mypy
lint: install
	cargo fmt --all -- --check
	cargo clippy --all-targets --features python,sim -- -D warnings
	$(VENV)/bin/ruff check $(PYTHON_DIRS)
	$(VENV)/bin/ruff format --check $(PYTHON_DIRS)
	$(VENV)/bin/mypy

.PHONY: test-rust  ## cargo test without features (no Python needed), then with the simulator
test-rust:
	cargo test
	cargo test --features sim

SIM_SEEDS ?= 300
.PHONY: sim-sweep  ## Release-mode seed sweep of the simulator (fixed seeds; SIM_SEEDS=n)
sim-sweep:
	cargo run --quiet --profile sim --features sim --bin totemcast-sim -- \
		--seeds $(SIM_SEEDS) --first 1 --faults all

.PHONY: sim  ## Soak: fresh random seeds (SIM_SEEDS=n, default 2000); prints any failing seed
sim:
	cargo run --quiet --profile sim --features sim --bin totemcast-sim -- \
		--seeds $${SIM_SEEDS:-2000} --faults all

.PHONY: fuzz  ## Fuzz the datagram decoder, decryption and the client request ring for FUZZ_SECONDS each
FUZZ_SECONDS ?= 60
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && for target in datagram_decode datagram_open request_ring; do \
		RUSTC_BOOTSTRAP=1 cargo fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS); \
	done

.PHONY: bench  ## Criterion benchmarks (protocol core in the simulator)
bench:
	cargo bench --features sim

.PHONY: bench-compare  ## Corosync 3.1.7's harness and `totemcast bench` interleaved -> benches/RESULTS.md (root; BENCH_MODE=quick|full)
BENCH_MODE ?= full
bench-compare: build-release
	cargo build --release --bin totemcast
	MODE=$(BENCH_MODE) PYTHON=$(abspath $(PY)) benches/compare.sh

.PHONY: bench-compare-quick  ## bench-compare with short runs (a few minutes)
bench-compare-quick:
	$(MAKE) bench-compare BENCH_MODE=quick

.PHONY: test-py  ## pytest (hypothesis included) against the built extension
test-py: build
	$(PY) -m pytest

.PHONY: stubtest  ## Check python/totemcast/_native.pyi against the built module
stubtest: build
	$(PY) -m mypy.stubtest totemcast._native

.PHONY: test  ## Everything CI runs: lint, Rust tests, simulator sweep, extension, pytest, stubtest
test: lint test-rust sim-sweep build test-py stubtest

.PHONY: format  ## Apply rustfmt and ruff fixes
format: install
	cargo fmt --all
	$(VENV)/bin/ruff check --fix $(PYTHON_DIRS)
	$(VENV)/bin/ruff format $(PYTHON_DIRS)

.PHONY: clean  ## Remove build outputs and the virtual environment
clean:
	cargo clean
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find python tests -name __pycache__ -prune -exec rm -rf {} +
	rm -f python/totemcast/*.so
