#!/usr/bin/env bash
# Operator at scale: the release ferrotel-operator against the project's test
# bed (etcd, kube-apiserver, controllers, kwok) holding 100 kwok nodes, 1,000
# namespaces, 10,000 Running pods, 20 TelemetryCollectors and 50
# Instrumentations. Measures operator RSS and CPU, reconcile latency (CR
# change -> child updated), its API requests at steady state and its restart
# (kill -9: time to reconcile everything, writes). Writes
# bench/results/scale.md. Options go to the benchmark, e.g.
#   bench/scale/run.sh --pods 5000 --namespaces 500
# (ferrotel-scale-bench --help lists them). Needs `make tools`; no root.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-target}
# The operator measured is the release build; the driver is built with it.
CARGO_INCREMENTAL=0 nice -n 19 cargo build -q --release -p ferrotel-operator -p ferrotel-e2e \
  --bin ferrotel-operator --bin ferrotel-scale-bench
# Under the machine-wide benchmark lock, like every benchmark.
exec flock /tmp/ferrotel-bench.lock "$target/release/ferrotel-scale-bench" "$@"
