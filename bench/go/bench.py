#!/usr/bin/env python3
"""Go overhead: bare vs ferrotel-probe vs otelhttp (the OpenTelemetry Go SDK).

    bench/go/run.sh [--rounds N] [--duration S] [--baseline-probe BIN] [--only NAME] ...

Scenarios (paired, interleaved rounds; see bench/ferrobench/harness.py):
  go-minimal      net/http ServeMux, GET /users/1 -> small JSON (bench/go/app)
  go-realistic    the same service, GET /orders/1: a call to a backend (another
                  goapp, untraced, on the load CPU), JSON, an html/template
Variants: bare | probe (`ferrotel-probe --language go --pid`) | otel (built
with `-tags otel`: otelhttp on the handler and the client, SDK batch span
processor, OTLP/gRPC) | probe-baseline (another probe build, if given) |
probe-other-core (with --probe-other-core: the probe pinned to the load
CPUs, a diagnostic of what sharing the app's core costs).
With --exchange, also probe-exchange (and probe-baseline-exchange): the probe
with the service graph's node-wide exchange open (a pin directory on the
host's bpffs), as a probe with propagation on runs in a cluster: each span
the pairing holds is published to the node's other probes and looked up
when it leaves unpaired.
With --request-headers, every request also carries the headers a browser
sends (BROWSER_HEADERS): the server span's search for an incoming
traceparent then has a header map to look through, as it has in production.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ferrobench import report, system  # noqa: E402
from ferrobench.cli import Bench, go_build  # noqa: E402
from ferrobench.cli import go_version as cli_go_version  # noqa: E402
from ferrobench.harness import Context, Running, Scenario, Variant  # noqa: E402
from ferrobench.procs import Service, bpffs_dir  # noqa: E402



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


EXCHANGE_OUTCOMES = ("named", "not_found", "unavailable")
EXCHANGE_CALLS = ("write", "read")
exchange_outcomes: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
"""(scenario, variant) -> `ferrotel_probe_service_graph_exchange_total` outcome, summed over rounds."""


class ExchangeCounted(Running):
    """A running variant with the exchange open: its probe's exchange
    counters are kept before it stops, and a probe that never looked up the
    exchange fails the run (its cost would be measured as nothing)."""

    key: tuple[str, str]

    def stop(self) -> None:
        if not self.probe:
            super().stop()
            return
        try:
            text = self.probe.metrics()
            # This measurement's counts: checked on their own, then summed.
            counts: dict[str, float] = {}
            for outcome in EXCHANGE_OUTCOMES:
                counts[outcome] = self.probe._sum(
                    rf'ferrotel_probe_service_graph_exchange_total\{{[^}}]*outcome="{outcome}"[^}}]*\}}', text
                )
            for call in EXCHANGE_CALLS:
                counts[f"map {call}s"] = self.probe._sum(
                    rf'ferrotel_probe_service_graph_exchange_calls_total\{{[^}}]*call="{call}"[^}}]*\}}', text
                )
            for name, n in counts.items():
                exchange_outcomes[self.key][name] += n
            if counts["unavailable"] or counts["named"] + counts["not_found"] == 0:
                raise RuntimeError(
                    f"{self.key[0]}/{self.key[1]}: the probe did not use the service graph's exchange "
                    f"(outcomes {counts}). Probe log:\n{self.probe.service.log_tail()}"
                )
        finally:
            super().stop()


def exchange_table(scenario: Scenario) -> list[str]:
    rows = [(v.name, exchange_outcomes.get((scenario.name, v.name))) for v in scenario.variants]
    rows = [(name, counts) for name, counts in rows if counts is not None]
    if not rows:
        return []
    lines = [
        f"Exchange lookups of `{scenario.name}`'s probes (`ferrotel_probe_service_graph_exchange_total`, spans "
        "that left the pairing unpaired, summed over the rounds, warm-up included; the load generator is "
        "untraced, so every lookup finds nothing), and the system calls on the exchange map "
        "(`ferrotel_probe_service_graph_exchange_calls_total`; a build that does not count them shows 0):",
        "",
        "| Variant | " + " | ".join(f"`{o}`" for o in EXCHANGE_OUTCOMES) + " | map writes | map reads |",
        "|---|" + "---:|" * (len(EXCHANGE_OUTCOMES) + 2),
    ]
    for name, counts in rows:
        cells = [counts.get(o, 0) for o in EXCHANGE_OUTCOMES] + [counts.get(f"map {c}s", 0) for c in EXCHANGE_CALLS]
        lines.append(f"| {name} | " + " | ".join(f"{c:.0f}" for c in cells) + " |")
    return lines


def exchange_config(bench: Bench) -> Path:
    """A probe config that opens the service graph's exchange: a pin
    directory of this run's own on the host's bpffs."""
    pins = bpffs_dir(f"ferrotel-bench-go-{os.getpid()}")
    path = bench.workdir / "probe-exchange.yaml"
    path.write_text(json.dumps({"propagation": {"pinDir": str(pins)}}))
    return path


def scenarios(bench: Bench, apps: dict[str, Path]) -> list[Scenario]:
    out = []
    exchange = exchange_config(bench) if bench.args.exchange else None
    for realistic in (False, True):
        name = f"go-{'realistic' if realistic else 'minimal'}"
        if not bench.wanted(name):
            continue
        spans = 1 + realistic  # the server span, and the backend call's client span
        scenario_name = name

        def variant(
            v: str,
            n: float,
            r: bool = realistic,
            binary: Path | None = None,
            config: Path | None = None,
            scenario_name: str = scenario_name,
            probe_cpus: str | None = None,
        ) -> Variant:
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
                if config is None:
                    running = Running(url=url, app=app, others=others)
                else:
                    running = ExchangeCounted(url=url, app=app, others=others)
                    running.key = (scenario_name, v)
                if v.startswith("probe"):
                    try:
                        running.probe = ctx.probe(
                            "go", ["--pid", str(app.pid)], binary=binary, config=config, cpus=probe_cpus
                        )
                    except Exception:
                        running.stop()
                        raise
                return running

            return Variant(v, start, n)

        variants = [variant("bare", 0), variant("probe", spans), variant("otel", spans)]
        if bench.args.probe_other_core:
            variants.append(variant("probe-other-core", spans, probe_cpus=bench.args.load_cpus))
        if exchange:
            variants.append(variant("probe-exchange", spans, config=exchange))
        if bench.baseline_probe:
            variants.append(variant("probe-baseline", spans, binary=bench.baseline_probe))
            if exchange:
                variants.append(
                    variant("probe-baseline-exchange", spans, binary=bench.baseline_probe, config=exchange)
                )
        headers = BROWSER_HEADERS if bench.args.request_headers else ()
        out.append(
            Scenario(
                name=name,
                description="net/http ServeMux (bench/go/app); "
                + ("GET /orders/1 → a backend call, JSON, an html/template" if realistic else "GET /users/1 → small JSON")
                + (f"; every request with {len(headers)} headers a browser sends" if headers else ""),
                variants=variants,
                path="/orders/1" if realistic else "/users/1",
                headers=headers,
            )
        )
    return out


# What a browser's request carries besides Host (none of them a trace
# context): the header map a server's traceparent search looks through.
BROWSER_HEADERS = (
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language: en-US,en;q=0.5",
    "Accept-Encoding: gzip, deflate, br, zstd",
    "Referer: http://shop.example/catalogue",
    "Cookie: session=4f1c2a9e7b; theme=dark",
    "Upgrade-Insecure-Requests: 1",
    "Sec-Fetch-Dest: document",
    "Sec-Fetch-Mode: navigate",
    "Sec-Fetch-Site: same-origin",
)


def add_arguments(p) -> None:
    p.add_argument(
        "--request-headers",
        action="store_true",
        help="every request carries the headers a browser sends (BROWSER_HEADERS), not only Host",
    )
    p.add_argument(
        "--exchange",
        action="store_true",
        help="also measure the probe with the service graph's node-wide exchange open (needs a mounted bpffs)",
    )


def main(argv: list[str]) -> None:
    bench = Bench.from_args("go", "Go overhead: bare vs ferrotel-probe vs otelhttp", argv, extend=add_arguments)
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
        table = exchange_table(scenario)
        if table:
            sections += [*table, ""]
    auto_agent = HERE / "AUTO_AGENT.md"
    if auto_agent.exists():
        sections += [auto_agent.read_text(), ""]
    sections += ["## Every measurement", "", *report.rounds_table(measurements)]
    bench.write(
        sections,
        measurements,
        {"exchange_outcomes": {f"{k[0]}/{k[1]}": v for k, v in exchange_outcomes.items()}} if exchange_outcomes else None,
    )


if __name__ == "__main__":
    main(sys.argv)
