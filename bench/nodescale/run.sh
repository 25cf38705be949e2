#!/usr/bin/env bash
# The probe at node scale (bench/nodescale/bench.py; the shared harness is
# bench/ferrobench): 110 server processes, 50 of them traced by one Go and
# one Python probe. Takes the machine-wide benchmark lock, so that two
# benchmarks never measure each other.
#
#   bench/nodescale/run.sh [--rate 500] [--idle 30] [--rounds 3] [--duration 20] ...
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec flock /tmp/ferrotel-bench.lock python3 "$here/bench.py" "$@"
