"""app.core.metrics: percentiles, the per-route summary, the store gauges and
the counters shared by several workers."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from app.core.metrics import Metrics, Peers, _percentile, rss_bytes
from app.storage.memory import MemoryStore


def _metrics() -> Metrics:
    return Metrics(started=time.monotonic())


def _seconds(*ms: int) -> list[float]:
    return [m / 1000 for m in ms]


# -- _percentile -----------------------------------------------------------


def test_no_samples_have_no_percentile() -> None:
    assert _percentile([], 0.5) is None


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.95, 0.99, 1.0])
def test_one_sample_is_every_percentile(fraction: float) -> None:
    assert _percentile([0.0042], fraction) == 4.2


def test_the_answer_is_in_milliseconds_rounded_to_microseconds() -> None:
    assert _percentile([0.00123456], 0.5) == 1.235


@pytest.mark.parametrize(
    ("count", "fraction", "rank"),
    [
        (2, 0.5, 1),
        (3, 0.5, 2),
        (4, 0.5, 2),
        (6, 0.5, 3),
        (10, 0.5, 5),
        (11, 0.5, 6),
        (20, 0.95, 19),
        (21, 0.95, 20),
        (100, 0.95, 95),
        (100, 0.99, 99),
        (1000, 0.99, 990),
        (1024, 0.5, 512),
        (1024, 0.99, 1014),
    ],
)
def test_the_percentile_is_the_nearest_rank(
    count: int, fraction: float, rank: int
) -> None:
    """The smallest sample with at least ``fraction`` of the samples at or below
    it: the sample of rank ceil(fraction * count)."""
    ordered = _seconds(*range(1, count + 1))
    assert _percentile(ordered, fraction) == float(rank)


@pytest.mark.parametrize("count", [1, 2, 5, 17, 100, 1024])
def test_percentiles_are_samples_and_ordered(count: int) -> None:
    ordered = sorted(_seconds(*((n * 37) % 101 for n in range(count))))
    values = [_percentile(ordered, f) for f in (0.0, 0.5, 0.95, 0.99, 1.0)]
    assert all(v is not None for v in values)
    assert values == sorted(values)  # type: ignore[type-var]
    assert values[0] == round(ordered[0] * 1000, 3)
    assert values[-1] == round(ordered[-1] * 1000, 3)
    assert {round(x * 1000, 3) for x in ordered} >= set(values)


# -- route_summary ---------------------------------------------------------


def test_a_new_registry_has_no_routes() -> None:
    assert _metrics().route_summary() == []


def test_the_summary_counts_per_method_and_route() -> None:
    metrics = _metrics()
    for ms in (1, 2, 3, 4):
        metrics.observe("GET", "/b", 200, ms / 1000)
    metrics.observe("POST", "/b", 201, 0.010)
    metrics.observe("GET", "/a", 404, 0.005)

    summary = metrics.route_summary()
    assert [(r["method"], r["route"], r["count"]) for r in summary] == [
        ("GET", "/a", 1),
        ("GET", "/b", 4),
        ("POST", "/b", 1),
    ]
    get_b = summary[1]
    assert (get_b["p50_ms"], get_b["p95_ms"], get_b["p99_ms"]) == (2.0, 4.0, 4.0)
    assert summary[2]["p50_ms"] == summary[2]["p99_ms"] == 10.0


def test_only_5xx_count_as_errors() -> None:
    metrics = _metrics()
    for status in (200, 404, 499, 500, 503, 507):
        metrics.observe("GET", "/x", status, 0.001)
    (row,) = metrics.route_summary()
    assert row["count"] == 6
    assert row["errors_5xx"] == 3


def test_percentiles_use_the_latest_1024_requests() -> None:
    metrics = _metrics()
    for _ in range(1024):
        metrics.observe("GET", "/x", 200, 1.0)
    for _ in range(1024):
        metrics.observe("GET", "/x", 200, 0.001)
    (row,) = metrics.route_summary()
    assert row["count"] == 2048
    assert row["p50_ms"] == row["p99_ms"] == 1.0


def test_observe_feeds_the_prometheus_series() -> None:
    metrics = _metrics()
    metrics.observe("GET", "/x", 200, 0.002)
    metrics.observe("GET", "/x", 200, 0.003)
    registry = metrics.registry
    labels = {"method": "GET", "route": "/x", "status": "200"}
    assert registry.get_sample_value("memdb_http_requests_total", labels) == 2.0
    count = registry.get_sample_value(
        "memdb_http_request_duration_seconds_count", labels
    )
    assert count == 2.0
    total = registry.get_sample_value("memdb_http_request_duration_seconds_sum", labels)
    assert total == pytest.approx(0.005)


def test_histogram_buckets_are_cumulative_and_their_bounds_inclusive() -> None:
    metrics = _metrics()
    for seconds in (0.0005, 0.00051, 0.001, 0.3, 10.0):
        metrics.observe("GET", "/x", 200, seconds)
    registry = metrics.registry

    def bucket(le: str) -> float | None:
        return registry.get_sample_value(
            "memdb_http_request_duration_seconds_bucket",
            {"method": "GET", "route": "/x", "status": "200", "le": le},
        )

    assert bucket("0.0005") == 1.0  # exactly on a bound counts in that bucket
    assert bucket("0.001") == 3.0
    assert bucket("0.25") == 3.0
    assert bucket("0.5") == 4.0
    assert bucket("5.0") == 4.0
    assert bucket("+Inf") == 5.0


def test_each_status_is_its_own_series_of_one_route() -> None:
    metrics = _metrics()
    metrics.observe("GET", "/x", 200, 0.001)
    metrics.observe("GET", "/x", 404, 0.001)
    metrics.observe("GET", "/x", 503, 0.001)
    registry = metrics.registry
    for status in ("200", "404", "503"):
        labels = {"method": "GET", "route": "/x", "status": status}
        assert registry.get_sample_value("memdb_http_requests_total", labels) == 1.0
    (row,) = metrics.route_summary()
    assert (row["count"], row["errors_5xx"]) == (3, 1)


def test_two_registries_do_not_share_counts() -> None:
    first, second = _metrics(), _metrics()
    first.observe("GET", "/x", 200, 0.001)
    labels = {"method": "GET", "route": "/x", "status": "200"}
    assert first.registry.get_sample_value("memdb_http_requests_total", labels) == 1
    assert second.registry.get_sample_value("memdb_http_requests_total", labels) is None
    assert second.route_summary() == []


# -- the store gauges ------------------------------------------------------


def test_the_store_gauges_are_read_at_scrape_time() -> None:
    store = MemoryStore(max_records=100)
    metrics = Metrics(started=time.monotonic() - 5)
    registry = metrics.registry
    assert registry.get_sample_value("memdb_records", {"table": "t"}) is None
    assert registry.get_sample_value("memdb_memory_estimate_bytes") == 0

    store.engine.insert("t", [{"id": "a", "n": 1}, {"id": "b", "n": 2}, {"id": "c"}])
    store.engine.create_index("t", "n")
    # what the /metrics route does before the registry is rendered
    metrics.tables = asyncio.run(store.describe())
    metrics.memory = asyncio.run(store.memory())
    assert registry.get_sample_value("memdb_records", {"table": "t"}) == 3
    entries = registry.get_sample_value(
        "memdb_index_entries", {"table": "t", "field": "n"}
    )
    assert entries == 2
    estimate = registry.get_sample_value("memdb_memory_estimate_bytes")
    assert estimate == store.engine.memory_estimate() > 0
    uptime = registry.get_sample_value("memdb_uptime_seconds")
    assert uptime is not None and uptime >= 5
    assert metrics.uptime() >= 5


def test_a_store_out_of_reach_leaves_its_series_out_and_says_so() -> None:
    store = MemoryStore(max_records=100)
    store.engine.insert("t", [{"id": "a"}])
    metrics = Metrics(started=time.monotonic())
    metrics.tables = asyncio.run(store.describe())
    registry = metrics.registry
    assert registry.get_sample_value("memdb_store_up") == 1
    assert registry.get_sample_value("memdb_records", {"table": "t"}) == 1
    metrics.store_problem = "Redis cannot be reached"  # what /metrics sets then
    assert registry.get_sample_value("memdb_store_up") == 0
    for name in ("memdb_records", "memdb_tables", "memdb_memory_estimate_bytes"):
        assert registry.get_sample_value(name, {"table": "t"}) is None
        assert registry.get_sample_value(name) is None
    # what the process knows is still there
    assert registry.get_sample_value("memdb_uptime_seconds") is not None
    assert registry.get_sample_value("memdb_heavy_requests") == 0


def test_build_info_names_the_version() -> None:
    from app import __version__

    text = generate_latest(_metrics().registry).decode()
    assert f'version="{__version__}"' in text
    assert "memdb_build_info{" in text


def test_rss_is_a_positive_byte_count() -> None:
    rss = rss_bytes()
    assert rss is not None and rss > 1024 * 1024


# -- several workers -------------------------------------------------------


def _worker(directory: Path, name: str) -> Metrics:
    metrics = _metrics()
    metrics.peers = Peers(str(directory), metrics, name=name)
    return metrics


def _scraped(metrics: Metrics) -> dict[str, float]:
    """Every counter sample of one worker's scrape, by name and labels."""
    out: dict[str, float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name.startswith("memdb_http_request"):
                out[f"{sample.name}{sorted(sample.labels.items())}"] = sample.value
    return out


def test_counters_never_go_down_whichever_worker_is_scraped(tmp_path: Path) -> None:
    """Two workers share a directory; requests land on either, each writes its
    snapshot now and then (its timer), and each scrape goes to either: no
    sample of a counter or a histogram is ever smaller than in the scrape
    before (Prometheus would read a reset)."""
    rng = random.Random(7)
    workers = [_worker(tmp_path, "a"), _worker(tmp_path, "b")]
    for worker in workers:
        assert worker.peers is not None
        worker.peers.write()
    previous: dict[str, float] = {}
    statuses = (200, 201, 404, 503)
    for _ in range(400):
        for _ in range(rng.randrange(0, 6)):
            status = rng.choice(statuses)
            rng.choice(workers).observe("GET", "/x", status, rng.random() / 50)
        if rng.random() < 0.2:  # one worker's once-a-second write
            peers = rng.choice(workers).peers
            assert peers is not None
            peers.write()
        scraped = _scraped(rng.choice(workers))
        for key, value in previous.items():
            assert scraped.get(key, 0.0) >= value, key
        previous = scraped
    for worker in workers:  # each one scraped: every request is counted
        scraped = _scraped(worker)
    total = sum(
        v for k, v in scraped.items() if k.startswith("memdb_http_requests_total")
    )
    assert total == sum(s.count for w in workers for s in w.series.values())


def test_a_scrape_publishes_what_it_reports(tmp_path: Path) -> None:
    first, second = _worker(tmp_path, "a"), _worker(tmp_path, "b")
    first.observe("GET", "/x", 200, 0.001)
    labels = {"method": "GET", "route": "/x", "status": "200"}
    assert first.registry.get_sample_value("memdb_http_requests_total", labels) == 1
    # the second worker has written nothing yet and sees the first's count
    assert second.registry.get_sample_value("memdb_http_requests_total", labels) == 1
    assert [r["count"] for r in second.route_summary()] == [1]


def test_a_peer_file_that_cannot_be_read_counts_as_its_last_one(
    tmp_path: Path,
) -> None:
    first, second = _worker(tmp_path, "a"), _worker(tmp_path, "b")
    for _ in range(3):
        first.observe("GET", "/x", 200, 0.001)
    labels = {"method": "GET", "route": "/x", "status": "200"}
    assert first.registry.get_sample_value("memdb_http_requests_total", labels) == 3
    assert second.registry.get_sample_value("memdb_http_requests_total", labels) == 3
    (tmp_path / "worker-a.json").write_bytes(b"{not json")
    assert second.registry.get_sample_value("memdb_http_requests_total", labels) == 3
