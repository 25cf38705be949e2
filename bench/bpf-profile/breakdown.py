#!/usr/bin/env python3
"""Splits perf samples taken in the Go benchmark app's context into the uprobe
traps' own work and the eBPF programs, and each program's time into the
kernel helpers it called; and the probe process's own samples into the
stages of its event path. Reads `perf script -F comm,ip,sym` (the app) and
`perf script -F comm,tid,ip,sym,dso` (the probe) output; writes Markdown to
stdout. Used by bench/bpf-profile/run.sh."""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import time
from pathlib import Path

PROGRAM = re.compile(r"bpf_prog_[0-9a-f]+_(\w+)")
OFFSET = re.compile(r"\+0x[0-9a-f]+$")
TRAP = "asm_exc_int3"
OWN = "(the program's own instructions)"


def read_samples(path: Path, headers: list[str] | None = None) -> list[list[str]]:
    """Call chains, leaf first, of every sample in the file; each sample's
    header line (its command name and the fields before the chain) goes to
    `headers` when given."""
    samples: list[list[str]] = []
    chain: list[str] | None = None
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        if not line.startswith((" ", "\t")):
            if chain is not None:
                samples.append(chain)
            chain = []
            if headers is not None:
                headers.append(line.strip())
            continue
        parts = line.split(None, 1)
        if chain is not None:
            chain.append(OFFSET.sub("", parts[1]) if len(parts) > 1 else "?")
    if chain is not None:
        samples.append(chain)
    return samples


# The probe's event path, in the order a record goes through it. A sample
# belongs to the stage of the innermost frame that names one (a memcpy
# called by the ring reader is the ring's; an allocation made while encoding
# is the export's). The patterns are checked in this order for each frame.
PROBE_STAGES = [
    ("decoding records", re.compile(r"ferrotel_parse::|ProgramSet>::decode|::decode_\w+|::decode\b")),
    ("reading the ring (aya, the driver's reader)", re.compile(r"aya::maps::ring_buf|ferrotel_probe::ebpf::ring")),
    (
        "spans and metrics (RED metrics, the service graph, span records)",
        re.compile(r"ferrotel_probe::telemetry::|ferrotel_probe::views::"),
    ),
    ("export (the queue, OTLP encoding, gRPC: tonic, hyper, h2)", re.compile(r"ferrotel_probe::export::|tonic::|\bh2::|hyper::|prost::|tower::")),
    ("the driver loop (dispatch to the set, the sink)", re.compile(r"ferrotel_probe::driver::")),
    ("the async runtime (tokio: scheduling, waking, parking)", re.compile(r"\btokio::|mio::")),
]
OTHER_STAGE = "anything else"
KERNEL_DSO = "[kernel.kallsyms]"
FRAME = re.compile(r"^(?P<sym>.*?)\s+\((?P<dso>[^()]*)\)$")


def read_probe_samples(path: Path) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """The thread (command name) and the call chain, leaf first, of each of
    the probe's samples: (symbol, in the kernel)."""
    out = []
    headers: list[str] = []
    chains = read_samples(path, headers)
    threads = [h.rsplit(None, 1)[0] if len(h.split()) > 1 else h for h in headers]
    for chain in chains:
        frames = []
        for f in chain:
            m = FRAME.match(f)
            sym, dso = (m.group("sym"), m.group("dso")) if m else (f, "")
            frames.append((OFFSET.sub("", sym.strip()), dso == KERNEL_DSO))
        out.append(frames)
    return threads, out


def probe_stage(chain: list[tuple[str, bool]]) -> str:
    # The runtime's stage is the last resort: tokio's I/O and channel code
    # runs inside the stage that called it (a socket write is the export's).
    for stages in (PROBE_STAGES[:-1], PROBE_STAGES[-1:]):
        for sym, _ in chain:
            for stage, pattern in stages:
                if pattern.search(sym):
                    return stage
    return OTHER_STAGE


SYSCALL = re.compile(r"^(?:__x64_sys_|__do_sys_|__se_sys_|ksys_|do_)(\w+)")


def kernel_entry(chain: list[tuple[str, bool]]) -> str:
    """The system call a kernel sample was in (the function `do_syscall_64`
    called: the kernel inlines some system calls' own entry functions into
    it), the way back from one, or how the kernel was entered otherwise (an
    interrupt, a fault)."""
    kernel = [sym for sym, in_kernel in chain if in_kernel]
    if "do_syscall_64" in kernel:
        i = kernel.index("do_syscall_64") - 1
        while i > 0 and kernel[i] == "x64_sys_call":  # the system call table's switch
            i -= 1
        callee = kernel[i] if i >= 0 else None
        if callee == "exit_to_user_mode_loop":
            return "returning from a system call (rescheduling, rseq, task work)"
        if callee and (m := SYSCALL.match(callee)):
            return f"`{m.group(1)}`"
        return f"a system call, in `{callee}`" if callee else "a system call's entry"
    return f"no system call: `{kernel[-1]}`" if kernel else "?"


def short(sym: str, width: int = 110) -> str:
    return sym if len(sym) <= width else sym[: width - 1] + "…"


def probe_section(path: Path, probe_us: str | None, language: str) -> list[str]:
    threads, samples = read_probe_samples(path)
    if not samples:
        return ["## The probe's own time\n", "perf took no sample of the probe process.\n"]
    stages: collections.Counter[str] = collections.Counter()
    kernel: collections.Counter[str] = collections.Counter()
    leaves: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    syscalls: collections.Counter[str] = collections.Counter()
    by_thread: collections.Counter[str] = collections.Counter(threads)
    for chain in samples:
        stage = probe_stage(chain)
        stages[stage] += 1
        leaf, in_kernel = chain[0] if chain else ("?", False)
        leaves[stage][leaf] += 1
        if in_kernel:
            kernel[stage] += 1
            syscalls[kernel_entry(chain)] += 1
    total = len(samples)
    out = ["## The probe's own time: which stage of the event path\n"]
    out.append(
        "The probe process of the first round, sampled by a second `perf record -p <probe> --call-graph dwarf` from the moment "
        "it traced the app to its exit (the warm-up and the measured load; not the start-up's loading and analysis): "
        f"{total} samples. A sample belongs to the stage of the innermost frame of its call chain that names one (a "
        "`memcpy` called by the ring reader is the ring's, an allocation made while encoding is the export's); "
        "tokio's own frames name the runtime's stage only when no other stage is in the chain (a socket write "
        "through tokio is the export's). Samples in the kernel count for the stage that entered it. "
        "Shares of the probe's CPU time, which the run below states per request"
        + (f" ({probe_us} µs, slowed by the sampling; `bench/results/{language}.md` has the unsampled figure)" if probe_us else "")
        + ".\n"
    )
    out.append("| stage | samples | share of the probe | of which in the kernel |")
    out.append("|---|---:|---:|---:|")
    for stage, n in stages.most_common():
        out.append(f"| {stage} | {n} | {pct(n, total)} | {pct(kernel[stage], n)} |")
    out.append("")
    in_kernel = sum(kernel.values())
    out.append(f"System calls the probe's kernel samples were in ({in_kernel} samples, {pct(in_kernel, total)} of the probe):\n")
    out.append("| system call | samples | share of the probe |")
    out.append("|---|---:|---:|")
    for name, n in syscalls.most_common(10):
        out.append(f"| {name} | {n} | {pct(n, total)} |")
    out.append("")
    out.append("By thread (the main thread runs the probe's top-level future, the workers the tasks it spawned):\n")
    out.append("| thread | samples | share of the probe |")
    out.append("|---|---:|---:|")
    for name, n in by_thread.most_common():
        out.append(f"| `{name}` | {n} | {pct(n, total)} |")
    out.append("")
    for stage, n in stages.most_common():
        out.append(f"### {stage}: {n} samples, by the function the sample was in (the first 8)\n")
        out.append("| function | samples | share of the stage |")
        out.append("|---|---:|---:|")
        for name, k in leaves[stage].most_common(8):
            out.append(f"| `{short(name)}` | {k} | {pct(k, n)} |")
        out.append("")
    return out


def program_frames(chain: list[str]) -> list[tuple[int, str]]:
    return [(i, m.group(1)) for i, f in enumerate(chain) if (m := PROGRAM.match(f))]


def mean_of(measurements: list[dict], variant: str, field: str) -> float | None:
    """The mean over the rounds of one figure of one variant in the benchmark's JSON."""
    values = [m[field] for m in measurements if m["variant"] == variant and m[field] is not None]
    return sum(values) / len(values) if values else None


def bench_lines(md: str) -> tuple[str, list[str]]:
    """The Go benchmark's machine line and its table of the probe's programs."""
    machine = next((line for line in md.splitlines() if line.startswith("Machine:")), "Machine: unknown")
    table: list[str] = []
    lines = md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("eBPF programs of `probe`"):
            for row in lines[i + 1 :]:
                if row.startswith("|"):
                    table.append(row)
                elif table:
                    break
            break
    return machine, table


def pct(n: int, of: int) -> str:
    return f"{100 * n / of:.1f} %" if of else "-"


def app_split(headers: list[str], samples: list[list[str]], measurements: list[dict]) -> list[str]:
    """The probe variant's app CPU per request split into the traps' programs,
    the traps' own work, programs run outside a trap and the app's own code,
    against the bare variant's (the same binary: its process is the one with
    no trap). Sample shares times the app CPU per request the run measured."""
    pids = [h.split()[-1] for h in headers]
    per_pid: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    own_code: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for pid, chain in zip(pids, samples):
        trapped, progs = TRAP in chain, bool(program_frames(chain))
        where = ("programs in a trap" if progs else "trap") if trapped else ("programs outside" if progs else "app")
        per_pid[pid][where] += 1
        if where == "app" and chain:
            own_code[pid][chain[0]] += 1
    # One app process per variant and round; the probe variant's are those
    # with samples in traps.
    mine: collections.Counter[str] = collections.Counter()
    theirs: collections.Counter[str] = collections.Counter()
    mine_code: collections.Counter[str] = collections.Counter()
    bare_code: collections.Counter[str] = collections.Counter()
    for pid, counts in per_pid.items():
        if counts["trap"] + counts["programs in a trap"]:
            mine.update(counts)
            mine_code.update(own_code[pid])
        else:
            theirs.update(counts)
            bare_code.update(own_code[pid])
    bare_us = mean_of(measurements, "bare", "app_cpu_us")
    probe_us = mean_of(measurements, "probe", "app_cpu_us")
    if bare_us is None or probe_us is None or not mine:
        return []
    rounds = sum(1 for m in measurements if m["variant"] == "probe")
    total = sum(mine.values())

    def us(key: str) -> float:
        return probe_us * mine[key] / total

    own = us("app")
    rows = [
        ("eBPF programs, in the uprobe traps", "programs in a trap"),
        ("the traps' own work (the kernel's uprobe handling, the return to user space)", "trap"),
        ("eBPF programs outside a trap (the pod network view, on the app's packets)", "programs outside"),
        ("the app's own code and system calls", "app"),
    ]
    out = ["## The app's CPU under the probe, taken apart\n"]
    out.append(
        f"The probe variant's app processes (those with samples in traps; {total} samples over {rounds} rounds) "
        f"against the bare variant's (the same binary). Each share of their samples times the app CPU per request "
        f"the benchmark measured for them in this run, the mean over the rounds ({probe_us:.1f} µs; bare "
        f"{bare_us:.1f} µs). Both are slowed by the sampling.\n"
    )
    out.append("| where the app's CPU went | share of its samples | µs per request |")
    out.append("|---|---:|---:|")
    for name, key in rows:
        out.append(f"| {name} | {pct(mine[key], total)} | {us(key):.1f} |")
    out.append(f"| **all** | 100 % | **{probe_us:.1f}** |")
    out.append(
        f"\nThe app's own code and system calls took {own:.1f} µs per request under the probe against "
        f"{bare_us:.1f} µs bare: **{own - bare_us:+.1f} µs** that no trap or program accounts for (caches, TLB and "
        "branch predictors that each trap's entry into the kernel leaves cold, and whatever else the probe "
        "changes for the process).\n"
    )
    bare_total = sum(theirs.values())
    if bare_total:
        delta = {
            f: probe_us * mine_code[f] / total - bare_us * bare_code[f] / bare_total
            for f in set(mine_code) | set(bare_code)
        }
        out.append(
            "Where that difference is, by the function the sample was in: µs per request in the app's own code "
            "under the probe less bare (the 12 largest differences either way):\n"
        )
        out.append("| function | bare, µs/request | under the probe | difference |")
        out.append("|---|---:|---:|---:|")
        for f in sorted(delta, key=lambda f: -abs(delta[f]))[:12]:
            b, m = bare_us * bare_code[f] / bare_total, probe_us * mine_code[f] / total
            out.append(f"| `{short(f)}` | {b:.2f} | {m:.2f} | {delta[f]:+.2f} |")
        out.append("")
    return out


def app_section(path: Path, measurements: list[dict]) -> list[str] | None:
    """The Go app's kernel side: the traps against the programs, each program
    by the helpers it called. None when no sample was taken inside a trap."""
    headers: list[str] = []
    samples = read_samples(path, headers)
    in_trap_bpf = in_trap_other = outside_trap_bpf = 0
    per_program: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    trap_work: collections.Counter[str] = collections.Counter()
    for chain in samples:
        progs = program_frames(chain)
        trapped = TRAP in chain
        if progs:
            if trapped:
                in_trap_bpf += 1
            else:
                outside_trap_bpf += 1
            leafmost, _ = progs[0]
            entry = progs[-1][1]  # the attached program; the others are its global functions
            callee = chain[leafmost - 1] if leafmost > 0 else OWN
            per_program[entry][callee] += 1
        elif trapped:
            in_trap_other += 1
            trap_work[chain[0]] += 1
    trapped_total = in_trap_bpf + in_trap_other
    if trapped_total == 0:
        return None
    out = app_split(headers, samples, measurements)
    out.append("## The traps: programs against the trap's own work\n")
    out.append("| where | samples | share of the trapped samples |")
    out.append("|---|---:|---:|")
    out.append(f"| eBPF programs | {in_trap_bpf} | {pct(in_trap_bpf, trapped_total)} |")
    out.append(f"| the trap's own work | {in_trap_other} | {pct(in_trap_other, trapped_total)} |")
    out.append(
        f"\nSamples in eBPF programs outside a trap (network programs run in the app's context when it sends "
        f"or receives): {outside_trap_bpf}.\n"
    )
    out.append("The trap's own work, by the function the sample was in (the first 10):\n")
    out.append("| function | samples | share of the trap's own work |")
    out.append("|---|---:|---:|")
    for name, n in trap_work.most_common(10):
        out.append(f"| `{name}` | {n} | {pct(n, in_trap_other)} |")
    out.append("\n## Each program, by what it was doing\n")
    for entry, callees in sorted(per_program.items(), key=lambda kv: -sum(kv[1].values())):
        total = sum(callees.values())
        out.append(f"### `{entry}`: {total} samples\n")
        out.append("| in | samples | share of the program |")
        out.append("|---|---:|---:|")
        for name, n in callees.most_common(8):
            shown = name if name == OWN else f"`{name}`"
            out.append(f"| {shown} | {n} | {pct(n, total)} |")
        rest = total - sum(n for _, n in callees.most_common(8))
        if rest:
            out.append(f"| everything else | {rest} | {pct(rest, total)} |")
        out.append("")
    return out


GO_INTRO = (
    "The Go benchmark's minimal handler (`bench/go`, `GET /users/1`, 3 paired rounds by default) ran while `perf record -a -g` "
    "sampled every CPU on the software clock. The kernel side is read from samples taken in the app's "
    "context (the uprobe traps and the eBPF programs run there, not in the probe); the probe's own time from "
    "a second sampler that followed the probe process (the last section). A sample inside a trap "
    "(`asm_exc_int3` in its call chain) is either in an eBPF program or in the trap's own work (the "
    "kernel's uprobe lookup, the instruction's emulation, the return to user space). A program's samples "
    "are split by the function it was in: its own instructions or the kernel helper it had called. A "
    "program's global functions are listed on their own when the call chain does not reach back to "
    "the program that called them. "
    "Shares, not times, are what this measures: sampling slows every path a little, so the run's own BPF "
    "statistics (below) read higher than in `bench/results/go.md`.\n"
)
PYTHON_INTRO = (
    "The Python benchmark's Flask minimal handler (`bench/python`, gunicorn, `GET /users/1`, 3 paired rounds by default) ran "
    "while perf followed the probe process (below). The Python probe has no uprobe traps: its programs run on "
    "the syscall tracepoints, and their time per run is in the run's BPF statistics (the last section). "
    "Shares, not times, are what this measures: sampling slows the probe, so its CPU per request here reads "
    "higher than in `bench/results/python.md`.\n"
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--language", choices=("go", "python"), default="go")
    ap.add_argument("--samples", type=Path, help="the app's samples (Go: the traps and the programs)")
    ap.add_argument("--probe-samples", type=Path, required=True)
    ap.add_argument("--bench", type=Path, required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--probe-label", required=True)
    ap.add_argument("--load-start", required=True)
    ap.add_argument("--load-end", required=True)
    args = ap.parse_args()

    # The benchmark writes every measurement to a .json next to its results.
    measurements = json.loads(args.bench.with_suffix(".json").read_text())["measurements"]
    app = None
    if args.language == "go":
        app = app_section(args.samples, measurements) if args.samples else None
        if app is None:
            print(
                "bench/bpf-profile: no sample of the app was taken inside a uprobe trap; "
                "did the probe attach (the Go benchmark's log says), and does perf see kernel call chains?",
                file=sys.stderr,
            )
            return 1

    bench_md = args.bench.read_text()
    machine, bench_table = bench_lines(bench_md)
    title = "Go" if args.language == "go" else "Python"
    out = []
    out.append(f"# Where the {title} probe's time per request goes (perf)\n")
    out.append(
        f"Generated by `{args.command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"(probe: {args.probe_label}).\n"
    )
    out.append(f"{machine}")
    out.append(f"Load average (1/5/15 min) at the start: {args.load_start}; at the end: {args.load_end}.\n")
    out.append(GO_INTRO if args.language == "go" else PYTHON_INTRO)
    if app:
        out.extend(app)
    probe_us = mean_of(measurements, "probe", "probe_cpu_us")
    out.extend(probe_section(args.probe_samples, f"{probe_us:.1f}" if probe_us else None, args.language))
    if bench_table:
        out.append("## The same run's BPF statistics (per run of each program, slowed by the sampling)\n")
        out.extend(bench_table)
        out.append("")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
