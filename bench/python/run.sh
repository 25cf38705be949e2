#!/usr/bin/env bash
# Python overhead benchmark: one run, side by side, on this machine.
#
#   bench/python/run.sh [--duration SECONDS] [--rounds N] [--out FILE]
#
# For a Flask app (gunicorn, threaded gthread worker) and a FastAPI app
# (uvicorn), each measured as
#   bare   | under ferrotel-probe --language python | under opentelemetry-instrument
# (the OpenTelemetry Python SDK exporting OTLP/HTTP to the collector):
# throughput, p50/p99 latency (wrk), CPU per request of app + probe, probe RSS.
# Then the throughput of an *uninstrumented* stdlib server on the same node
# without and with the probe attached to another process: syscall
# tracepoints run for every process, so everyone pays the filter.
#
# The server runs on CPU 0; wrk, the probe and the collector on CPU 1.
# Each app runs N rounds (default 3) of bare, probe, otel in turn; the table
# gives the median of the rounds and each round's ratio to the bare run just
# before it, so that load drifting on a shared machine shows instead of
# deciding the result.
# Needs root (eBPF), `make tools` (venv, wrk, otelcol) and a built probe
# (cargo build -p ferrotel-probe --release is used if missing).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${FERROTEL_CACHE:-$HOME/.cache/ferrotel}
venv=$cache/venv/bin
bin=${FERROTEL_BIN:-$cache/bin}
duration=10
rounds=3
out=$repo/bench/results/python.md
while [[ $# -gt 0 ]]; do
  case $1 in
    --duration) duration=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

[[ $(id -u) -eq 0 ]] || { echo "bench/python/run.sh needs root: the probe loads eBPF programs" >&2; exit 1; }
for tool in "$venv/gunicorn" "$venv/uvicorn" "$venv/opentelemetry-instrument" "$bin/otelcol" "$(command -v wrk)"; do
  [[ -x $tool ]] || { echo "missing $tool: run 'make tools'" >&2; exit 1; }
done

target_dir=${CARGO_TARGET_DIR:-$repo/target}
probe=${FERROTEL_PROBE_BIN:-$target_dir/release/ferrotel-probe}
if [[ ! -x $probe ]]; then
  (cd "$repo" && cargo build -q --release -p ferrotel-probe --bin ferrotel-probe)
fi

work=$(mktemp -d /tmp/ferrotel-bench-python.XXXXXX)
pids_to_kill=()
cleanup() {
  for pid in "${pids_to_kill[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "nothing listens on $1" >&2; return 1; }

# CPU ticks (utime+stime) of a process group.
group_ticks() {
  local pgid=$1 total=0 pid stat
  for pid in $(pgrep -g "$pgid" 2>/dev/null); do
    stat=$(cut -d')' -f2- "/proc/$pid/stat" 2>/dev/null) || continue
    total=$((total + $(awk '{print $12 + $13}' <<<"$stat")))
  done
  echo "$total"
}
ticks_per_s=$(getconf CLK_TCK)

# ------------------------------------------------------------ collector
grpc=$(free_port); http=$(free_port)
cat > "$work/otelcol.yaml" <<EOF
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
EOF
setsid taskset -c 1 "$bin/otelcol" --config "$work/otelcol.yaml" > "$work/otelcol.log" 2>&1 &
pids_to_kill+=($!)
wait_port "$grpc"

# --------------------------------------------------------------- helpers
app_pgid=""
start_app() { # kind variant port
  local kind=$1 variant=$2 port=$3 cmd=()
  case $kind in
    flask) cmd=("$venv/gunicorn" -k gthread -w 1 --threads 8 -b "127.0.0.1:$port" flask_app:app) ;;
    fastapi) cmd=("$venv/uvicorn" --host 127.0.0.1 --port "$port" --no-access-log fastapi_app:app) ;;
    stdlib) cmd=("$venv/python" stdlib_server.py "$port") ;;
  esac
  if [[ $variant == otel ]]; then
    cmd=("$venv/opentelemetry-instrument" "${cmd[@]}")
  fi
  (cd "$repo/e2e/apps/python" && OTEL_SERVICE_NAME=bench-$kind OTEL_TRACES_EXPORTER=otlp OTEL_METRICS_EXPORTER=otlp OTEL_LOGS_EXPORTER=none \
    OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$http \
    exec setsid taskset -c 0 "${cmd[@]}" > "$work/app-$kind-$variant.log" 2>&1) &
  app_pgid=$!
  pids_to_kill+=("$app_pgid")
  wait_port "$port"
}
stop_group() { kill -TERM -- "-$1" 2>/dev/null || true; for _ in $(seq 100); do pgrep -g "$1" >/dev/null || return 0; sleep 0.05; done; kill -KILL -- "-$1" 2>/dev/null || true; }

probe_pid=""
probe_metrics=""
start_probe() { # port
  probe_metrics=127.0.0.1:$(free_port)
  OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$grpc setsid taskset -c 1 "$probe" --language python --open-port "$1" \
    --metrics-addr "$probe_metrics" > "$work/probe.log" 2>&1 &
  probe_pid=$!
  pids_to_kill+=("$probe_pid")
  # The default /proc rescan period (2 s): --open-port re-reads
  # /proc/net/tcp{,6} on every rescan, which costs in proportion to the
  # node's sockets (a 200 ms period made it ~30 % of the probe's CPU here).
  for _ in $(seq 200); do grep -q "Tracing process sockets" "$work/probe.log" && return 0; sleep 0.05; done
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

# Events the probe read from its ring buffer so far (its /metrics).
probe_events() {
  python3 -c '
import sys, urllib.request
text = urllib.request.urlopen("http://" + sys.argv[1] + "/metrics").read().decode()
print(sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith("ferrotel_probe_events_received_total")))
' "$probe_metrics"
}

# Run counts and run time of the socket-level set's ft_sock_* programs (kernel.bpf_stats_enabled=1), as JSON.
kernel_snapshot() {
  bpftool -j prog show 2>/dev/null | python3 -c '
import json, sys
out = {}
for p in json.load(sys.stdin):
    name = p.get("name", "")
    if name.startswith("ft_sock_"):
        runs, ns = out.get(name, (0, 0))
        out[name] = (runs + p.get("run_cnt", 0), ns + p.get("run_time_ns", 0))
print(json.dumps(out))
'
}

# Kernel cost of the measured load only (snapshot difference): rows
# "| program | runs | runs/request | ns/run |" and a total line in ns/request.
kernel_cost() { # before.json after.json requests
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
before, after, n = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3]) or 1
total = 0
for name in sorted(after):
    runs = after[name][0] - before.get(name, (0, 0))[0]
    ns = after[name][1] - before.get(name, (0, 0))[1]
    total += ns
    if runs:
        print("| %s | %d | %.2f | %.0f |" % (name, runs, runs / n, ns / runs))
print("| **all programs** | | | **%.0f ns/request** |" % (total / n))
PY
}

rows=()
measure() { # kind variant round
  local kind=$1 variant=$2 round=$3 port
  port=$(free_port)
  start_app "$kind" "$variant" "$port"
  if [[ $variant == probe ]]; then start_probe "$port"; fi
  # Warm-up (imports, JIT-free but caches, connection pools).
  taskset -c 1 wrk -t1 -c16 -d2s "http://127.0.0.1:$port/users/1" > /dev/null 2>&1
  local app_before probe_before=0 app_after probe_after=0 rss="-" events_before=0 events_after=0
  if [[ -n $probe_pid ]]; then
    # Settle the warm-up's events, then count the measured load's only.
    sleep 0.5
    kernel_snapshot > "$work/kernel-before.json"
    events_before=$(probe_events)
    probe_before=$(group_ticks "$probe_pid")
  fi
  app_before=$(group_ticks "$app_pgid")
  read -r rps p50 p99 n < <(load "http://127.0.0.1:$port/users/1")
  app_after=$(group_ticks "$app_pgid")
  local probe_cpu="-" events="-"
  if [[ -n $probe_pid ]]; then
    probe_after=$(group_ticks "$probe_pid")
    kernel_snapshot > "$work/kernel-after.json"
    sleep 0.5 # the last events reach the reader on its poll
    events_after=$(probe_events)
    kernel_cost "$work/kernel-before.json" "$work/kernel-after.json" "$n" > "$work/kernel-$kind-$round.txt"
    rss="$(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$probe_pid/status") MiB"
    probe_cpu=$(awk -v p=$((probe_after - probe_before)) -v t="$ticks_per_s" -v n="$n" 'BEGIN { printf "%.0f", p / t * 1e6 / (n > 0 ? n : 1) }')
    events=$(awk -v a="$events_after" -v b="$events_before" -v n="$n" 'BEGIN { printf "%.2f", (a - b) / (n > 0 ? n : 1) }')
    stop_probe
  fi
  stop_group "$app_pgid"
  local cpu_us
  cpu_us=$(awk -v a=$((app_after - app_before)) -v p=$((probe_after - probe_before)) -v t="$ticks_per_s" -v n="$n" \
    'BEGIN { printf "%.0f", (a + p) / t * 1e6 / (n > 0 ? n : 1) }')
  rows+=("$kind|$variant|$round|$rps|$p50|$p99|$cpu_us|$probe_cpu|$events|$rss")
  echo "  $kind $variant (round $round): $rps req/s, p50 $p50 ms, p99 $p99 ms, ${cpu_us} µs CPU/request (probe ${probe_cpu}), ${events} events/request, probe RSS $rss" >&2
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "Python benchmark: ${duration}s per measurement, $rounds rounds" >&2
stats_before=$(sysctl -n kernel.bpf_stats_enabled)
sysctl -qw kernel.bpf_stats_enabled=1
trap 'sysctl -qw kernel.bpf_stats_enabled="$stats_before"; cleanup' EXIT
for kind in flask fastapi; do
  for round in $(seq "$rounds"); do
    for variant in bare probe otel; do
      measure "$kind" "$variant" "$round"
    done
  done
done

# Bystander: an uninstrumented server while the probe traces another process.
bystander=()
bport=$(free_port)
start_app stdlib bare "$bport"
bystander_pgid=$app_pgid
read -r b_rps _ _ _ < <(load "http://127.0.0.1:$bport/users/1")
bystander+=("$b_rps")
tport=$(free_port)
start_app flask bare "$tport"
traced_pgid=$app_pgid
start_probe "$tport"
read -r b2_rps _ _ _ < <(load "http://127.0.0.1:$bport/users/1")
bystander+=("$b2_rps")
stop_probe
stop_group "$traced_pgid"
stop_group "$bystander_pgid"

# Per-syscall cost: syscall_loop.c (write+read pairs on a loopback TCP pair)
# bare, with the probe attached to another process, and claimed by the probe.
# Minimum over 0.5 s windows: the least disturbed by other work.
clang-19 -O2 -o "$work/syscall_loop" "$here/syscall_loop.c"
min_window() { tail -n +2 | sort -n | head -1; }
loop_bare=$(taskset -c 0 "$work/syscall_loop" 6 | min_window)
sleep 1000 & idle_pid=$!
pids_to_kill+=("$idle_pid")
pid_probe() { # pid metrics-addr log
  OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$grpc setsid taskset -c 1 "$probe" --language python --pid "$1" --metrics-addr "$2" > "$3" 2>&1 &
  probe_pid=$!
  pids_to_kill+=("$probe_pid")
  for _ in $(seq 200); do grep -q "Tracing process sockets" "$3" && return 0; sleep 0.05; done
  echo "the probe did not attach; log:" >&2; tail -20 "$3" >&2; exit 1
}
pid_probe "$idle_pid" "127.0.0.1:$(free_port)" "$work/probe-idle.log"
loop_unclaimed=$(taskset -c 0 "$work/syscall_loop" 6 | min_window)
stop_probe
kill "$idle_pid" 2>/dev/null || true
coproc LOOP { taskset -c 0 "$work/syscall_loop" 14; }
read -r _ loop_pid <&"${LOOP[0]}"
probe_metrics=127.0.0.1:$(free_port)
pid_probe "$loop_pid" "$probe_metrics" "$work/probe-loop.log"
sleep 1
timeout 8 cat <&"${LOOP[0]}" > "$work/loop-claimed.txt" || true
loop_claimed=$(sort -n "$work/loop-claimed.txt" | head -1)
stop_probe
echo "  syscall pair: bare $loop_bare ns, probe elsewhere $loop_unclaimed ns, claimed $loop_claimed ns" >&2

# ---------------------------------------------------------------- report
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
# Median over rounds (by req/s) per app and variant; ratios per round
# against that round's bare run.
summary() {
  printf '%s\n' "${rows[@]}" | python3 -c '
import sys, statistics
rows = [l.rstrip("\n").split("|") for l in sys.stdin if l.strip()]
by = {}
for kind, variant, rnd, rps, p50, p99, cpu, pcpu, ev, rss in rows:
    by.setdefault((kind, variant), []).append(dict(rnd=int(rnd), rps=float(rps), p50=p50, p99=p99, cpu=cpu, pcpu=pcpu, ev=ev, rss=rss))
print("| App | Variant | req/s (median) | × bare (median) | × bare, each round | req/s, each round | p50 ms | p99 ms | CPU µs/request (app + probe) | of which probe (user space) | ring-buffer events/request | probe RSS |")
print("|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|")
kinds = list(dict.fromkeys(k for k, _ in by))
for kind in kinds:
    bare = {r["rnd"]: r["rps"] for r in by.get((kind, "bare"), [])}
    bare_median = statistics.median(bare.values()) if bare else 0
    for variant in ("bare", "probe", "otel"):
        runs = sorted(by.get((kind, variant), []), key=lambda r: r["rnd"])
        if not runs:
            continue
        med = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
        rps_median = statistics.median(r["rps"] for r in runs)
        ratio = "%.2f" % (rps_median / bare_median) if bare_median else "-"
        each = ", ".join("%.2f" % (r["rps"] / bare[r["rnd"]]) if bare.get(r["rnd"]) else "-" for r in runs)
        rps_each = ", ".join("%.0f" % r["rps"] for r in runs)
        print("| %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (kind, variant, rps_median, ratio, each, rps_each, med["p50"], med["p99"], med["cpu"], med["pcpu"], med["ev"], med["rss"]))
'
}
{
  echo "# Python overhead: bare vs ferrotel-probe vs OpenTelemetry SDK"
  echo
  echo "Generated by \`make bench\` (\`bench/python/run.sh --duration $duration --rounds $rounds\`) on $(date -u '+%Y-%m-%d %H:%M UTC')."
  echo
  echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r), $("$venv/python" --version)."
  echo "Server pinned to CPU 0; wrk (\`wrk -t1 -c16 -d${duration}s --latency /users/1\`), the probe and the collector (nop exporter) on CPU 1."
  echo "Flask: gunicorn 1 gthread worker, 8 threads. FastAPI: uvicorn, 1 worker (asyncio, h11)."
  echo "OTel SDK: \`opentelemetry-instrument\` (distro + Flask/FastAPI instrumentation), OTLP/HTTP to the collector."
  echo "Probe: \`ferrotel-probe --language python --open-port <port>\` ($probe; default 2 s /proc rescan), OTLP/gRPC to the collector."
  echo "CPU per request = (app CPU + probe CPU) / requests, from /proc/<pid>/stat. Noise between runs is ±5–8 % on an idle VM."
  echo "Load average at the start of the run: $load_start; at the end: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine competes for both CPUs and skews every number)."
  echo
  echo "Latency, CPU, events and RSS columns are those of the median round."
  echo
  summary
  echo
  echo "Uninstrumented bystander (stdlib http.server on CPU 0, not claimed) while the probe traces a Flask app:"
  echo
  echo "| Bystander | req/s | × without probe |"
  echo "|---|---:|---:|"
  echo "| without probe | ${bystander[0]} | 1.00 |"
  echo "| probe attached to another process | ${bystander[1]} | $(ratio "${bystander[1]}" "${bystander[0]}") |"
  echo
  echo "One traced socket syscall, without Python or HTTP (\`bench/python/syscall_loop.c\`: a 64-byte write and the matching read on a loopback TCP pair in one process, on CPU 0; best 0.5 s window):"
  echo
  echo "| Variant | ns per write+read pair | extra ns per syscall |"
  echo "|---|---:|---:|"
  echo "| bare | $loop_bare | - |"
  echo "| probe attached, this process not claimed | $loop_unclaimed | $(awk -v a="$loop_unclaimed" -v b="$loop_bare" 'BEGIN { printf "%.0f", (a - b) / 2 }') |"
  echo "| claimed (2 events per pair) | $loop_claimed | $(awk -v a="$loop_claimed" -v b="$loop_bare" 'BEGIN { printf "%.0f", (a - b) / 2 }') |"
  for kind in flask fastapi; do
    echo
    echo "Kernel cost of the eBPF programs during the last $kind probe measurement only (\`bpftool prog show\` before and after the load, kernel.bpf_stats_enabled=1; names truncated by the kernel; runs include every process on the node, per request = divided by the requests wrk made):"
    echo
    echo "| program | runs | runs/request | ns/run |"
    echo "|---|---:|---:|---:|"
    cat "$work/kernel-$kind-$rounds.txt"
  done
} > "$out"
echo "Wrote $out" >&2
cat "$out"
