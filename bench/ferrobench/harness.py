"""Paired, interleaved rounds: the one way every benchmark here measures.

A *scenario* is one service under one load (e.g. Flask, minimal handler);
its *variants* are the ways it runs (bare, under the probe, under the
OpenTelemetry SDK, ...). Every round measures every variant of every
scenario once, in an order rotated from round to round, each in a freshly
started process; ratios and differences are taken against the bare run of
the *same round* and only then summarised (mean, 95 % confidence interval
and full range over the rounds). Drift on a shared machine then shows up as spread instead of
silently deciding a ratio of medians.

Per measurement: throughput and latency (wrk), whole-node CPU per request
(/proc/stat: everything on the machine, the primary figure), CPU per
request of the app's core, of the app, the probe, the collector and the
load generator (/proc/<pid>/stat), spans accepted by the collector against
spans expected from the requests sent, and for the probe its ring-buffer
events, its RSS and the kernel time of its eBPF programs (BPF statistics).
The CPU window runs from the start of the load until the spans of that load
have reached the collector, so work an exporter defers past the load (the
SDK's 5 s batch delay, the probe's export interval) is counted.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from . import bpf, system
from .collector import Collector
from .load import wrk
from .probe import Probe
from .procs import Service


@dataclass
class Running:
    """A started variant: the app's process group, the probe if any, and
    whatever else it needs (a backend), stopped together."""

    url: str
    app: Service
    probe: Probe | None = None
    others: list[Service] = field(default_factory=list)

    def stop(self) -> None:
        if self.probe:
            self.probe.stop()
        self.app.stop()
        for other in self.others:
            other.stop()


@dataclass
class Variant:
    name: str
    """Short name in tables (`bare`, `probe`, `otel`...)."""
    start: Callable[["Context"], Running]
    spans_per_request: float = 0.0
    """Spans the collector should receive per request sent."""


@dataclass
class Scenario:
    name: str
    description: str
    variants: list[Variant]
    path: str = "/"
    connections: int = 16
    baseline: str = "bare"
    headers: tuple[str, ...] = ()
    """`Name: value` lines every request of the load carries (besides wrk's Host)."""


@dataclass
class Context:
    """What a variant's `start` gets: where things go and which CPUs to use."""

    workdir: Path
    collector: Collector
    app_cpus: str
    """The app's core; the probe is pinned there too (its CPU counts against the app)."""
    load_cpus: str
    """The load generator's, the collector's and helper services' cores."""
    probe_binary: Path

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}-{time.monotonic_ns()}.log"

    def probe(
        self,
        language: str,
        targets: list[str],
        attached: int = 1,
        binary: Path | None = None,
        config: Path | None = None,
        ready: dict[str, int] | None = None,
        cpus: str | None = None,
    ) -> Probe:
        """A probe on the app's core unless `cpus` says otherwise (only the
        diagnostic variant that takes apart what sharing the core costs does)."""
        return Probe(
            binary or self.probe_binary,
            language=language,
            targets=targets,
            endpoint=self.collector.grpc_url,
            cpus=cpus or self.app_cpus,
            log=self.log("probe"),
            attached=attached,
            config=config,
            ready=ready,
        )


@dataclass
class Measurement:
    scenario: str
    variant: str
    round: int
    position: int
    """Place of this measurement in its round (0 = first)."""
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    window_s: float
    node_cpu_us: float
    """Every CPU of the machine, busy time per request."""
    app_core_cpu_us: float
    app_cpu_us: float
    probe_cpu_us: float | None
    collector_cpu_us: float
    load_cpu_us: float
    spans: int
    spans_expected: int
    events_per_request: float | None
    bpf_ns_per_request: float | None
    bpf_runs_per_request: float | None
    bpf_programs: dict[str, list[float]] | None
    """Program name -> [runs per request, ns per run]."""
    probe_rss_mib: float | None
    probe_hwm_mib: float | None
    load1: float
    others_pct: float
    """Busy time of the node not spent by this measurement's processes (app,
    probe, collector, helpers, load generator), in % of all CPUs: other work
    competing with the measurement. Near 0 on a quiet machine."""


class Runner:
    def __init__(self, ctx: Context, *, duration: float, warmup: float, rounds: int, log=print):
        self.ctx = ctx
        self.duration = duration
        self.warmup = warmup
        self.rounds = rounds
        self.log = log
        self.measurements: list[Measurement] = []

    def run(self, scenarios: list[Scenario]) -> list[Measurement]:
        for rnd in range(1, self.rounds + 1):
            for scenario in scenarios:
                order = _rotated(scenario.variants, rnd - 1)
                for position, variant in enumerate(order):
                    m = self.measure(scenario, variant, rnd, position)
                    self.measurements.append(m)
        return self.measurements

    def measure(self, scenario: Scenario, variant: Variant, rnd: int, position: int) -> Measurement:
        ctx = self.ctx
        running = variant.start(ctx)
        try:
            url = running.url + scenario.path
            warm = wrk(
                url, seconds=self.warmup, connections=scenario.connections, cpus=ctx.load_cpus, headers=scenario.headers
            )
            collector = ctx.collector
            spans_before = collector.settle(
                collector.accepted_spans() + int(warm.requests * variant.spans_per_request)
                if variant.spans_per_request
                else 0,
                patience=7.0 if variant.spans_per_request else 0.0,
            )
            probe = running.probe
            probe_before = probe.counters() if probe else None
            bpf_before = bpf.snapshot(probe.pid) if probe else None
            ticks = _Ticks.read(running, collector)
            cpu = system.CpuTimes.read()
            t0 = time.monotonic()
            result = wrk(
                url, seconds=self.duration, connections=scenario.connections, cpus=ctx.load_cpus, headers=scenario.headers
            )
            bpf_after = bpf.snapshot(probe.pid) if probe else None
            expected = int(result.requests * variant.spans_per_request)
            # Every variant's window ends the same way (spans settled, or
            # half a second without change for one that sends none), so
            # that the idle tail counts alike in every node CPU figure.
            spans = collector.settle(spans_before + expected, patience=7.0 if expected else 0.5) - spans_before
            window = time.monotonic() - t0
            cpu = system.CpuTimes.read() - cpu
            used = _Ticks.read(running, collector) - ticks
            probe_after = probe.counters() if probe else None
            rss, hwm = probe.rss_mib() if probe else (None, None)
        finally:
            running.stop()
        n = max(result.requests, 1)
        per_req = lambda ticks_: ticks_ / system.CLK_TCK * 1e6 / n  # noqa: E731
        app_core = int(ctx.app_cpus.split(",")[0].split("-")[0])
        progs = None
        if bpf_after is not None:
            delta = bpf_after - bpf_before
            progs = {
                name: [runs / n, delta.ns[name] / runs]
                for name, runs in sorted(delta.runs.items())
                if runs > 0
            }
        m = Measurement(
            scenario=scenario.name,
            variant=variant.name,
            round=rnd,
            position=position,
            rps=result.rps,
            p50_ms=result.p50_ms,
            p99_ms=result.p99_ms,
            requests=result.requests,
            errors=result.errors,
            window_s=window,
            node_cpu_us=per_req(cpu.busy),
            app_core_cpu_us=per_req(cpu.per_cpu_busy[app_core]),
            app_cpu_us=per_req(used.app),
            probe_cpu_us=per_req(used.probe) if probe else None,
            collector_cpu_us=per_req(used.collector),
            load_cpu_us=result.cpu_s * 1e6 / n,
            spans=spans,
            spans_expected=expected,
            events_per_request=(probe_after["events"] - probe_before["events"]) / n if probe else None,
            bpf_ns_per_request=(bpf_after - bpf_before).total_ns / n if probe else None,
            bpf_runs_per_request=(bpf_after - bpf_before).total_runs / n if probe else None,
            bpf_programs=progs,
            probe_rss_mib=rss,
            probe_hwm_mib=hwm,
            load1=system.loadavg_1m(),
            others_pct=max(
                0.0,
                (cpu.busy - used.total - result.cpu_s * system.CLK_TCK) / max(cpu.total, 1) * 100,
            ),
        )
        self.log(
            f"  round {rnd} {scenario.name:<18} {variant.name:<14} {m.rps:8.0f} req/s  "
            f"node {m.node_cpu_us:6.0f} µs/req  app {m.app_cpu_us:5.0f}"
            + (f"  probe {m.probe_cpu_us:5.1f}  bpf {m.bpf_ns_per_request / 1000:5.2f} µs"
               f"  events {m.events_per_request:4.2f}" if probe else "")
            + (f"  spans {spans}/{expected}" if variant.spans_per_request else "")
            + f"  others {m.others_pct:4.1f}%"
        )
        return m


@dataclass
class _Ticks:
    app: int
    probe: int
    collector: int
    helpers: int

    @staticmethod
    def read(running: Running, collector: Collector) -> "_Ticks":
        return _Ticks(
            running.app.ticks(),
            running.probe.ticks() if running.probe else 0,
            system.process_ticks(collector.pid),
            sum(s.ticks() for s in running.others),
        )

    @property
    def total(self) -> int:
        return self.app + self.probe + self.collector + self.helpers

    def __sub__(self, other: "_Ticks") -> "_Ticks":
        return _Ticks(
            self.app - other.app,
            self.probe - other.probe,
            self.collector - other.collector,
            self.helpers - other.helpers,
        )


def bystander_variants(start: Callable[[bool, Path | None], Callable[[Context], Running]], baseline_probe: Path | None) -> list[Variant]:
    """The variants of a bystander scenario (an untraced app while the probe
    traces another process): `bare`, `probe-elsewhere` and, with a baseline
    probe, `probe-baseline-elsewhere`. `start(with_probe, binary)` makes a
    variant's start function; the probe and the process it traces belong in
    the `Running` it returns (probe, others), and expect no spans."""
    variants = [Variant("bare", start(False, None)), Variant("probe-elsewhere", start(True, None))]
    if baseline_probe:
        variants.append(Variant("probe-baseline-elsewhere", start(True, baseline_probe)))
    return variants


def _rotated(items: list, k: int) -> list:
    k %= len(items)
    return items[k:] + items[:k]


def paired_rounds(rounds: int, variants: dict[str, Callable[[], float]], log=print, label: str = "") -> dict[str, list[float]]:
    """Measures each variant once per round, order rotated per round; returns
    each variant's value per round (same index = same round)."""
    names = list(variants)
    out: dict[str, list[float]] = {name: [0.0] * rounds for name in names}
    for rnd in range(rounds):
        for name in _rotated(names, rnd):
            out[name][rnd] = variants[name]()
            log(f"  round {rnd + 1} {label:<18} {name:<28} {out[name][rnd]:10.1f}  load {system.loadavg_1m():.2f}")
    return out


def write_json(path: Path, header: dict, measurements: list[Measurement], extra: dict) -> None:
    path.write_text(
        json.dumps(
            {"header": header, "measurements": [asdict(m) for m in measurements], **extra},
            indent=1,
        )
    )
