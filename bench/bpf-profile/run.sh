#!/usr/bin/env bash
# Where the Go probe's kernel-side time per request goes: the Go benchmark's
# minimal handler under the probe (bench/go/run.sh, one round) while perf
# samples every CPU on the software clock with call chains. Samples taken in
# the app's context are split into the uprobe traps' own work and the eBPF
# programs, and each program's time into the kernel helpers it called
# (bpf_probe_read_user, map updates, the ring buffer, ...). Needs root and
# perf; takes the benchmark lock through bench/go/run.sh.
#
#   bench/bpf-profile/run.sh [--probe BIN [--probe-label TEXT]] [--duration S] [--frequency HZ]
#     → bench/results/bpf-profile-go.md
# The probe defaults to the release build of this tree (as in bench/go); the
# label names a given binary's build in the results instead of its path.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
probe="" label="" duration=10 frequency=4000
while [ $# -gt 0 ]; do
    case "$1" in
        --probe) probe=$2; shift 2 ;;
        --probe-label) label=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --frequency) frequency=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
command -v perf >/dev/null || { echo "perf is missing: run make tools (it installs linux-perf)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "bench/bpf-profile needs root (perf samples the kernel and the probe loads eBPF)" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
probe_args=()
[ -n "$probe" ] && probe_args=(--probe "$probe")
if [ -z "$label" ]; then
    if [ -n "$probe" ]; then label="a given binary (--probe)"
    else label="the release build of this tree at $(git -C "$root" rev-parse --short HEAD)"; fi
fi
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
perf record -q -a -g -F "$frequency" -o "$work/perf.data" -- \
    "$root/bench/go/run.sh" --rounds 1 --duration "$duration" --warmup 2 --only go-minimal \
    "${probe_args[@]}" --out "$work/go.md" > "$work/go.log" 2>&1 ||
    { cat "$work/go.log" >&2; echo "bench/bpf-profile: the Go benchmark under perf failed (its log is above)" >&2; exit 1; }
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
# The probe variant runs the bare app binary (bench/go/bench.py names it
# goapp-bare); the bare variant adds samples with no trap and no program,
# so shares below are taken within the traps, never of the app's total.
perf script -i "$work/perf.data" --comm goapp-bare -F comm,ip,sym 2>/dev/null > "$work/samples.txt"
python3 "$here/breakdown.py" \
    --samples "$work/samples.txt" --bench "$work/go.md" \
    --command "bench/bpf-profile/run.sh${probe:+ --probe <BIN>} --duration $duration --frequency $frequency" \
    --probe-label "$label" \
    --load-start "$load_start" --load-end "$load_end" \
    > "$root/bench/results/bpf-profile-go.md"
echo "Wrote bench/results/bpf-profile-go.md"
