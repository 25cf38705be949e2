#!/usr/bin/env python3
"""Profiling overhead: what CPU profiling costs the profiled app.

    bench/profiling/run.sh [--rounds N] [--duration S] [--only NAME] ...

Experiments (paired rounds, see bench/ferrobench/harness.py):
  cpu-go       e2e/apps/go/cpuburn -for D: work rounds finished in D seconds
  cpu-python   e2e/apps/python/cpu_burn.py --for D (CPython 3.11: its samples
               take the kernel-side Python frame walk)
Variants: bare (no probe) | off (the probe traces the app, profiling off:
the baseline) | 19hz (the default rate) | 99hz | untraced (an untraced app
while a 99 Hz profiler samples an idle twin: the cost the perf events put
on everything else). The probe runs on the app's CPU; every probe variant
starts the work only once the probe has attached to its target (and, with
profiling on, once the profiler sees it), so no variant pays for the attach
inside its measurement.

Scenario (an HTTP service on the shared runner):
  go-burn      cpuburn serving GET /burn (one work round per request, each
               request a span), variants off (baseline) | 19hz | 99hz, spans
               counted at the collector.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ferrobench import bpf, report, system  # noqa: E402
from ferrobench.cli import REPO, Bench, go_build, go_version  # noqa: E402
from ferrobench.harness import Context, Running, Scenario, Variant, paired_rounds  # noqa: E402
from ferrobench.procs import Service  # noqa: E402
from ferrobench.stats import Summary, fmt  # noqa: E402

RATES = {"off": 0, "19hz": 19, "99hz": 99}
PROFILED = "ferrotel_probe_profile_processes"
TICK_PROGRAM = "ft_profile_tick"


def python311() -> Path:
    if os.environ.get("PYTHON"):
        return Path(os.environ["PYTHON"])
    versions = sorted(
        (Path.home() / ".pyenv/versions").glob("3.11.*"),
        key=lambda p: [int(x) for x in p.name.split(".")],
    )
    if not versions:
        sys.exit("bench/profiling needs CPython 3.11 (pyenv install 3.11, or PYTHON=/path/to/python3.11)")
    return versions[-1] / "bin/python3"


def build_cpuburn(workdir: Path) -> Path:
    return go_build(REPO / "e2e/apps/go/cpuburn", workdir / "cpuburn")


def probe_config(ctx: Context, hz: int) -> Path:
    """The probe's config file: profiling on at `hz`, or off (hz 0)."""
    path = ctx.workdir / f"probe-{hz}hz.yaml"
    path.write_text(
        f"profiling: {{enabled: {'true' if hz else 'false'}, frequencyHz: {hz or 19}, exportIntervalSeconds: 5}}\n"
    )
    return path


def start_probe(ctx: Context, language: str, pid: int, hz: int):
    """The probe on `pid`, returned once it traces it (and profiles it, hz > 0)."""
    return ctx.probe(
        language,
        ["--pid", str(pid)],
        config=probe_config(ctx, hz),
        ready={PROFILED: 1} if hz else None,
    )


class CpuApp:
    """A CPU-bound app in its waiting state: it prints READY, burns work
    rounds for the duration once told to start, and prints ROUNDS <n>."""

    def __init__(self, ctx: Context, argv: list[str], name: str):
        self.service = Service(
            name, argv, cpus=ctx.app_cpus, log=ctx.log(name), stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        line = self.service.proc.stdout.readline().decode().strip()
        if line != "READY":
            self.service.stop()
            raise RuntimeError(f"{name} printed {line!r} instead of READY:\n{self.service.log_tail()}")

    @property
    def pid(self) -> int:
        return self.service.pid

    def burn(self) -> float:
        self.service.proc.stdin.write(b"go\n")
        self.service.proc.stdin.flush()
        line = self.service.proc.stdout.readline().decode().strip()
        if not line.startswith("ROUNDS "):
            raise RuntimeError(f"{self.service.name} printed {line!r} instead of ROUNDS <n>:\n{self.service.log_tail()}")
        return float(line.split()[1])

    def stop(self) -> None:
        self.service.stop()


def cpu_experiment(bench: Bench, app: str, cpuburn: Path, python: Path) -> tuple[dict, list[str]]:
    ctx = bench.ctx
    seconds = bench.args.duration
    language = "go" if app == "go" else "python"

    def argv() -> list[str]:
        if app == "go":
            return [str(cpuburn), "-for", f"{seconds:g}s"]
        return [str(python), str(REPO / "e2e/apps/python/cpu_burn.py"), "--for", f"{seconds:g}"]

    # What the 99 Hz runs cost in the kernel and in memory.
    ticks: list[tuple[float, float]] = []  # (ticks per second of the run, ns per tick)
    rss: list[float] = []

    def measure(variant: str) -> float:
        target = CpuApp(ctx, argv(), f"{app}-{variant}")
        twin = None
        probe = None
        try:
            if variant == "untraced":
                twin = CpuApp(ctx, argv(), f"{app}-idle-twin")
                probe = start_probe(ctx, language, twin.pid, 99)
            elif variant != "bare":
                probe = start_probe(ctx, language, target.pid, RATES[variant])
            before = bpf.snapshot(probe.pid) if probe else None
            value = target.burn()
            if variant == "99hz":
                delta = bpf.snapshot(probe.pid) - before
                runs = delta.runs.get(TICK_PROGRAM, 0)
                if runs:
                    ticks.append((runs / seconds, delta.ns[TICK_PROGRAM] / runs))
                rss.append(probe.rss_mib()[0])
            return value
        finally:
            if probe:
                probe.stop()
            target.stop()
            if twin:
                twin.stop()

    variants = {name: (lambda n=name: measure(n)) for name in ("bare", "off", "19hz", "99hz", "untraced")}
    values = paired_rounds(
        bench.args.rounds, variants, log=lambda line: print(line, file=sys.stderr, flush=True), label=f"cpu-{app}"
    )

    def ratio(name: str, base: str) -> Summary | None:
        return Summary.of([v / b for v, b in zip(values[name], values[base])])

    title = (
        "Go (`e2e/apps/go/cpuburn`)" if app == "go" else f"Python 3.11 (`e2e/apps/python/cpu_burn.py`, {python.parent.parent.name})"
    )
    lines = [
        f"### cpu-{app}: {title}, `--language {language}`",
        "",
        f"Work rounds the app finished in {seconds:g} s; each ratio divides by the same round's baseline; "
        f"`mean ±95 % CI (lowest–highest)` over {bench.args.rounds} rounds.",
        "",
        "| Variant | work rounds | × off (tracing only) | × bare |",
        "|---|---:|---:|---:|",
    ]
    for name in variants:
        lines.append(
            f"| {name} | {fmt(Summary.of(values[name]), '.0f')} | "
            f"{fmt(ratio(name, 'off'), '.4f') if name not in ('bare', 'off', 'untraced') else '-'} | "
            f"{fmt(ratio(name, 'bare'), '.4f') if name != 'bare' else '-'} |"
        )
    if ticks:
        per_s = Summary.of([t[0] for t in ticks])
        ns = Summary.of([t[1] for t in ticks])
        lines += [
            "",
            f"99 Hz runs: `{TICK_PROGRAM}` ran {fmt(per_s, '.0f')} times per second (every CPU's clock ticks, "
            f"whatever process runs) at {fmt(ns, '.0f')} ns per run; probe RSS at the end "
            f"{fmt(Summary.of(rss), '.1f')} MiB.",
        ]
    extra = {"values": values, "tick_rate_and_ns": ticks, "rss_mib": rss}
    return extra, lines


def http_scenario(cpuburn: Path) -> Scenario:
    def variant(name: str) -> Variant:
        def start(ctx: Context) -> Running:
            port = system.free_port()
            app = Service(
                f"cpuburn-{name}", [str(cpuburn), "-addr", f"127.0.0.1:{port}"], cpus=ctx.app_cpus,
                log=ctx.log(f"cpuburn-{name}"),
            )
            running = Running(url=f"http://127.0.0.1:{port}", app=app)
            try:
                system.wait_port(port, alive=app.alive)
                running.probe = start_probe(ctx, "go", app.pid, RATES[name])
            except Exception:
                running.stop()
                raise
            return running

        return Variant(name, start, 1)

    return Scenario(
        name="go-burn",
        description="e2e/apps/go/cpuburn, GET /burn (one work round per request, each request a server span), "
        "under the probe with profiling off (baseline), at 19 Hz and at 99 Hz",
        variants=[variant(name) for name in RATES],
        path="/burn",
        connections=4,
        baseline="off",
    )


def main(argv: list[str]) -> None:
    bench = Bench.from_args("profiling", "Profiling overhead: profiling off vs 19 Hz vs 99 Hz", argv, profiles=True)
    python = python311()
    bench.header["runtime"] = go_version()
    cpuburn = build_cpuburn(bench.workdir)
    sections = [
        "The probe runs on the app's CPU (its CPU counts against the app); every probe variant starts "
        "measuring only once the probe has attached to its target (`ferrotel_probe_attached_processes`) and, "
        "with profiling on, once the profiler sees it (`ferrotel_probe_profile_processes`).",
        "",
    ]
    extra = {}
    for app in ("go", "python"):
        if bench.wanted(f"cpu-{app}"):
            values, lines = cpu_experiment(bench, app, cpuburn, python)
            extra[f"cpu_{app}"] = values
            sections += lines + [""]
    measurements = []
    if bench.wanted("go-burn"):
        scenario = http_scenario(cpuburn)
        measurements = bench.runner().run([scenario])
        sections += [report.how_to_read(), "", *report.scenario_tables(scenario, measurements), ""]
        sections += ["## Every measurement", "", *report.rounds_table(measurements)]
    bench.write(sections, measurements, extra)


if __name__ == "__main__":
    main(sys.argv)
