#!/usr/bin/env python3
"""Exits 0 once the probe with this pid traces a process: its
`ferrotel_probe_attached_processes` (on the `--metrics-addr` of its command
line) is at least 1. Waits at most 60 s. Used by bench/bpf-profile/run.sh to
start sampling the probe when its start-up work is over."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ferrobench.probe import fetch_metrics, metric_sum  # noqa: E402


def metrics_addr(pid: str) -> str | None:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    for flag, value in zip(argv, argv[1:]):
        if flag == b"--metrics-addr":
            return value.decode()
    return None


def main() -> int:
    try:
        addr = metrics_addr(sys.argv[1])
    except OSError:
        return 1
    if addr is None:
        return 1
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if metric_sum(fetch_metrics(addr, timeout=2), "ferrotel_probe_attached_processes") >= 1:
            return 0
        time.sleep(0.05)
    return 1


if __name__ == "__main__":
    sys.exit(main())
