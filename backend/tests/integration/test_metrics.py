"""``/metrics`` (Prometheus) and ``/api/v1/stats`` (JSON) after known traffic, and
the warning of an open service on a network address."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from tests.conftest import make_settings
from tests.integration.helpers import (
    API,
    create,
    create_many,
    create_order,
    create_user,
)

DATA = f"{API}/data/{{table}}"
RECORD = f"{API}/data/{{table}}/{{record_id}}"
Labels = tuple[tuple[str, str], ...]


def _samples(text: str, name: str) -> dict[Labels, float]:
    """Every sample called ``name`` in a Prometheus text answer, by its labels."""
    found: dict[Labels, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def _labels(**labels: str) -> Labels:
    return tuple(sorted(labels.items()))


def _scrape(client: TestClient) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def _stats(client: TestClient) -> dict[str, Any]:
    response = client.get(f"{API}/stats")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _known_traffic(client: TestClient) -> None:
    """3 creates, 2 reads and 1 read of a missing record: nothing else."""
    ids = [create(client, "things", {"n": n})["id"] for n in range(3)]
    for record_id in ids[:2]:
        assert client.get(f"{API}/data/things/{record_id}").status_code == 200
    assert client.get(f"{API}/data/things/absent").status_code == 404


EXPECTED_REQUESTS = {
    ("POST", DATA, "201"): 3.0,
    ("GET", RECORD, "200"): 2.0,
    ("GET", RECORD, "404"): 1.0,
}


# -- /metrics: requests ----------------------------------------------------


def test_request_counts_are_exact_and_by_route_template(client: TestClient) -> None:
    _known_traffic(client)
    text = _scrape(client)

    counts = _samples(text, "memdb_http_requests_total")
    assert counts == {
        _labels(method=m, route=r, status=s): v
        for (m, r, s), v in EXPECTED_REQUESTS.items()
    }
    assert "absent" not in text


def test_the_latency_histogram_counts_every_request(client: TestClient) -> None:
    _known_traffic(client)
    text = _scrape(client)

    counts = _samples(text, "memdb_http_request_duration_seconds_count")
    sums = _samples(text, "memdb_http_request_duration_seconds_sum")
    buckets = _samples(text, "memdb_http_request_duration_seconds_bucket")
    assert counts == {
        _labels(method=m, route=r, status=s): v
        for (m, r, s), v in EXPECTED_REQUESTS.items()
    }
    for (method, route, status), count in EXPECTED_REQUESTS.items():
        key = _labels(method=method, route=route, status=status)
        assert sums[key] > 0
        mine = sorted(
            (float(dict(labels)["le"]), value)
            for labels, value in buckets.items()
            if dict(labels)["route"] == route
            and dict(labels)["method"] == method
            and dict(labels)["status"] == status
        )
        assert mine[-1] == (float("inf"), count)
        values = [value for _, value in mine]
        assert values == sorted(values), mine


def test_the_scrape_itself_is_counted_by_the_next_scrape(client: TestClient) -> None:
    _scrape(client)
    counts = _samples(_scrape(client), "memdb_http_requests_total")
    assert counts == {_labels(method="GET", route="/metrics", status="200"): 1.0}


def test_an_unknown_path_is_not_a_label(client: TestClient) -> None:
    assert client.get(f"{API}/nothing/here-123").status_code == 404
    assert client.get("/elsewhere-456").status_code == 404
    text = _scrape(client)

    counts = _samples(text, "memdb_http_requests_total")
    assert counts == {_labels(method="GET", route="unmatched", status="404"): 2.0}
    assert "here-123" not in text and "elsewhere-456" not in text


def test_the_docs_assets_have_bounded_route_labels(client: TestClient) -> None:
    """A request for a random file under the docs assets must not mint a label of
    its own (unbounded cardinality), and a served asset's label is its real path."""
    assert client.get("/static/docs/swagger-ui.css").status_code == 200
    for n in range(3):
        assert client.get(f"/static/docs/missing-{n}.js").status_code == 404
    text = _scrape(client)

    routes = {
        dict(labels)["route"] for labels in _samples(text, "memdb_http_requests_total")
    }
    assert "missing-" not in text
    assert not any(route.startswith("/static/docs/static/") for route in routes), routes
    assert len(routes) <= 2, routes


# -- /metrics: the store ---------------------------------------------------


def test_records_per_table_equal_the_store(client: TestClient) -> None:
    user = create_user(client)
    create_order(client, user["id"])
    create_many(client, "things", [{"n": n} for n in range(4)])
    create(client, "notes", {"text": "x"})

    records = _samples(_scrape(client), "memdb_records")
    tables = client.get(f"{API}/tables").json()
    assert records == {_labels(table=t["name"]): float(t["count"]) for t in tables}
    assert records == {
        _labels(table="users"): 1.0,
        _labels(table="orders"): 1.0,
        _labels(table="things"): 4.0,
        _labels(table="notes"): 1.0,
    }


def test_index_entries_follow_the_built_in_indexes(client: TestClient) -> None:
    ann = create_user(client, email="ann@example.com")
    bob = create_user(client, email="bob@example.com")
    orders = [create_order(client, ann["id"]) for _ in range(2)]
    create_order(client, bob["id"])

    entries = _samples(_scrape(client), "memdb_index_entries")
    assert entries[_labels(table="users", field="email")] == 2.0
    assert entries[_labels(table="orders", field="user_id")] == 3.0

    assert client.delete(f"{API}/data/orders/{orders[0]['id']}").status_code == 204
    entries = _samples(_scrape(client), "memdb_index_entries")
    assert entries[_labels(table="orders", field="user_id")] == 2.0


def test_a_new_index_shows_its_entries(client: TestClient) -> None:
    create_many(client, "things", [{"n": n} for n in range(5)] + [{"other": 1}])
    response = client.post(f"{API}/tables/things/indexes", json={"field": "n"})
    assert response.status_code == 201, response.text

    entries = _samples(_scrape(client), "memdb_index_entries")
    assert entries[_labels(table="things", field="n")] == 5.0


def test_the_memory_estimate_is_positive_and_grows(client: TestClient) -> None:
    create(client, "things", {"n": 0})
    (before,) = _samples(_scrape(client), "memdb_memory_estimate_bytes").values()
    assert before > 0

    create_many(client, "things", [{"n": n, "text": "x" * 100} for n in range(50)])
    (after,) = _samples(_scrape(client), "memdb_memory_estimate_bytes").values()
    assert after > before


def test_build_info_and_uptime_are_present(client: TestClient) -> None:
    text = _scrape(client)
    (labels, value), *rest = _samples(text, "memdb_build_info").items()
    assert rest == []
    assert value == 1.0
    info = dict(labels)
    assert info["version"] and info["python"]
    (uptime,) = _samples(text, "memdb_uptime_seconds").values()
    assert uptime > 0


# -- /api/v1/stats ---------------------------------------------------------


def test_stats_count_tables_indexes_and_records(client: TestClient) -> None:
    user = create_user(client)
    create_order(client, user["id"])
    create_order(client, user["id"])
    create_many(client, "things", [{"n": n} for n in range(3)])

    stats = _stats(client)
    assert stats["tables"] == {
        "users": {"count": 1, "indexes": {"email": 1}},
        "orders": {"count": 2, "indexes": {"user_id": 2}},
        "things": {"count": 3, "indexes": {}},
    }
    assert stats["records"] == 6


def test_stats_memory_and_uptime(client: TestClient) -> None:
    create(client, "things", {"n": 1})
    stats = _stats(client)
    memory = stats["memory"]
    assert isinstance(memory["estimate_bytes"], int) and memory["estimate_bytes"] > 0
    assert isinstance(memory["rss_bytes"], int)
    assert memory["rss_bytes"] > memory["estimate_bytes"]
    assert isinstance(stats["uptime_s"], (int, float)) and stats["uptime_s"] > 0

    (scraped,) = _samples(_scrape(client), "memdb_memory_estimate_bytes").values()
    assert scraped == memory["estimate_bytes"]


def test_stats_per_route_counts_and_percentiles(client: TestClient) -> None:
    _known_traffic(client)
    assert client.get(f"{API}/data/things/absent").status_code == 404

    requests = _stats(client)["requests"]
    by_route = {(r["method"], r["route"]): r for r in requests}
    assert set(by_route) == {("POST", DATA), ("GET", RECORD)}
    assert by_route[("POST", DATA)]["count"] == 3
    assert by_route[("GET", RECORD)]["count"] == 4
    for row in requests:
        assert row["errors_5xx"] == 0
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"], row

    again = _stats(client)["requests"]
    assert {(r["method"], r["route"]): r["count"] for r in again}[
        ("GET", f"{API}/stats")
    ] == 1


def test_stats_count_server_errors(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.services.records import RecordService

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(RecordService, "read_record", explode)
    assert client.get(f"{API}/data/things/x").status_code == 500

    (row,) = _stats(client)["requests"]
    assert (row["route"], row["count"], row["errors_5xx"]) == (RECORD, 1, 1)
    counts = _samples(_scrape(client), "memdb_http_requests_total")
    assert counts[_labels(method="GET", route=RECORD, status="500")] == 1.0


# -- one registry per app --------------------------------------------------


def test_two_apps_count_separately(client_factory: Callable[..., TestClient]) -> None:
    first = client_factory()
    second = client_factory()
    _known_traffic(first)
    create(second, "other", {"n": 1})

    one = _samples(_scrape(first), "memdb_http_requests_total")
    two = _samples(_scrape(second), "memdb_http_requests_total")
    assert one[_labels(method="POST", route=DATA, status="201")] == 3.0
    assert two == {_labels(method="POST", route=DATA, status="201"): 1.0}

    records_two = _samples(_scrape(second), "memdb_records")
    assert _labels(table="things") not in records_two
    assert records_two[_labels(table="other")] == 1.0
    assert {r["route"]: r["count"] for r in _stats(second)["requests"]}[DATA] == 1


def test_a_fresh_app_starts_from_zero(
    client_factory: Callable[..., TestClient],
) -> None:
    _known_traffic(client_factory())
    fresh = client_factory()
    assert _samples(_scrape(fresh), "memdb_http_requests_total") == {}
    rows = _stats(fresh)["requests"]
    assert [(r["method"], r["route"], r["count"]) for r in rows] == [
        ("GET", "/metrics", 1)
    ]


# -- the open-network warning ----------------------------------------------


def _open_network_events(out: str) -> list[dict[str, Any]]:
    events = []
    for line in out.splitlines():
        if line.strip():
            event = json.loads(line)
            if event.get("event") == "security.open_network":
                events.append(event)
    return events


def test_an_open_service_on_a_network_address_warns_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = create_app(make_settings())
    with TestClient(app, base_url="http://10.0.0.5:8000") as client:
        for _ in range(3):
            assert client.get("/health").status_code == 200
        assert client.get(f"{API}/tables").status_code == 200
        out = capsys.readouterr().out

    events = _open_network_events(out)
    assert [(e["address"], e["level"]) for e in events] == [("10.0.0.5", "warning")]


@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"],
)
def test_an_open_service_on_loopback_does_not_warn(
    base_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with TestClient(create_app(make_settings()), base_url=base_url) as client:
        assert client.get("/health").status_code == 200
        out = capsys.readouterr().out
    assert _open_network_events(out) == []


def test_a_service_with_keys_does_not_warn(capsys: pytest.CaptureFixture[str]) -> None:
    app = create_app(make_settings(api_keys="metrics-test-key:rw"))
    with TestClient(app, base_url="http://10.0.0.5:8000") as client:
        assert client.get("/health").status_code == 200
        out = capsys.readouterr().out
    assert _open_network_events(out) == []


def test_a_loopback_request_first_does_not_silence_the_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Bound to 0.0.0.0, the container's own healthcheck (127.0.0.1) usually comes
    first; the warning must still come when a network request arrives."""
    app = create_app(make_settings())
    with TestClient(app, base_url="http://127.0.0.1:8000") as local:
        assert local.get("/health").status_code == 200
        remote = TestClient(app, base_url="http://10.0.0.5:8000")
        assert remote.get("/health").status_code == 200
        assert remote.get("/health").status_code == 200
        out = capsys.readouterr().out

    events = _open_network_events(out)
    assert [e["address"] for e in events] == ["10.0.0.5"]
