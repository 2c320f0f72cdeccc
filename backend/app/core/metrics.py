"""Request metrics for ``/metrics`` (Prometheus) and ``/api/v1/stats`` (JSON)."""

from __future__ import annotations

import asyncio
import math
import os
import platform
import time
from bisect import bisect_left
from collections import deque
from itertools import accumulate
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson

from prometheus_client import (
    CollectorRegistry,
    disable_created_metrics,
    Gauge,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from app import __version__
from app.core.loop import GcMonitor, LoopMonitor
from app.services.work import WorkStats
from app.storage.base import TableInfo

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

    __slots__ = ("count", "errors", "aborted", "recent")

    def __init__(self, maxlen: int = _SAMPLES) -> None:
        self.count = 0
        self.errors = 0
        self.aborted = 0
        self.recent: deque[float] = deque(maxlen=maxlen)


class Series:
    """The counter and histogram of one (method, route, status): plain numbers,
    turned into Prometheus families only when ``/metrics`` is scraped."""

    __slots__ = ("count", "total", "buckets", "route")

    def __init__(self, route: RouteStats) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * (len(_BUCKETS) + 1)  # the last one is +Inf
        self.route = route


class Metrics:
    """One registry per app, so that every app (and test) counts on its own.

    Requests are counted in plain objects on the event loop's thread, one dict
    lookup a request; the registry reads them when it is scraped."""

    def __init__(
        self,
        *,
        started: float,
        work: WorkStats | None = None,
        loop: LoopMonitor | None = None,
        gc_monitor: GcMonitor | None = None,
        max_tables: int = 50,
    ) -> None:
        self.started = started
        # what the store said when it was last asked (the /metrics route asks
        # it, asynchronously, just before the registry is rendered)
        self.tables: list[TableInfo] = []
        self.memory = 0
        # why the store could not be read at the latest scrape (None: it was)
        self.store_problem: str | None = None
        self.work = work or WorkStats()
        self.loop = loop or LoopMonitor()
        self.gc = gc_monitor or GcMonitor()
        self.max_tables = max_tables
        # the change feed's followers now (set once the feed's service exists)
        self.followers: Callable[[], int] = lambda: 0
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        build = Gauge(
            "memdb_build_info",
            "Version of the service and of Python",
            ["version", "python"],
            registry=self.registry,
        )
        build.labels(__version__, platform.python_version()).set(1)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(_RequestCollector(self))
        self.registry.register(_StoreCollector(self))
        self.series: dict[tuple[str, str, int], Series] = {}
        self.routes: dict[tuple[str, str], RouteStats] = {}
        self.peers: Peers | None = None

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        series = self.series.get((method, route, status))
        if series is None:
            series = self._new_series(method, route, status)
        series.count += 1
        series.total += seconds
        series.buckets[bisect_left(_BUCKETS, seconds)] += 1
        stats = series.route
        stats.count += 1
        if status >= 500:
            stats.errors += 1
        elif status == 499:
            stats.aborted += 1
            return  # a client that left says nothing of the service's latency
        stats.recent.append(seconds)

    def _new_series(self, method: str, route: str, status: int) -> Series:
        stats = self.routes.get((method, route))
        if stats is None:
            stats = self.routes[(method, route)] = RouteStats()
        series = self.series[(method, route, status)] = Series(stats)
        return series

    def uptime(self) -> float:
        return time.monotonic() - self.started

    def loop_summary(self) -> dict[str, Any]:
        return {
            "lag_ms": round(self.loop.latest * 1000, 3),
            "max_lag_ms": round(self.loop.worst() * 1000, 3),
            "gc": self.gc.summary(),
        }

    def work_summary(self) -> dict[str, int]:
        work = self.work
        return {
            "heavy_active": work.heavy_active,
            "heavy_total": work.heavy_total,
            "busy_refusals": work.busy,
            "budget_exceeded": work.budget_exceeded,
        }

    # -- several workers -------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """This worker's counters, for the other workers to add to theirs."""
        return {
            "series": [
                [m, r, st, s.count, s.total, s.buckets]
                for (m, r, st), s in list(self.series.items())
            ],
            "routes": [
                [m, r, s.count, s.errors, s.aborted, list(s.recent)]
                for (m, r), s in list(self.routes.items())
            ],
        }

    def combined(
        self,
    ) -> tuple[dict[tuple[str, str, int], Series], dict[tuple[str, str], RouteStats]]:
        """Every worker's series and route windows added up: this one's live
        counts, published first, and the others' latest published ones (see
        ``Peers`` for why a counter never goes down across scrapes)."""
        if self.peers is None:
            return self.series, self.routes
        own = self.snapshot()
        peers = self.peers.exchange(own)
        if not peers:
            return self.series, self.routes
        routes: dict[tuple[str, str], RouteStats] = {}
        series: dict[tuple[str, str, int], Series] = {}

        def route_of(method: str, route: str) -> RouteStats:
            found = routes.get((method, route))
            if found is None:
                found = routes[(method, route)] = RouteStats(
                    maxlen=_SAMPLES * (1 + len(peers))
                )
            return found

        for snapshot in [own, *peers]:
            for method, route, count, errors, aborted, recent in snapshot["routes"]:
                stats = route_of(method, route)
                stats.count += count
                stats.errors += errors
                stats.aborted += aborted
                stats.recent.extend(recent)
            for method, route, status, count, total, buckets in snapshot["series"]:
                key = (method, route, status)
                found = series.get(key)
                if found is None:
                    found = series[key] = Series(route_of(method, route))
                found.count += count
                found.total += total
                found.buckets = [a + b for a, b in zip(found.buckets, buckets)]
        return series, routes

    def route_summary(self) -> list[dict[str, Any]]:
        out = []
        _, routes = self.combined()
        for (method, route), stats in sorted(routes.items(), key=lambda i: i[0][1]):
            recent = sorted(stats.recent)
            out.append(
                {
                    "method": method,
                    "route": route,
                    "count": stats.count,
                    "errors_5xx": stats.errors,
                    "aborted": stats.aborted,
                    "p50_ms": _percentile(recent, 0.50),
                    "p95_ms": _percentile(recent, 0.95),
                    "p99_ms": _percentile(recent, 0.99),
                }
            )
        return out


class Peers:
    """The workers of one server (``MEMDB_WORKERS``) share their counters
    through a directory: each writes its snapshot there about once a second
    and whenever it is scraped, and a worker that is scraped adds the others'
    latest to its own.

    A counter never goes down from one scrape to the next, whichever worker
    answers each: a scraped worker publishes the counts it reports before it
    reads the others' files, so every count a scrape included is in its
    worker's file by the time the answer leaves; a file is only ever replaced
    by a later snapshot of the same worker (whole, by a rename), whose counts
    are as large or larger. So a later scrape reads each worker's count at
    least as large as the one an earlier scrape reported, its own live count
    included. A worker that ended leaves its last snapshot, so the totals
    never go back; one whose file cannot be read right now counts as its
    last one read."""

    def __init__(self, directory: str, metrics: Metrics, name: str = "") -> None:
        self.directory = Path(directory)
        self.metrics = metrics
        self.own = self.directory / f"worker-{name or os.getpid()}.json"
        self._task: asyncio.Task[None] | None = None
        self._known: dict[Path, dict[str, Any]] = {}

    def write(self, snapshot: dict[str, Any] | None = None) -> None:
        temporary = self.own.with_suffix(".tmp")
        if snapshot is None:
            snapshot = self.metrics.snapshot()
        temporary.write_bytes(orjson.dumps(snapshot))
        os.replace(temporary, self.own)

    def exchange(self, snapshot: dict[str, Any]) -> list[dict[str, Any]]:
        """Publish ``snapshot`` (this worker's counts as a scrape reports
        them), then read the others'."""
        try:
            self.write(snapshot)
        except OSError:  # the directory is gone or full: the scrape goes on
            pass
        return self.read()

    def read(self) -> list[dict[str, Any]]:
        out = []
        for path in self.directory.glob("worker-*.json"):
            if path == self.own:
                continue
            try:
                found = self._known[path] = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                found = self._known.get(path)  # its last one read, if any
                if found is None:
                    continue
            out.append(found)
        return out

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.write()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
            self._task = None
        self.write()


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


_LE = [*map(floatToGoString, _BUCKETS), "+Inf"]


class _RequestCollector(Collector):
    """Request counts and the latency histogram, from the plain series."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        labels = ["method", "route", "status"]
        requests = CounterMetricFamily(
            "memdb_http_requests",
            "HTTP requests by method, route template and status",
            labels=labels,
        )
        latency = HistogramMetricFamily(
            "memdb_http_request_duration_seconds",
            "HTTP request latency by method, route template and status",
            labels=labels,
        )
        combined, _ = self.metrics.combined()
        for (method, route, status), series in list(combined.items()):
            values = [method, route, str(status)]
            requests.add_metric(values, series.count)
            cumulative = list(accumulate(series.buckets))
            latency.add_metric(
                values, list(zip(_LE, map(float, cumulative))), series.total
            )
        yield requests
        yield latency


class _StoreCollector(Collector):
    """Store gauges, read when Prometheus scrapes: O(tables), never O(records).
    The largest ``max_tables`` tables have series of their own; the others are
    summed under the table ``other``. When the store could not be read for this
    scrape (Redis down), ``memdb_store_up`` is 0 and they are left out; the
    process's own gauges and counters are there all the same."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self.metrics
        up = metrics.store_problem is None
        yield GaugeMetricFamily(
            "memdb_store_up",
            "1 when the store answered this scrape; 0 when it could not be reached "
            "(Redis down): the records, index and memory series are left out then",
            value=1 if up else 0,
        )
        if up:
            yield from self._from_store()
        yield from self._of_process()

    def _from_store(self) -> Iterator[Metric]:
        metrics = self.metrics
        tables = [
            (t.name, t.count, [(i.field, i.entries) for i in t.indexes])
            for t in metrics.tables
        ]
        tables.sort(key=lambda t: -t[1])
        shown, rest = tables[: metrics.max_tables], tables[metrics.max_tables :]
        records = GaugeMetricFamily(
            "memdb_records", "Records per table", labels=["table"]
        )
        entries = GaugeMetricFamily(
            "memdb_index_entries", "Entries per index", labels=["table", "field"]
        )
        for name, count, indexes in shown:
            records.add_metric([name], count)
            for field, size in indexes:
                entries.add_metric([name, field], size)
        if rest:
            records.add_metric(["other"], sum(t[1] for t in rest))
            entries.add_metric(
                ["other", "other"], sum(n for t in rest for _, n in t[2])
            )
        yield records
        yield entries
        yield GaugeMetricFamily(
            "memdb_tables", "Tables in the store", value=len(tables)
        )
        yield GaugeMetricFamily(
            "memdb_memory_estimate_bytes",
            "Estimated bytes held by records and indexes",
            value=metrics.memory,
        )

    def _of_process(self) -> Iterator[Metric]:
        metrics = self.metrics
        yield GaugeMetricFamily(
            "memdb_uptime_seconds",
            "Seconds since the service started",
            value=metrics.uptime(),
        )
        yield GaugeMetricFamily(
            "memdb_event_loop_lag_seconds",
            "The largest delay of the event loop over the last 10 seconds",
            value=metrics.loop.worst(),
        )
        yield GaugeMetricFamily(
            "memdb_gc_pause_max_seconds",
            "The longest pause of the cycle collector among its latest 64 runs",
            value=max(metrics.gc.recent, default=0.0),
        )
        yield GaugeMetricFamily(
            "memdb_change_followers",
            "Change-feed streams and long polls open now (MEMDB_MAX_SUBSCRIBERS at most)",
            value=metrics.followers(),
        )
        work = metrics.work
        yield GaugeMetricFamily(
            "memdb_heavy_requests",
            "Requests running in slices now (MEMDB_MAX_HEAVY_REQUESTS at most)",
            value=work.heavy_active,
        )
        yield CounterMetricFamily(
            "memdb_busy_refusals",
            "Heavy requests refused with 503 busy",
            value=work.busy,
        )
        yield CounterMetricFamily(
            "memdb_query_budget_exceeded",
            "Requests ended with 400 query_too_costly",
            value=work.budget_exceeded,
        )
