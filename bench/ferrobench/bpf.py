"""Kernel-side cost of eBPF programs: run time and run count from the
kernel's BPF statistics (`kernel.bpf_stats_enabled=1`, read with
`bpftool prog show`), and small helper objects loaded with bpftool.

Statistics cost a little per program run themselves (two clock reads), the
same for every measured variant that has programs. They are switched on for
the run and the previous setting is restored however the run ends.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import procs

_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"


def enable_stats() -> None:
    """Turns BPF statistics on until the run ends."""
    with open(_SYSCTL) as f:
        before = f.read().strip()
    with open(_SYSCTL, "w") as f:
        f.write("1")

    def restore() -> None:
        with open(_SYSCTL, "w") as f:
            f.write(before)

    procs.at_cleanup(restore)


@dataclass
class ProgStats:
    """Run count and run time per program name, summed."""

    runs: dict[str, int] = field(default_factory=dict)
    ns: dict[str, int] = field(default_factory=dict)

    def __sub__(self, other: "ProgStats") -> "ProgStats":
        return ProgStats(
            {k: v - other.runs.get(k, 0) for k, v in self.runs.items()},
            {k: v - other.ns.get(k, 0) for k, v in self.ns.items()},
        )

    @property
    def total_ns(self) -> int:
        return sum(self.ns.values())

    @property
    def total_runs(self) -> int:
        return sum(self.runs.values())


def snapshot(owner_pid: int) -> ProgStats:
    """Statistics of the BPF programs process `owner_pid` holds (other
    probes may be loaded on a shared machine): the program ids come from
    its file descriptors (`/proc/<pid>/fdinfo`, which also carries each
    program's `run_time_ns` and `run_cnt`), the names from `bpftool`."""
    seen: dict[int, tuple[int, int]] = {}
    fdinfo = Path(f"/proc/{owner_pid}/fdinfo")
    try:
        entries = list(fdinfo.iterdir())
    except OSError:
        return ProgStats()
    for entry in entries:
        try:
            text = entry.read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
        # A program fd has run statistics; a link fd only names its program.
        if "prog_id" in fields and "run_cnt" in fields:
            seen[int(fields["prog_id"])] = (int(fields["run_cnt"]), int(fields["run_time_ns"]))
    stats = ProgStats()
    names = _names()
    for prog_id, (runs, ns) in seen.items():
        name = names.get(prog_id)
        if name is None:
            names = _names(refresh=True)
            name = names.get(prog_id, f"id{prog_id}")
        stats.runs[name] = stats.runs.get(name, 0) + runs
        stats.ns[name] = stats.ns.get(name, 0) + ns
    return stats


_name_cache: dict[int, str] = {}


def _names(refresh: bool = False) -> dict[int, str]:
    """Program id -> name (truncated by the kernel to 15 characters)."""
    if refresh or not _name_cache:
        out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True)
        _name_cache.clear()
        _name_cache.update({p["id"]: p.get("name", "") for p in json.loads(out.stdout)})
    return _name_cache


class AttachedObject:
    """A BPF object compiled from C and attached by `attach_object` (a small
    libbpf loader next to the benchmark: raw and BTF tracepoints need no
    tracefs) until `close()` or the end of the run; nothing is pinned, so
    nothing outlives the loader."""

    def __init__(self, source: Path, loader_source: Path, workdir: Path, defines: tuple[str, ...] = ()):
        if shutil.which("clang-19") is None:
            raise RuntimeError("clang-19 is needed to build the benchmark's BPF helper objects (apt-get install clang-19)")
        tag = source.stem.replace(".bpf", "") + "".join(d.lower() for d in defines)
        obj = workdir / f"{tag}.bpf.o"
        subprocess.run(
            ["clang-19", "-g", "-O2", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu",
             *(f"-D{d}" for d in defines), "-c", str(source), "-o", str(obj)],
            check=True,
        )
        loader = workdir / "attach_object"
        if not loader.exists():
            subprocess.run(["clang-19", "-O2", "-o", str(loader), str(loader_source), "-lbpf"], check=True)
        self.proc = subprocess.Popen([str(loader), str(obj)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "READY":
            self.close()
            raise RuntimeError(f"attaching {obj} failed")
        procs.at_cleanup(self.close)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
