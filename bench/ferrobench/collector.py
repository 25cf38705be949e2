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


class Collector:
    def __init__(self, binary: Path, workdir: Path, cpus: str, profiles: bool = False):
        """`profiles`: also a profiles pipeline, which our collector build
        refuses unless started with its feature gate."""
        self.grpc = system.free_port()
        self.http = system.free_port()
        self.telemetry = system.free_port()
        config = workdir / "otelcol.yaml"
        config.write_text(
            f"""receivers:
  otlp:
    protocols:
      grpc: {{endpoint: 127.0.0.1:{self.grpc}}}
      http: {{endpoint: 127.0.0.1:{self.http}}}
exporters:
  nop: {{}}
service:
  telemetry:
    logs: {{level: warn}}
    metrics:
      level: basic
      readers:
        - pull:
            exporter:
              prometheus: {{host: 127.0.0.1, port: {self.telemetry}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [nop]}}
    metrics: {{receivers: [otlp], exporters: [nop]}}
"""
            + ("    profiles: {receivers: [otlp], exporters: [nop]}\n" if profiles else "")
        )
        argv = [str(binary), "--config", str(config)]
        if profiles:
            argv.append("--feature-gates=+service.profilesSupport")
        self.service = Service("otelcol", argv, cpus=cpus, log=workdir / "otelcol.log")
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
