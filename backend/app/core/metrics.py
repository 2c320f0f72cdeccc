"""Request metrics for ``/metrics`` (Prometheus) and ``/api/v1/stats`` (JSON)."""

from __future__ import annotations

import math
import os
import platform
import time
from collections import deque
from typing import Any, Iterator

from prometheus_client import (
    CollectorRegistry,
    disable_created_metrics,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from app import __version__
from app.storage.memory import Store

_SAMPLES = 1024
_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


class RouteStats:
    """Count and a window of the latest durations of one route."""

    __slots__ = ("count", "errors", "recent")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.recent: deque[float] = deque(maxlen=_SAMPLES)


class Metrics:
    """One registry per app, so that every app (and test) counts on its own."""

    def __init__(self, store: Store, *, started: float) -> None:
        self.store = store
        self.started = started
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "memdb_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "memdb_http_request_duration_seconds",
            "HTTP request latency by method, route template and status",
            ["method", "route", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        build = Gauge(
            "memdb_build_info",
            "Version of the service and of Python",
            ["version", "python"],
            registry=self.registry,
        )
        build.labels(__version__, platform.python_version()).set(1)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(_StoreCollector(self))
        self.routes: dict[tuple[str, str], RouteStats] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        code = str(status)
        self.requests.labels(method, route, code).inc()
        self.latency.labels(method, route, code).observe(seconds)
        stats = self.routes.get((method, route))
        if stats is None:
            stats = self.routes[(method, route)] = RouteStats()
        stats.count += 1
        if status >= 500:
            stats.errors += 1
        stats.recent.append(seconds)

    def uptime(self) -> float:
        return time.monotonic() - self.started

    def route_summary(self) -> list[dict[str, Any]]:
        out = []
        for (method, route), stats in sorted(
            self.routes.items(), key=lambda i: i[0][1]
        ):
            recent = sorted(stats.recent)
            out.append(
                {
                    "method": method,
                    "route": route,
                    "count": stats.count,
                    "errors_5xx": stats.errors,
                    "p50_ms": _percentile(recent, 0.50),
                    "p95_ms": _percentile(recent, 0.95),
                    "p99_ms": _percentile(recent, 0.99),
                }
            )
        return out


def _percentile(ordered: list[float], fraction: float) -> float | None:
    if not ordered:
        return None
    # nearest rank: the smallest sample with at least ``fraction`` of them at or below
    position = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return round(ordered[position] * 1000, 3)


def rss_bytes() -> int | None:
    """Resident memory of this process (Linux), else None."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return None


class _StoreCollector(Collector):
    """Store gauges, read when Prometheus scrapes."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        store = self.metrics.store
        with store.lock:
            tables = [
                (
                    name,
                    len(t.records),
                    [(i.field, i.entries()) for i in t.indexes.values()],
                )
                for name, t in store.tables.items()
            ]
        records = GaugeMetricFamily(
            "memdb_records", "Records per table", labels=["table"]
        )
        entries = GaugeMetricFamily(
            "memdb_index_entries", "Entries per index", labels=["table", "field"]
        )
        for name, count, indexes in tables:
            records.add_metric([name], count)
            for field, size in indexes:
                entries.add_metric([name, field], size)
        yield records
        yield entries
        yield GaugeMetricFamily(
            "memdb_memory_estimate_bytes",
            "Estimated bytes held by records and indexes",
            value=store.memory_estimate(),
        )
        yield GaugeMetricFamily(
            "memdb_uptime_seconds",
            "Seconds since the service started",
            value=self.metrics.uptime(),
        )
