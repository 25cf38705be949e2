"""The real OpenTelemetry Collector (`make tools`' otelcol) as the sink of
every variant, counting the spans it accepts.

The count comes from the collector's own telemetry
(`otelcol_receiver_accepted_spans`, Prometheus pull reader), so a span
counts once it was accepted over OTLP — whoever sent it, the probe or the
OpenTelemetry SDK. Exporter: `nop`, so the collector's own cost stays small
and the same for every variant.
"""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

from . import system
from .procs import Service

_ACCEPTED = re.compile(r'^otelcol_receiver_accepted_spans(?:_total)?\{[^}]*\}\s+([0-9.e+]+)', re.M)
# Spans the collector itself lost or refused (its receiver refused them, or
# an exporter failed to send or queue them).
_LOST = re.compile(
    r'^otelcol_(?:receiver_refused_spans|exporter_send_failed_spans|exporter_enqueue_failed_spans)(?:_total)?'
    r'(?:\{[^}]*\})?\s+([0-9.e+]+)',
    re.M,
)


class Collector:
    def __init__(
        self,
        binary: Path,
        workdir: Path,
        cpus: str,
        profiles: bool = False,
        traces_file: Path | None = None,
        grpc_port: int | None = None,
        name: str = "otelcol",
    ):
        """`profiles`: also a profiles pipeline, which our collector build
        refuses unless started with its feature gate. `traces_file`: the
        spans also go to this file (the `file` exporter, OTLP/JSON, one
        export request per line), for checks of what exactly arrived.
        `grpc_port`: the OTLP/gRPC port (a collector started again in the
        place of a stopped one)."""
        self.grpc = grpc_port or system.free_port()
        self.http = system.free_port()
        self.telemetry = system.free_port()
        config = workdir / f"{name}.yaml"
        traces_exporters = "[nop, file/traces]" if traces_file else "[nop]"
        file_exporter = (
            f"  file/traces: {{path: {traces_file}, flush_interval: 200ms}}\n" if traces_file else ""
        )
        config.write_text(
            f"""receivers:
  otlp:
    protocols:
      grpc: {{endpoint: 127.0.0.1:{self.grpc}}}
      http: {{endpoint: 127.0.0.1:{self.http}}}
exporters:
  nop: {{}}
{file_exporter}service:
  telemetry:
    logs: {{level: warn}}
    metrics:
      level: basic
      readers:
        - pull:
            exporter:
              prometheus: {{host: 127.0.0.1, port: {self.telemetry}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: {traces_exporters}}}
    metrics: {{receivers: [otlp], exporters: [nop]}}
"""
            + ("    profiles: {receivers: [otlp], exporters: [nop]}\n" if profiles else "")
        )
        argv = [str(binary), "--config", str(config)]
        if profiles:
            argv.append("--feature-gates=+service.profilesSupport")
        self.service = Service(name, argv, cpus=cpus, log=workdir / f"{name}.log")
        for port in (self.grpc, self.http, self.telemetry):
            system.wait_port(port, alive=self.service.alive)

    @property
    def grpc_url(self) -> str:
        return f"http://127.0.0.1:{self.grpc}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def accepted_spans(self) -> int:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.telemetry}/metrics", timeout=5).read().decode()
        return int(sum(float(v) for v in _ACCEPTED.findall(text)))

    def lost_spans(self) -> int:
        """Spans the collector refused or failed to export (its own telemetry)."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.telemetry}/metrics", timeout=5).read().decode()
        return int(sum(float(v) for v in _LOST.findall(text)))

    def settle(self, target: int, *, quiet: float = 0.5, patience: float = 7.0, limit: float = 30.0) -> int:
        """Waits for the spans of a load to arrive: until the count reaches
        `target` and then stays put for `quiet` seconds, or, short of the
        target, stays put for `patience` seconds (longer than the SDK's 5 s
        batch delay), or `limit` passes. Returns the count."""
        start = time.monotonic()
        last = self.accepted_spans()
        changed = start
        while True:
            time.sleep(0.2)
            now = time.monotonic()
            count = self.accepted_spans()
            if count != last:
                last, changed = count, now
            still = now - changed
            if (count >= target and still >= quiet) or still >= patience or now - start >= limit:
                return count

    @property
    def pid(self) -> int:
        return self.service.pid

    def stop(self) -> None:
        self.service.stop()
