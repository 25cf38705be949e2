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

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: tools
tools: ## Install/refresh every tool the tests and demo need (idempotent, cached in ~/.cache/ferrotel)
	@e2e/tools/install.sh

.PHONY: build
build: tools ## Build every binary (debug)
	$(CARGO) build --workspace --all-targets

.PHONY: generate
generate: ## Regenerate crds/ and the chart's CRDs from the Rust API types
	$(CARGO) run --quiet -p ferrotel-api --bin crdgen -- crds
	@if [ -d charts/ferrotel/crds ]; then cp crds/*.yaml charts/ferrotel/crds/; fi

.PHONY: check-generated
check-generated: generate ## Fail if generated files are not committed
	@git diff --exit-code -- crds charts/ferrotel/crds || { echo "crds/ is stale: run 'make generate' and commit the result" >&2; exit 1; }

.PHONY: lint
lint: ## cargo fmt --check and clippy -D warnings
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: test
test: tools lint check-generated ## Everything: lint, generated files, unit tests, privileged eBPF tests, test-bed e2e
	@[ "$$(id -u)" = 0 ] || { echo "make test needs root: the probe tests load eBPF programs into the kernel (run with sudo)" >&2; exit 1; }
	$(CARGO) test --workspace --no-fail-fast

.PHONY: testbed-up
testbed-up: tools ## Start the local control plane in the background; writes .testbed/kubeconfig
	$(CARGO) build -q -p ferrotel-e2e --bin ferrotel-testbed
	target/debug/ferrotel-testbed up --dir .testbed

.PHONY: testbed-down
testbed-down: ## Stop the local control plane started by testbed-up
	@if [ -x target/debug/ferrotel-testbed ]; then target/debug/ferrotel-testbed down --dir .testbed; fi

.PHONY: demo
demo: tools ## Run Ferrotel locally: control plane, operator, probes, sample Go and Python apps, collector printing spans
	$(CARGO) build -q -p ferrotel-e2e --bin ferrotel-testbed
	target/debug/ferrotel-testbed up --dir .testbed
	KUBECONFIG=.testbed/kubeconfig kubectl get nodes -o wide

.PHONY: demo-down
demo-down: testbed-down ## Stop everything `make demo` started

.PHONY: bench
bench: tools ## Run the benchmarks; results land in bench/results/
	@echo "benchmarks: see bench/README.md"

# Container images (images/*.Containerfile). Needs podman or a running Docker
# engine; this repository's CI machines have neither, so the tests check the
# binaries the images contain instead (see docs/install.md, "Images").
IMAGE_REGISTRY ?= ghcr.io/ferrotel
IMAGE_TAG ?= $(shell awk -F'"' '/^version *=/ {print $$2; exit}' Cargo.toml)
OTELCOL_VERSION := $(shell awk '/^  version:/ {print $$2; exit}' operator/distribution/manifest.yaml)
CONTAINER_ENGINE ?= $(shell command -v podman 2>/dev/null || command -v docker 2>/dev/null)

.PHONY: images
images: ## Build the operator, probe and collector images (podman or docker; IMAGE_REGISTRY, IMAGE_TAG)
	@[ -n "$(CONTAINER_ENGINE)" ] && $(CONTAINER_ENGINE) info >/dev/null 2>&1 || { echo "make images needs podman or a running Docker engine; '$(CONTAINER_ENGINE)' found none: install podman or start dockerd" >&2; exit 1; }
	$(CONTAINER_ENGINE) build -f images/operator.Containerfile -t $(IMAGE_REGISTRY)/ferrotel-operator:$(IMAGE_TAG) .
	$(CONTAINER_ENGINE) build -f images/probe.Containerfile -t $(IMAGE_REGISTRY)/ferrotel-probe:$(IMAGE_TAG) .
	$(CONTAINER_ENGINE) build -f images/collector.Containerfile --build-arg OCB_VERSION=$(OTELCOL_VERSION) -t $(IMAGE_REGISTRY)/ferrotel-otelcol:$(OTELCOL_VERSION) .
