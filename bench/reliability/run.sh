#!/usr/bin/env bash
# Reliability soak (bench/reliability/soak.py; the shared harness is
# bench/ferrobench): Go and Python targets under their probes at the highest
# rate the machine holds, every request sequence-stamped, loss accounted for
# at the collector. Takes the machine-wide benchmark lock.
#
#   bench/reliability/run.sh [--minutes 10] [--fault collector-down] ...
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec flock /tmp/ferrotel-bench.lock python3 "$here/soak.py" "$@"
