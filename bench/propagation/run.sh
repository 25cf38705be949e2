#!/usr/bin/env bash
# Propagation benchmark (bench/propagation/bench.py; the shared harness is
# bench/ferrobench). Takes the machine-wide benchmark lock, so that two
# benchmarks never measure each other.
#
#   bench/propagation/run.sh [--rounds N] [--duration S] [--baseline-probe BIN] [--only NAME] ...
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec flock /tmp/ferrotel-bench.lock python3 "$here/bench.py" "$@"
