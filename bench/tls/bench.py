#!/usr/bin/env python3
"""TLS: the added cost per HTTPS request, next to plain HTTP, and what a
process that maps the same libssl without being traced pays.

    bench/tls/run.sh [--rounds N] [--duration S] [--baseline-probe BIN] [--only NAME] ...

Scenarios (paired, interleaved rounds; see bench/ferrobench/harness.py):
  python-https   the stdlib HTTPS test server (e2e/apps/python/tls_apps.py:
                 ThreadingHTTPServer behind ssl, OpenSSL), GET /users/1
  python-http    the same handler over plain HTTP (stdlib_server.py)
  go-https       the net/http test target serving TLS (e2e/apps/go/httpserver
                 -tls-cert: ServeTLS; HTTP/1.1, wrk offers no h2), GET /hello
  go-http        the same target over plain HTTP
  bystander      the stdlib HTTPS server NOT traced, while the probe traces an
                 idle Python process that maps the same libssl
Variants: bare | probe (`ferrotel-probe --language python|go --pid`) |
probe-baseline (another probe build, if given); the bystander's:
bare | probe-elsewhere.

Experiment (paired rounds too): one SSL_write_ex + one SSL_read_ex over
memory BIOs (bench/tls/ssl_loop.py) bare, with the probe tracing another
process that maps this libssl, and claimed (every call probed).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ferrobench import report, system  # noqa: E402
from ferrobench.cli import E2E_PYTHON, VENV, Bench, build_e2e_go, go_version  # noqa: E402
from ferrobench.harness import Context, Running, Scenario, Variant, bystander_variants, paired_rounds  # noqa: E402
from ferrobench.procs import Service  # noqa: E402
from ferrobench.stats import Summary, fmt  # noqa: E402

TLS_READY = {"ferrotel_probe_tls_libraries": 1}
"""The Python probe has put its uprobes on the target's libssl."""


def make_cert(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1 (P-256)."""
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key




def start_server(ctx: Context, kind: str, cert: Path, key: Path, go_server: Path, cpus: str, name: str) -> tuple[Service, str]:
    port = system.free_port()
    if kind == "python-https":
        argv = [str(VENV / "python"), "tls_apps.py", "server", str(cert), str(key), str(port)]
    elif kind == "python-http":
        argv = [str(VENV / "python"), "stdlib_server.py", str(port)]
    elif kind == "go-https":
        argv = [str(go_server), "-addr", f"127.0.0.1:{port}", "-tls-cert", str(cert), "-tls-key", str(key)]
    else:
        argv = [str(go_server), "-addr", f"127.0.0.1:{port}"]
    svc = Service(name, argv, cpus=cpus, log=ctx.log(name), cwd=E2E_PYTHON, stdout=subprocess.DEVNULL)
    system.wait_port(port, alive=svc.alive)
    scheme = "https" if kind.endswith("https") else "http"
    return svc, f"{scheme}://127.0.0.1:{port}"


def server_scenarios(bench: Bench, cert: Path, key: Path, go_server: Path) -> list[Scenario]:
    out = []
    for kind in ("python-https", "python-http", "go-https", "go-http"):
        if not bench.wanted(kind):
            continue
        language = kind.split("-")[0]

        def variant(v: str, spans: float, k: str = kind, lang: str = language, binary: Path | None = None) -> Variant:
            def start(ctx: Context) -> Running:
                app, url = start_server(ctx, k, cert, key, go_server, ctx.app_cpus, f"{k}-{v}")
                running = Running(url=url, app=app)
                if v.startswith("probe"):
                    try:
                        running.probe = ctx.probe(
                            lang, ["--pid", str(app.pid)], binary=binary,
                            ready=TLS_READY if k == "python-https" else None,
                        )
                    except Exception:
                        running.stop()
                        raise
                return running

            return Variant(v, start, spans)

        variants = [variant("bare", 0), variant("probe", 1)]
        if bench.baseline_probe:
            variants.append(variant("probe-baseline", 1, binary=bench.baseline_probe))
        what = {
            "python-https": "stdlib ThreadingHTTPServer behind ssl (tls_apps.py server, OpenSSL), TLS 1.3; GET /users/1",
            "python-http": "the same handler over plain HTTP (stdlib_server.py); GET /users/1",
            "go-https": "net/http ServeTLS (e2e/apps/go/httpserver -tls-cert), TLS 1.3, HTTP/1.1; GET /hello",
            "go-http": "the same target over plain HTTP; GET /hello",
        }[kind]
        out.append(Scenario(name=kind, description=what, variants=variants,
                            path="/hello" if language == "go" else "/users/1"))
    return out


def idle_ssl_process(cpus: str, ctx: Context) -> Service:
    """A Python process that imported ssl (maps libssl) and does nothing: what the probe traces elsewhere."""
    return Service("idle-ssl", [str(VENV / "python"), "-c", "import ssl, time; time.sleep(100000)"],
                   cpus=cpus, log=ctx.log("idle-ssl"))


def bystander_scenario(bench: Bench, cert: Path, key: Path) -> Scenario:
    def start(with_probe: bool, binary: Path | None = None):
        def go(ctx: Context) -> Running:
            app, url = start_server(ctx, "python-https", cert, key, Path(), ctx.app_cpus, "bystander")
            running = Running(url=url, app=app)
            if with_probe:
                try:
                    idle = idle_ssl_process(ctx.load_cpus, ctx)
                    running.others.append(idle)
                    # The probe scans the idle process's maps once it is claimed:
                    # wait until its uprobes are on the libssl the bystander maps too.
                    running.probe = ctx.probe("python", ["--pid", str(idle.pid)], binary=binary, ready=TLS_READY)
                except Exception:
                    running.stop()
                    raise
            return running

        return go

    variants = bystander_variants(start, bench.baseline_probe)
    return Scenario(
        name="bystander",
        description="the stdlib HTTPS server, NOT traced, GET /users/1, while the probe traces an idle Python "
        "process mapping the same libssl (the uprobes are scoped to traced processes: the bystander's SSL calls, "
        "and wrk's, should not trap; the BPF figures are its syscalls reaching the probe's tracepoints)",
        variants=variants,
        path="/users/1",
    )


def ssl_call_experiment(bench: Bench, cert: Path, key: Path) -> tuple[dict[str, list[float]], list[str]]:
    ctx = bench.ctx
    windows = 16

    def measure(target: str, binary: Path | None = None) -> float:
        proc = subprocess.Popen(
            ["taskset", "-c", ctx.app_cpus, str(VENV / "python"), str(HERE / "ssl_loop.py"), str(cert), str(key), str(windows)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        idle = probe = None
        try:
            pid = int(proc.stdout.readline().split()[1])
            if target == "elsewhere":
                idle = idle_ssl_process(ctx.load_cpus, ctx)
                probe = ctx.probe("python", ["--pid", str(idle.pid)], binary=binary, ready=TLS_READY)
            elif target == "self":
                probe = ctx.probe("python", ["--pid", str(pid)], binary=binary, ready=TLS_READY)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            values = [float(line) for line in proc.stdout]
        finally:
            proc.kill()
            proc.wait()
            if probe:
                probe.stop()
            if idle:
                idle.stop()
        if len(values) != windows:
            raise RuntimeError(f"ssl_loop.py printed {len(values)} of {windows} windows")
        return statistics.median(values)

    variants = {
        "bare": lambda: measure("none"),
        "probe tracing another process on this libssl": lambda: measure("elsewhere"),
        "claimed by the probe (every call probed)": lambda: measure("self"),
    }
    if bench.baseline_probe:
        variants["baseline probe tracing another process"] = lambda: measure("elsewhere", bench.baseline_probe)
        variants["claimed by the baseline probe"] = lambda: measure("self", bench.baseline_probe)
    values = paired_rounds(bench.args.rounds, variants, log=lambda l: print(l, file=sys.stderr, flush=True), label="ssl call pair")
    lines = [
        "### One SSL_write_ex + one SSL_read_ex (`bench/tls/ssl_loop.py`)",
        "",
        "64-byte records between two SSL objects over memory BIOs in one Python process (no syscalls), on the app's "
        "CPU; ns per write+read pair, median of 16 windows of 20,000 pairs per measurement; the added cost is paired "
        f"with the bare measurement of the same round; `mean ±95 % CI (lowest–highest)` over {bench.args.rounds} rounds. "
        "Claimed: the calls trap into the uprobes, but memory BIOs give no socket, so nothing is reported (a drop is counted).",
        "",
        "| Variant | ns per write+read pair | added ns per SSL call vs bare |",
        "|---|---:|---:|",
    ]
    for name, vals in values.items():
        added = Summary.of([(v - b) / 2 for v, b in zip(vals, values["bare"])])
        lines.append(f"| {name} | {fmt(Summary.of(vals), '.0f')} | {fmt(added, '.0f') if name != 'bare' else '-'} |")
    return values, lines


def main(argv: list[str]) -> None:
    bench = Bench.from_args("tls", "TLS: added cost per HTTPS request, and what bystanders pay", argv)
    python = subprocess.run([str(VENV / "python"), "-c", "import ssl, sys; print(f'Python {sys.version.split()[0]}, {ssl.OPENSSL_VERSION}')"],
                            capture_output=True, text=True, check=True).stdout.strip()
    bench.header["runtime"] = f"{python}, {go_version()}"
    cert, key = make_cert(bench.workdir)
    go_server = build_e2e_go() / "httpserver"
    scenarios = server_scenarios(bench, cert, key, go_server)
    if bench.wanted("bystander"):
        scenarios.append(bystander_scenario(bench, cert, key))
    measurements = bench.runner().run(scenarios)
    sections = [
        report.how_to_read(),
        "",
        "The added cost of TLS tracing is the `probe` row of an `-https` scenario against the `probe` row of its "
        "plain `-http` twin: Python's plaintext comes from uprobes on OpenSSL's `SSL_*` calls (a trap, a single-step "
        "and a return probe per call) next to the socket tracepoints, Go's from the same net/http uprobes as plain "
        "text. wrk itself maps libssl and is never traced (its CPU is the load generator column).",
        "",
    ]
    for scenario in scenarios:
        sections += report.scenario_tables(scenario, measurements)
        sections.append("")
    extra = {}
    if bench.wanted("ssl-call"):
        values, lines = ssl_call_experiment(bench, cert, key)
        extra["ssl_call_pair_ns"] = values
        sections += lines + [""]
    sections += ["## Every measurement", "", *report.rounds_table(measurements)]
    bench.write(sections, measurements, extra)


if __name__ == "__main__":
    main(sys.argv)
