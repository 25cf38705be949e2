#!/usr/bin/env python3
"""The probe at node scale: one node's worth of processes, two probes.

    bench/nodescale/run.sh [--go-traced 25] [--python-traced 25] [--go-untraced 30]
                           [--python-untraced 30] [--rate 500] [--idle 30]
                           [--rounds 3] [--duration 20] ...

What runs: `--go-traced` + `--go-untraced` Go servers (bench/go/app) and
`--python-traced` + `--python-untraced` FastAPI servers on uvicorn
(bench/python/app), 110 processes by default, standing in for a node's
pods; one `ferrotel-probe --language go` and one `ferrotel-probe --language
python`, as on a node, each with its traced processes on its command line
(`--pid`, repeated). Everything shares every CPU (`--app-cpus`,
`--load-cpus`; default 0-1), as pods and the node agent do.

What is measured, per probe:
  memory   VmRSS and VmHWM (/proc/<pid>/status) after attaching, after the
           idle window and after the load, and where the resident memory is
           (/proc/<pid>/smaps, Rss per mapping summed by kind: the heap and
           other anonymous memory, the probe binary's own mappings, the
           `anon_inode:bpf-map` mappings of its ring buffers, libraries...)
  idle CPU every target attached, no requests, for `--idle` seconds: the
           probe's CPU time (/proc/<pid>/stat) in % of one core
  load     `--rounds` windows of `--duration` seconds in which every traced
           target receives GET /users/1 at the same steady rate, `--rate`
           requests per second in total (an open-loop generator,
           bench/nodescale/loadgen; it reports requests due, sent, answered
           and late); the probe's CPU µs per request it traced (its CPU from
           the start of the load until the spans reached the collector,
           divided by the requests its targets answered), the kernel time of
           its eBPF programs per request (BPF statistics), and spans the
           collector accepted against requests answered.
The untraced processes receive no requests (they are the node's other pods:
present, their syscalls passing the probes' filters, idle).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ferrobench import bpf, system  # noqa: E402
from ferrobench.cli import VENV, Bench, go_build  # noqa: E402
from ferrobench.cli import go_version as cli_go_version  # noqa: E402
from ferrobench.probe import Probe  # noqa: E402
from ferrobench.procs import Service  # noqa: E402
from ferrobench.stats import Summary, fmt  # noqa: E402

GO_APP = HERE.parent / "go/app"
PYTHON_APP = HERE.parent / "python/app"
PATH = "/users/1"
GOAL_MIB = 30.0
"""The project's goal: probe RSS at most 30 MB with 50 targets."""


def extend(p) -> None:
    p.add_argument("--go-traced", type=int, default=25, help="Go servers the Go probe traces (default 25)")
    p.add_argument("--python-traced", type=int, default=25, help="Python servers the Python probe traces (default 25)")
    p.add_argument("--go-untraced", type=int, default=30, help="Go servers nobody traces (default 30)")
    p.add_argument("--python-untraced", type=int, default=30, help="Python servers nobody traces (default 30)")
    p.add_argument("--rate", type=float, default=500, help="total requests per second over every traced target (default 500)")
    p.add_argument("--idle", type=float, default=30, help="seconds of the idle window (default 30)")
    p.set_defaults(rounds=3, duration=20, warmup=3, app_cpus="0-1", load_cpus="0-1")


# ----------------------------------------------------------- processes


def start_servers(bench: Bench, goapp: Path) -> dict[str, list[tuple[Service, str]]]:
    """Every server, started together, then waited for (uvicorn takes a
    second or more each on a busy machine)."""
    args = bench.args
    ctx = bench.ctx
    pending = []
    groups: dict[str, list[tuple[Service, str]]] = defaultdict(list)
    for group, kind, n in (
        ("go-traced", "go", args.go_traced),
        ("python-traced", "python", args.python_traced),
        ("go-untraced", "go", args.go_untraced),
        ("python-untraced", "python", args.python_untraced),
    ):
        groups[group] = []  # present in the report even when empty
        for i in range(n):
            port = system.free_port()
            name = f"{group}-{i}"
            if kind == "go":
                svc = Service(name, [str(goapp), "-addr", f"127.0.0.1:{port}"], cpus=ctx.app_cpus, log=ctx.log(name))
            else:
                svc = Service(
                    name,
                    [str(VENV / "uvicorn"), "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "bench_fastapi:app"],
                    cpus=ctx.app_cpus,
                    log=ctx.log(name),
                    cwd=PYTHON_APP,
                )
            groups[group].append((svc, f"http://127.0.0.1:{port}"))
            pending.append((svc, port))
    for svc, port in pending:
        system.wait_port(port, timeout=180, alive=svc.alive)
    return groups


def stop_all(services: list[Service]) -> None:
    """Stops every server at once: SIGTERM to every group first, then each
    reaped (Service.stop one by one waits on each group in turn, which for
    110 servers takes minutes)."""
    for svc in services:
        if svc.alive():
            try:
                os.killpg(svc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 10
    for svc in services:
        try:
            svc.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for svc in services:
        svc.stop(timeout=1.0)


def start_probe(bench: Bench, language: str, targets: list[tuple[Service, str]]) -> tuple[Probe, float]:
    argv = []
    for svc, _ in targets:
        argv += ["--pid", str(svc.pid)]
    t0 = time.monotonic()
    probe = bench.ctx.probe(language, argv, attached=len(targets))
    return probe, time.monotonic() - t0


def ticks_by_group(pgids: set[int]) -> dict[int, int]:
    """CPU jiffies of every live process, summed per process group, for
    the groups asked for: one pass over /proc for 110 services."""
    out = dict.fromkeys(pgids, 0)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        pgid = int(fields[2])
        if pgid in out:
            out[pgid] += int(fields[11]) + int(fields[12])
    return out


# ----------------------------------------------------------- memory


def memory(probe: Probe, binary_name: str) -> dict:
    return {"status_kib": system.status_kib(probe.pid), "smaps_kib": system.smaps_breakdown(probe.pid, binary_name)}


# ----------------------------------------------------------- load


def loadgen(binary: Path, urls: list[str], rate_per_target: float, seconds: float, cpus: str) -> dict:
    """Runs the generator; returns its report (its CPU counts in this
    process's children's CPU time, which the window subtracts as ours)."""
    proc = subprocess.Popen(
        ["taskset", "-c", cpus, str(binary), "-urls", ",".join(urls), "-rate", f"{rate_per_target:g}", "-seconds", f"{seconds:g}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the load generator failed ({proc.returncode}): {err}")
    return json.loads(out)


def children_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


# ----------------------------------------------------------- the run


def main(argv: list[str]) -> None:
    bench = Bench.from_args("nodescale", "The probe at node scale: a node's processes under a Go and a Python probe", argv, extend)
    bench.header["runtime"] = cli_go_version()
    goapp = go_build(GO_APP, bench.workdir / "goapp")
    lg = go_build(HERE / "loadgen", bench.workdir / "loadgen")
    groups: dict[str, list[tuple[Service, str]]] = {}
    try:
        run(bench, goapp, lg, groups)
    finally:
        stop_all([svc for g in groups.values() for svc, _ in g])


def run(bench: Bench, goapp: Path, lg: Path, groups: dict) -> None:
    args = bench.args
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    binary_name = bench.ctx.probe_binary.name
    collector = bench.collector
    t0 = time.monotonic()
    groups.update(start_servers(bench, goapp))
    log(f"{sum(len(g) for g in groups.values())} servers up in {time.monotonic() - t0:.0f} s")
    probes: dict[str, Probe] = {}
    attach_s: dict[str, float] = {}
    for language in ("go", "python"):
        if groups[f"{language}-traced"]:
            probes[language], attach_s[language] = start_probe(bench, language, groups[f"{language}-traced"])
            log(f"{language} probe: {len(groups[f'{language}-traced'])} targets attached in {attach_s[language]:.1f} s")
    mem: dict[str, dict[str, dict]] = {lang: {"attached": memory(p, binary_name)} for lang, p in probes.items()}

    pgids = {svc.pid for g in groups.values() for svc, _ in g} | {p.pid for p in probes.values()} | {collector.pid}

    def ours() -> dict[int, int]:
        return ticks_by_group(pgids)

    def others_pct(cpu: system.CpuTimes, used: dict[int, int], own_s: float) -> float:
        ours_ticks = sum(used.values()) + own_s * system.CLK_TCK
        return max(0.0, (cpu.busy - ours_ticks) / max(cpu.total, 1) * 100)

    # Idle: attached, no requests.
    time.sleep(5)
    before, cpu0, own0 = ours(), system.CpuTimes.read(), children_cpu() + sum(os.times()[:2])
    w0 = time.monotonic()
    time.sleep(args.idle)
    window = time.monotonic() - w0
    after, cpu = ours(), system.CpuTimes.read() - cpu0
    own = children_cpu() + sum(os.times()[:2]) - own0
    used = {k: after[k] - before.get(k, 0) for k in after}
    idle = {
        "window_s": window,
        "load1": system.loadavg_1m(),
        "others_pct": others_pct(cpu, used, own),
        "node_busy_pct": cpu.busy / max(cpu.total, 1) * 100,
        "probe_cpu_pct": {lang: used[p.pid] / system.CLK_TCK / window * 100 for lang, p in probes.items()},
    }
    for lang, p in probes.items():
        mem[lang]["idle"] = memory(p, binary_name)
    log(f"idle: probe CPU {idle['probe_cpu_pct']} % of a core over {window:.0f} s, other work {idle['others_pct']:.1f} %")

    # Load: every traced target at the same rate.
    traced = groups["go-traced"] + groups["python-traced"]
    urls = [url + PATH for _, url in traced]
    kinds = ["go"] * len(groups["go-traced"]) + ["python"] * len(groups["python-traced"])
    per_target = args.rate / len(urls)
    rounds = []
    if args.warmup > 0:
        spans_before = collector.accepted_spans()
        warm = loadgen(lg, urls, per_target, args.warmup, args.load_cpus)
        collector.settle(spans_before + warm["ok"], patience=7.0)
    for rnd in range(1, args.rounds + 1):
        spans_before = collector.accepted_spans()
        counters_before = {lang: p.loss_counters() | p.counters() for lang, p in probes.items()}
        bpf_before = {lang: bpf.snapshot(p.pid) for lang, p in probes.items()}
        before, cpu0, own0 = ours(), system.CpuTimes.read(), children_cpu() + sum(os.times()[:2])
        w0 = time.monotonic()
        report = loadgen(lg, urls, per_target, args.duration, args.load_cpus)
        bpf_after = {lang: bpf.snapshot(p.pid) for lang, p in probes.items()}
        spans = collector.settle(spans_before + report["ok"], patience=7.0) - spans_before
        window = time.monotonic() - w0
        after, cpu = ours(), system.CpuTimes.read() - cpu0
        own = children_cpu() + sum(os.times()[:2]) - own0
        used = {k: after[k] - before.get(k, 0) for k in after}
        counters_after = {lang: p.loss_counters() | p.counters() for lang, p in probes.items()}
        ok_by = {lang: sum(n for n, k in zip(report["per_target_ok"], kinds) if k == lang) for lang in probes}
        per_probe = {}
        for lang, p in probes.items():
            n = max(ok_by[lang], 1)
            stats = bpf_after[lang] - bpf_before[lang]
            per_probe[lang] = {
                "requests_ok": ok_by[lang],
                "cpu_us_per_request": used[p.pid] / system.CLK_TCK * 1e6 / n,
                "cpu_pct": used[p.pid] / system.CLK_TCK / window * 100,
                "bpf_ns_per_request": stats.total_ns / n,
                "bpf_runs_per_request": stats.total_runs / n,
                "bpf_cpu_pct": stats.total_ns / 1e9 / window * 100,
                "bpf_runs_per_s": stats.total_runs / window,
                "records": counters_after[lang]["records"] - counters_before[lang]["records"],
                "losses": {
                    k: counters_after[lang][k] - counters_before[lang][k]
                    for k in ("kernel_events_dropped", "connections_untraced", "parse_errors", "records_dropped", "spans_unsampled", "export_dropped_spans")
                },
            }
        apps_ticks = sum(used[svc.pid] for svc, _ in traced)
        row = {
            "round": rnd,
            "window_s": window,
            "load": report,
            "rate_sent": report["sent"] / report["seconds"],
            "spans": spans,
            "collector_lost": collector.lost_spans(),
            "apps_cpu_us_per_request": apps_ticks / system.CLK_TCK * 1e6 / max(report["ok"], 1),
            "node_busy_pct": cpu.busy / max(cpu.total, 1) * 100,
            "others_pct": others_pct(cpu, used, own),
            "load1": system.loadavg_1m(),
            "probes": per_probe,
        }
        rounds.append(row)
        log(
            f"round {rnd}: {row['rate_sent']:.0f} req/s sent, {report['ok']} ok, {report['errors']} errors, {report['late']} late, "
            f"spans {spans}/{report['ok']}, "
            + ", ".join(f"{lang} {v['cpu_us_per_request']:.1f} µs/req ({v['cpu_pct']:.1f} %)" for lang, v in per_probe.items())
            + f", other work {row['others_pct']:.1f} %, load {row['load1']:.2f}"
        )
    for lang, p in probes.items():
        mem[lang]["after load"] = memory(p, binary_name)
        if not p.service.alive():
            raise RuntimeError(f"the {lang} probe exited:\n{p.service.log_tail()}")

    write(bench, groups, attach_s, mem, idle, rounds)


# ----------------------------------------------------------- the report


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def write(bench: Bench, groups, attach_s, mem, idle, rounds) -> None:
    from ferrobench.report import header_lines

    args = bench.args
    h = bench.header
    h["load_end"] = system.loadavg()
    others = sorted([idle["others_pct"]] + [r["others_pct"] for r in rounds])
    h["others_pct_median"] = others[len(others) // 2]
    h["quiet"] = float(h["load_start"].split()[0]) < 1.5 and h["others_pct_median"] < 3.0
    # The shared header, less its two lines about paired rounds and the
    # app/load CPU split, which this benchmark has not.
    head = [line for line in header_lines(h) if not line.startswith(("Rounds:", "CPUs:"))]
    langs = list(mem)
    total_rate = sum(r["rate_sent"] for r in rounds) / max(len(rounds), 1)
    lines = [
        f"# {bench.title}",
        "",
        *head,
        f"Processes: {len(groups['go-traced'])} Go servers (bench/go/app) and {len(groups['python-traced'])} FastAPI servers on uvicorn "
        f"(bench/python/app) traced; {len(groups['go-untraced'])} Go and {len(groups['python-untraced'])} FastAPI servers untraced and idle; "
        "one `ferrotel-probe --language go` and one `ferrotel-probe --language python`, their targets as `--pid` "
        f"on the command line; the OpenTelemetry Collector (nop exporter) and the load generator. Every process on CPUs {args.app_cpus}.",
        f"Load: {args.rounds} windows of {args.duration:g} s (after {args.warmup:g} s of warm-up), GET {PATH} to every traced target "
        f"at {args.rate / max(len(groups['go-traced']) + len(groups['python-traced']), 1):g} req/s each, {args.rate:g} req/s in total "
        "(open loop, bench/nodescale/loadgen); idle window: {:.0f} s.".format(idle["window_s"]),
        "",
        "## Memory",
        "",
        f"The goal: probe RSS ≤ {GOAL_MIB:g} MB with 50 targets. MiB (1 MiB = 1.05 MB); `VmHWM` is the peak since the probe started.",
        "",
        "| Probe | targets | when | VmRSS | VmHWM | RssAnon | RssFile | Pss | private (USS) | threads | goal ≤ 30 MB (VmRSS / VmHWM) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for lang in langs:
        n = len(groups[f"{lang}-traced"])
        for when, m in mem[lang].items():
            s = m["status_kib"]
            met = " / ".join("met" if s[k] * 1024 <= GOAL_MIB * 1e6 else "**not met**" for k in ("VmRSS", "VmHWM"))
            pss = sum(v["pss"] for v in m["smaps_kib"].values())
            private = sum(v["private"] for v in m["smaps_kib"].values())
            lines.append(
                f"| {lang} | {n} | {when} | {mib(s['VmRSS'])} | {mib(s['VmHWM'])} | {mib(s['RssAnon'])} | {mib(s['RssFile'])} | "
                f"{mib(pss)} | {mib(private)} | {s['Threads']} | {met} |"
            )
    lines += [
        "",
        "Where the resident memory is after the load (`/proc/<pid>/smaps`: Rss per kind of mapping, MiB; Pss in brackets "
        "where it differs — pages shared with another process, e.g. the other probe's copy of the same binary or libc, count "
        "once in Pss across them). `anonymous`: unnamed mappings (allocator arenas, thread stacks); `heap`: the brk heap; "
        "`binary`: the probe executable's own mappings (code, read-only data, relocations); `bpf-map`: mmap'd BPF maps "
        "(the ring buffers, and array maps the loader maps for globals). A BPF ring buffer maps its data pages twice, "
        "back to back, so that a record never wraps: its Rss counts them twice, its Pss once — VmRSS (and the goal's "
        "figure) includes that double count. `private`: pages no other process maps (USS).",
        "",
    ]
    kinds = sorted({k for lang in langs for k in mem[lang]["after load"]["smaps_kib"]}, key=lambda k: -max(mem[lang]["after load"]["smaps_kib"].get(k, {}).get("rss", 0) for lang in langs))
    lines.append("| kind | " + " | ".join(f"{lang}: Rss (Pss) / private, mappings" for lang in langs) + " |")
    lines.append("|---|" + "---:|" * len(langs))
    for k in kinds:
        cells = []
        for lang in langs:
            v = mem[lang]["after load"]["smaps_kib"].get(k)
            if not v:
                cells.append("-")
                continue
            pss = f" ({mib(v['pss'])})" if abs(v["pss"] - v["rss"]) >= 103 else ""
            cells.append(f"{mib(v['rss'])}{pss} / {mib(v['private'])}, {v['mappings']}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## CPU",
        "",
        f"Idle (every target attached, no requests, {idle['window_s']:.0f} s): "
        + ", ".join(f"{lang} probe {idle['probe_cpu_pct'][lang]:.2f} % of one core" for lang in langs)
        + f". Node busy {idle['node_busy_pct']:.0f} %, other work {idle['others_pct']:.1f} % of all CPUs, load average {idle['load1']:.2f}.",
        "",
        f"Under load ({total_rate:.0f} req/s sent in total, mean over the rounds): probe CPU (user + system of the probe process, "
        "from the start of the load until its spans reached the collector) per request its targets answered; `BPF` is the kernel "
        "time of its eBPF programs (BPF statistics; run in the context of the process that hit the hook, not in the probe's CPU): "
        "syscall tracepoint programs run for every syscall of every process on the machine and filter out the untraced ones, "
        "so on a shared machine this includes the other work's syscalls — given as % of one core and runs per second, "
        "and per request only as an upper bound. Mean ±95 % CI (lowest–highest round).",
        "",
        "| Probe | requests answered | probe CPU µs/request | probe CPU % of one core | BPF kernel time % of one core | BPF runs/s | BPF ns/request (upper bound) | records | losses counted by the probe |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for lang in langs:
        rs = [r["probes"][lang] for r in rounds]
        losses = defaultdict(float)
        for r in rs:
            for k, v in r["losses"].items():
                losses[k] += v
        loss_text = ", ".join(f"{k} {v:g}" for k, v in losses.items() if v) or "none"
        lines.append(
            f"| {lang} | {sum(r['requests_ok'] for r in rs)} | {fmt(Summary.of([r['cpu_us_per_request'] for r in rs]), '.1f')} | "
            f"{fmt(Summary.of([r['cpu_pct'] for r in rs]), '.1f')} | {fmt(Summary.of([r['bpf_cpu_pct'] for r in rs]), '.1f')} | "
            f"{fmt(Summary.of([r['bpf_runs_per_s'] for r in rs]), '.0f')} | {fmt(Summary.of([r['bpf_ns_per_request'] for r in rs]), '.0f')} | "
            f"{sum(r['records'] for r in rs):g} | {loss_text} |"
        )
    sent = sum(r["load"]["sent"] for r in rounds)
    ok = sum(r["load"]["ok"] for r in rounds)
    spans = sum(r["spans"] for r in rounds)
    lines += [
        "",
        f"Spans at the collector: {spans} received / {ok} requests answered ({spans / max(ok, 1):.4f}); {sent} requests sent, "
        f"{sum(r['load']['errors'] for r in rounds)} errors, {sum(r['load']['late'] for r in rounds)} sent late (more than one "
        "interval behind their schedule); spans the collector lost: "
        f"{rounds[-1]['collector_lost'] if rounds else 0}.",
        "",
        "## Every load window",
        "",
        "| round | req/s sent | due | sent | answered | errors | late | p50 ms | p99 ms | spans | "
        + " | ".join(f"{lang} µs/req | {lang} % core" for lang in langs)
        + " | traced apps CPU µs/req | node busy % | other work % | load1 |",
        "|---:|" + "---:|" * (13 + 2 * len(langs)),
    ]
    for r in rounds:
        ld = r["load"]
        lines.append(
            f"| {r['round']} | {r['rate_sent']:.0f} | {ld['due']} | {ld['sent']} | {ld['ok']} | {ld['errors']} | {ld['late']} | "
            f"{ld['p50_ms']:.2f} | {ld['p99_ms']:.2f} | {r['spans']} | "
            + " | ".join(f"{r['probes'][lang]['cpu_us_per_request']:.1f} | {r['probes'][lang]['cpu_pct']:.1f}" for lang in langs)
            + f" | {r['apps_cpu_us_per_request']:.0f} | {r['node_busy_pct']:.0f} | {r['others_pct']:.1f} | {r['load1']:.2f} |"
        )
    lines += [
        "",
        "Attach: " + ", ".join(f"{lang} probe {attach_s[lang]:.1f} s from start to {len(groups[f'{lang}-traced'])} processes traced" for lang in langs) + ".",
        "",
    ]
    bench.out.parent.mkdir(parents=True, exist_ok=True)
    bench.out.write_text("\n".join(lines))
    bench.out.with_suffix(".json").write_text(
        json.dumps({"header": h, "attach_s": attach_s, "memory": mem, "idle": idle, "rounds": rounds}, indent=1) + "\n"
    )
    print(f"Wrote {bench.out} and {bench.out.with_suffix('.json')}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv)
