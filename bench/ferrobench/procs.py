"""Processes the benchmark starts: each in its own process group, pinned to
a CPU set, logging to a file; all of them stopped when the run ends, however
it ends (normal exit, an exception, SIGINT or SIGTERM)."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import system

_live: list["Service"] = []
_cleanups: list = []


def at_cleanup(fn) -> None:
    """Runs `fn` when the run ends (after every process is stopped)."""
    _cleanups.append(fn)


def bpffs_dir(name: str) -> Path:
    """A directory of this run's own on the host's BPF filesystem, removed
    when the run ends: where probes pin the maps they share."""
    mounts = [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    bpffs = [f[4] for f in mounts if f[f.index("-") + 1] == "bpf"]
    if not bpffs:
        sys.exit(
            "no BPF filesystem is mounted (/proc/self/mountinfo): the probes pin the maps they share on one; "
            "mount it with `mount -t bpf bpf /sys/fs/bpf`"
        )
    path = Path(bpffs[0]) / name
    path.mkdir()
    at_cleanup(lambda: shutil.rmtree(path, ignore_errors=True))
    return path


def _stop_everything(*_args) -> None:
    for service in reversed(list(_live)):
        service.stop()
    while _cleanups:
        try:
            _cleanups.pop()()
        except Exception as error:  # noqa: BLE001 - cleanup must go on
            print(f"cleanup failed: {error}", file=sys.stderr)


def _on_signal(signum, _frame):
    _stop_everything()
    sys.exit(128 + signum)


atexit.register(_stop_everything)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


class Service:
    """A started process group (e.g. gunicorn and its workers)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        cpus: str,
        log: Path,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        stdout=None,
        stdin=None,
    ):
        self.name = name
        self.log = log
        full_env = dict(os.environ)
        full_env.update(env or {})
        self._log_file = open(log, "wb")
        self.proc = subprocess.Popen(
            ["taskset", "-c", cpus, *argv],
            env=full_env,
            cwd=cwd,
            stdin=stdin,
            stdout=stdout if stdout is not None else self._log_file,
            stderr=self._log_file,
            start_new_session=True,
        )
        _live.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ticks(self) -> int:
        """CPU jiffies of the whole process group."""
        return system.group_ticks(self.proc.pid)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        if self in _live:
            _live.remove(self)
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and system.group_pids(self.proc.pid):
                time.sleep(0.05)
        # Whatever is left of the group (workers that ignored SIGTERM).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        self._log_file.close()
