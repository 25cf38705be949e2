#!/usr/bin/env bash
# Opt-in latency: `kubectl annotate namespace ... ferrotel.io/instrument=true`
# -> first span of that namespace at the collector, median over RUNS cycles.
# Runs the same full stack as `make demo` (local control plane, operator,
# collector and probe pods as rendered on a real node, Go + Python apps as Deployments).
# Needs root. Usage: bench/optin-latency/run.sh [RUNS]
set -euo pipefail
runs=${1:-10}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
[ "$(id -u)" = 0 ] || { echo "needs root (eBPF, cgroups, network namespaces): sudo $0" >&2; exit 1; }
cargo build -q -p ferrotel-operator -p ferrotel-probe -p ferrotel-e2e --bins
"${CARGO_TARGET_DIR:-target}/debug/ferrotel-demo" --dir .demo-bench --rate 20 \
  optin-bench --runs "$runs" --out bench/results/optin-latency.md
