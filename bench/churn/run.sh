#!/usr/bin/env bash
# Go process churn under the probe process (bench/churn/bench.py; the shared
# harness is bench/ferrobench): 1,000 short-lived servers, the probe's memory
# and kernel holdings before and after. Takes the machine-wide benchmark
# lock, so that two benchmarks never measure each other.
#
#   bench/churn/run.sh [--processes 1000] [--lifetime 2.4] [--concurrent 4] ...
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec flock /tmp/ferrotel-bench.lock python3 "$here/bench.py" "$@"
