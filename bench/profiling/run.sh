#!/usr/bin/env bash
# Profiling overhead benchmark: what CPU profiling costs the profiled app.
#
#   bench/profiling/run.sh [--rounds N] [--duration SECONDS] [--out FILE]
#
# Two CPU-bound apps (e2e/apps/go/cpuburn, Go; e2e/apps/python/cpu_burn.py,
# CPython 3.11: its samples take the kernel-side Python frame walk) count
# the work rounds they finish in DURATION seconds, on CPU 0, under:
#   bare   no probe
#   off    ferrotel-probe running, profiling off (the baseline: tracing only)
#   19hz   profiling at the default 19 Hz
#   99hz   profiling at 99 Hz
# The probe runs on CPU 0 too (its CPU counts against the app), the
# collector (profiles pipeline, nop exporter) on CPU 1. Variants are
# interleaved in a rotating order each round; ratios are paired per round.
# A last variant measures an *untraced* app while a 99 Hz profiler samples
# another process: the cost the perf events put on everything else.
# Then the traced case: the Go app serving GET /burn (one work round per
# request, each request a server span), wrk on CPU 1, under the probe with
# profiling off, 19 Hz and 99 Hz: requests per second, and the spans that
# reached the collector in each round (the probe's exported-items counter).
# The probe runs as `--language go`: the profiler follows the probe's
# targets whatever their language, and the Go front-end's uprobes never fire
# in the CPU loops, so the difference between variants is the profiler's.
# Needs root, `make tools` (otelcol), wrk, and the machine's Go and pyenv 3.11.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${FERROTEL_CACHE:-$HOME/.cache/ferrotel}
bin=${FERROTEL_BIN:-$cache/bin}
go=${GO:-/usr/local/go/bin/go}
python=${PYTHON:-$(ls -d "$HOME"/.pyenv/versions/3.11.* 2>/dev/null | sort -V | tail -1)/bin/python3}
rounds=5
duration=10
out=$repo/bench/results/profiling.md
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

[[ $(id -u) -eq 0 ]] || { echo "bench/profiling/run.sh needs root: the probe loads eBPF programs" >&2; exit 1; }
for tool in "$bin/otelcol" "$go" "$python"; do
  [[ -x $tool ]] || { echo "missing $tool: run 'make tools' (otelcol), install Go or pyenv 3.11" >&2; exit 1; }
done
target_dir=${CARGO_TARGET_DIR:-$repo/target}
probe=${FERROTEL_PROBE:-$target_dir/release/ferrotel-probe}
if [[ ! -x $probe ]]; then
  (cd "$repo" && cargo build -q --release -p ferrotel-probe --bin ferrotel-probe)
fi

work=$(mktemp -d /tmp/ferrotel-bench-profiling.XXXXXX)
pids_to_kill=()
stats_before=$(sysctl -n kernel.bpf_stats_enabled)
cleanup() {
  for pid in "${pids_to_kill[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  sysctl -q -w kernel.bpf_stats_enabled="$stats_before" || true
  rm -rf "$work"
}
trap cleanup EXIT

(cd "$repo/e2e/apps/go" && GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 "$go" build -o "$work/cpuburn" ./cpuburn)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { local what=$1; shift; for _ in $(seq 400); do "$@" && return 0; sleep 0.05; done; echo "timed out waiting for $what" >&2; return 1; }

grpc=$(free_port)
cat > "$work/otelcol.yaml" <<YAML
receivers:
  otlp: {protocols: {grpc: {endpoint: 127.0.0.1:$grpc}}}
exporters:
  nop: {}
service:
  telemetry: {metrics: {level: none}}
  pipelines:
    traces: {receivers: [otlp], exporters: [nop]}
    metrics: {receivers: [otlp], exporters: [nop]}
    profiles: {receivers: [otlp], exporters: [nop]}
YAML
taskset -c 1 "$bin/otelcol" --config="$work/otelcol.yaml" --feature-gates=+service.profilesSupport > "$work/otelcol.log" 2>&1 &
pids_to_kill+=($!)
wait_for "the collector" grep -q "Everything is ready" "$work/otelcol.log"

# start_app APP -> sets app_pid, app_in (fd to write "go"), app_out (fd to read)
start_app() {
  local app=$1
  case $app in
    go) coproc APP { exec taskset -c 0 "$work/cpuburn" -for "${duration}s"; } ;;
    python) coproc APP { exec taskset -c 0 "$python" "$repo/e2e/apps/python/cpu_burn.py" --for "$duration"; } ;;
  esac
  app_pid=$APP_PID
  pids_to_kill+=("$app_pid")
  # bash drops APP[] when the coprocess exits: keep our own copies.
  exec {app_out}<&"${APP[0]}" {app_in}>&"${APP[1]}"
  local line; read -r line <&"$app_out"
  [[ $line == READY ]] || { echo "$app printed $line" >&2; exit 1; }
}

# start_probe PID HZ(0=off) -> sets probe_pid, metrics
start_probe() {
  local target=$1 hz=$2 enabled=true
  [[ $hz == 0 ]] && { enabled=false; hz=19; }
  metrics=$(free_port)
  cat > "$work/probe.yaml" <<YAML
exporter: {endpoint: "http://127.0.0.1:$grpc"}
profiling: {enabled: $enabled, frequencyHz: $hz, exportIntervalSeconds: 5}
YAML
  taskset -c 0 "$probe" --language go --config "$work/probe.yaml" --pid "$target" \
    --metrics-addr "127.0.0.1:$metrics" --log-level warn > "$work/probe.log" 2>&1 &
  probe_pid=$!
  pids_to_kill+=("$probe_pid")
  wait_for "the probe" curl -sf "http://127.0.0.1:$metrics/readyz" -o /dev/null
  if [[ $enabled == true ]]; then
    wait_for "profiling to start" sh -c "curl -sf http://127.0.0.1:$metrics/metrics | grep -q '^ferrotel_probe_profile_processes 1'"
  fi
}

stop_probe() { kill -TERM "$probe_pid" 2>/dev/null || true; wait "$probe_pid" 2>/dev/null || true; }

# measure APP VARIANT -> echoes rounds
measure() {
  local app=$1 variant=$2 rounds_line idle=""
  start_app "$app"
  case $variant in
    bare) ;;
    off) start_probe "$app_pid" 0 ;;
    19hz) start_probe "$app_pid" 19 ;;
    99hz) start_probe "$app_pid" 99 ;;
    untraced)
      sleep 3600 & idle=$!; pids_to_kill+=("$idle")
      start_probe "$idle" 99 ;;
  esac
  echo go >&"$app_in"
  read -r rounds_line <&"$app_out"
  exec {app_in}>&- {app_out}<&-
  wait "$app_pid" 2>/dev/null || true
  if [[ $variant == 99hz ]]; then
    # measure runs in a subshell: leave what the report needs in files.
    awk '/^VmRSS/ {print $2}' "/proc/$probe_pid/status" > "$work/rss-$app"
    bpftool prog show name ft_profile_tick 2>/dev/null | head -1 > "$work/bpf-$app" || true
  fi
  [[ $variant == bare ]] || stop_probe
  [[ -n $idle ]] && kill "$idle" 2>/dev/null || true
  echo "${rounds_line#ROUNDS }"
}

# measure_http VARIANT -> echoes "requests spans"
measure_http() {
  local variant=$1 port line requests spans=0 srv_pid
  port=$(free_port)
  coproc SRV { exec taskset -c 0 "$work/cpuburn" -addr "127.0.0.1:$port"; }
  srv_pid=$SRV_PID
  pids_to_kill+=("$srv_pid")
  exec {srv_out}<&"${SRV[0]}"
  read -r line <&"$srv_out"
  [[ $line == LISTENING* ]] || { echo "cpuburn printed $line" >&2; exit 1; }
  case $variant in
    off) start_probe "$srv_pid" 0 ;;
    19hz) start_probe "$srv_pid" 19 ;;
    99hz) start_probe "$srv_pid" 99 ;;
  esac
  requests=$(taskset -c 1 wrk -t1 -c4 -d"${duration}s" "http://127.0.0.1:$port/burn" | awk '/requests in/ {print $1}')
  # Every request is a span: wait (bounded) until the probe exported them.
  for _ in $(seq 100); do
    spans=$(curl -sf "http://127.0.0.1:$metrics/metrics" | grep -F 'ferrotel_probe_exported_items_total{signal="traces"}' | awk '{print $2}')
    [[ ${spans:-0} -ge $requests ]] && break
    sleep 0.1
  done
  stop_probe
  kill "$srv_pid" 2>/dev/null || true
  wait "$srv_pid" 2>/dev/null || true
  exec {srv_out}<&-
  echo "$requests ${spans:-0}"
}

sysctl -q -w kernel.bpf_stats_enabled=1
variants=(bare off 19hz 99hz untraced)
declare -A result
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u +%FT%TZ)
for app in go python; do
  for round in $(seq "$rounds"); do
    # Rotate the order each round so no variant always runs first or last.
    for i in "${!variants[@]}"; do
      v=${variants[$(( (i + round) % ${#variants[@]} ))]}
      result[$app,$round,$v]=$(measure "$app" "$v")
      echo "$app round $round $v: ${result[$app,$round,$v]} rounds" >&2
    done
  done
  result[$app,rss]=$(cat "$work/rss-$app" 2>/dev/null || echo '?')
  result[$app,bpf]=$(cat "$work/bpf-$app" 2>/dev/null || echo '?')
done
http_variants=(off 19hz 99hz)
for round in $(seq "$rounds"); do
  for i in "${!http_variants[@]}"; do
    v=${http_variants[$(( (i + round) % ${#http_variants[@]} ))]}
    result[http,$round,$v]=$(measure_http "$v")
    echo "http round $round $v: ${result[http,$round,$v]} (requests spans)" >&2
  done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

ratio() { python3 -c "print(f'{$1/$2:.4f}')"; }
{
  echo "# Profiling overhead"
  echo
  if python3 -c "import sys; sys.exit(0 if max(float('$load_start'.split()[0]), float('$load_end'.split()[0])) > 1.5 else 1)"; then
    echo "**Provisional**: measured while other work loaded the machine (load average below); re-run on a quiet machine for figures to quote."
    echo
  fi
  echo "Run $started by \`bench/profiling/run.sh --rounds $rounds --duration $duration\` on $(nproc) CPUs ($(uname -r)); load average $load_start at the start, $load_end at the end."
  echo "App and probe on CPU 0, collector on CPU 1. A number is work rounds the app finished in $duration s; a ratio divides it by the same round's baseline."
  echo
  for app in go python; do
    case $app in go) echo "## Go (e2e/apps/go/cpuburn)";; python) echo "## Python 3.11 (e2e/apps/python/cpu_burn.py)";; esac
    echo
    echo "| round | bare | probe, profiling off | 19 Hz | 99 Hz | untraced app, 99 Hz elsewhere | 19 Hz / off | 99 Hz / off | untraced / bare |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for round in $(seq "$rounds"); do
      b=${result[$app,$round,bare]} o=${result[$app,$round,off]} l=${result[$app,$round,19hz]} h=${result[$app,$round,99hz]} u=${result[$app,$round,untraced]}
      echo "| $round | $b | $o | $l | $h | $u | $(ratio "$l" "$o") | $(ratio "$h" "$o") | $(ratio "$u" "$b") |"
    done
    python3 - "$app" <<PY
import statistics, sys
rows = """$(for round in $(seq "$rounds"); do echo "${result[$app,$round,bare]} ${result[$app,$round,off]} ${result[$app,$round,19hz]} ${result[$app,$round,99hz]} ${result[$app,$round,untraced]}"; done)""".split("\n")
r = [list(map(float, x.split())) for x in rows if x.strip()]
med = lambda xs: statistics.median(xs)
print()
print(f"Median paired ratio: 19 Hz / off **{med([x[2]/x[1] for x in r]):.4f}**, 99 Hz / off **{med([x[3]/x[1] for x in r]):.4f}**, untraced / bare **{med([x[4]/x[0] for x in r]):.4f}** (off / bare {med([x[1]/x[0] for x in r]):.4f}).")
PY
    echo
    bpf=${result[$app,bpf]}
    per_tick=$(python3 -c "import re,sys; m=re.search(r'run_time_ns (\d+) run_cnt (\d+)', sys.argv[1]); print(f'{int(m[1])/int(m[2]):.0f} ns per tick ({m[2]} ticks, every process on both CPUs)' if m else '?')" "$bpf")
    echo "Probe RSS at the end of the last 99 Hz run: ${result[$app,rss]} KiB. Kernel program \`ft_profile_tick\` in that run: $per_tick."
    echo
  done
  echo "## Traced Go server (e2e/apps/go/cpuburn, GET /burn: one work round per request)"
  echo
  echo "\`wrk -t1 -c4 -d${duration}s\` on CPU 1; app and probe on CPU 0. Requests per second, and spans that reached the collector / requests."
  echo
  echo "| round | off req/s | 19 Hz req/s | 99 Hz req/s | 19 Hz / off | 99 Hz / off | spans/requests off, 19 Hz, 99 Hz |"
  echo "|---|---|---|---|---|---|---|"
  for round in $(seq "$rounds"); do
    read -r ro so <<< "${result[http,$round,off]}"
    read -r rl sl <<< "${result[http,$round,19hz]}"
    read -r rh sh <<< "${result[http,$round,99hz]}"
    rate() { python3 -c "print(f'{$1/$duration:.0f}')"; }
    echo "| $round | $(rate "$ro") | $(rate "$rl") | $(rate "$rh") | $(ratio "$rl" "$ro") | $(ratio "$rh" "$ro") | $so/$ro, $sl/$rl, $sh/$rh |"
  done
  python3 - <<PY
import statistics
rows = """$(for round in $(seq "$rounds"); do echo "${result[http,$round,off]} ${result[http,$round,19hz]} ${result[http,$round,99hz]}"; done)""".split("\n")
r = [list(map(float, x.split())) for x in rows if x.strip()]
med = statistics.median
print()
print(f"Median paired ratio: 19 Hz / off **{med([x[2]/x[0] for x in r]):.4f}**, 99 Hz / off **{med([x[4]/x[0] for x in r]):.4f}**.")
PY
} > "$out"
echo "wrote $out" >&2
