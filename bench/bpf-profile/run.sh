#!/usr/bin/env bash
# Where the probe's time per request goes. Go: the Go benchmark's
# minimal handler under the probe (bench/go/run.sh, 3 paired rounds by default) while perf
# samples every CPU on the software clock with call chains. Samples taken in
# the app's context are split into the uprobe traps' own work and the eBPF
# programs, and each program's time into the kernel helpers it called
# (bpf_probe_read_user, map updates, the ring buffer, ...). The probe's own
# process is sampled too, and its time split by the stage of the event path
# it was in (the ring, decoding, spans and metrics, the export, the runtime).
# Needs root and perf; takes the benchmark lock through bench/go/run.sh.
#
#   bench/bpf-profile/run.sh [--language go|python] [--probe BIN [--probe-label TEXT]] [--rounds N] [--duration S]
#                            [--frequency HZ] [--probe-frequency HZ]
#     → bench/results/bpf-profile-go.md (or -python.md)
# With --language python: the Python benchmark's Flask minimal handler, and
# only the probe's own time (its programs run on syscall tracepoints, with no
# traps to take apart; their time per run is in the BPF statistics).
# The probe defaults to the release build of this tree (as in bench/go); the
# label names a given binary's build in the results instead of its path.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
language=go rounds=3 probe="" label="" duration=10 frequency=4000 probe_frequency=2000
while [ $# -gt 0 ]; do
    case "$1" in
        --language) language=$2; shift 2 ;;
        --probe) probe=$2; shift 2 ;;
        --probe-label) label=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --frequency) frequency=$2; shift 2 ;;
        --probe-frequency) probe_frequency=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
case "$language" in go|python) ;; *) echo "--language is go or python, not $language" >&2; exit 2 ;; esac
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
# The probe's own time: a second perf follows the probe process (the
# round's probe variant runs one) from the moment it traces the app (its
# /metrics says so; before that it loads programs and reads the app's
# executable, work done once, not per request) to its exit, with DWARF call
# chains, since the release build keeps no frame pointers. The bench copies
# the binary it measures as ferrotel-probe, so that is its command name.
if pgrep -x ferrotel-probe >/dev/null; then
    echo "bench/bpf-profile: a ferrotel-probe is already running; its samples would be taken for the benchmark's" >&2
    exit 1
fi
(
    for _ in $(seq 1200); do
        pid=$(pgrep -x ferrotel-probe | head -1 || true)
        if [ -n "$pid" ] && python3 "$here/attached.py" "$pid"; then
            exec perf record -q -p "$pid" --call-graph dwarf,16384 -F "$probe_frequency" -o "$work/probe.data"
        fi
        sleep 0.1
    done
    echo "no ferrotel-probe process traced the app within 120 s" >&2
) > "$work/probe-perf.log" 2>&1 &
probe_perf=$!
if [ "$language" = go ]; then
    perf record -q -a -g -F "$frequency" -o "$work/perf.data" -- \
        "$root/bench/go/run.sh" --rounds "$rounds" --duration "$duration" --warmup 2 --only go-minimal \
        "${probe_args[@]}" --workdir "$work/bench" --out "$work/bench.md" > "$work/bench.log" 2>&1 ||
        { cat "$work/bench.log" >&2; echo "bench/bpf-profile: the Go benchmark under perf failed (its log is above)" >&2; exit 1; }
else
    "$root/bench/python/run.sh" --rounds "$rounds" --duration "$duration" --warmup 2 --only flask-minimal \
        "${probe_args[@]}" --workdir "$work/bench" --out "$work/bench.md" > "$work/bench.log" 2>&1 ||
        { cat "$work/bench.log" >&2; echo "bench/bpf-profile: the Python benchmark failed (its log is above)" >&2; exit 1; }
fi
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
wait "$probe_perf" || true
[ -s "$work/probe.data" ] ||
    { cat "$work/probe-perf.log" >&2; echo "bench/bpf-profile: perf did not follow the probe (its log is above)" >&2; exit 1; }
# The benchmark's working directory is kept (--workdir) until here, so that
# perf script finds the binaries it built and names their functions.
# The probe variant runs the bare app binary (bench/go/bench.py names it
# goapp-bare); the bare variant adds samples with no trap and no program,
# so shares below are taken within the traps, never of the app's total.
app_samples=()
if [ "$language" = go ]; then
    perf script -i "$work/perf.data" --comm goapp-bare -F comm,pid,ip,sym 2>/dev/null > "$work/samples.txt"
    app_samples=(--samples "$work/samples.txt")
fi
perf script -i "$work/probe.data" -F comm,tid,ip,sym,dso 2>/dev/null > "$work/probe-samples.txt"
out="$root/bench/results/bpf-profile-$language.md"
python3 "$here/breakdown.py" --language "$language" \
    "${app_samples[@]}" --probe-samples "$work/probe-samples.txt" --bench "$work/bench.md" \
    --command "bench/bpf-profile/run.sh --language $language${probe:+ --probe <BIN>} --rounds $rounds --duration $duration --frequency $frequency --probe-frequency $probe_frequency" \
    --probe-label "$label" \
    --load-start "$load_start" --load-end "$load_end" \
    > "$out.tmp" || { rm -f "$out.tmp"; exit 1; }
mv "$out.tmp" "$out"
echo "Wrote ${out#"$root"/}"
