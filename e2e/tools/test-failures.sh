#!/usr/bin/env bash
# Prints, from a `cargo test` log, each failed test's panic message and the
# list of failed targets, so that they are the last thing `make test` shows
# (a CI log is often read from its tail, and cargo prints a failure's
# details where its binary ran, pages before the end).
#
# usage: test-failures.sh LOG
set -euo pipefail
log=${1:?usage: test-failures.sh LOG}
[ -r "$log" ] || { echo "test-failures.sh: cannot read the test log $log" >&2; exit 1; }
echo
echo "================ failed tests (from $log) ================"
awk '
  # Per test binary: its "Running" line, then, on failure, one
  # "---- name stdout ----" section per failed test, the list of failures
  # and "test result: FAILED". Sections are kept and printed under their
  # binary; of each, the panic message and the lines after it.
  /^     Running / { binary = $0; buffer = ""; in_section = 0; next }
  /^---- .* stdout ----$/ { name = $2; in_section = 1; show = 0; next }
  /^failures:$/ { in_section = 0 }
  in_section && /panicked at/ { buffer = buffer "---- " name "\n"; show = 12 }
  in_section && show > 0 { buffer = buffer $0 "\n"; show-- }
  /^test result: FAILED/ { print binary; printf "%s\n", buffer }
' "$log"
grep -E '^error: [0-9]+ targets? failed:|^    `-p ' "$log" || true
