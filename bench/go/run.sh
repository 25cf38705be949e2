#!/usr/bin/env bash
# Go overhead benchmark: one run, side by side, on this machine.
#
#   bench/go/run.sh [--duration SECONDS] [--out FILE]
#
# One net/http JSON service (bench/go/app, GET /users/{id}) measured as
#   bare | under ferrotel-probe --language go | built with otelhttp + the OTel Go SDK
# (OTLP/gRPC to the collector): throughput, p50/p99 latency (wrk), CPU per
# request of app + probe, probe RSS, and the kernel-side cost of the Go eBPF
# programs per request (bpftool, kernel.bpf_stats_enabled=1).
# The OpenTelemetry Go auto-instrumentation agent (go.opentelemetry.io/auto)
# is not measured: it does not build from its module (bench/go/AUTO_AGENT.md,
# appended to the results).
#
# The server runs on CPU 0; wrk, the probe and the collector on CPU 1.
# Needs root (eBPF), `make tools` (wrk, otelcol) and the machine's Go.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${FERROTEL_CACHE:-$HOME/.cache/ferrotel}
bin=${FERROTEL_BIN:-$cache/bin}
go=${GO:-/usr/local/go/bin/go}
duration=10
out=$repo/bench/results/go.md
while [[ $# -gt 0 ]]; do
  case $1 in
    --duration) duration=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

[[ $(id -u) -eq 0 ]] || { echo "bench/go/run.sh needs root: the probe loads eBPF programs" >&2; exit 1; }
for tool in "$bin/otelcol" "$(command -v wrk)" "$go"; do
  [[ -x $tool ]] || { echo "missing $tool: run 'make tools'" >&2; exit 1; }
done

target_dir=${CARGO_TARGET_DIR:-$repo/target}
probe=${FERROTEL_PROBE:-$target_dir/release/ferrotel-probe}
if [[ ! -x $probe ]]; then
  (cd "$repo" && cargo build -q --release -p ferrotel-probe --bin ferrotel-probe)
fi

work=$(mktemp -d /tmp/ferrotel-bench-go.XXXXXX)
pids_to_kill=()
cleanup() {
  for pid in "${pids_to_kill[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

(cd "$here/app" && GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 "$go" build -o "$work/app-bare" . \
  && GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 "$go" build -tags otel -o "$work/app-otel" .)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "nothing listens on $1" >&2; return 1; }
ticks() { local stat; stat=$(cut -d')' -f2- "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }; awk '{print $12 + $13}' <<<"$stat"; }
ticks_per_s=$(getconf CLK_TCK)

# ------------------------------------------------------------ collector
grpc=$(free_port); http=$(free_port)
cat > "$work/otelcol.yaml" <<YAML
receivers:
  otlp:
    protocols:
      grpc: {endpoint: 127.0.0.1:$grpc}
      http: {endpoint: 127.0.0.1:$http}
exporters:
  nop: {}
service:
  telemetry: {metrics: {level: none}}
  pipelines:
    traces: {receivers: [otlp], exporters: [nop]}
    metrics: {receivers: [otlp], exporters: [nop]}
YAML
setsid taskset -c 1 "$bin/otelcol" --config "$work/otelcol.yaml" > "$work/otelcol.log" 2>&1 &
collector_pid=$!
pids_to_kill+=("$collector_pid")
wait_port "$grpc"

app_pid=""
app_port=""
start_app() { # variant
  local binary=$work/app-bare
  [[ $1 == otel ]] && binary=$work/app-otel
  app_port=$(free_port)
  OTEL_SERVICE_NAME=bench-go OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$grpc \
    setsid taskset -c 0 "$binary" -addr "127.0.0.1:$app_port" > "$work/app-$1.log" 2>&1 &
  app_pid=$!
  pids_to_kill+=("$app_pid")
  wait_port "$app_port"
}
stop_app() { kill -TERM "$app_pid" 2>/dev/null || true; wait "$app_pid" 2>/dev/null || true; }

probe_pid=""
start_probe() { # pid
  OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$grpc setsid taskset -c 1 "$probe" --language go --pid "$1" \
    --metrics-addr "127.0.0.1:$(free_port)" > "$work/probe.log" 2>&1 &
  probe_pid=$!
  pids_to_kill+=("$probe_pid")
  for _ in $(seq 400); do grep -qs "Attached Go probes" "$work/probe.log" && return 0; sleep 0.05; done
  echo "the probe did not attach; log:" >&2; tail -20 "$work/probe.log" >&2; exit 1
}
stop_probe() { kill -TERM "$probe_pid" 2>/dev/null || true; wait "$probe_pid" 2>/dev/null || true; probe_pid=""; }

# wrk -> "rps p50_ms p99_ms requests"
load() { # url
  taskset -c 1 wrk -t1 -c16 -d"${duration}s" --latency "$1" > "$work/wrk.txt" 2>&1
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec/ { rps = $2 }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    /requests in/ { n = $1 }
    END { printf "%.0f %.2f %.2f %d\n", rps, p50, p99, n }' "$work/wrk.txt"
}

# Kernel time of the Go programs (run_time_ns summed over ft_go_* programs).
kernel_ns() {
  bpftool -j prog show 2>/dev/null | python3 -c '
import json, sys
rows = [p for p in json.load(sys.stdin) if p.get("name", "").startswith("ft_go_")]
print(sum(p.get("run_time_ns", 0) for p in rows), sum(p.get("run_cnt", 0) for p in rows))
for p in rows:
    if p.get("run_cnt", 0):
        print("| %s | %d | %.0f |" % (p["name"], p["run_cnt"], p["run_time_ns"] / p["run_cnt"]), file=sys.stderr)
'
}

rows=()
kernel_row=""
measure() { # variant
  local variant=$1
  start_app "$variant"
  [[ $variant == probe ]] && start_probe "$app_pid"
  local url="http://127.0.0.1:$app_port/users/1"
  taskset -c 1 wrk -t1 -c16 -d2s "$url" > /dev/null 2>&1
  local app_before probe_before=0 app_after probe_after=0 rss="-" k_before=0 k_after=0 runs_before=0 runs_after=0
  local col_before col_after
  col_before=$(ticks "$collector_pid")
  app_before=$(ticks "$app_pid")
  if [[ -n $probe_pid ]]; then
    probe_before=$(ticks "$probe_pid")
    read -r k_before runs_before < <(kernel_ns 2>/dev/null)
  fi
  read -r rps p50 p99 n < <(load "$url")
  app_after=$(ticks "$app_pid")
  col_after=$(ticks "$collector_pid")
  if [[ -n $probe_pid ]]; then
    probe_after=$(ticks "$probe_pid")
    read -r k_after runs_after < <(kernel_ns 2> "$work/kernel-programs.txt")
    rss="$(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$probe_pid/status") MiB"
    kernel_row=$(awk -v k=$((k_after - k_before)) -v r=$((runs_after - runs_before)) -v n="$n" \
      'BEGIN { printf "%.0f ns of BPF per request (%d program runs, %.1f per request, %.0f ns per run)", k / n, r, r / n, (r > 0 ? k / r : 0) }')
    stop_probe
  fi
  stop_app
  local cpu_us app_us probe_us col_us
  per_request() { awk -v d="$1" -v t="$ticks_per_s" -v n="$n" 'BEGIN { printf "%.1f", d / t * 1e6 / (n > 0 ? n : 1) }'; }
  cpu_us=$(per_request $((app_after - app_before + probe_after - probe_before)))
  app_us=$(per_request $((app_after - app_before)))
  probe_us=$(per_request $((probe_after - probe_before)))
  col_us=$(per_request $((col_after - col_before)))
  [[ $variant == bare ]] && probe_us="-"
  rows+=("$variant|$rps|$p50|$p99|$cpu_us|$app_us|$probe_us|$col_us|$rss")
  echo "  $variant: $rps req/s, p50 $p50 ms, p99 $p99 ms, ${cpu_us} µs CPU/request (app $app_us, probe $probe_us, collector $col_us), probe RSS $rss" >&2
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "Go benchmark: ${duration}s per measurement (load average before: $load_before)" >&2
stats_before=$(sysctl -n kernel.bpf_stats_enabled)
sysctl -qw kernel.bpf_stats_enabled=1
trap 'sysctl -qw kernel.bpf_stats_enabled="$stats_before"; cleanup' EXIT
for variant in bare probe otel; do
  measure "$variant"
done

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
IFS='|' read -r _ base_rps _ <<<"${rows[0]}"
{
  echo "# Go overhead: bare vs ferrotel-probe vs otelhttp (OpenTelemetry Go SDK)"
  echo
  echo "Generated by \`bench/go/run.sh --duration $duration\` (also run by \`make bench\`) on $(date -u '+%Y-%m-%d %H:%M UTC');"
  echo "load average (1/5/15 min) before the run: $load_before, after: $load_after (a 2-core machine shared with other work: compare rows of one run, not runs)."
  echo
  echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r), $("$go" version | cut -d' ' -f3)."
  echo "Service: bench/go/app (net/http ServeMux, \`GET /users/{id}\` → small JSON), pinned to CPU 0."
  echo "Load: \`wrk -t1 -c16 -d${duration}s --latency /users/1\` on CPU 1, with the probe and the collector (nop exporter)."
  echo "Probe: \`ferrotel-probe --language go --pid <pid>\` ($probe), OTLP/gRPC to the collector, every request a span."
  echo "otelhttp: the same service built with \`-tags otel\`: \`otelhttp.NewHandler\` + SDK batch span processor, OTLP/gRPC to the collector."
  echo "CPU per request = (app CPU + probe CPU) / requests, user + system, from /proc/<pid>/stat. The app's system time includes the"
  echo "uprobe traps and the BPF programs run in its context; the collector (receiving the spans, on the load generator's CPU) is listed apart."
  echo
  echo "| Variant | req/s | × bare | p50 ms | p99 ms | CPU µs/request (app + probe) | app | probe | collector | probe RSS |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for row in "${rows[@]}"; do
    IFS='|' read -r variant rps p50 p99 cpu app_us probe_us col_us rss <<<"$row"
    echo "| $variant | $rps | $(ratio "$rps" "$base_rps") | $p50 | $p99 | $cpu | $app_us | $probe_us | $col_us | $rss |"
  done
  echo
  echo "Kernel cost under the probe: $kernel_row."
  echo
  echo "| program (name truncated by the kernel) | runs | ns/run |"
  echo "|---|---:|---:|"
  cat "$work/kernel-programs.txt"
  echo
  if [[ -f $here/AUTO_AGENT.md ]]; then
    echo
    cat "$here/AUTO_AGENT.md"
  fi
} > "$out"
echo "Wrote $out" >&2
cat "$out"
