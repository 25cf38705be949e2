#!/usr/bin/env python3
"""Reliability soak: Go and Python targets traced together for a long run
at the highest rate the machine holds, with loss accounted for from the
outside.

    bench/reliability/run.sh [--minutes 10] [--fault collector-down] ...

Targets: the Go benchmark service (bench/go/app, net/http) and the Flask
benchmark app on gunicorn (bench/python/app, one gthread worker, 8
threads), each under its own probe as a node runs them (one probe per
language, `--language go --pid`, `--language python --open-port`), both
exporting OTLP/gRPC to the real collector, which writes every span to a
file. Load: one closed-loop wrk per target whose every request carries a
sequence number (`GET /users/<target>-<n>`, ferrobench/seq.py).

Reported per target: requests sent, answered, server spans received,
duplicates, missing, and the probe's drop counters (missing must not exceed
them: 0 uncounted loss); the probes' and the collector's RSS over time with
its least-squares slope; load averages; error and warning lines in the
probes' logs.

`--fault collector-down`: the collector is stopped for `--outage` seconds
(default 60) in the middle of the load and started again on the same
port: the probes' memory must stay bounded, every span lost in the outage
must be counted as dropped, and spans must flow again afterwards.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ferrobench import procs, seq, system  # noqa: E402
from ferrobench.stats import slope_mb_per_min  # noqa: E402
from ferrobench.cli import BIN, QUIET_LOAD, REPO, VENV, add_probe_argument, go_build  # noqa: E402
from ferrobench.collector import Collector  # noqa: E402
from ferrobench.probe import Probe  # noqa: E402
from ferrobench.procs import Service  # noqa: E402

TARGETS = ("go", "py")
LOG_PROBLEM = re.compile(r"\b(ERROR|WARN)\b")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10, help="minutes of load (default 10)")
    p.add_argument("--fault", choices=["none", "collector-down"], default="none")
    p.add_argument("--outage", type=float, default=60, help="seconds the collector is down with --fault collector-down")
    p.add_argument("--go-connections", type=int, default=32, help="wrk connections to the Go target (default 32)")
    p.add_argument("--py-connections", type=int, default=16, help="wrk connections to the Python target (default 16)")
    p.add_argument("--app-cpus", default="0", help="CPUs of the targets and the probes (default 0)")
    p.add_argument("--load-cpus", default="1", help="CPUs of the load generators and the collector (default 1)")
    p.add_argument("--sample-seconds", type=float, default=5, help="RSS and load sampling interval (default 5)")
    p.add_argument("--out", type=Path, help="results file (.md; a .json is written next to it)")
    add_probe_argument(p)
    return p.parse_args(argv[1:])


def build_go_app(workdir: Path) -> Path:
    return go_build(REPO / "bench/go/app", workdir / "goapp")


def probe_config(workdir: Path) -> Path:
    # One route for the sequence-stamped paths: every request is its own
    # url.path, and without a pattern the route cap would fold them into /**.
    path = workdir / "probe.yaml"
    path.write_text('routes: {patterns: ["/users/{id}"]}\n')
    return path


class Sampler(threading.Thread):
    """RSS of the probes and the collector, the load average and the spans the
    collector accepted, every `interval` seconds."""

    def __init__(self, interval: float, probes: dict[str, Probe], collector_ref: list[Collector]):
        super().__init__(daemon=True)
        self.interval = interval
        self.probes = probes
        self.collector_ref = collector_ref
        self.rows: list[dict] = []
        self.stop_event = threading.Event()
        self.start_time = time.monotonic()
        self.accepted_before = 0

    def sample(self) -> None:
        collector = self.collector_ref[0]
        row = {"t": round(time.monotonic() - self.start_time, 1), "load": system.loadavg()}
        for name, probe in self.probes.items():
            row[f"probe_{name}_rss_mib"] = round(probe.rss_mib()[0], 1)
        alive = collector.service.alive()
        row["collector_rss_mib"] = round(system.rss_mib(collector.pid)[0], 1) if alive else None
        try:
            row["collector_accepted"] = self.accepted_before + collector.accepted_spans() if alive else None
        except OSError:
            row["collector_accepted"] = None
        self.rows.append(row)

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.sample()


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bench/reliability needs root: the probes load eBPF programs")
    for tool in (BIN / "otelcol", shutil.which("wrk"), VENV / "gunicorn"):
        if not tool or not Path(tool).exists():
            sys.exit(f"missing {tool or 'wrk'}: run `make tools`")
    if not args.probe.exists():
        print("building the release probe (cargo build --release -p ferrotel-probe)", file=sys.stderr)
        subprocess.run(["cargo", "build", "-q", "--release", "-p", "ferrotel-probe", "--bin", "ferrotel-probe"], cwd=REPO, check=True)
    workdir = Path(tempfile.mkdtemp(prefix="ferrotel-soak."))
    procs.at_cleanup(lambda: shutil.rmtree(workdir, ignore_errors=True))
    probe_bin = workdir / "ferrotel-probe"
    shutil.copy2(args.probe, probe_bin)
    seconds = args.minutes * 60
    header = {
        "title": "Reliability soak: Go and Python targets under load, loss accounted from the outside",
        "command": " ".join(["bench/reliability/run.sh", *(shlex.quote(a) for a in argv[1:])]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": system.git_describe(str(REPO)),
        "machine": system.machine(),
        "load_start": system.loadavg(),
        "minutes": args.minutes,
        "fault": args.fault,
        "app_cpus": args.app_cpus,
        "load_cpus": args.load_cpus,
        "connections": {"go": args.go_connections, "py": args.py_connections},
    }
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    log(f"soak: {args.minutes:g} min, fault {args.fault}, load {header['load_start']}")

    trace_files = [workdir / "traces-0.json"]
    collector = Collector(BIN / "otelcol", workdir, args.load_cpus, traces_file=trace_files[0], name="otelcol-0")
    collector_ref = [collector]

    go_bin = build_go_app(workdir)
    go_port = system.free_port()
    go_app = Service("go-target", [str(go_bin), "-addr", f"127.0.0.1:{go_port}"], cpus=args.app_cpus, log=workdir / "go-target.log")
    system.wait_port(go_port, alive=go_app.alive)
    py_port = system.free_port()
    py_app = Service(
        "py-target",
        [str(VENV / "gunicorn"), "-k", "gthread", "-w", "1", "--threads", "8", "-b", f"127.0.0.1:{py_port}", "bench_flask:app"],
        cpus=args.app_cpus,
        log=workdir / "py-target.log",
        cwd=REPO / "bench/python/app",
    )
    system.wait_port(py_port, alive=py_app.alive)
    config = probe_config(workdir)
    probe_logs = {"go": workdir / "probe-go.log", "py": workdir / "probe-py.log"}
    probes = {
        "go": Probe(probe_bin, language="go", targets=["--pid", str(go_app.pid)], endpoint=collector.grpc_url,
                    cpus=args.app_cpus, log=probe_logs["go"], config=config),
        # gunicorn: the master and its worker both hold the listening socket.
        "py": Probe(probe_bin, language="python", targets=["--open-port", str(py_port)], endpoint=collector.grpc_url,
                    cpus=args.app_cpus, log=probe_logs["py"], attached=2, config=config),
    }
    urls = {"go": f"http://127.0.0.1:{go_port}", "py": f"http://127.0.0.1:{py_port}"}
    connections = {"go": args.go_connections, "py": args.py_connections}

    sampler = Sampler(args.sample_seconds, probes, collector_ref)
    sampler.sample()
    sampler.start()
    loads: dict[str, seq.SeqLoad] = {}
    errors: list[BaseException] = []

    def drive(target: str) -> None:
        try:
            loads[target] = seq.run(target, urls[target], seconds=seconds, connections=connections[target],
                                    cpus=args.load_cpus, workdir=workdir)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    drivers = [threading.Thread(target=drive, args=(t,)) for t in TARGETS]
    load_start = sampler.start_time = time.monotonic()
    for d in drivers:
        d.start()
    fault: dict = {}
    if args.fault == "collector-down":
        # The outage in the middle of the load, so that the probes run
        # under load before, during and after it.
        time.sleep(max(0.0, (seconds - args.outage) / 2))
        fault["stopped_at_s"] = round(time.monotonic() - load_start, 1)
        fault["counters_before"] = {t: p.loss_counters() for t, p in probes.items()}
        sampler.accepted_before += collector.accepted_spans()
        fault["collector_lost_before"] = collector.lost_spans()
        log(f"fault: stopping the collector at {fault['stopped_at_s']} s for {args.outage:g} s")
        collector.stop()
        time.sleep(args.outage)
        trace_files.append(workdir / "traces-1.json")
        collector = Collector(BIN / "otelcol", workdir, args.load_cpus, traces_file=trace_files[1],
                              grpc_port=collector.grpc, name="otelcol-1")
        collector_ref[0] = collector
        fault["restarted_at_s"] = round(time.monotonic() - load_start, 1)
        log(f"fault: collector started again at {fault['restarted_at_s']} s")
    for d in drivers:
        d.join()
    load_seconds = time.monotonic() - load_start
    if errors:
        raise errors[0]
    log(f"load done after {load_seconds:.0f} s; waiting for the last spans")
    sent = sum(l.issued for l in loads.values())
    # The spans of the load, or until they stop coming (the probe's batch
    # delay is seconds, and a queue emptied after an outage takes longer).
    collector.settle(sent - sampler.accepted_before, quiet=3, patience=15, limit=120)
    sampler.stop_event.set()
    sampler.join()
    sampler.sample()
    counters = {t: p.loss_counters() for t, p in probes.items()}
    exported = {t: p._sum('ferrotel_probe_exported_items_total\\{[^}]*signal="traces"[^}]*\\}') for t, p in probes.items()}
    collector_lost = collector.lost_spans() + fault.get("collector_lost_before", 0)
    for p in probes.values():
        p.stop()
    collector.stop()
    received = seq.read_spans(trace_files)
    accounts = {}
    for t in TARGETS:
        counted = dict(counters[t])
        counted["collector_lost_spans"] = collector_lost
        accounts[t] = seq.account(loads[t], received, counted)
    if args.fault == "collector-down":
        fault["export_dropped_during"] = {
            t: counters[t]["export_dropped_spans"] - fault["counters_before"][t]["export_dropped_spans"] for t in TARGETS
        }
        # Spans flowed again: the collector that came back received spans.
        fault["spans_after_restart"] = sum(line.count(b'"spanId"') for line in _lines(trace_files[1]))
        # Memory bounded: the probes' RSS during the outage against before it.
        for t in TARGETS:
            key = f"probe_{t}_rss_mib"
            before = [r[key] for r in sampler.rows if r["t"] < fault["stopped_at_s"] and r.get(key)]
            during = [r[key] for r in sampler.rows
                      if fault["stopped_at_s"] <= r["t"] <= fault["restarted_at_s"] and r.get(key)]
            fault[f"{t}_rss_max_before_mib"] = max(before) if before else None
            fault[f"{t}_rss_max_during_mib"] = max(during) if during else None
    problems = {t: _problems(probe_logs[t]) for t in TARGETS}
    header["load_end"] = system.loadavg()
    header["load_seconds"] = round(load_seconds, 1)
    write(args, header, loads, accounts, sampler.rows, received.other_spans, exported, problems, fault)


def _lines(path: Path):
    if path.exists():
        with open(path, "rb") as f:
            yield from (line for line in f if line.strip())


def _problems(path: Path) -> dict:
    counts = {"ERROR": 0, "WARN": 0}
    distinct: dict[str, int] = {}
    for line in path.read_text(errors="replace").splitlines():
        line = ANSI.sub("", line)
        m = LOG_PROBLEM.search(line)
        if not m:
            continue
        counts[m.group(1)] += 1
        # The message without its timestamp, so repeats group together.
        key = line[m.start():][:200]
        distinct[key] = distinct.get(key, 0) + 1
    return {"counts": counts, "distinct": sorted(distinct.items(), key=lambda kv: -kv[1])[:10]}


def write(args, header, loads, accounts, rows, other_spans, exported, problems, fault) -> None:
    out = args.out or REPO / "bench/results" / ("reliability.md" if args.fault == "none" else f"reliability-{args.fault}.md")
    m = header["machine"]
    secs = header["load_seconds"]
    total_rate = sum(l.answered for l in loads.values()) / secs
    quiet = float(header["load_start"].split()[0]) < QUIET_LOAD
    series = {
        "probe_go": [(r["t"], r["probe_go_rss_mib"]) for r in rows if r.get("probe_go_rss_mib")],
        "probe_py": [(r["t"], r["probe_py_rss_mib"]) for r in rows if r.get("probe_py_rss_mib")],
        "collector": [(r["t"], r["collector_rss_mib"]) for r in rows if r.get("collector_rss_mib")],
    }
    slopes = {}
    for name, samples in series.items():
        half = [s for s in samples if s[0] >= samples[-1][0] / 2] if samples else []
        slopes[name] = {
            "whole_run": slope_mb_per_min(samples),
            "second_half": slope_mb_per_min(half),
            "first_mib": samples[0][1] if samples else None,
            "last_mib": samples[-1][1] if samples else None,
            "max_mib": max(v for _, v in samples) if samples else None,
        }
    lines = [
        f"# {header['title']}",
        "",
        f"Generated by `{header['command']}` on {header['date']} (commit `{header['commit']}`).",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory']}, Linux {m['kernel']}.",
        f"Load average (1/5/15 min) at the start: {header['load_start']}; at the end: {header['load_end']}"
        + ("." if quiet else " — **the machine was shared with other work (load average at the start ≥ 1.5): "
                             "the rate is what it held under that load**."),
        f"CPUs: targets and probes on {header['app_cpus']}; load generators and collector on {header['load_cpus']}. "
        f"Load: closed-loop wrk, {header['connections']['go']} connections to the Go target, "
        f"{header['connections']['py']} to the Python target, {secs:g} s"
        + (f"; fault: collector stopped at {fault['stopped_at_s']:g} s, started again at {fault['restarted_at_s']:g} s"
           if fault else "")
        + ".",
        "",
        "Targets: the Go benchmark service (`bench/go/app`, net/http) and the Flask benchmark app on gunicorn "
        "(`bench/python/app`, one gthread worker, 8 threads), each under its own probe as a node runs them "
        "(one probe per language), exporting OTLP/gRPC to the real collector, whose `file` exporter writes every "
        "span it received. Every request carries its sequence number in its path (`GET /users/<target>-<n>`); "
        "the checker reads the collector's file and counts server spans per sequence number (`bench/ferrobench/seq.py`).",
        "",
        f"**Rate held: {total_rate:,.0f} answered requests/s in total** "
        + ", ".join(f"({t}: {loads[t].answered / secs:,.0f}/s)" for t in TARGETS) + ".",
        "",
        "## Loss accounting",
        "",
        "| target | sent | answered | no answer at stop | server spans received (distinct) | duplicate spans | spans for numbers never sent | missing | counted drops (probe + collector) | uncounted loss |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in TARGETS:
        a = accounts[t]
        lines.append(
            f"| {t} | {a.sent:,} | {a.answered:,} | {a.unanswered_at_stop} | {a.received:,} | {a.duplicates:,} | {a.unexpected:,} | "
            f"{a.missing:,} | {a.counted_total:,.0f} | **{a.uncounted:,}** |"
        )
    lines += [
        "",
        "Missing: sequence numbers that were answered but have no server span at the collector (requests without an "
        "answer when the load stopped are listed apart: the server may never have read them). The probe's counters "
        "count events or requests, not sequence numbers, so \"every missing one is counted\" reads: missing ≤ the "
        "sum of the counters; uncounted loss = missing minus that sum, if positive.",
        "",
        "| target | " + " | ".join(accounts[TARGETS[0]].counted_drops) + " | spans exported (probe) |",
        "|---|" + "---:|" * (len(accounts[TARGETS[0]].counted_drops) + 1),
    ]
    for t in TARGETS:
        a = accounts[t]
        lines.append(f"| {t} | " + " | ".join(f"{v:,.0f}" for v in a.counted_drops.values()) + f" | {exported[t]:,.0f} |")
    lines += ["", f"Spans that were not a sequence-stamped server span: {other_spans}."]
    for t in TARGETS:
        if accounts[t].first_missing:
            lines.append(f"First missing sequence numbers ({t}): {accounts[t].first_missing}.")
    if fault:
        lines += [
            "",
            "## Collector down",
            "",
            f"The collector was stopped at {fault['stopped_at_s']:g} s and started again at {fault['restarted_at_s']:g} s. "
            "Spans the probes dropped meanwhile (export queue full): "
            + ", ".join(f"{t}: {v:,.0f}" for t, v in fault["export_dropped_during"].items())
            + f". Spans the collector that came back received: {fault['spans_after_restart']:,}. "
            "The probes' RSS, highest before the outage → highest during it: "
            + ", ".join(f"{t}: {fault[f'{t}_rss_max_before_mib']} → {fault[f'{t}_rss_max_during_mib']} MiB" for t in TARGETS)
            + ". Missing against counted drops per target: see the loss accounting above "
            "(with the collector down, the spans lost are those the export queue had no room for).",
        ]
    lines += [
        "",
        "## Memory",
        "",
        "| process | first (MiB) | last (MiB) | max (MiB) | slope, whole run (MiB/min) | slope, second half (MiB/min) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    fmt = lambda v, d=1: "–" if v is None else f"{v:.{d}f}"  # noqa: E731
    for name, s in slopes.items():
        lines.append(
            f"| {name.replace('_', ' ')} | {fmt(s['first_mib'])} | {fmt(s['last_mib'])} | {fmt(s['max_mib'])} | "
            f"{fmt(s['whole_run'], 3)} | {fmt(s['second_half'], 3)} |"
        )
    lines += [
        "",
        f"Slopes: least squares over samples every {args.sample_seconds:g} s.",
        "",
        "| t (s) | probe go RSS (MiB) | probe py RSS (MiB) | collector RSS (MiB) | spans accepted/s since the previous row | load average |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    # One row a minute (the .json has every sample).
    last_t, last_acc = None, None
    for r in rows:
        if last_t is not None and r["t"] - last_t < 60 and r is not rows[-1]:
            continue
        rate = "–"
        if last_t is not None and r.get("collector_accepted") is not None and last_acc is not None and r["t"] > last_t:
            rate = f"{(r['collector_accepted'] - last_acc) / (r['t'] - last_t):,.0f}"
        lines.append(
            f"| {r['t']:g} | {fmt(r.get('probe_go_rss_mib'))} | {fmt(r.get('probe_py_rss_mib'))} | "
            f"{fmt(r.get('collector_rss_mib'))} | {rate} | {r['load']} |"
        )
        last_t = r["t"]
        if r.get("collector_accepted") is not None:
            last_acc = r["collector_accepted"]
    lines += ["", "## Probe logs", ""]
    for t in TARGETS:
        p = problems[t]
        lines.append(f"- {t}: {p['counts']['ERROR']} ERROR lines, {p['counts']['WARN']} WARN lines"
                     + ("." if not p["distinct"] else ":"))
        for text, n in p["distinct"]:
            quoted = text.replace("`", "'")
            lines.append(f"  - {n} × `{quoted}`")
    lines += [
        "",
        "## Latency (wrk)",
        "",
        "| target | requests/s | p50 (ms) | p99 (ms) | wrk errors |",
        "|---|---:|---:|---:|---:|",
    ]
    for t in TARGETS:
        l = loads[t].load
        lines.append(f"| {t} | {l.rps:,.0f} | {l.p50_ms:.2f} | {l.p99_ms:.2f} | {l.errors} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    data = {
        "header": header,
        "rate_total": total_rate,
        "accounting": {t: seq.as_dict(a) for t, a in accounts.items()},
        "load": {t: {"issued": l.issued, "answered": l.answered, "pending": l.pending, "rps": l.load.rps,
                     "p50_ms": l.load.p50_ms, "p99_ms": l.load.p99_ms, "errors": l.load.errors} for t, l in loads.items()},
        "other_spans": other_spans,
        "exported": exported,
        "rss_slopes": slopes,
        "samples": rows,
        "probe_logs": problems,
        "fault": {k: v for k, v in fault.items() if k != "counters_before"} if fault else None,
    }
    out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    print(f"Wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)
    print("\n".join(lines[lines.index("## Loss accounting"):][:8]), file=sys.stderr)
    uncounted = sum(a.uncounted for a in accounts.values())
    dups = sum(a.duplicates + a.unexpected for a in accounts.values())
    if uncounted or dups:
        sys.exit(f"soak: {uncounted} spans lost without being counted, {dups} duplicate or unexpected spans")


if __name__ == "__main__":
    main(sys.argv)
