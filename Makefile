# Ferrotel — the verbs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
FERROTEL_CACHE ?= $(HOME)/.cache/ferrotel
TOOLS_BIN := $(FERROTEL_CACHE)/bin
export FERROTEL_CACHE
export FERROTEL_BIN := $(TOOLS_BIN)
export PATH := $(TOOLS_BIN):$(HOME)/.cargo/bin:/usr/local/go/bin:$(PATH)
# Keep test logs readable and builds reproducible.
export CARGO_TERM_COLOR ?= never
export RUST_BACKTRACE ?= 1
# CI builds a fresh clone once: incremental caches would only double the
# target directory's size (to ~30 GiB) on the shared disk the test bed's
# kubelet watches for pressure.
ifeq ($(CI),true)
export CARGO_INCREMENTAL ?= 0
endif

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: tools
tools: rust-toolchain ## Install/refresh every tool the tests and demo need (idempotent, cached in ~/.cache/ferrotel)
	@e2e/tools/install.sh

# rustup installs the toolchain rust-toolchain.toml pins only when asked:
# cargo alone stops with "toolchain ... is not installed".
.PHONY: rust-toolchain
rust-toolchain: ## Install the Rust toolchain rust-toolchain.toml pins, with clippy and rustfmt (idempotent)
	@rustup --quiet toolchain install

.PHONY: build
build: tools ## Build every binary (debug)
	$(CARGO) build --workspace --all-targets

.PHONY: generate
generate: rust-toolchain ## Regenerate crds/ and the chart's CRDs from the Rust API types
	$(CARGO) run --quiet -p ferrotel-api --bin crdgen -- crds
	@if [ -d charts/ferrotel/crds ]; then cp crds/*.yaml charts/ferrotel/crds/; fi
	@if [ -d config/crd ]; then cp crds/*.yaml config/crd/; fi

.PHONY: check-generated
check-generated: generate ## Fail if generated files are not committed
	@git diff --exit-code -- crds charts/ferrotel/crds config/crd || { echo "crds/ is stale: run 'make generate' and commit the result" >&2; exit 1; }

.PHONY: lint
lint: rust-toolchain ## cargo fmt --check and clippy -D warnings
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: test
test: tools lint check-generated ## Everything: lint, generated files, unit tests, privileged eBPF tests, test-bed e2e
	@[ "$$(id -u)" = 0 ] || { echo "make test needs root: the probe tests load eBPF programs into the kernel (run with sudo)" >&2; exit 1; }
	$(CARGO) build --workspace --bins
	@log=$${CARGO_TARGET_DIR:-target}/test.log; mkdir -p $$(dirname $$log); set -o pipefail; \
	  echo "$(CARGO) test --workspace --no-fail-fast (log: $$log)"; \
	  $(CARGO) test --workspace --no-fail-fast 2>&1 | tee $$log || { e2e/tools/test-failures.sh $$log; exit 1; }
	$(MAKE) --no-print-directory fuzz

# The probe's fuzz targets (probe/fuzz): every parser of bytes a workload
# controls, built from ferrotel-parse alone. `make fuzz` (part of `make
# test`) builds them and runs each for FUZZ_SECONDS from the committed seeds
# and regressions; `make fuzz-long` runs each for FUZZ_RUNS executions (the
# release bar: 10 million with no crash; probe/fuzz/RESULTS.md). Nightly
# toolchain + cargo-fuzz (installed by `make tools`). `cargo test` also
# replays the committed inputs on stable (probe/tests/fuzz_corpus.rs).
FUZZ_TARGETS := $(sort $(basename $(notdir $(wildcard probe/fuzz/fuzz_targets/*.rs))))
FUZZ_SECONDS ?= 3
FUZZ_RUNS ?= 10000000

.PHONY: fuzz
fuzz: tools ## Build the probe fuzz targets and run each for FUZZ_SECONDS (default 3)
	nice -n 19 $(CARGO) +nightly fuzz build --fuzz-dir probe/fuzz
	@mkdir -p probe/fuzz/artifacts; for t in $(FUZZ_TARGETS); do \
	  log=probe/fuzz/artifacts/$$t.log; \
	  if nice -n 19 probe/fuzz/run.sh $$t -max_total_time=$(FUZZ_SECONDS) > $$log 2>&1; then \
	    echo "fuzz $$t: $$(grep -m1 -o 'stat::number_of_executed_units: [0-9]*' $$log | grep -o '[0-9]*$$') executions, no crash"; \
	  else tail -40 $$log; echo "fuzz target $$t failed: see $$log; the crashing input is in probe/fuzz/artifacts/$$t/" >&2; exit 1; fi; \
	done

.PHONY: fuzz-long
fuzz-long: tools ## Run every probe fuzz target for FUZZ_RUNS (default 10 million) executions
	@for t in $(FUZZ_TARGETS); do nice -n 19 probe/fuzz/run.sh $$t -runs=$(FUZZ_RUNS) -timeout=60 || exit 1; done

.PHONY: fuzz-one
fuzz-one: ## Replay one input through one fuzz target: make fuzz-one TARGET=http1 INPUT=path
	probe/fuzz/run.sh $(TARGET) $(INPUT)

.PHONY: test-unit
test-unit: rust-toolchain ## Unit tests only (pure logic, snapshots, parsers): no root, no eBPF, no test bed, no tools
	$(CARGO) test --workspace --lib --bins --no-fail-fast

.PHONY: testbed-up
testbed-up: tools ## Start the local cluster (control plane, kwok nodes and a real node; root) in the background; writes .testbed/kubeconfig
	$(CARGO) build -q -p ferrotel-e2e --bin ferrotel-testbed
	$${CARGO_TARGET_DIR:-target}/debug/ferrotel-testbed up --dir .testbed $(TESTBED_ARGS)

.PHONY: testbed-down
testbed-down: ## Stop the local control plane started by testbed-up
	@tb=$${CARGO_TARGET_DIR:-target}/debug/ferrotel-testbed; if [ -x $$tb ]; then $$tb down --dir .testbed; fi

.PHONY: demo
demo: tools ## Run Ferrotel locally on real pods: cluster with a real node, chart, probes, sample Go and Python apps, spans as they arrive, RED summary (Ctrl-C stops)
	@[ "$$(id -u)" = 0 ] || { echo "make demo needs root: it runs a real node (containerd, kubelet) and the probes load eBPF programs (run: sudo make demo)" >&2; exit 1; }
	$(CARGO) build -q -p ferrotel-operator -p ferrotel-probe -p ferrotel-e2e --bins
	$${CARGO_TARGET_DIR:-target}/debug/ferrotel-demo --dir .demo $(DEMO_ARGS)

.PHONY: demo-down
demo-down: ## Stop and remove everything `make demo` started (also after a killed run)
	@demo=$${CARGO_TARGET_DIR:-target}/debug/ferrotel-demo; if [ -x $$demo ]; then $$demo down --dir .demo; fi
	@if [ -x target/debug/ferrotel-testbed ] && [ -d .testbed ]; then target/debug/ferrotel-testbed down --dir .testbed; fi

.PHONY: bench
bench: tools ## Run every benchmark (each under flock /tmp/ferrotel-bench.lock); results land in bench/results/
	$(CARGO) build -q --release -p ferrotel-probe --bin ferrotel-probe
	bench/python/run.sh $(BENCH_ARGS)
	bench/go/run.sh $(BENCH_ARGS)
	bench/go/run.sh --only go-minimal --exchange --out bench/results/go-exchange.md $(BENCH_ARGS)
	bench/go/run.sh --only go-minimal --probe-other-core --out bench/results/go-core-sharing.md $(BENCH_ARGS)
	bench/python/run.sh --only flask-minimal --probe-other-core --out bench/results/python-core-sharing.md $(BENCH_ARGS)
	bench/tls/run.sh $(BENCH_ARGS)
	bench/propagation/run.sh $(BENCH_ARGS)
	bench/optin-latency/run.sh
	bench/profiling/run.sh $(BENCH_ARGS)
	bench/span-path/run.sh
	bench/uprobe-floor/run.sh
	bench/bpf-profile/run.sh
	bench/bpf-profile/run.sh --language python
	bench/nodescale/run.sh $(NODESCALE_ARGS)
	bench/scale/run.sh $(SCALE_ARGS)
	bench/reliability/run.sh $(SOAK_ARGS)
	bench/churn/run.sh $(CHURN_ARGS)

.PHONY: bench-python bench-go bench-tls bench-propagation bench-profiling bench-nodescale bench-scale bench-churn soak
bench-python: tools ## The Python benchmark only (BENCH_ARGS="--rounds 7 ..." passes options)
	$(CARGO) build -q --release -p ferrotel-probe --bin ferrotel-probe
	bench/python/run.sh $(BENCH_ARGS)

bench-go: tools ## The Go benchmark only (BENCH_ARGS="--rounds 7 ..." passes options)
	$(CARGO) build -q --release -p ferrotel-probe --bin ferrotel-probe
	bench/go/run.sh $(BENCH_ARGS)

bench-tls: tools ## The TLS benchmark only (BENCH_ARGS="--rounds 7 ..." passes options)
	$(CARGO) build -q --release -p ferrotel-probe --bin ferrotel-probe
	bench/tls/run.sh $(BENCH_ARGS)

bench-propagation: tools ## The propagation benchmark only (BENCH_ARGS="--rounds 7 ..." passes options)
	$(CARGO) build -q --release -p ferrotel-probe --bin ferrotel-probe
	bench/propagation/run.sh $(BENCH_ARGS)

bench-profiling: tools ## The profiling benchmark only (BENCH_ARGS="--rounds 7 ..." passes options)
	$(CARGO) build -q --release -p ferrotel-probe --bin ferrotel-probe
	bench/profiling/run.sh $(BENCH_ARGS)

bench-nodescale: tools ## The probe at node scale: 110 processes, 25 Go + 25 Python traced by two probes; RSS, idle and loaded CPU (NODESCALE_ARGS="--rate 300 ..." passes options)
	$(CARGO) build -q --release -p ferrotel-probe --bin ferrotel-probe
	bench/nodescale/run.sh $(NODESCALE_ARGS)

soak: tools ## Reliability soak: Go and Python targets under their probes for 10 min, loss accounted at the collector (SOAK_ARGS="--minutes 30 --fault collector-down"); not part of make test
	$(CARGO) build -q --release -p ferrotel-probe --bin ferrotel-probe
	bench/reliability/run.sh $(SOAK_ARGS)

bench-churn: tools ## Go process churn under the probe process: 1,000 short-lived servers, its memory and kernel holdings before and after (CHURN_ARGS="--processes 200 ..." passes options)
	$(CARGO) build -q --release -p ferrotel-probe --bin ferrotel-probe
	bench/churn/run.sh $(CHURN_ARGS)

bench-scale: tools ## The operator at scale on kwok nodes (10,000 pods; SCALE_ARGS="--pods 5000 ..." passes options); not part of make test
	bench/scale/run.sh $(SCALE_ARGS)

# Container images (images/*.Containerfile). Needs podman or a running Docker
# engine and a registry for the bases. The test bed's machines have neither:
# the tests and the demo build images with the same contract locally, from
# the host's binaries, and load them into the real node's containerd
# (e2e/src/images.rs; see docs/install.md, "Images").
IMAGE_REGISTRY ?= ghcr.io/ferrotel
IMAGE_TAG ?= $(shell awk -F'"' '/^version *=/ {print $$2; exit}' Cargo.toml)
OTELCOL_VERSION := $(shell awk '/^  version:/ {print $$2; exit}' operator/api/distribution/manifest.yaml)
CONTAINER_ENGINE ?= $(shell command -v podman 2>/dev/null || command -v docker 2>/dev/null)

.PHONY: images
images: ## Build the operator, probe and collector images (podman or docker; IMAGE_REGISTRY, IMAGE_TAG)
	@[ -n "$(CONTAINER_ENGINE)" ] && $(CONTAINER_ENGINE) info >/dev/null 2>&1 || { echo "make images needs podman or a running Docker engine; '$(CONTAINER_ENGINE)' found none: install podman or start dockerd" >&2; exit 1; }
	$(CONTAINER_ENGINE) build -f images/operator.Containerfile -t $(IMAGE_REGISTRY)/ferrotel-operator:$(IMAGE_TAG) .
	$(CONTAINER_ENGINE) build -f images/probe.Containerfile -t $(IMAGE_REGISTRY)/ferrotel-probe:$(IMAGE_TAG) .
	$(CONTAINER_ENGINE) build -f images/collector.Containerfile --build-arg OCB_VERSION=$(OTELCOL_VERSION) -t $(IMAGE_REGISTRY)/otelcol:$(OTELCOL_VERSION) .
