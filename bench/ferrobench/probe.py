"""ferrotel-probe as the benchmark runs it: standalone, targets on the
command line, OTLP/gRPC to the benchmark's collector, its /metrics read for
what it saw."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import system
from .procs import Service


def fetch_metrics(addr: str, timeout: float = 5) -> str:
    """A probe's /metrics text at `addr` (host:port), or "" while it does not answer."""
    try:
        return urllib.request.urlopen(f"http://{addr}/metrics", timeout=timeout).read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return ""


def metric_sum(text: str, name: str) -> float:
    """The sum of every series of the metric `name` (a regex) in /metrics text."""
    pattern = re.compile(rf"^{name}(?:\{{[^}}]*\}})?\s+([0-9.e+-]+)$", re.M)
    return sum(float(v) for v in pattern.findall(text))


class Probe:
    def __init__(
        self,
        binary: Path,
        *,
        language: str,
        targets: list[str],
        endpoint: str,
        cpus: str,
        log: Path,
        attached: int = 1,
        config: Path | None = None,
        ready: dict[str, int] | None = None,
    ):
        """Starts the probe and waits until it traces `attached` processes
        (its uprobes or claims are in place: a measurement that starts
        earlier would pay for the attach and miss requests) and every metric
        in `ready` reaches its value (e.g. the profiler sees its targets)."""
        self.metrics_addr = f"127.0.0.1:{system.free_port()}"
        argv = [
            str(binary),
            "--language",
            language,
            *(["--config", str(config)] if config else []),
            *targets,
            "--metrics-addr",
            self.metrics_addr,
        ]
        self.service = Service(
            "probe",
            argv,
            cpus=cpus,
            log=log,
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "FERROTEL_LOG_LEVEL": "info"},
        )
        self.language = language
        deadline = time.monotonic() + 60
        while True:
            if not self.service.alive():
                raise RuntimeError(f"the probe exited:\n{self.service.log_tail()}")
            text = self.metrics()
            if self._sum("ferrotel_probe_attached_processes", text) >= attached and all(
                self._sum(name, text) >= value for name, value in (ready or {}).items()
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the probe did not attach in 60 s:\n{self.service.log_tail()}")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.service.pid

    def metrics(self) -> str:
        return fetch_metrics(self.metrics_addr)

    def _sum(self, name: str, text: str | None = None) -> float:
        return metric_sum(self.metrics() if text is None else text, name)

    def counters(self) -> dict[str, float]:
        text = self.metrics()
        return {
            "events": self._sum("ferrotel_probe_events_received_total", text),
            "records": self._sum("ferrotel_probe_records_total", text),
            "kernel_dropped": self._sum("ferrotel_probe_kernel_events_dropped_total", text),
            "export_dropped": self._sum("ferrotel_probe_export_dropped_items_total", text),
        }

    def loss_counters(self) -> dict[str, float]:
        """Every counter of the probe that counts a request (or an event of
        one) it could not turn into a span: kernel events it could not
        submit (ring buffer full, undecodable), connections it stopped
        tracing (memory caps), payloads it could not parse, completed
        requests the pipeline dropped, spans the sampler left out, spans the
        exporter dropped."""
        text = self.metrics()
        return {
            "kernel_events_dropped": self._sum("ferrotel_probe_kernel_events_dropped_total", text),
            "connections_untraced": self._sum("ferrotel_probe_connections_untraced_total", text),
            "parse_errors": self._sum("ferrotel_probe_parse_errors_total", text),
            "records_dropped": self._sum("ferrotel_probe_records_dropped_total", text),
            "spans_unsampled": self._sum("ferrotel_probe_spans_unsampled_total", text),
            "export_dropped_spans": self._sum('ferrotel_probe_export_dropped_items_total\\{[^}]*signal="traces"[^}]*\\}', text),
        }

    def ticks(self) -> int:
        return self.service.ticks()

    def rss_mib(self) -> tuple[float, float]:
        return system.rss_mib(self.service.pid)

    def stop(self) -> None:
        self.service.stop()
