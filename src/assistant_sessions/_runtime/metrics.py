"""Operation counters and latency histograms behind :meth:`SessionStore.statistics`.

Recording is on the hot path, so it is two ``perf_counter`` reads and a few integer
increments: latencies go into log-spaced buckets (8 per power of two, each at most 12.5% wide),
from which percentiles are read with that precision. Nothing here logs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

from ..model import OperationStatistics

__all__ = ["Histogram", "Recorder"]

_SUBBUCKETS: Final = 8
_MIN_EXPONENT: Final = -24  # about 60 ns
_MAX_EXPONENT: Final = 8  # 256 s
_BUCKETS: Final = (_MAX_EXPONENT - _MIN_EXPONENT) * _SUBBUCKETS + 1
_TWICE_SUB: Final = 2.0 * _SUBBUCKETS
_INDEX_BASE: Final = _MIN_EXPONENT * _SUBBUCKETS + _SUBBUCKETS
_frexp: Final = math.frexp


class Histogram:
    """Log-bucketed latency histogram."""

    __slots__ = ("count", "counts", "errors", "max")

    def __init__(self) -> None:
        self.counts = [0] * _BUCKETS
        self.count = 0
        self.errors = 0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        """Record one latency."""
        self.count += 1
        if seconds > self.max:
            self.max = seconds
        if seconds <= 0.0:
            self.counts[0] += 1
            return
        mantissa, exponent = _frexp(seconds)  # seconds = mantissa * 2**exponent, 0.5 <= m < 1
        # (mantissa - 0.5) * 2 * _SUBBUCKETS, folded into constants: this runs on every call.
        index = exponent * _SUBBUCKETS + int(mantissa * _TWICE_SUB) - _INDEX_BASE
        if 0 <= index < _BUCKETS:
            self.counts[index] += 1
        else:
            self.counts[0 if index < 0 else _BUCKETS - 1] += 1

    def percentile(self, fraction: float) -> float:
        """The latency below which ``fraction`` of the recorded ones fall (bucket upper bound)."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(fraction * self.count))
        seen = 0
        for index, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                exponent, sub = divmod(index, _SUBBUCKETS)
                upper = (0.5 + (sub + 1) / (2 * _SUBBUCKETS)) * 2.0 ** (exponent + _MIN_EXPONENT)
                return min(upper, self.max)
        return self.max

    def snapshot(self) -> OperationStatistics:
        """The histogram's figures now."""
        return OperationStatistics(
            count=self.count,
            errors=self.errors,
            p50=self.percentile(0.50),
            p95=self.percentile(0.95),
            p99=self.percentile(0.99),
            max=self.max,
        )


class Recorder:
    """Per-kind histograms plus the store's other counters."""

    __slots__ = (
        "adapter_errors",
        "histograms",
        "sessions_expired",
        "sessions_purged",
        "sessions_suspended",
    )

    def __init__(self) -> None:
        self.histograms: dict[str, Histogram] = {}
        self.adapter_errors = 0
        self.sessions_suspended = 0
        self.sessions_expired = 0
        self.sessions_purged = 0

    def histogram(self, kind: str) -> Histogram:
        """The histogram of one operation kind."""
        histogram = self.histograms.get(kind)
        if histogram is None:
            histogram = self.histograms[kind] = Histogram()
        return histogram

    def operations(self) -> Mapping[str, OperationStatistics]:
        """Figures of every kind recorded so far."""
        return {kind: h.snapshot() for kind, h in sorted(self.histograms.items())}
