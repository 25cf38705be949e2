"""What the machine is and what it is doing: CPU time of the node and of
process groups, RSS, load average, pinning, free ports.

Everything is read from /proc so that nothing but the Linux kernel stands
between the benchmark and its figures.
"""

from __future__ import annotations

import os
import re
import platform
import socket
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0, alive=lambda: True) -> None:
    """Waits until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the process meant to listen on port {port} exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def loadavg_1m() -> float:
    return float(loadavg().split()[0])


@dataclass(frozen=True)
class CpuTimes:
    """Busy and total jiffies of every CPU and of each one (from /proc/stat)."""

    busy: int
    total: int
    per_cpu_busy: tuple[int, ...]

    @staticmethod
    def read() -> "CpuTimes":
        busy = total = 0
        per_cpu = []
        with open("/proc/stat") as f:
            for line in f:
                if not line.startswith("cpu"):
                    break
                fields = line.split()
                # user nice system idle iowait irq softirq steal guest guest_nice;
                # guest time is already inside user, so it is not added again.
                values = [int(v) for v in fields[1:9]]
                b = values[0] + values[1] + values[2] + values[5] + values[6] + values[7]
                if fields[0] == "cpu":
                    busy, total = b, sum(values)
                else:
                    per_cpu.append(b)
        return CpuTimes(busy, total, tuple(per_cpu))

    def __sub__(self, other: "CpuTimes") -> "CpuTimes":
        return CpuTimes(
            self.busy - other.busy,
            self.total - other.total,
            tuple(a - b for a, b in zip(self.per_cpu_busy, other.per_cpu_busy)),
        )


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def process_ticks(pid: int) -> int:
    """utime + stime of one process (all its threads, live and exited), in jiffies."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0
    return int(fields[11]) + int(fields[12])


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None and int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def group_ticks(pgid: int) -> int:
    """CPU jiffies of every live process of a process group (gunicorn master and workers)."""
    return sum(process_ticks(pid) for pid in group_pids(pgid))


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB; (0, 0) if it is gone."""
    rss = hwm = 0.0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) / 1024
    except OSError:
        pass
    return rss, hwm


def status_kib(pid: int) -> dict[str, int]:
    """Memory fields of /proc/<pid>/status in KiB, and its thread count."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "VmData", "VmSize", "Threads"):
                out[key] = int(value.split()[0])
    return out


_MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \d+\s*(.*)$")


def smaps_breakdown(pid: int, binary_name: str) -> dict[str, dict[str, int]]:
    """Rss, Pss and Anonymous (kB) per kind of mapping, and how many mappings.

    Kinds: `heap` ([heap], the brk heap), `anonymous` (mappings without a
    name: mmap'd allocator arenas, thread stacks), `binary` (the probe's own
    executable: code, read-only data, relocated data), `bpf-map` (mmap'd BPF
    maps: ring buffers, and array maps the loader maps), other
    `anon_inode:*` by their name, `libraries` (*.so), `stack`, `other`."""
    kinds: dict[str, dict[str, int]] = defaultdict(lambda: {"rss": 0, "pss": 0, "private": 0, "anonymous": 0, "mappings": 0})
    current = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = _MAPPING.match(line)
            if m:
                name = m.group(1).strip()
                if name == "[heap]":
                    current = "heap"
                elif name == "":
                    current = "anonymous"
                elif name.endswith("/" + binary_name):
                    current = "binary"
                elif name.startswith("anon_inode:bpf-map"):
                    current = "bpf-map"
                elif name.startswith("anon_inode:"):
                    current = name
                elif ".so" in name:
                    current = "libraries"
                elif name == "[stack]":
                    current = "stack"
                else:
                    current = "other"
                kinds[current]["mappings"] += 1
                continue
            key, _, value = line.partition(":")
            if current and key in ("Rss", "Pss", "Anonymous"):
                kinds[current][key.lower()] += int(value.split()[0])
            elif current and key in ("Private_Clean", "Private_Dirty"):
                kinds[current]["private"] += int(value.split()[0])
    return dict(kinds)


def machine() -> dict[str, str]:
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {
        "cpus": str(os.cpu_count()),
        "cpu_model": model,
        "memory": f"{mem_kib / 1048576:.0f} GiB",
        "kernel": platform.release(),
        "hostname": platform.node(),
    }


# What the probe binary is built from: a change elsewhere (a benchmark
# script, docs) does not make its build "dirty".
PROBE_SOURCES = ("probe", "probe-ebpf", "operator/api", "Cargo.toml", "Cargo.lock")


def git_describe(repo: str) -> str:
    """The commit the probe is built from, `-dirty` if its sources differ from it."""
    try:
        out = subprocess.run(
            ["git", "-C", repo, "describe", "--always", "--abbrev=10"],
            capture_output=True,
            text=True,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", repo, "diff", "--quiet", "HEAD", "--", *PROBE_SOURCES],
        ).returncode != 0
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_list() -> list[int]:
    return sorted(os.sched_getaffinity(0))
