"""OpenTelemetry metrics for a store (the ``otel`` extra: ``pip install assistant-sessions[otel]``).

``instrument(store)`` registers observable instruments that read :meth:`SessionStore.statistics`
when the SDK collects, so nothing is added to the store's hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

try:
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
except ModuleNotFoundError as exc:  # pragma: no cover - depends on what is installed
    if exc.name is None or not exc.name.startswith("opentelemetry"):
        raise
    raise ModuleNotFoundError(
        "assistant_sessions.otel needs OpenTelemetry: pip install 'assistant-sessions[otel]'",
        name=exc.name,
    ) from exc

from ._store import SessionStore
from .model import StoreStatistics

__all__ = ["instrument"]

_PREFIX = "assistant_sessions"


def instrument(store: SessionStore, meter_provider: MeterProvider | None = None) -> Meter:
    """Register the store's metrics with OpenTelemetry and return the meter used.

    Instruments (all observable, read at collection): ``assistant_sessions.actors.live``,
    ``.actors.busy``, ``.mailbox.depth.max``, ``.mailbox.depth.total``, ``.calls.in_flight``
    (gauges); ``.operations`` (counter, attribute ``kind``), ``.operation.errors`` (counter,
    ``kind``), ``.operation.latency`` (gauge in seconds, attributes ``kind`` and ``quantile``
    = p50/p95/p99/max); ``.sweeps``, ``.sessions.suspended``, ``.sessions.expired``,
    ``.sessions.purged``, ``.actor.restarts``, ``.adapter.errors`` (counters).

    Args:
        store: The store to observe; it may be opened and closed later.
        meter_provider: Where to register; the global provider when ``None``.
    """
    provider = meter_provider or metrics.get_meter_provider()
    meter = provider.get_meter("assistant_sessions")

    def gauge(name: str, read: Callable[[StoreStatistics], int], description: str) -> None:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            return [Observation(read(store.statistics()))]

        meter.create_observable_gauge(f"{_PREFIX}.{name}", [observe], description=description)

    def counter(name: str, read: Callable[[StoreStatistics], int], description: str) -> None:
        def observe(_: CallbackOptions) -> Iterable[Observation]:
            return [Observation(read(store.statistics()))]

        meter.create_observable_counter(f"{_PREFIX}.{name}", [observe], description=description)

    gauge("actors.live", lambda s: s.live_actors, "Live user actors")
    gauge("actors.busy", lambda s: s.busy_actors, "Actors applying or holding requests")
    gauge("mailbox.depth.max", lambda s: s.mailbox_depth_max, "Longest mailbox queue")
    gauge("mailbox.depth.total", lambda s: s.mailbox_depth_total, "Requests queued in mailboxes")
    gauge("calls.in_flight", lambda s: s.in_flight, "Calls accepted and not yet returned")
    counter("sweeps", lambda s: s.sweeps, "Sweeps run")
    counter("sessions.suspended", lambda s: s.sessions_suspended, "Sessions suspended by sweeps")
    counter("sessions.expired", lambda s: s.sessions_expired, "Sessions expired by sweeps")
    counter("sessions.purged", lambda s: s.sessions_purged, "Expired sessions deleted")
    counter("actor.restarts", lambda s: s.restarts, "Actor restarts")
    counter("adapter.errors", lambda s: s.adapter_errors, "Storage failures")

    def operations(_: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(op.count, {"kind": kind})
            for kind, op in store.statistics().operations.items()
        ]

    def errors(_: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(op.errors, {"kind": kind})
            for kind, op in store.statistics().operations.items()
        ]

    def latency(_: CallbackOptions) -> Iterable[Observation]:
        observations: list[Observation] = []
        for kind, op in store.statistics().operations.items():
            quantiles: dict[str, Any] = {"p50": op.p50, "p95": op.p95, "p99": op.p99, "max": op.max}
            observations.extend(
                Observation(value, {"kind": kind, "quantile": q}) for q, value in quantiles.items()
            )
        return observations

    meter.create_observable_counter(
        f"{_PREFIX}.operations", [operations], description="Operations by kind"
    )
    meter.create_observable_counter(
        f"{_PREFIX}.operation.errors", [errors], description="Failed operations by kind"
    )
    meter.create_observable_gauge(
        f"{_PREFIX}.operation.latency",
        [latency],
        unit="s",
        description="Operation latency percentiles by kind",
    )
    return meter
