"""Process churn under the Go probe, run as a node runs it: its own process,
its targets chosen by executable path.

Short-lived Go servers (bench/go/app, copied to a path of their own that the
probe's `--exe-path` selects) are started `--concurrent` at a time, each asked
`GET /users/<n>` every `--interval` seconds for `--lifetime` seconds and then
stopped (every other one with SIGKILL, requests possibly in flight; the
others with SIGTERM), until `--processes` have lived. One process lives
first, so that the binary's analysis is cached and the maps exist; the
baseline is what the probe holds once that one is gone and its uprobes are
closed.

Reported: the probe process's memory (VmRSS, VmHWM, RssAnon, the brk heap)
at the baseline, its RSS sampled through the churn with the least-squares
slope, and after; the BPF links and perf events it holds (descriptors in
/proc/<probe>/fd) at the baseline, the peak and after; the entries of every
hash map it holds (bpftool); and its attach and refusal counters. The
in-process test `probe/tests/go_churn.rs` checks the kernel side on every
`make test`; this measures what a node's probe process keeps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ferrobench import system  # noqa: E402
from ferrobench.cli import Bench, go_build  # noqa: E402
from ferrobench.procs import Service  # noqa: E402
from ferrobench.stats import slope_mb_per_min  # noqa: E402

GO_APP = HERE.parent / "go/app"
SETTLE_S = 120.0
"""How long the probe gets to let go of every process after the last exit."""


def extend(p) -> None:
    p.add_argument("--processes", type=int, default=1000, help="short-lived processes in all (default 1000)")
    p.add_argument("--lifetime", type=float, default=2.4, help="seconds each process lives (default 2.4)")
    p.add_argument("--concurrent", type=int, default=4, help="processes alive at a time (default 4)")
    p.add_argument("--interval", type=float, default=0.02, help="seconds between requests to a process (default 0.02)")
    p.add_argument(
        "--forget",
        type=float,
        default=90,
        help="seconds to wait, once the kernel holdings are back, before the memory is read (default 90: the probe "
        "forgets an exited process's metric series a minute after their last update, at its next 15 s export)",
    )
    p.set_defaults(rounds=1, duration=0, warmup=0, app_cpus="0-1", load_cpus="0-1")


# ----------------------------------------------------------- what the probe holds


def memory(pid: int, binary_name: str) -> dict[str, float]:
    s = system.status_kib(pid)
    heap = system.smaps_breakdown(pid, binary_name).get("heap", {}).get("rss", 0)
    return {
        "rss_mib": s["VmRSS"] / 1024,
        "hwm_mib": s["VmHWM"] / 1024,
        "anon_mib": s["RssAnon"] / 1024,
        "file_mib": s["RssFile"] / 1024,
        "heap_mib": heap / 1024,
    }


def descriptors(pid: int) -> dict:
    """BPF links, perf events and BPF map ids among the probe's descriptors."""
    links = perf = 0
    maps: set[int] = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target == "anon_inode:bpf_link":
            links += 1
        elif target == "anon_inode:[perf_event]":
            perf += 1
        elif target == "anon_inode:bpf-map":
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    for line in f:
                        if line.startswith("map_id:"):
                            maps.add(int(line.split()[1]))
            except OSError:
                continue
    return {"bpf_links": links, "perf_events": perf, "map_ids": sorted(maps)}


def hash_map_entries(map_ids: list[int]) -> dict[str, int]:
    """Entries of every hash-type map among `map_ids`, by map name."""
    out = {}
    for map_id in map_ids:
        info = json.loads(subprocess.run(["bpftool", "-j", "map", "show", "id", str(map_id)], capture_output=True, text=True, check=True).stdout)
        if "hash" not in info.get("type", ""):
            continue
        dump = subprocess.run(["bpftool", "-j", "map", "dump", "id", str(map_id)], capture_output=True, text=True, check=True).stdout
        out[info.get("name", str(map_id))] = len(json.loads(dump or "[]"))
    return out


def holdings(pid: int) -> dict:
    d = descriptors(pid)
    return {"bpf_links": d["bpf_links"], "perf_events": d["perf_events"], "map_entries": hash_map_entries(d["map_ids"])}


def attach_counters(metrics: str) -> dict[str, float]:
    """`attach_refused` by reason, from the probe's /metrics text."""
    out: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("ferrotel_probe_attach_refused_total{"):
            labels, _, value = line.rpartition(" ")
            reason = labels.split('reason="', 1)[1].split('"', 1)[0] if 'reason="' in labels else "?"
            out[reason] = out.get(reason, 0.0) + float(value)
    return out


# ----------------------------------------------------------- the churn


class Churn:
    """Lives of short-lived servers, `concurrent` at a time."""

    def __init__(self, bench: Bench, binary: Path):
        self.bench = bench
        self.binary = binary
        self.pids: list[int] = []
        self.requests = self.answered = 0
        self.lock = threading.Lock()

    def life(self, index: int) -> None:
        args = self.bench.args
        port = system.free_port()
        svc = Service(f"churn-{index}", [str(self.binary), "-addr", f"127.0.0.1:{port}"], cpus=self.bench.ctx.app_cpus, log=Path(os.devnull))
        sent = ok = 0
        try:
            system.wait_port(port, timeout=30, alive=svc.alive)
            url = f"http://127.0.0.1:{port}/users/{index}"
            deadline = time.monotonic() + args.lifetime
            while time.monotonic() < deadline:
                sent += 1
                try:
                    with urllib.request.urlopen(url, timeout=1) as r:
                        r.read()
                        ok += 1
                except OSError:
                    pass
                time.sleep(args.interval)
        finally:
            if index % 2:
                svc.proc.kill()
            else:
                svc.proc.send_signal(signal.SIGTERM)
            try:
                svc.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                svc.proc.kill()
                svc.proc.wait()
            svc.stop(timeout=1)
            with self.lock:
                self.pids.append(svc.pid)
                self.requests += sent
                self.answered += ok

    def run(self, first: int, count: int) -> None:
        # Submitted as slots free up, not all at once: an interrupted run
        # then waits for the lives under way only.
        slots = self.bench.args.concurrent
        with ThreadPoolExecutor(max_workers=slots) as pool:
            pending: set = set()
            for index in range(first, first + count):
                if len(pending) == slots:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        f.result()
                pending.add(pool.submit(self.life, index))
            for f in pending:
                f.result()


def settled(pid: int, patience: float, limit: float, want: dict | None = None) -> tuple[dict, float]:
    """Holdings once three looks `patience` apart agree (and equal `want`,
    if given), and the seconds it took; the last look after `limit` s."""
    t0 = time.monotonic()
    looks = [holdings(pid)]
    while time.monotonic() - t0 < limit:
        if len(looks) >= 3 and all(look == looks[-1] for look in looks[-3:]) and (want is None or looks[-1] == want):
            break
        time.sleep(patience)
        looks.append(holdings(pid))
    return looks[-1], time.monotonic() - t0


def main(argv: list[str]) -> None:
    bench = Bench.from_args("churn", "Go process churn under the probe process", argv, extend)
    for key in ("rounds", "duration", "warmup"):  # one churn, not paired rounds
        bench.header.pop(key)
    args = bench.args
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    binary = go_build(GO_APP, bench.workdir / "churnserver")
    probe = bench.ctx.probe("go", ["--exe-path", str(binary)], attached=0)
    churn = Churn(bench, binary)

    churn.run(0, 1)
    baseline, took = settled(probe.pid, 1.0, SETTLE_S)
    mem_base = memory(probe.pid, bench.ctx.probe_binary.name)
    log(f"baseline after one process ({took:.0f} s): {baseline}, memory {mem_base}")

    samples: list[tuple[float, float]] = []
    peak = {"bpf_links": baseline["bpf_links"], "perf_events": baseline["perf_events"]}
    stop = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not stop.is_set():
            rss, _ = system.rss_mib(probe.pid)
            samples.append((time.monotonic() - t0, rss))
            d = descriptors(probe.pid)
            peak["bpf_links"] = max(peak["bpf_links"], d["bpf_links"])
            peak["perf_events"] = max(peak["perf_events"], d["perf_events"])
            stop.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    load_start = system.loadavg()
    started = time.monotonic()
    sampler.start()
    churn.run(1, args.processes)
    churn_s = time.monotonic() - started
    stop.set()
    sampler.join()
    log(f"{args.processes} processes in {churn_s:.0f} s, {churn.answered}/{churn.requests} requests answered")

    after, settle_s = settled(probe.pid, 1.0, SETTLE_S, want=baseline)
    mem_settled = memory(probe.pid, bench.ctx.probe_binary.name)
    time.sleep(args.forget)
    mem_after = memory(probe.pid, bench.ctx.probe_binary.name)
    refused = attach_counters(probe.metrics())
    counters = probe.counters()
    spans = bench.collector.settle(bench.collector.accepted_spans(), patience=3.0)
    alive = probe.service.alive()
    log(f"after ({settle_s:.0f} s): {after}, memory {mem_after}, refused {refused}")
    probe.stop()

    back = after == baseline
    slope = slope_mb_per_min(samples)
    rss = [v for _, v in samples]

    def row(label: str, key: str) -> str:
        return (
            f"| {label} | {mem_base[key]:.1f} | {mem_settled[key]:.1f} | {mem_after[key]:.1f} | "
            f"{mem_after[key] - mem_base[key]:+.1f} |"
        )

    entries_base = sum(baseline["map_entries"].values())
    entries_after = sum(after["map_entries"].values())
    sections = [
        "Workload: " + (
            f"{args.processes} Go servers (`bench/go/app`, copied to a path of its own that the probe's `--exe-path` "
            f"selects), {args.concurrent} alive at a time, each asked `GET /users/<n>` every {args.interval * 1000:.0f} ms "
            f"for {args.lifetime:g} s and then stopped (every other one with SIGKILL, the others with SIGTERM); one "
            "process before the baseline. The probe is `ferrotel-probe --language go --exe-path <that path>`, a "
            "process of its own, exporting to the collector (nop exporter)."
        ),
        "",
        f"Churn: {args.processes} processes in {churn_s:.0f} s ({args.processes / churn_s:.2f} per second); "
        f"{churn.answered:,} of {churn.requests:,} requests answered; spans accepted by the collector: {spans:,} (the "
        "first process's included; a request served before the probe had found its process and placed the uprobes has "
        "none: the probe finds new processes at its scan, then places ~23 uprobes); "
        f"load average at the churn's start {load_start}, at its end {system.loadavg()}.",
        "",
        "## Memory of the probe process",
        "",
        "MiB. Baseline: after the first process, its uprobes closed. Kernel side back: once the probe holds what it held "
        f"at the baseline ({settle_s:.0f} s after the last exit). After: {args.forget:g} s later (the probe forgets an "
        "exited process's metric series a minute after their last update).",
        "",
        "| | baseline | kernel side back | after | change (after − baseline) |",
        "|---|---:|---:|---:|---:|",
        row("VmRSS", "rss_mib"),
        row("RssAnon", "anon_mib"),
        row("[heap] Rss", "heap_mib"),
        row("RssFile", "file_mib"),
        row("VmHWM (peak since start)", "hwm_mib"),
        "",
        f"VmRSS through the churn ({len(samples)} samples, one a second): {min(rss):.1f}–{max(rss):.1f} MiB, "
        f"least-squares slope {slope:+.3f} MiB/min." if samples and slope is not None else "No RSS samples.",
        "",
        "## What the probe holds in the kernel",
        "",
        "| | baseline | peak during the churn | after |",
        "|---|---:|---:|---:|",
        f"| BPF links | {baseline['bpf_links']} | {peak['bpf_links']} | {after['bpf_links']} |",
        f"| perf event descriptors | {baseline['perf_events']} | {peak['perf_events']} | {after['perf_events']} |",
        f"| entries in its {len(after['map_entries'])} hash maps | {entries_base} | – | {entries_after} |",
        "",
        f"Back to the baseline: **{'yes' if back else 'no'}**; the probe {'stayed up' if alive else '**exited**'}.",
        "Maps with entries after: " + (", ".join(f"`{k}` {v}" for k, v in after["map_entries"].items() if v) or "none") + ".",
        "",
        "## Attaches",
        "",
        "Refused by reason (`ferrotel_probe_attach_refused_total`): "
        + (", ".join(f"`{k}` {v:.0f}" for k, v in sorted(refused.items())) or "none")
        + f". Records the probe decoded: {counters['records']:,.0f}; kernel events dropped: "
        f"{counters['kernel_dropped']:,.0f}.",
    ]
    bench.write(
        sections,
        [],
        {
            "memory": {"baseline": mem_base, "kernel_side_back": mem_settled, "after": mem_after},
            "rss_samples": samples,
            "slope_mib_per_min": slope,
            "holdings": {"baseline": baseline, "peak": peak, "after": after},
            "refused": refused,
            "counters": counters,
            "churn_s": churn_s,
            "settle_s": settle_s,
            "requests": churn.requests,
            "answered": churn.answered,
            "spans": spans,
        },
    )
    if not back or not alive:
        sys.exit("the probe did not return to its baseline holdings or exited: see the results file")


if __name__ == "__main__":
    main(sys.argv)
