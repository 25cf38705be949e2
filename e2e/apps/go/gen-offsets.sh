#!/usr/bin/env bash
# Regenerates probe/parse/src/go/offsets_table.json from the DWARF of the Go
# test targets built with every Go toolchain found on this machine (the
# machine's Go and Debian's golang-1.2x packages). Run from the repo root.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
binaries=()
for go in /usr/local/go/bin/go /usr/lib/go-1.*/bin/go; do
  [[ -x $go ]] || continue
  version=$("$go" env GOVERSION)
  "$root/e2e/apps/go/build.sh" "$go" "$work/$version" >&2
  for app in httpserver httpclient chiapp grpcserver grpcclient; do
    binaries+=("$work/$version/$app")
  done
done
cd "$root"
cargo run --quiet -p ferrotel-probe --bin go-offsets-gen -- probe/parse/src/go/offsets_table.json "${binaries[@]}"
