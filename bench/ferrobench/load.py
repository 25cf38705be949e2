"""Closed-loop HTTP load with wrk: a fixed number of keep-alive
connections for a fixed time, the throughput and latency it got, and the
load generator's own CPU."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass


@dataclass
class LoadResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    """Socket errors plus non-2xx/3xx responses."""
    cpu_s: float
    """wrk's own CPU time (user + system)."""
    output: str = ""
    """wrk's whole output (a Lua script's `done` prints there)."""


def _ms(value: str) -> float:
    for unit, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3), ("m", 60e3)):
        if value.endswith(unit):
            return float(value[: -len(unit)]) * scale
    return float(value)


def wrk(
    url: str,
    *,
    seconds: float,
    connections: int = 16,
    cpus: str = "1",
    threads: int = 1,
    script: str | None = None,
    env: dict[str, str] | None = None,
    headers: tuple[str, ...] = (),
) -> LoadResult:
    """`script`: a wrk Lua script (path), `env`: variables it reads,
    `headers`: `Name: value` lines every request carries."""
    proc = subprocess.Popen(
        [
            "taskset",
            "-c",
            cpus,
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            *(["-s", script] if script else []),
            *[arg for header in headers for arg in ("-H", header)],
            url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    out = proc.stdout.read()
    # wait4 gives the child's rusage: the load generator's CPU, exactly.
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = 0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    return LoadResult(rps, p50, p99, requests, errors, usage.ru_utime + usage.ru_stime, out)
