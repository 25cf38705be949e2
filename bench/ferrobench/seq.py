"""Loss accounting that can be checked from outside the probe.

The load generator stamps every request with a sequence number in its path
(`GET /users/<target>-<n>`, n = 1, 2, ...: the apps' `/users/{id}` route
answers it with the id in its JSON body); the real collector writes every
span it received to a file (`file` exporter, OTLP/JSON); the checker reads
that file and tells, per target, how many requests were sent, how many
server spans arrived, which sequence numbers arrived twice or never, and
whether the probe's own drop counters account for every missing one.

The load is wrk with a Lua script (one wrk thread per target, so one
sequence): it knows exactly which requests got no answer when it stopped
(the app echoes the id in its body, the script crosses it off), so a
request cut off by the end of the load is not mistaken for a lost span.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import load

LUA = r"""
-- Sequence-stamped load: GET <prefix><n>, n = 1, 2, ... (one wrk thread).
-- `pending` holds the numbers sent and not yet answered; `done` prints the
-- totals and what was still pending when wrk stopped.
local prefix = os.getenv("FERROBENCH_SEQ_PREFIX")
issued = 0
answered = 0
pending = {}
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function request()
  -- wrk calls request() once before the load to check what it returns,
  -- and never sends that one: it gets number 0, which is not counted.
  if not checked then
    checked = true
    return wrk.format("GET", prefix .. 0)
  end
  issued = issued + 1
  pending[issued] = true
  return wrk.format("GET", prefix .. issued)
end

function response(status, headers, body)
  answered = answered + 1
  local n = tonumber(string.match(body, '"id":%s*"[%w_]+%-(%d+)"'))
  if n then pending[n] = nil end
end

function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    local left = {}
    for n, _ in pairs(t:get("pending")) do table.insert(left, n) end
    io.write(string.format("SEQ issued=%d answered=%d pending=%s\n",
      t:get("issued"), t:get("answered"), table.concat(left, ",")))
  end
end
"""

PATH = re.compile(r"^/users/([A-Za-z0-9_]+)-(\d+)$")
SEQ_LINE = re.compile(r"^SEQ issued=(\d+) answered=(\d+) pending=([0-9,]*)$", re.M)


@dataclass
class SeqLoad:
    target: str
    load: load.LoadResult
    issued: int
    answered: int
    pending: list[int]
    """Sent, no answer when the load stopped (cut off by its end, or timed out)."""


def lua_script(workdir: Path) -> str:
    path = workdir / "seq.lua"
    path.write_text(LUA)
    return str(path)


def run(target: str, base_url: str, *, seconds: float, connections: int, cpus: str, workdir: Path) -> SeqLoad:
    """Sequence-stamped closed-loop load on `base_url` for `seconds`."""
    result = load.wrk(
        base_url,
        seconds=seconds,
        connections=connections,
        cpus=cpus,
        threads=1,
        script=lua_script(workdir),
        env={"FERROBENCH_SEQ_PREFIX": f"/users/{target}-"},
    )
    m = SEQ_LINE.search(result.output)
    if not m:
        raise RuntimeError(f"wrk did not print its sequence totals (is its Lua support missing?):\n{result.output}")
    pending = sorted(int(n) for n in m.group(3).split(",") if n)
    return SeqLoad(target, result, int(m.group(1)), int(m.group(2)), pending)


@dataclass
class Received:
    """Server spans per target and sequence number, as the collector wrote them."""

    seen: dict[str, bytearray] = field(default_factory=dict)
    """target -> one byte per sequence number: spans received (saturating at 255)."""
    other_spans: int = 0
    """Spans that are not a sequence-stamped server span (none are expected)."""

    def add(self, target: str, n: int) -> None:
        seen = self.seen.setdefault(target, bytearray())
        if n >= len(seen):
            seen.extend(bytes(max(n + 1 - len(seen), len(seen))))
        if seen[n] < 255:
            seen[n] += 1


def read_spans(paths: list[Path], received: Received | None = None) -> Received:
    """Reads the `file` exporter's output (one OTLP/JSON export request per line)."""
    received = received or Received()
    for path in paths:
        if not path.exists():
            continue
        with open(path, "rb") as f:
            for line in f:
                if not line.strip():
                    continue
                request = json.loads(line)
                for rs in request.get("resourceSpans", []):
                    for ss in rs.get("scopeSpans", []):
                        for span in ss.get("spans", []):
                            _add_span(received, span)
    return received


def _add_span(received: Received, span: dict) -> None:
    # OTLP/JSON writes the kind as its number; 2 is SPAN_KIND_SERVER.
    if span.get("kind") not in (2, "SPAN_KIND_SERVER"):
        received.other_spans += 1
        return
    for attr in span.get("attributes", []):
        if attr.get("key") == "url.path":
            m = PATH.match(attr.get("value", {}).get("stringValue", ""))
            if m:
                received.add(m.group(1), int(m.group(2)))
                return
    received.other_spans += 1


@dataclass
class Accounting:
    target: str
    sent: int
    answered: int
    unanswered_at_stop: int
    received: int
    """Distinct sequence numbers with at least one server span."""
    duplicates: int
    """Server spans beyond the first for a sequence number."""
    duplicated_numbers: int
    missing: int
    """Sequence numbers with no server span, among those that were answered."""
    missing_unanswered: int
    """Sequence numbers with no span that had no answer when the load stopped
    (the server may never have read them): not loss."""
    unexpected: int
    """Spans for sequence numbers that were never sent."""
    counted_drops: dict[str, float]
    """The probe's counters of requests or events it lost, and the
    collector's of spans it lost."""
    uncounted: int
    """Missing spans that no counter accounts for: must be 0."""
    first_missing: list[int]

    @property
    def counted_total(self) -> float:
        return sum(self.counted_drops.values())


def account(load_: SeqLoad, received: Received, counted_drops: dict[str, float]) -> Accounting:
    """Per-target figures. A counter counts events or requests, not sequence
    numbers, so "every missing one counted" is checked as: missing ≤ the sum
    of the drop counters (a dropped event may cost at most one request)."""
    seen = received.seen.get(load_.target, bytearray())
    pending = set(load_.pending)
    got = dup = dup_numbers = missing = missing_pending = unexpected = 0
    first_missing: list[int] = []
    for n in range(1, load_.issued + 1):
        c = seen[n] if n < len(seen) else 0
        if c:
            got += 1
            if c > 1:
                dup += c - 1
                dup_numbers += 1
        elif n in pending:
            missing_pending += 1
        else:
            missing += 1
            if len(first_missing) < 10:
                first_missing.append(n)
    for n in range(load_.issued + 1, len(seen)):
        unexpected += seen[n]
    uncounted = max(0, missing - int(sum(counted_drops.values())))
    return Accounting(
        target=load_.target,
        sent=load_.issued,
        answered=load_.answered,
        unanswered_at_stop=len(pending),
        received=got,
        duplicates=dup,
        duplicated_numbers=dup_numbers,
        missing=missing,
        missing_unanswered=missing_pending,
        unexpected=unexpected,
        counted_drops=counted_drops,
        uncounted=uncounted,
        first_missing=first_missing,
    )


def as_dict(a: Accounting) -> dict:
    d = asdict(a)
    d["counted_total"] = a.counted_total
    return d
