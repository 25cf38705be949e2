#!/usr/bin/env bash
# Profiling overhead benchmark (bench/profiling/bench.py; the shared harness
# is bench/ferrobench). Takes the machine-wide benchmark lock, so that two
# benchmarks never measure each other.
#
#   bench/profiling/run.sh [--rounds N] [--duration S] [--only cpu-go|cpu-python|go-burn] ...
#
# Needs root, `make tools` (otelcol), wrk, bpftool, the machine's Go and CPython 3.11 (pyenv).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec flock /tmp/ferrotel-bench.lock python3 "$here/bench.py" "$@"
