"""Summaries a skeptic accepts: per-round values (each already paired with
the bare run of its own round) summarised by their mean, a 95 % confidence
interval of that mean, the median and the whole range — never a ratio of
medians, and never a single number without its spread."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# Two-sided 95 % quantiles of Student's t for n - 1 degrees of freedom
# (n = 2..30); beyond that the normal quantile is close enough.
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
        2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045]


@dataclass(frozen=True)
class Summary:
    mean: float
    ci95: float
    """Half-width of the 95 % confidence interval of the mean (0 for one value)."""
    median: float
    low: float
    high: float
    n: int

    @staticmethod
    def of(values: list[float | None]) -> "Summary | None":
        values = [v for v in values if v is not None]
        if not values:
            return None
        n = len(values)
        mean = statistics.fmean(values)
        ci = 0.0
        if n > 1:
            t = _T95[n - 2] if n - 2 < len(_T95) else 1.960
            ci = t * statistics.stdev(values) / math.sqrt(n)
        return Summary(mean, ci, statistics.median(values), min(values), max(values), n)

    def fmt(self, spec: str = ".2f") -> str:
        """`mean ±ci (low–high)`."""
        if self.n == 1:
            return f"{self.mean:{spec}}"
        return f"{self.mean:{spec}} ±{self.ci95:{spec}} ({self.low:{spec}}–{self.high:{spec}})"


def fmt(summary: Summary | None, spec: str = ".2f") -> str:
    return summary.fmt(spec) if summary else "-"


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB) samples, in MiB per minute."""
    if len(samples) < 3:
        return None
    n = len(samples)
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    sxx = sum((t - mx) ** 2 for t, _ in samples)
    if sxx == 0:
        return None
    sxy = sum((t - mx) * (v - my) for t, v in samples)
    return sxy / sxx * 60
