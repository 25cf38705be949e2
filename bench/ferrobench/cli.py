"""The command line, set-up and output every benchmark shares.

    bench = Bench.from_args("python", "Python overhead: ...", argv)
    runner = bench.runner()
    runner.run(scenarios)
    bench.write(sections)    # bench/results/<name>.md and .json

Set-up: root check, the probe binary copied aside (a rebuild during the
run cannot swap it), BPF statistics on (restored at the end), one collector
for the whole run, the header (machine, command, probe build, load average
at start and end).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import bpf, procs, system
from .collector import Collector
from .harness import Context, Measurement, Runner, write_json

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("FERROTEL_CACHE", Path.home() / ".cache/ferrotel"))
BIN = Path(os.environ.get("FERROTEL_BIN", CACHE / "bin"))
VENV = CACHE / "venv/bin"
GO = os.environ.get("GO") or shutil.which("go") or "/usr/local/go/bin/go"
E2E_PYTHON = REPO / "e2e/apps/python"
"""The e2e test apps (Python), which several benchmarks serve."""
QUIET_LOAD = 1.5
"""A 1-minute load average at or above this before a run makes its figures provisional."""


DEFAULT_PROBE = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release/ferrotel-probe"
"""The probe every benchmark measures unless told otherwise: the release build of this tree."""


def add_probe_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--probe",
        type=Path,
        default=DEFAULT_PROBE,
        help="ferrotel-probe binary (default: the release build of this tree)",
    )


def go_build(src: Path, out: Path, *args: str) -> Path:
    """`go build` of the package in `src` to `out` with the local toolchain, the
    module's pinned go.sum and no cgo; `args` go before the package (e.g. tags)."""
    env = dict(os.environ, GOTOOLCHAIN="local", GOFLAGS="-mod=readonly -buildvcs=false", CGO_ENABLED="0")
    subprocess.run([GO, "build", *args, "-o", str(out), "."], cwd=src, env=env, check=True)
    return out


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--rounds", type=int, default=5, help="paired rounds (default 5)")
    p.add_argument("--duration", type=float, default=10, help="seconds of load per measurement (default 10)")
    p.add_argument("--warmup", type=float, default=2, help="seconds of warm-up load before each measurement")
    p.add_argument("--out", type=Path, help="results file (.md; a .json with every measurement is written next to it)")
    add_probe_argument(p)
    p.add_argument(
        "--baseline-probe",
        type=Path,
        help="a second probe binary measured as its own variant in the same rounds (before/after comparisons)",
    )
    p.add_argument(
        "--probe-other-core",
        action="store_true",
        help="also measure the probe pinned to the load CPUs (variant probe-other-core): a diagnostic that "
        "separates what the app pays for sharing its core with the probe from the traps and eBPF programs "
        "it pays in any case; never the headline figure",
    )
    p.add_argument("--app-cpus", default="0", help="CPU of the app and the probe (default 0)")
    p.add_argument("--load-cpus", default="1", help="CPU of the load generator, collector and helpers (default 1)")
    p.add_argument(
        "--workdir",
        type=Path,
        help="the run's working directory (the apps it builds, the logs), kept after the run; "
        "default: a temporary one, deleted (a profiler reading the apps' symbols afterwards needs them kept)",
    )
    p.add_argument("--only", action="append", default=[], help="run only scenarios/experiments with this name (repeatable)")
    return p


def go_version() -> str:
    return subprocess.run([GO, "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout.strip()


def build_e2e_go() -> Path:
    """The e2e Go targets' directory, built once per Go version
    (e2e/apps/go/build.sh skips an unchanged build)."""
    out = CACHE / "go-apps" / go_version()
    subprocess.run([str(REPO / "e2e/apps/go/build.sh"), GO, str(out)], check=True, stdout=sys.stderr)
    return out


class Bench:
    def __init__(self, name: str, title: str, args: argparse.Namespace, argv: list[str], profiles: bool = False):
        if os.geteuid() != 0:
            sys.exit(f"bench/{name} needs root: the probe loads eBPF programs and BPF statistics are a sysctl")
        for tool in (BIN / "otelcol", shutil.which("wrk"), shutil.which("bpftool")):
            if not tool or not Path(tool).exists():
                sys.exit(f"missing {tool or 'wrk/bpftool'}: run `make tools` (wrk and bpftool come from Debian packages)")
        self.name = name
        self.title = title
        self.args = args
        if getattr(args, "workdir", None):
            args.workdir.mkdir(parents=True, exist_ok=True)
            self.workdir = args.workdir.resolve()
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"ferrotel-bench-{name}."))
            procs.at_cleanup(lambda: shutil.rmtree(self.workdir, ignore_errors=True))
        self.out = args.out or REPO / "bench/results" / f"{name}.md"
        probe = self._copy(args.probe, "ferrotel-probe", build=True)
        baseline = self._copy(args.baseline_probe, "ferrotel-probe-baseline") if args.baseline_probe else None
        self.baseline_probe = baseline
        bpf.enable_stats()
        self.collector = Collector(BIN / "otelcol", self.workdir, args.load_cpus, profiles=profiles)
        self.ctx = Context(
            workdir=self.workdir,
            collector=self.collector,
            app_cpus=args.app_cpus,
            load_cpus=args.load_cpus,
            probe_binary=probe,
        )
        self.header = {
            "title": title,
            # As run from the project's root (the wrapper takes the lock), not
            # the path this machine keeps it at.
            "command": " ".join([f"bench/{name}/run.sh", *(shlex.quote(a) for a in argv[1:])]),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": system.machine(),
            "probe_build": system.git_describe(str(REPO)) if args.probe == parser("").get_default("probe") else str(args.probe),
            "baseline_build": str(args.baseline_probe) if baseline else None,
            "load_start": system.loadavg(),
            "rounds": args.rounds,
            "duration": args.duration,
            "warmup": args.warmup,
            "app_cpus": args.app_cpus,
            "load_cpus": args.load_cpus,
        }
        print(f"{title}: {args.rounds} rounds, {args.duration:g} s per measurement, load {self.header['load_start']}", file=sys.stderr)

    @staticmethod
    def from_args(name: str, title: str, argv: list[str], extend=None, profiles: bool = False) -> "Bench":
        """`profiles`: the collector also accepts OTLP profiles."""
        p = parser(title)
        if extend:
            extend(p)
        args = p.parse_args(argv[1:])
        return Bench(name, title, args, argv, profiles)

    def _copy(self, path: Path, name: str, build: bool = False) -> Path:
        if not path.exists():
            if not build:
                sys.exit(f"{path} does not exist")
            print("building the release probe (cargo build --release -p ferrotel-probe)", file=sys.stderr)
            subprocess.run(
                ["cargo", "build", "-q", "--release", "-p", "ferrotel-probe", "--bin", "ferrotel-probe"],
                cwd=REPO,
                check=True,
            )
        dest = self.workdir / name
        shutil.copy2(path, dest)
        return dest

    def wanted(self, name: str) -> bool:
        return not self.args.only or name in self.args.only

    def runner(self) -> Runner:
        return Runner(
            self.ctx,
            duration=self.args.duration,
            warmup=self.args.warmup,
            rounds=self.args.rounds,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )

    def write(self, sections: list[str], measurements: list[Measurement], extra: dict | None = None) -> None:
        from .report import header_lines

        self.header["load_end"] = system.loadavg()
        # Quiet: a load average under QUIET_LOAD before the run started (once
        # it runs, the benchmark itself keeps the CPUs busy), and other work
        # took under 3 % of the machine in most measurements.
        others = sorted(m.others_pct for m in measurements)
        self.header["others_pct_median"] = others[len(others) // 2] if others else None
        self.header["quiet"] = (
            float(self.header["load_start"].split()[0]) < QUIET_LOAD
            and (not others or others[len(others) // 2] < 3.0)
        )
        text = "\n".join([f"# {self.title}", "", *header_lines(self.header), "", *sections, ""])
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(text)
        write_json(self.out.with_suffix(".json"), self.header, measurements, extra or {})
        print(f"Wrote {self.out} and {self.out.with_suffix('.json')}", file=sys.stderr)
