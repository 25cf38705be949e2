#!/usr/bin/env python3
"""Python overhead: bare vs ferrotel-probe vs the OpenTelemetry SDK, the
cost to processes the probe does not trace, and the cost per syscall.

    bench/python/run.sh [--rounds N] [--duration S] [--baseline-probe BIN ...]

Scenarios (each in paired, interleaved rounds; see bench/ferrobench/harness.py):
  flask-minimal       Flask on gunicorn (1 gthread worker, 8 threads), GET /users/1 -> small JSON
  flask-realistic     the same app, GET /orders/1: a backend call, JSON, a Jinja2 template
  fastapi-minimal     FastAPI on uvicorn, GET /users/1
  fastapi-realistic   the same app, GET /orders/1 (sync endpoint, in FastAPI's thread pool)
  bystander           an untraced stdlib server while the probe traces another process
Variants: bare | probe (`ferrotel-probe --language python --open-port`) |
otel (`opentelemetry-instrument`, OTLP/HTTP) | probe-baseline (another probe
build, if given) | probe-other-core (with --probe-other-core: the probe
pinned to the load CPUs, a diagnostic of what sharing the app's core costs).

Experiments (paired rounds too): the cost per syscall of a process, bare,
with do-nothing programs on the raw syscall tracepoints (the floor any
syscall tracer imposes), with the probe tracing another process, and
claimed by the probe.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ferrobench import report, system  # noqa: E402
from ferrobench.bpf import AttachedObject  # noqa: E402
from ferrobench.cli import REPO, VENV, Bench  # noqa: E402
from ferrobench.harness import Context, Running, Scenario, Variant, bystander_variants, paired_rounds  # noqa: E402
from ferrobench.procs import Service  # noqa: E402
from ferrobench.stats import Summary, fmt  # noqa: E402

APP_DIR = HERE / "app"
E2E_APPS = REPO / "e2e/apps/python"


def backend(ctx: Context) -> tuple[Service, str]:
    """The realistic handler's backend: the stdlib test server, on the load CPUs, untraced."""
    port = system.free_port()
    svc = Service(
        "backend", [str(VENV / "python"), "stdlib_server.py", str(port)], cpus=ctx.load_cpus,
        log=ctx.log("backend"), cwd=E2E_APPS, stdout=subprocess.DEVNULL,
    )
    system.wait_port(port, alive=svc.alive)
    return svc, f"http://127.0.0.1:{port}"


def server_argv(kind: str, port: int) -> list[str]:
    if kind == "flask":
        return [str(VENV / "gunicorn"), "-k", "gthread", "-w", "1", "--threads", "8", "-b", f"127.0.0.1:{port}", "bench_flask:app"]
    return [str(VENV / "uvicorn"), "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "bench_fastapi:app"]


def start_app(
    ctx: Context,
    kind: str,
    variant: str,
    realistic: bool,
    probe_binary: Path | None = None,
    probe_cpus: str | None = None,
) -> Running:
    others = []
    env = {}
    if realistic:
        svc, url = backend(ctx)
        others.append(svc)
        env["BENCH_BACKEND"] = url
    port = system.free_port()
    argv = server_argv(kind, port)
    if variant == "otel":
        argv = [str(VENV / "opentelemetry-instrument"), *argv]
        env.update(
            OTEL_SERVICE_NAME=f"bench-{kind}",
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_METRICS_EXPORTER="otlp",
            OTEL_LOGS_EXPORTER="none",
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_EXPORTER_OTLP_ENDPOINT=ctx.collector.http_url,
        )
    app = Service(f"{kind}-{variant}", argv, cpus=ctx.app_cpus, log=ctx.log(f"{kind}-{variant}"), env=env, cwd=APP_DIR)
    running = Running(url=f"http://127.0.0.1:{port}", app=app, others=others)
    try:
        system.wait_port(port, alive=app.alive)
        if variant.startswith("probe"):
            # gunicorn: the master and its worker both hold the listening socket.
            running.probe = ctx.probe(
                "python",
                ["--open-port", str(port)],
                attached=2 if kind == "flask" else 1,
                binary=probe_binary,
                cpus=probe_cpus,
            )
    except Exception:
        running.stop()
        raise
    return running


def app_scenarios(bench: Bench) -> list[Scenario]:
    scenarios = []
    for kind in ("flask", "fastapi"):
        for realistic in (False, True):
            name = f"{kind}-{'realistic' if realistic else 'minimal'}"
            if not bench.wanted(name):
                continue
            # Spans per request: the server span, plus the backend call's
            # client span in the realistic handler. The SDK's ASGI middleware
            # adds two internal spans per response (`http send`).
            probe_spans = 1 + realistic
            otel_spans = probe_spans + (2 if kind == "fastapi" else 0)

            def variant(v, spans, k=kind, r=realistic, binary=None, probe_cpus=None):
                return Variant(v, lambda ctx: start_app(ctx, k, v, r, binary, probe_cpus), spans)

            variants = [variant("bare", 0), variant("probe", probe_spans), variant("otel", otel_spans)]
            if bench.args.probe_other_core:
                variants.append(variant("probe-other-core", probe_spans, probe_cpus=bench.args.load_cpus))
            if bench.baseline_probe:
                variants.append(variant("probe-baseline", probe_spans, binary=bench.baseline_probe))
            server = "gunicorn, 1 gthread worker, 8 threads" if kind == "flask" else "uvicorn, 1 worker"
            what = "a backend call, JSON, a Jinja2 template (app/work.py)" if realistic else "small JSON"
            scenarios.append(
                Scenario(
                    name=name,
                    description=f"{'Flask' if kind == 'flask' else 'FastAPI'} on {server}; "
                    f"GET {'/orders/1' if realistic else '/users/1'} → {what}",
                    variants=variants,
                    path="/orders/1" if realistic else "/users/1",
                )
            )
    return scenarios


def bystander_scenario(bench: Bench) -> Scenario:
    """An untraced stdlib server under load while the probe traces an idle Flask app."""

    def start(with_probe: bool, binary: Path | None = None):
        def go(ctx: Context) -> Running:
            port = system.free_port()
            app = Service(
                "bystander", [str(VENV / "python"), "stdlib_server.py", str(port)], cpus=ctx.app_cpus,
                log=ctx.log("bystander"), cwd=E2E_APPS, stdout=subprocess.DEVNULL,
            )
            running = Running(url=f"http://127.0.0.1:{port}", app=app)
            try:
                system.wait_port(port, alive=app.alive)
                if with_probe:
                    tport = system.free_port()
                    traced = Service("traced", server_argv("flask", tport), cpus=ctx.load_cpus,
                                     log=ctx.log("traced"), cwd=APP_DIR)
                    running.others.append(traced)
                    system.wait_port(tport, alive=traced.alive)
                    running.probe = ctx.probe("python", ["--open-port", str(tport)], attached=2, binary=binary)
            except Exception:
                running.stop()
                raise
            return running

        return go

    variants = bystander_variants(start, bench.baseline_probe)
    return Scenario(
        name="bystander",
        description="stdlib http.server, NOT traced, GET /users/1, while the probe traces an idle Flask app "
        "(the BPF figures are what the untraced server's syscalls cost in the probe's programs)",
        variants=variants,
        path="/users/1",
    )


# ----------------------------------------------------------- syscall costs


def syscall_experiment(bench: Bench, mode: str) -> tuple[dict[str, list[float]], list[str]]:
    ctx = bench.ctx
    loop = ctx.workdir / "syscall_loop"
    if not loop.exists():
        subprocess.run(["clang-19", "-O2", "-o", str(loop), str(HERE / "syscall_loop.c")], check=True)
    windows = 16  # 4 s

    def measure(setup) -> float:
        proc = subprocess.Popen(
            ["taskset", "-c", ctx.app_cpus, str(loop), mode, str(windows)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        try:
            pid = int(proc.stdout.readline().split()[1])
            teardown = setup(pid)
            try:
                proc.stdin.write("go\n")
                proc.stdin.flush()
                values = [float(line) for line in proc.stdout]
            finally:
                teardown()
        finally:
            proc.kill()
            proc.wait()
        return statistics.median(values)

    def nothing(_pid):
        return lambda: None

    def floor(defines):
        def setup(_pid):
            obj = AttachedObject(HERE / "floor.bpf.c", HERE / "attach_object.c", ctx.workdir, defines)
            return obj.close

        return setup

    def probe_on(target: str, binary=None):
        def setup(pid):
            idle = None
            if target == "elsewhere":
                # An idle process to claim: the probe is attached, this loop is not claimed.
                idle = subprocess.Popen(["sleep", "600"])
                targets = ["--pid", str(idle.pid)]
            else:
                targets = ["--pid", str(pid)]
            probe = ctx.probe("python", targets, attached=1, binary=binary)

            def teardown():
                probe.stop()
                if idle:
                    idle.kill()
                    idle.wait()

            return teardown

        return setup

    variants = {
        "bare": lambda: measure(nothing),
        "floor: empty program on sys_exit": lambda: measure(floor(())),
        "floor: empty programs on sys_enter + sys_exit": lambda: measure(floor(("FLOOR_ENTER",))),
        "probe tracing another process": lambda: measure(probe_on("elsewhere")),
        "claimed by the probe": lambda: measure(probe_on("self")),
    }
    if bench.baseline_probe:
        variants["baseline probe tracing another process"] = lambda: measure(
            probe_on("elsewhere", bench.baseline_probe)
        )
        variants["claimed by the baseline probe"] = lambda: measure(
            probe_on("self", bench.baseline_probe)
        )
    values = paired_rounds(bench.args.rounds, variants, log=lambda l: print(l, file=sys.stderr, flush=True), label=f"syscall {mode}")
    what = (
        "a 64-byte `write` on one end of a loopback TCP pair and the `read` of it on the other, in one process"
        if mode == "rw"
        else "`getppid()`, a syscall no program of the probe looks at"
    )
    lines = [
        f"#### Cost per syscall: {what} (`bench/python/syscall_loop.c {mode}`)",
        "",
        f"ns per syscall, median of 16 windows of 0.25 s per measurement; the added cost is paired with the bare measurement of the same round; `mean ±95 % CI (lowest–highest)` over {bench.args.rounds} rounds.",
        "",
        "| Variant | ns per syscall | added ns per syscall vs bare |",
        "|---|---:|---:|",
    ]
    for name, vals in values.items():
        added = Summary.of([v - b for v, b in zip(vals, values["bare"])])
        lines.append(f"| {name} | {fmt(Summary.of(vals), '.0f')} | {fmt(added, '.0f') if name != 'bare' else '-'} |")
    return values, lines


def main(argv: list[str]) -> None:
    bench = Bench.from_args("python", "Python overhead: bare vs ferrotel-probe vs OpenTelemetry SDK", argv)
    bench.header["runtime"] = subprocess.run(
        [str(VENV / "python"), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    runner = bench.runner()
    scenarios = app_scenarios(bench)
    if bench.wanted("bystander"):
        scenarios.append(bystander_scenario(bench))
    measurements = runner.run(scenarios)
    sections = [report.how_to_read(), ""]
    for scenario in scenarios:
        sections += report.scenario_tables(scenario, measurements)
        sections.append("")
    extra = {}
    for mode in ("rw", "nop"):
        if bench.wanted(f"syscall-{mode}"):
            values, lines = syscall_experiment(bench, mode)
            extra[f"syscall_{mode}"] = values
            sections += lines + [""]
    sections += ["## Every measurement", "", *report.rounds_table(measurements)]
    bench.write(sections, measurements, extra)


if __name__ == "__main__":
    main(sys.argv)
