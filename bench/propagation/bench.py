#!/usr/bin/env python3
"""Propagation: what carrying trace context across services costs per
request, injected into the request or joined on the node, next to the same
services traced without it.

    bench/propagation/run.sh [--rounds N] [--duration S] [--baseline-probe BIN] [--only NAME] ...

Scenarios (paired, interleaved rounds; see bench/ferrobench/harness.py):
  python-chain  two_tier.py (GET /checkout/1 makes GET /users/1 and POST
                /users on its backend, keep-alive `requests` sessions) in
                front of the stdlib backend (stdlib_server.py): both traced
                by one Python probe, both on the app's CPU; 5 spans per
                request (the front's server span, its 2 client spans, the
                backend's 2 server spans)
  go-front      the Go test target's /downstream (two net/http client calls
                per request, one from a spawned goroutine) in front of an
                untraced stdlib backend on the load CPU: the Go probe's
                client side alone; 3 spans per request
Variants: bare | probe (propagation off) | inject (headers written into
every outgoing request) | join (each client span published for a server on
the node) | the same with another probe build (--baseline-probe).

Every process of a variant runs in a cgroup v2 directory of the run's own
(propagation attaches its sockops program per container cgroup); the probe
pins its shared maps on a BPF filesystem directory of the run's own. The
probe's propagation counters are read before it stops: a propagation
variant whose probe carried no context fails the run instead of looking
cheap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ferrobench import report, system  # noqa: E402
from ferrobench.cli import E2E_PYTHON, VENV, Bench, build_e2e_go, go_version  # noqa: E402
from ferrobench.harness import Context, Running, Scenario, Variant  # noqa: E402
from ferrobench.procs import Service, at_cleanup, bpffs_dir  # noqa: E402

MODES = {
    "probe": {"inject": False, "join": False},
    "inject": {"inject": True, "join": False},
    "join": {"inject": False, "join": True},
}
OUTCOME = {"inject": "injected", "join": "published"}
"""The client-side outcome a propagation variant must count."""

outcomes: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
"""(scenario, variant) -> propagation outcome -> requests, summed over rounds."""




def cgroup2_root() -> Path:
    """Where cgroup v2 is mounted whole in this mount namespace."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        if fields[sep + 1] == "cgroup2" and fields[3] == "/":
            return Path(fields[4])
    sys.exit("no cgroup v2 hierarchy is mounted (/proc/self/mountinfo): propagation attaches to cgroup v2 directories")


@dataclass
class Setup:
    cgroup: Path
    configs: dict[str, Path]
    go_server: Path

    @staticmethod
    def create(bench: Bench) -> "Setup":
        cgroup = cgroup2_root() / f"ferrotel-bench-prop-{os.getpid()}"
        cgroup.mkdir()
        # After every process is stopped (procs runs the cleanups last).
        at_cleanup(lambda: cgroup.rmdir())
        pins = bpffs_dir(f"ferrotel-bench-prop-{os.getpid()}")
        configs = {}
        for mode, flags in MODES.items():
            path = bench.workdir / f"probe-{mode}.yaml"
            path.write_text(json.dumps({"propagation": {**flags, "pinDir": str(pins)}}))
            configs[mode] = path
        return Setup(cgroup, configs, build_e2e_go() / "httpserver")

    def service(self, ctx: Context, name: str, argv: list[str], cpus: str) -> Service:
        """`argv` started inside the run's cgroup: the shell moves itself in, then execs."""
        wrapped = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && shift && exec "$@"', str(self.cgroup), "--", *argv]
        return Service(name, wrapped, cpus=cpus, log=ctx.log(name), cwd=E2E_PYTHON, stdout=subprocess.DEVNULL)


class Counted(Running):
    """A running variant whose probe's propagation counters are kept (and
    checked) before it stops."""

    key: tuple[str, str]
    mode: str

    def stop(self) -> None:
        if self.probe:
            try:
                text = self.probe.metrics()
                for outcome in ("injected", "published", "no_context", "push_failed", "not_traced", "not_http1",
                                "head_too_large", "unframed", "app_context"):
                    outcomes[self.key][outcome] += self.probe._sum(
                        rf'ferrotel_probe_propagation_requests_total\{{[^}}]*outcome="{outcome}"[^}}]*\}}', text
                    )
                for origin in ("traceparent", "b3", "joined", "new_trace"):
                    outcomes[self.key][f"server:{origin}"] += self.probe._sum(
                        rf'ferrotel_probe_propagation_server_requests_total\{{[^}}]*origin="{origin}"[^}}]*\}}', text
                    )
                want = OUTCOME.get(self.mode)
                if want and outcomes[self.key][want] == 0:
                    raise RuntimeError(
                        f"{self.key[0]}/{self.key[1]}: the probe counted no `{want}` request; propagation did not "
                        f"run, and its cost would be measured as nothing. Probe log:\n{self.probe.service.log_tail()}"
                    )
            finally:
                super().stop()
        else:
            super().stop()


def start_python_chain(ctx: Context, setup: Setup, variant: str, mode: str | None, binary: Path | None) -> Running:
    backend_port, front_port = system.free_port(), system.free_port()
    backend = setup.service(ctx, f"backend-{variant}", [str(VENV / "python"), "stdlib_server.py", str(backend_port)],
                            ctx.app_cpus)
    others = [backend]
    try:
        system.wait_port(backend_port, alive=backend.alive)
        front = setup.service(ctx, f"front-{variant}", [str(VENV / "python"), "two_tier.py",
                              f"http://127.0.0.1:{backend_port}", str(front_port)], ctx.app_cpus)
        running = Counted(url=f"http://127.0.0.1:{front_port}", app=front, others=others)
        system.wait_port(front_port, alive=front.alive)
        if mode:
            running.probe = ctx.probe("python", ["--pid", str(front.pid), "--pid", str(backend.pid)], attached=2,
                                      binary=binary, config=setup.configs[mode])
        return running
    except Exception:
        for service in others:
            service.stop()
        raise


def start_go_front(ctx: Context, setup: Setup, variant: str, mode: str | None, binary: Path | None) -> Running:
    backend_port, front_port = system.free_port(), system.free_port()
    # Untraced, off the app's CPU: what the Go side pays is what is measured.
    backend = Service(f"backend-{variant}", [str(VENV / "python"), "stdlib_server.py", str(backend_port)],
                      cpus=ctx.load_cpus, log=ctx.log(f"backend-{variant}"), cwd=E2E_PYTHON, stdout=subprocess.DEVNULL)
    others = [backend]
    try:
        system.wait_port(backend_port, alive=backend.alive)
        front = setup.service(ctx, f"go-{variant}", [str(setup.go_server), "-addr", f"127.0.0.1:{front_port}",
                              "-downstream", f"http://127.0.0.1:{backend_port}"], ctx.app_cpus)
        running = Counted(url=f"http://127.0.0.1:{front_port}", app=front, others=others)
        system.wait_port(front_port, alive=front.alive)
        if mode:
            running.probe = ctx.probe("go", ["--pid", str(front.pid)], binary=binary, config=setup.configs[mode])
        return running
    except Exception:
        for service in others:
            service.stop()
        raise


SCENARIOS = {
    "python-chain": (start_python_chain, 5, "/checkout/1",
                     "two_tier.py (GET /checkout/1: GET /users/1 + POST /users on its backend, keep-alive `requests` "
                     "sessions) in front of stdlib_server.py, both traced by one Python probe, both on the app's CPU; "
                     "5 spans per request"),
    "go-front": (start_go_front, 3, "/downstream",
                 "the Go test target's /downstream (two net/http calls per request, one from a spawned goroutine) in "
                 "front of an untraced stdlib backend on the load CPU; 3 spans per request"),
}


def scenarios(bench: Bench, setup: Setup) -> list[Scenario]:
    out = []
    for name, (start, spans, path, description) in SCENARIOS.items():
        if not bench.wanted(name):
            continue

        def variant(v: str, mode: str | None, binary: Path | None = None, s=start, n=name) -> Variant:
            def go(ctx: Context) -> Running:
                running = s(ctx, setup, v, mode, binary)
                running.key, running.mode = (n, v), mode or "bare"
                return running

            return Variant(v, go, spans if mode else 0)

        variants = [variant("bare", None), *(variant(mode, mode) for mode in MODES)]
        if bench.baseline_probe:
            variants += [variant(f"{mode}-baseline", mode, bench.baseline_probe) for mode in MODES]
        out.append(Scenario(name=name, description=description, variants=variants, path=path))
    return out


def outcome_table(scenario: Scenario) -> list[str]:
    columns = ["injected", "published", "no_context", "push_failed", "server:traceparent", "server:joined",
               "server:new_trace"]
    lines = [
        f"Propagation counters of `{scenario.name}`'s probes (requests, summed over the rounds, warm-up included):",
        "",
        "| Variant | " + " | ".join(f"`{c}`" for c in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for variant in scenario.variants:
        counts = outcomes.get((scenario.name, variant.name))
        if counts is None or variant.name == "bare":
            continue
        lines.append(f"| {variant.name} | " + " | ".join(f"{counts.get(c, 0):.0f}" for c in columns) + " |")
    return lines


def main(argv: list[str]) -> None:
    bench = Bench.from_args("propagation", "Propagation: added cost per request of injecting or joining trace context", argv)
    python = subprocess.run([str(VENV / "python"), "-c", "import sys; print(f'Python {sys.version.split()[0]}')"],
                            capture_output=True, text=True, check=True).stdout.strip()
    bench.header["runtime"] = f"{python}, {go_version()}"
    setup = Setup.create(bench)
    chosen = scenarios(bench, setup)
    measurements = bench.runner().run(chosen)
    sections = [
        report.how_to_read(),
        "",
        "The cost of propagation is the `inject` and `join` rows against the `probe` row of the same scenario "
        "(each is also given against `bare`): `inject` adds the sk_msg program's rewrite of every outgoing request "
        "head (a push, a copy back into one segment) and, in Go, two uprobes per request that hand the client span "
        "to the goroutine writing it; `join` adds the same hand-off and a map update per request instead of the "
        "rewrite, and on the Python backend a map lookup per request.",
        "",
    ]
    for scenario in chosen:
        sections += report.scenario_tables(scenario, measurements)
        sections += ["", *outcome_table(scenario), ""]
    sections += ["## Every measurement", "", *report.rounds_table(measurements)]
    bench.write(sections, measurements, {"propagation_outcomes": {f"{k[0]}/{k[1]}": v for k, v in outcomes.items()}})


if __name__ == "__main__":
    main(sys.argv)
