#!/usr/bin/env python3
"""Go overhead: bare vs ferrotel-probe vs otelhttp (the OpenTelemetry Go SDK).

    bench/go/run.sh [--rounds N] [--duration S] [--baseline-probe BIN] [--only NAME] ...

Scenarios (paired, interleaved rounds; see bench/ferrobench/harness.py):
  go-minimal      net/http ServeMux, GET /users/1 -> small JSON (bench/go/app)
  go-realistic    the same service, GET /orders/1: a call to a backend (another
                  goapp, untraced, on the load CPU), JSON, an html/template
Variants: bare | probe (`ferrotel-probe --language go --pid`) | otel (built
with `-tags otel`: otelhttp on the handler and the client, SDK batch span
processor, OTLP/gRPC) | probe-baseline (another probe build, if given).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ferrobench import report, system  # noqa: E402
from ferrobench.cli import Bench, go_build  # noqa: E402
from ferrobench.cli import go_version as cli_go_version  # noqa: E402
from ferrobench.harness import Context, Running, Scenario, Variant  # noqa: E402
from ferrobench.procs import Service  # noqa: E402



def build(workdir: Path) -> dict[str, Path]:
    """The app, bare and with otelhttp, built from bench/go/app (pinned go.sum)."""
    return {
        variant: go_build(HERE / "app", workdir / f"goapp-{variant}", *tags)
        for variant, tags in (("bare", ()), ("otel", ("-tags", "otel")))
    }


def start_go(ctx: Context, binary: Path, cpus: str, name: str, backend: str | None = None) -> tuple[Service, str]:
    port = system.free_port()
    argv = [str(binary), "-addr", f"127.0.0.1:{port}"]
    if backend:
        argv += ["-backend", backend]
    svc = Service(
        name, argv, cpus=cpus, log=ctx.log(name),
        env={"OTEL_SERVICE_NAME": "bench-go", "OTEL_EXPORTER_OTLP_ENDPOINT": ctx.collector.grpc_url},
    )
    system.wait_port(port, alive=svc.alive)
    return svc, f"http://127.0.0.1:{port}"


def scenarios(bench: Bench, apps: dict[str, Path]) -> list[Scenario]:
    out = []
    for realistic in (False, True):
        name = f"go-{'realistic' if realistic else 'minimal'}"
        if not bench.wanted(name):
            continue
        spans = 1 + realistic  # the server span, and the backend call's client span

        def variant(v: str, n: float, r: bool = realistic, binary: Path | None = None) -> Variant:
            def start(ctx: Context) -> Running:
                others = []
                backend = None
                if r:
                    svc, backend = start_go(ctx, apps["bare"], ctx.load_cpus, "backend")
                    others.append(svc)
                try:
                    app, url = start_go(ctx, apps["otel" if v == "otel" else "bare"], ctx.app_cpus, f"go-{v}", backend)
                except Exception:
                    for o in others:
                        o.stop()
                    raise
                running = Running(url=url, app=app, others=others)
                if v.startswith("probe"):
                    try:
                        running.probe = ctx.probe("go", ["--pid", str(app.pid)], binary=binary)
                    except Exception:
                        running.stop()
                        raise
                return running

            return Variant(v, start, n)

        variants = [variant("bare", 0), variant("probe", spans), variant("otel", spans)]
        if bench.baseline_probe:
            variants.append(variant("probe-baseline", spans, binary=bench.baseline_probe))
        out.append(
            Scenario(
                name=name,
                description="net/http ServeMux (bench/go/app); "
                + ("GET /orders/1 → a backend call, JSON, an html/template" if realistic else "GET /users/1 → small JSON"),
                variants=variants,
                path="/orders/1" if realistic else "/users/1",
            )
        )
    return out


def main(argv: list[str]) -> None:
    bench = Bench.from_args("go", "Go overhead: bare vs ferrotel-probe vs otelhttp", argv)
    go_version = cli_go_version()
    bench.header["runtime"] = go_version
    apps = build(bench.workdir)
    runner = bench.runner()
    todo = scenarios(bench, apps)
    measurements = runner.run(todo)
    sections = [report.how_to_read(), ""]
    for scenario in todo:
        sections += report.scenario_tables(scenario, measurements)
        sections.append("")
    auto_agent = HERE / "AUTO_AGENT.md"
    if auto_agent.exists():
        sections += [auto_agent.read_text(), ""]
    sections += ["## Every measurement", "", *report.rounds_table(measurements)]
    bench.write(sections, measurements)


if __name__ == "__main__":
    main(sys.argv)
