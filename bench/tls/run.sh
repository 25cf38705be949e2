#!/usr/bin/env bash
# TLS benchmark: what tracing HTTPS adds, on this machine, side by side.
#
#   bench/tls/run.sh [--duration SECONDS] [--rounds N] [--out FILE]
#
# 1. Added cost per HTTPS request, Python: the stdlib HTTPS test server
#    (e2e/apps/python/tls_apps.py, ssl over OpenSSL) bare and under
#    `ferrotel-probe --language python` (OpenSSL uprobes + syscall
#    tracepoints), and the same server over plain HTTP, bare and probed,
#    for comparison with the socket-level path.
# 2. Added cost per HTTPS request, Go: the net/http test target serving TLS
#    (e2e/apps/go/httpserver -tls-cert), bare and under
#    `ferrotel-probe --language go` (uprobes in the binary only).
# 3. Bystanders: processes that map the same libssl without being traced.
#    The uprobes are scoped to the traced processes, so they should pay
#    nothing (a uprobe scoped to the file would trap in all of them).
#    Measured two ways:
#    an *unclaimed* HTTPS server (req/s and CPU per request) without the
#    probe and while the probe traces another process that maps the same
#    libssl; and ssl_loop.py (one SSL_write_ex + one SSL_read_ex on memory
#    BIOs, no syscalls) bare, with the probe attached elsewhere, and claimed.
#    wrk itself maps the same libssl: its CPU per request is reported too.
#
# Server on CPU 0; wrk (`wrk -t1 -c16`, keep-alive, HTTPS), the probe and
# the collector (nop exporter) on CPU 1. Each measurement runs N rounds
# (default 3) of its variants in turn; the table gives the median round and
# every round's ratio to the bare run just before it.
# Needs root (eBPF), `make tools` (venv, wrk, otelcol, Go), openssl, and a
# release probe (built if missing). Run it under
# `flock /tmp/ferrotel-bench.lock` on a shared machine.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${FERROTEL_CACHE:-$HOME/.cache/ferrotel}
venv=$cache/venv/bin
bin=${FERROTEL_BIN:-$cache/bin}
duration=10
rounds=3
out=$repo/bench/results/tls.md
while [[ $# -gt 0 ]]; do
  case $1 in
    --duration) duration=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

[[ $(id -u) -eq 0 ]] || { echo "bench/tls/run.sh needs root: the probe loads eBPF programs" >&2; exit 1; }
for tool in "$venv/python" "$bin/otelcol" "$(command -v wrk)" "$(command -v openssl)" /usr/local/go/bin/go; do
  [[ -x $tool ]] || { echo "missing $tool: run 'make tools'" >&2; exit 1; }
done

target_dir=${CARGO_TARGET_DIR:-$repo/target}
probe=${FERROTEL_PROBE_BIN:-$target_dir/release/ferrotel-probe}
if [[ ! -x $probe ]]; then
  (cd "$repo" && cargo build -q --release -p ferrotel-probe --bin ferrotel-probe)
fi
go_apps=$cache/go-apps/$(/usr/local/go/bin/go env GOVERSION)
"$repo/e2e/apps/go/build.sh" /usr/local/go/bin/go "$go_apps" >&2

work=$(mktemp -d /tmp/ferrotel-bench-tls.XXXXXX)
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
stop_group() { kill -TERM -- "-$1" 2>/dev/null || true; for _ in $(seq 100); do pgrep -g "$1" >/dev/null || return 0; sleep 0.05; done; kill -KILL -- "-$1" 2>/dev/null || true; }

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

# ------------------------------------------------------------ collector
grpc=$(free_port)
cat > "$work/otelcol.yaml" <<EOF
receivers:
  otlp:
    protocols:
      grpc: {endpoint: 127.0.0.1:$grpc}
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
start_app() { # kind port
  local kind=$1 port=$2 cmd=()
  case $kind in
    python-https) cmd=("$venv/python" tls_apps.py server "$work/cert.pem" "$work/key.pem" "$port") ;;
    python-http) cmd=("$venv/python" stdlib_server.py "$port") ;;
    go-https) cmd=("$go_apps/httpserver" -addr "127.0.0.1:$port" -tls-cert "$work/cert.pem" -tls-key "$work/key.pem") ;;
  esac
  (cd "$repo/e2e/apps/python" && exec setsid taskset -c 0 "${cmd[@]}" > "$work/app-$kind.log" 2>&1) &
  app_pgid=$!
  pids_to_kill+=("$app_pgid")
  wait_port "$port"
}

probe_pid=""
probe_metrics=""
start_probe() { # language pid
  probe_metrics=127.0.0.1:$(free_port)
  OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$grpc setsid taskset -c 1 "$probe" --language "$1" --pid "$2" \
    --metrics-addr "$probe_metrics" > "$work/probe.log" 2>&1 &
  probe_pid=$!
  pids_to_kill+=("$probe_pid")
  # Attached (and, for Python, the TLS library probed) once the gauge says so.
  for _ in $(seq 300); do
    if metrics=$(curl -fs "http://$probe_metrics/metrics" 2>/dev/null) &&
      grep -q "^ferrotel_probe_attached_processes{language=\"$1\"} [1-9]" <<<"$metrics" &&
      { [[ $1 != python ]] || grep -q '^ferrotel_probe_tls_libraries{language="python"} [1-9]' <<<"$metrics"; }; then
      return 0
    fi
    sleep 0.05
  done
  echo "the probe did not attach; log:" >&2; tail -20 "$work/probe.log" >&2; exit 1
}
stop_probe() { kill -TERM "$probe_pid" 2>/dev/null || true; wait "$probe_pid" 2>/dev/null || true; probe_pid=""; }

# wrk -> "rps p50_ms p99_ms requests wrk_ticks"
load() { # url
  taskset -c 1 wrk -t1 -c16 -d"${duration}s" --latency "$1" > "$work/wrk.txt" 2>&1 &
  local wrk_pid=$! ticks=0 stat
  # wrk's own CPU: it is a bystander of the libssl uprobes.
  while kill -0 "$wrk_pid" 2>/dev/null; do
    stat=$(cut -d')' -f2- "/proc/$wrk_pid/stat" 2>/dev/null) && ticks=$(awk '{print $12 + $13}' <<<"$stat")
    sleep 0.2
  done
  wait "$wrk_pid" || true
  awk -v ticks="$ticks" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec/ { rps = $2 }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    /requests in/ { n = $1 }
    END { printf "%.0f %.2f %.2f %d %d\n", rps, p50, p99, n, ticks }' "$work/wrk.txt"
}

# Run counts and run time of our programs (kernel.bpf_stats_enabled=1).
kernel_snapshot() {
  bpftool -j prog show 2>/dev/null | python3 -c '
import json, sys
out = {}
for p in json.load(sys.stdin):
    name = p.get("name", "")
    if name.startswith(("ft_sock_", "ft_tls_", "ft_go_", "ft_proc_")):
        runs, ns = out.get(name, (0, 0))
        out[name] = (runs + p.get("run_cnt", 0), ns + p.get("run_time_ns", 0))
print(json.dumps(out))
'
}
kernel_ns_per_request() { # before.json after.json requests
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
before, after, n = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3]) or 1
print("%.0f" % (sum(after[k][1] - before.get(k, (0, 0))[1] for k in after) / n))
PY
}
kernel_table() { # before.json after.json requests
  python3 - "$1" "$2" "$3" <<'PY'
import json, sys
before, after, n = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3]) or 1
for name in sorted(after):
    runs = after[name][0] - before.get(name, (0, 0))[0]
    ns = after[name][1] - before.get(name, (0, 0))[1]
    if runs:
        print("| %s | %d | %.2f | %.0f |" % (name, runs, runs / n, ns / runs))
PY
}

rows=()
measure() { # kind variant round
  local kind=$1 variant=$2 round=$3 port scheme=https language=python
  [[ $kind == python-http ]] && scheme=http
  [[ $kind == go-* ]] && language=go
  port=$(free_port)
  start_app "$kind" "$port"
  local url="$scheme://127.0.0.1:$port/users/1"
  [[ $kind == go-* ]] && url="$scheme://127.0.0.1:$port/hello"
  if [[ $variant == probe ]]; then start_probe "$language" "$app_pgid"; fi
  taskset -c 1 wrk -t1 -c16 -d2s "$url" > /dev/null 2>&1
  local app_before probe_before=0 app_after probe_after=0
  if [[ -n $probe_pid ]]; then
    sleep 0.5
    kernel_snapshot > "$work/kernel-before.json"
    probe_before=$(group_ticks "$probe_pid")
  fi
  app_before=$(group_ticks "$app_pgid")
  read -r rps p50 p99 n wrk_ticks < <(load "$url")
  app_after=$(group_ticks "$app_pgid")
  local probe_us="-" kernel_ns="-"
  if [[ -n $probe_pid ]]; then
    probe_after=$(group_ticks "$probe_pid")
    kernel_snapshot > "$work/kernel-after.json"
    kernel_ns=$(kernel_ns_per_request "$work/kernel-before.json" "$work/kernel-after.json" "$n")
    kernel_table "$work/kernel-before.json" "$work/kernel-after.json" "$n" > "$work/kernel-$kind.txt"
    probe_us=$(awk -v p=$((probe_after - probe_before)) -v t="$ticks_per_s" -v n="$n" 'BEGIN { printf "%.1f", p / t * 1e6 / (n > 0 ? n : 1) }')
    stop_probe
  fi
  stop_group "$app_pgid"
  local cpu_us wrk_us
  cpu_us=$(awk -v a=$((app_after - app_before)) -v p=$((probe_after - probe_before)) -v t="$ticks_per_s" -v n="$n" \
    'BEGIN { printf "%.1f", (a + p) / t * 1e6 / (n > 0 ? n : 1) }')
  wrk_us=$(awk -v w="$wrk_ticks" -v t="$ticks_per_s" -v n="$n" 'BEGIN { printf "%.1f", w / t * 1e6 / (n > 0 ? n : 1) }')
  rows+=("$kind|$variant|$round|$rps|$p50|$p99|$cpu_us|$probe_us|$kernel_ns|$wrk_us")
  echo "  $kind $variant (round $round): $rps req/s, p50 $p50 ms, p99 $p99 ms, ${cpu_us} µs CPU/request (probe ${probe_us}), kernel ${kernel_ns} ns/request, wrk ${wrk_us} µs/request" >&2
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "TLS benchmark: ${duration}s per measurement, $rounds rounds" >&2
stats_before=$(sysctl -n kernel.bpf_stats_enabled)
sysctl -qw kernel.bpf_stats_enabled=1
trap 'sysctl -qw kernel.bpf_stats_enabled="$stats_before"; cleanup' EXIT
for kind in python-https python-http go-https; do
  for round in $(seq "$rounds"); do
    for variant in bare probe; do
      measure "$kind" "$variant" "$round"
    done
  done
done

# --------------------------------------------------------- bystanders
# An unclaimed HTTPS server while the probe traces another process that
# maps the same libssl (an idle Python that imported ssl).
"$venv/python" -c 'import ssl, time; time.sleep(100000)' &
idle_pid=$!
pids_to_kill+=("$idle_pid")
bystander=()
for round in $(seq "$rounds"); do
  for variant in bare probe; do
    port=$(free_port)
    start_app python-https "$port"
    if [[ $variant == probe ]]; then start_probe python "$idle_pid"; sleep 0.5; kernel_snapshot > "$work/kb-before.json"; fi
    taskset -c 1 wrk -t1 -c16 -d2s "https://127.0.0.1:$port/users/1" > /dev/null 2>&1
    before=$(group_ticks "$app_pgid")
    read -r rps _ p99 n wrk_ticks < <(load "https://127.0.0.1:$port/users/1")
    after=$(group_ticks "$app_pgid")
    if [[ $variant == probe ]]; then
      kernel_snapshot > "$work/kb-after.json"
      kernel_table "$work/kb-before.json" "$work/kb-after.json" "$n" > "$work/kernel-bystander.txt"
      stop_probe
    fi
    stop_group "$app_pgid"
    cpu=$(awk -v a=$((after - before)) -v t="$ticks_per_s" -v n="$n" 'BEGIN { printf "%.1f", a / t * 1e6 / n }')
    wrk_us=$(awk -v w="$wrk_ticks" -v t="$ticks_per_s" -v n="$n" 'BEGIN { printf "%.1f", w / t * 1e6 / n }')
    bystander+=("$variant|$round|$rps|$p99|$cpu|$wrk_us")
    echo "  bystander $variant (round $round): $rps req/s, p99 $p99 ms, server ${cpu} µs CPU/request, wrk ${wrk_us} µs/request" >&2
  done
done

# One SSL_write_ex + SSL_read_ex pair (memory BIOs): bare, probe attached
# elsewhere, and claimed. Minimum over windows: the least disturbed.
# Windows that ended after $1 (ns since the epoch) only.
min_window() { awk -v after="${1:-0}" 'NR > 1 && $1 > after { print $2 }' | sort -n | head -1; }
loop() { taskset -c 0 "$venv/python" "$here/ssl_loop.py" "$work/cert.pem" "$work/key.pem" "$1"; }
loop_bare=$(loop 6 | min_window)
start_probe python "$idle_pid"
loop_elsewhere=$(loop 6 | min_window)
stop_probe
coproc LOOP { loop 16; }
read -r _ loop_pid <&"${LOOP[0]}"
start_probe python "$loop_pid"
attached=$(date +%s%N)
timeout 14 cat <&"${LOOP[0]}" > "$work/loop-claimed.txt" || true
loop_claimed=$( { echo header; cat "$work/loop-claimed.txt"; } | min_window "$attached")
stop_probe
echo "  SSL write+read pair: bare $loop_bare ns, probe elsewhere $loop_elsewhere ns, claimed $loop_claimed ns" >&2

# ---------------------------------------------------------------- report
summary() {
  printf '%s\n' "${rows[@]}" | python3 -c '
import sys, statistics
rows = [l.rstrip("\n").split("|") for l in sys.stdin if l.strip()]
by = {}
for kind, variant, rnd, rps, p50, p99, cpu, pcpu, kns, wrk in rows:
    by.setdefault((kind, variant), []).append(dict(rnd=int(rnd), rps=float(rps), p50=p50, p99=p99, cpu=float(cpu), pcpu=pcpu, kns=kns, wrk=float(wrk)))
print("| Server | Variant | req/s (median) | × bare, each round | p50 ms | p99 ms | CPU µs/request (app + probe) | added µs/request (median of rounds) | of which probe user space | eBPF ns/request | wrk µs/request |")
print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
for kind in dict.fromkeys(k for k, _ in by):
    bare = {r["rnd"]: r for r in by.get((kind, "bare"), [])}
    for variant in ("bare", "probe"):
        runs = sorted(by.get((kind, variant), []), key=lambda r: r["rnd"])
        med = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
        each = ", ".join("%.2f" % (r["rps"] / bare[r["rnd"]]["rps"]) for r in runs if r["rnd"] in bare)
        added = "-" if variant == "bare" else "%.1f" % statistics.median(r["cpu"] - bare[r["rnd"]]["cpu"] for r in runs if r["rnd"] in bare)
        print("| %s | %s | %.0f | %s | %s | %s | %.1f | %s | %s | %s | %.1f |" % (kind, variant, statistics.median(r["rps"] for r in runs), each, med["p50"], med["p99"], med["cpu"], added, med["pcpu"], med["kns"], med["wrk"]))
'
}
bystander_summary() {
  printf '%s\n' "${bystander[@]}" | python3 -c '
import sys, statistics
rows = [l.rstrip("\n").split("|") for l in sys.stdin if l.strip()]
by = {}
for variant, rnd, rps, p99, cpu, wrk in rows:
    by.setdefault(variant, {})[int(rnd)] = dict(rps=float(rps), p99=p99, cpu=float(cpu), wrk=float(wrk))
print("| Bystander HTTPS server | req/s (median) | × without, each round | server CPU µs/request | wrk CPU µs/request |")
print("|---|---:|---|---:|---:|")
for variant, label in (("bare", "without the probe"), ("probe", "probe tracing another process on the same libssl")):
    runs = by[variant]
    each = ", ".join("%.2f" % (runs[r]["rps"] / by["bare"][r]["rps"]) for r in sorted(runs))
    print("| %s | %.0f | %s | %.1f | %.1f |" % (label, statistics.median(v["rps"] for v in runs.values()), each,
          statistics.median(v["cpu"] for v in runs.values()), statistics.median(v["wrk"] for v in runs.values())))
'
}
{
  echo "# TLS: added cost per HTTPS request, and what bystanders pay"
  echo
  echo "Generated by \`bench/tls/run.sh --duration $duration --rounds $rounds\` on $(date -u '+%Y-%m-%d %H:%M UTC')."
  echo
  echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r), $("$venv/python" --version), $("$venv/python" -c 'import ssl; print(ssl.OPENSSL_VERSION)'), $(/usr/local/go/bin/go env GOVERSION)."
  echo "Server pinned to CPU 0; wrk (\`wrk -t1 -c16 -d${duration}s --latency\`, keep-alive, TLS 1.3), the probe and the collector (nop exporter) on CPU 1."
  echo "Python: \`tls_apps.py server\` (stdlib ThreadingHTTPServer behind ssl) and, for comparison, the same handler over plain HTTP (\`stdlib_server.py\`); GET /users/1."
  echo "Go: \`e2e/apps/go/httpserver -tls-cert\` (net/http ServeTLS; HTTP/1.1, wrk does not offer h2); GET /hello."
  echo "Probe: \`ferrotel-probe --language python|go --pid <server>\` (${probe#"$repo/"})."
  echo "CPU per request = (app CPU + probe CPU) / requests, from /proc/<pid>/stat; added = probe row minus the bare row of the same round."
  echo "eBPF ns/request: run time of every ft_* program during the load (kernel.bpf_stats_enabled=1), divided by requests: it includes every process's hits on the syscall tracepoints (wrk's too), which return at the claim check."
  echo "Load average at the start of the run: $load_start; at the end: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine competes for both CPUs and skews every number)."
  echo
  summary
  echo
  echo "Kernel programs during the last probed measurement of each server (runs/request counts every process on the node, wrk included):"
  for kind in python-https python-http go-https; do
    echo
    echo "$kind:"
    echo
    echo "| program | runs | runs/request | ns/run |"
    echo "|---|---:|---:|---:|"
    cat "$work/kernel-$kind.txt"
  done
  echo
  echo "## Bystanders"
  echo
  echo "An HTTPS server the probe does not trace, while the probe traces an idle Python process that maps the same libssl. The uprobes are scoped to the traced process: the bystander's SSL calls (and wrk's) do not trap:"
  echo
  bystander_summary
  echo
  echo "Kernel programs during the last bystander measurement (every run here is a syscall tracepoint returning at the claim check; no ring-buffer event):"
  echo
  echo "| program | runs | runs/request | ns/run |"
  echo "|---|---:|---:|---:|"
  cat "$work/kernel-bystander.txt"
  echo
  echo "One SSL_write_ex + one SSL_read_ex (\`bench/tls/ssl_loop.py\`: 64-byte records between two SSL objects over memory BIOs in one Python process, on CPU 0; best window of 20,000 pairs):"
  echo
  echo "| Variant | ns per write+read pair | added ns per SSL call |"
  echo "|---|---:|---:|"
  echo "| bare | $loop_bare | - |"
  echo "| probe tracing another process that maps this libssl | $loop_elsewhere | $(awk -v a="$loop_elsewhere" -v b="$loop_bare" 'BEGIN { printf "%.0f", (a - b) / 2 }') |"
  echo "| this process claimed (every call probed; memory BIOs, no socket: nothing reported, a drop counted) | $loop_claimed | $(awk -v a="$loop_claimed" -v b="$loop_bare" 'BEGIN { printf "%.0f", (a - b) / 2 }') |"
} > "$out"
echo "Wrote $out" >&2
cat "$out"
