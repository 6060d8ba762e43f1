"""OpenTelemetry metrics are read from the same counters as statistics()."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from assistant_sessions import SessionStore
from assistant_sessions.otel import instrument

pytestmark = pytest.mark.anyio


def _points(reader: InMemoryMetricReader) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    data = reader.get_metrics_data()
    assert data is not None
    points = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:  # type: ignore[union-attr]
                    attributes = tuple(sorted((k, str(v)) for k, v in point.attributes.items()))
                    points[(metric.name, attributes)] = point.value  # type: ignore[union-attr]
    return points


async def test_metrics_follow_store_statistics(store: SessionStore) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    instrument(store, provider)
    for i in range(5):
        await store.resolve(user_id=f"u{i % 2}")
    points = _points(reader)
    assert points[("assistant_sessions.operations", (("kind", "resolve"),))] == 5
    assert points[("assistant_sessions.actors.live", ())] == 2
    assert points[("assistant_sessions.calls.in_flight", ())] == 0
    p99 = points[
        ("assistant_sessions.operation.latency", (("kind", "resolve"), ("quantile", "p99")))
    ]
    assert p99 == store.statistics().operations["resolve"].p99
    assert p99 > 0
    provider.shutdown()
