#!/usr/bin/env bash
# Runs one probe fuzz target with cargo-fuzz (nightly, libFuzzer).
#
#   probe/fuzz/run.sh TARGET [libFuzzer flags...]   e.g. -max_total_time=5, -runs=10000000
#   probe/fuzz/run.sh TARGET path/to/input          replay one input
#
# The committed seeds (seeds/TARGET) and past crashes (regressions/TARGET)
# are read; what the fuzzer finds is written to the working corpus
# (corpus/TARGET, not committed) and a crash to artifacts/TARGET/. Commit a crash input under regressions/TARGET/ once it is
# fixed: `cargo test --test fuzz_corpus` replays it on stable.
# Builds in release mode with debug assertions and overflow checks.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
target=${1:?usage: run.sh TARGET [libFuzzer flags or an input file]}
shift
[[ -f $here/fuzz_targets/$target.rs ]] || { echo "run.sh: no fuzz target '$target' in $here/fuzz_targets" >&2; exit 2; }
command -v cargo-fuzz >/dev/null || { echo "run.sh: cargo-fuzz is not installed: run 'make tools' (e2e/tools/install.sh installs it)" >&2; exit 2; }
rustup run nightly rustc --version >/dev/null 2>&1 || { echo "run.sh: the nightly toolchain is missing: rustup toolchain install nightly" >&2; exit 2; }
mkdir -p "$here/corpus/$target" "$here/artifacts/$target"
if [[ $# -ge 1 && -f $1 ]]; then
  exec cargo +nightly fuzz run --fuzz-dir "$here" "$target" "$@"
fi
inputs=("$here/corpus/$target" "$here/seeds/$target")
[[ -d $here/regressions/$target ]] && inputs+=("$here/regressions/$target")
exec cargo +nightly fuzz run --fuzz-dir "$here" "$target" "${inputs[@]}" -- \
  -artifact_prefix="$here/artifacts/$target/" -print_final_stats=1 "$@"
