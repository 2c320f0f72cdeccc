"""What one request may cost, through the HTTP API: query bounds, the work
budget, the heavy cap, bounded joins, table and password limits, streamed
answers, and the observability that stays O(tables)."""

from __future__ import annotations

import asyncio
import time
import unicodedata
from pathlib import Path
from typing import Any, Callable

import anyio
import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from app.api.state import service_of
from app.main import create_app
from app.services.passwords import PasswordHasher
from app.storage.aof import frame
from app.storage.base import DuplicateKey
from app.storage.memory import MemoryStore
from tests.conftest import USER, make_settings
from tests.integration.helpers import (
    API,
    assert_error,
    assert_validation_error,
    create,
    create_many,
    create_user,
    dump,
    store_unchanged,
)

JSON = {"Content-Type": "application/json"}


def metric(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} is not in /metrics")


# -- the query string ----------------------------------------------------------


def test_a_query_string_over_the_limit_is_414(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(max_query_bytes=1024)
    create(client, "notes", {"k": 1})
    ok = client.get(f"{API}/data/notes", params={"k": "1" + " " * 900})
    assert ok.status_code == 200
    with store_unchanged(client):
        refused = client.get(f"{API}/data/notes?k=" + "1" * 1025)
        error = assert_error(refused, 414, "uri_too_long")
        assert "1024" in error["message"]


def test_eight_thousand_filters_are_one_400(client: TestClient) -> None:
    """The review's attack, bounded before any work: 8,000 ``k__ne=2``."""
    create(client, "notes", {"k": 1})
    query = "&".join(["k__ne=2"] * 8000)
    response = client.get(f"{API}/data/notes?{query}")
    error = assert_error(response, 414, "uri_too_long")
    assert "8192" in error["message"]
    response = client.get(f"{API}/data/notes?" + "&".join(["k__ne=2"] * 33))
    error = assert_error(response, 400, "bad_request")
    assert "at most 32 filters" in error["message"]
    assert "link" not in response.headers


def test_a_nested_literal_is_400_at_every_depth(client: TestClient) -> None:
    create(client, "notes", {"x": 1})
    for depth in (33, 255, 500):
        response = client.get(
            f"{API}/data/notes", params={"x": "[" * depth + "]" * depth}
        )
        error = assert_error(response, 400, "bad_request")
        assert error["details"][0]["loc"] == ["query", "x"]
    shallow = client.get(f"{API}/data/notes", params={"x": "[" * 32 + "]" * 32})
    assert shallow.status_code == 200 and shallow.json()["total"] == 0


def test_the_link_header_never_repeats_a_long_query(client: TestClient) -> None:
    create_many(client, "notes", [{"k": i} for i in range(5)])
    short = client.get(f"{API}/data/notes", params={"limit": "2"})
    assert short.headers["link"].count("rel=") == 3
    long = client.get(
        f"{API}/data/notes", params=[("limit", "2")] + [("k__ne", "9" * 40)] * 30
    )
    assert long.status_code == 200
    assert "link" not in long.headers
    assert long.headers["x-total-count"] == "5"


# -- the work budget -----------------------------------------------------------


def test_a_query_over_the_budget_is_400_and_counted(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(query_budget=5000)
    create_many(client, "rows", [{"n": i, "s": "x" * 10} for i in range(1000)])
    assert client.get(f"{API}/data/rows", params={"n__gte": "10"}).status_code == 200
    before = metric(client, "memdb_query_budget_exceeded_total")
    with store_unchanged(client):
        params = [("n__ne", str(-i)) for i in range(8)]
        response = client.get(f"{API}/data/rows", params=params)
        error = assert_error(response, 400, "query_too_costly")
        assert "MEMDB_QUERY_BUDGET (5000)" in error["message"]
        assert error["details"][0]["type"] == "budget"
    assert metric(client, "memdb_query_budget_exceeded_total") == before + 1
    stats = client.get(f"{API}/stats").json()
    assert stats["work"]["budget_exceeded"] == 1


def test_operators_that_read_whole_values_pay_for_what_they_read(
    client_factory: Callable[..., TestClient],
) -> None:
    """Few records, each a large array: ``contains`` and ``q`` are charged by
    the elements and characters they read, not one unit a record."""
    client = client_factory(query_budget=60_000)
    for _ in range(5):
        big = {"arr": list(range(20_000)), "s": "a" * 60_000}
        create_many(client, "big", [big] * 4)
    for params in ({"arr__contains": "-1"}, {"q": "zzz"}, {"s__like": "%b%"}):
        response = client.get(f"{API}/data/big", params=params)
        assert_error(response, 400, "query_too_costly")
    found = client.get(f"{API}/data/big", params={"arr__contains": "-1", "limit": "0"})
    assert found.status_code == 400
    # a filter that reads one number a record stays well inside the budget
    cheap = client.get(f"{API}/data/big", params={"arr__exists": "true"})
    assert cheap.status_code == 200 and cheap.json()["total"] == 20


def test_the_like_attack_answers_at_once(client: TestClient) -> None:
    create(client, "texts", {"s": "a" * 5000})
    response = client.get(f"{API}/data/texts", params={"s__like": "%a%a%a%a%b"})
    assert response.status_code == 200 and response.json()["total"] == 0
    response = client.get(f"{API}/data/texts", params={"s__ilike": "%A%A%A%A%"})
    assert response.json()["total"] == 1


# -- heavy requests ------------------------------------------------------------


def test_past_the_heavy_cap_a_request_is_told_to_come_back() -> None:
    app = create_app(make_settings(max_heavy_requests=1))

    async def two_at_once() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver"
        ) as http:
            scan = {"n__gte": "0", "q": "row"}
            return list(
                await asyncio.gather(
                    http.get(f"{API}/data/rows", params=scan),
                    http.get(f"{API}/data/rows", params=scan),
                )
            )

    with TestClient(app) as client:
        rows = [{"n": i, "s": f"row {i}"} for i in range(1000)]
        for _ in range(30):
            create_many(client, "rows", rows)
        first, second = anyio.run(two_at_once)
        statuses = sorted([first.status_code, second.status_code])
        assert statuses == [200, 503]
        busy = first if first.status_code == 503 else second
        assert_error(busy, 503, "busy")
        assert busy.headers["retry-after"] == "1"
        stats = client.get(f"{API}/stats").json()["work"]
        assert stats["busy_refusals"] == 1 and stats["heavy_active"] == 0
        assert metric(client, "memdb_busy_refusals_total") == 1


# -- joins ----------------------------------------------------------------------


@pytest.fixture
def shop(client: TestClient) -> TestClient:
    users = [
        create_user(client, email=f"u{i}@example.com", id=f"u{i}") for i in range(3)
    ]
    for i in range(5):
        create(
            client,
            "orders",
            {
                "id": f"o{i}",
                "product_name": "p",
                "quantity": 1,
                "total_price": 1,
                "user_id": users[i % 2]["id"],
            },
        )
    return client


def test_a_join_in_pages(shop: TestClient) -> None:
    whole = shop.get(f"{API}/join/users/orders/user_id", params={"how": "left"}).json()
    pairs = [(r["left"]["id"], r["right"] and r["right"]["id"]) for r in whole["items"]]
    assert whole["total"] == whole["count"] == 6 and whole["limit"] is None
    assert pairs[-1] == ("u2", None)
    seen = []
    for offset in range(0, 8, 2):
        response = shop.get(
            f"{API}/join/users/orders/user_id",
            params={"how": "left", "limit": "2", "offset": str(offset)},
        )
        body = response.json()
        assert response.headers["x-total-count"] == "6"
        assert body["total"] == 6 and body["limit"] == 2 and body["offset"] == offset
        assert body["count"] == len(body["items"]) == max(0, min(2, 6 - offset))
        seen += [
            (r["left"]["id"], r["right"] and r["right"]["id"]) for r in body["items"]
        ]
        link = response.headers["link"]
        assert 'rel="first"' in link and 'rel="last"' in link
        assert "limit=2" in link and "how=left" in link
    assert seen == pairs


def test_a_join_too_large_without_a_limit_is_refused_with_its_size(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(max_join_rows=100)
    create_many(client, "jl", [{"k": 1}] * 20)
    create_many(client, "jr", [{"k": 1}] * 20)
    with store_unchanged(client):
        response = client.get(f"{API}/join/jl/jr/k")
        error = assert_error(response, 400, "query_too_costly")
        assert (
            "400 rows" in error["message"] and "MEMDB_MAX_JOIN_ROWS" in error["message"]
        )
        assert error["details"][0]["rows"] == 400
        assert error["details"][0]["max_rows"] == 100
    page = client.get(f"{API}/join/jl/jr/k", params={"limit": "10", "offset": "390"})
    assert page.status_code == 200
    assert page.json()["total"] == 400 and page.json()["count"] == 10
    assert client.get(f"{API}/join/jl/jr/k", params={"limit": "-1"}).status_code == 400


# -- tables ---------------------------------------------------------------------


def test_an_empty_bulk_create_is_422_and_creates_no_table(client: TestClient) -> None:
    with store_unchanged(client):
        response = client.post(f"{API}/data/e1", json={"data": []})
        details = assert_validation_error(response)
        assert details[0]["type"] == "too_short"
    assert "e1" not in [t["name"] for t in client.get(f"{API}/tables").json()]


def test_past_max_tables_a_new_table_is_507(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(max_tables=4)
    create(client, "t1", {"a": 1})
    create(client, "t2", {"a": 1})
    with store_unchanged(client):
        assert_error(
            client.post(f"{API}/data/t3", json={"data": {"a": 1}}),
            507,
            "insufficient_storage",
        )
        assert_error(
            client.post(f"{API}/import", json={"t3": [{"id": "x"}]}),
            507,
            "insufficient_storage",
        )
    create(client, "t1", {"a": 2})  # existing tables still take writes
    assert client.delete(f"{API}/data/t2").status_code == 204
    create(client, "t3", {"a": 1})


def test_metrics_name_the_largest_tables_and_sum_the_rest(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(metrics_max_tables=3)
    for i in range(6):
        create_many(client, f"t{i}", [{"n": n} for n in range(i + 1)])
    text = client.get("/metrics").text
    records = [line for line in text.splitlines() if line.startswith("memdb_records{")]
    named = {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in records}
    assert named == {"t5": 6.0, "t4": 5.0, "t3": 4.0, "other": 1 + 2 + 3 + 0 + 0}
    assert metric(client, "memdb_tables") == 8


def test_stats_show_the_loop_and_the_work(client: TestClient) -> None:
    stats = client.get(f"{API}/stats").json()
    assert set(stats["event_loop"]) == {"lag_ms", "max_lag_ms", "gc"}
    assert set(stats["event_loop"]["gc"]) == {
        "collections",
        "max_pause_ms",
        "recent_max_pause_ms",
        "frozen_objects",
        "freezes",
    }
    assert set(stats["work"]) == {
        "heavy_active",
        "heavy_total",
        "busy_refusals",
        "budget_exceeded",
    }
    assert metric(client, "memdb_event_loop_lag_seconds") >= 0


@pytest.mark.memory_only
def test_the_memory_estimate_follows_writes_without_walking_records(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def memory() -> int:
        value: int = client.get(f"{API}/stats").json()["memory"]["estimate_bytes"]
        return value

    empty = memory()
    record = create(client, "big", {"arr": list(range(10_000))})
    grown = memory()
    assert grown - empty > 10_000 * 28
    # a scrape walks no record: the walker is not called
    monkeypatch.setattr(
        "app.storage.memory._deep_size", lambda value: pytest.fail("walked a record")
    )
    assert memory() == grown
    assert client.get("/metrics").status_code == 200
    monkeypatch.undo()
    assert client.delete(f"{API}/data/big/{record['id']}").status_code == 204
    assert memory() < grown


# -- passwords and imports ------------------------------------------------------


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password hashed from here on."""
    seen: list[str] = []
    original = PasswordHasher.hash

    async def counting(self: PasswordHasher, password: str) -> str:
        seen.append(password)
        return await original(self, password)

    monkeypatch.setattr(PasswordHasher, "hash", counting)
    return seen


def test_an_import_checks_before_it_hashes(
    client: TestClient, hashes: list[str]
) -> None:
    create_user(client, email="taken@example.com")
    users = [{**USER, "id": f"n{i}", "email": f"n{i}@example.com"} for i in range(50)]
    users.append({**USER, "id": "dup", "email": "taken@example.com"})
    hashes.clear()
    with store_unchanged(client):
        assert_error(
            client.post(f"{API}/import", json={"users": users}), 409, "conflict"
        )
        orphan = {"product_name": "p", "quantity": 1, "total_price": 1, "user_id": "x"}
        response = client.post(
            f"{API}/import", json={"users": users[:50], "orders": [orphan]}
        )
        assert_validation_error(response)
    assert hashes == []


def test_one_request_hashes_at_most_max_passwords(
    client_factory: Callable[..., TestClient], hashes: list[str]
) -> None:
    client = client_factory(max_passwords=3)
    users = [{**USER, "id": f"n{i}", "email": f"n{i}@example.com"} for i in range(4)]
    with store_unchanged(client):
        for response in (
            client.post(f"{API}/import", json={"users": users}),
            client.post(f"{API}/data/users", json={"data": users}),
        ):
            details = assert_validation_error(response)
            assert details[0]["type"] == "too_many_passwords"
            assert "MEMDB_MAX_PASSWORDS" in response.json()["error"]["message"]
    assert hashes == []
    assert client.post(f"{API}/import", json={"users": users[:3]}).status_code == 200
    assert len(hashes) == 3


# -- emails ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "stored"),
    [
        (
            unicodedata.normalize("NFC", "café@example.com"),
            unicodedata.normalize("NFD", "café@example.com"),
            unicodedata.normalize("NFC", "café@example.com"),
        ),
        ("u@bücher.de", "u@xn--bcher-kva.de", "u@bücher.de"),
        ("U@XN--BCHER-KVA.DE", "u@Bücher.de", "u@bücher.de"),
        ("  Ada@Example.COM ", "ada@example.com", "ada@example.com"),
    ],
)
def test_one_mailbox_is_one_user(
    client: TestClient, first: str, second: str, stored: str
) -> None:
    user = create_user(client, email=first)
    assert user["email"] == stored
    with store_unchanged(client):
        assert_error(
            client.post(f"{API}/data/users", json={"data": {**USER, "email": second}}),
            409,
            "conflict",
        )
        assert_error(
            client.post(
                f"{API}/import", json={"users": [{**USER, "id": "z", "email": second}]}
            ),
            409,
            "conflict",
        )
    found = client.get(f"{API}/data/users", params={"email": f'"{stored}"'}).json()
    assert [u["id"] for u in found["items"]] == [user["id"]]


def test_the_index_spec_takes_no_coercion(client: TestClient) -> None:
    create(client, "notes", {"kind": "a"})
    with store_unchanged(client):
        for spec in (
            {"field": "kind", "unique": "yes"},
            {"field": "kind", "unique": 1},
        ):
            response = client.post(f"{API}/tables/notes/indexes", json=spec)
            details = assert_validation_error(response)
            assert details[0]["loc"] == ["body", "unique"]


# -- large answers --------------------------------------------------------------


def test_a_large_list_answer_is_streamed_whole(client: TestClient) -> None:
    rows = [{"n": i, "blob": "x" * 60_000} for i in range(40)]
    for start in range(0, 40, 10):
        create_many(client, "blobs", rows[start : start + 10])
    identity = {"Accept-Encoding": "identity"}  # lengths as sent, not gzipped
    response = client.get(
        f"{API}/data/blobs", params={"limit": "40", "sort": "-n"}, headers=identity
    )
    assert response.status_code == 200
    assert "content-length" not in response.headers  # sent as it was made
    body = orjson.loads(response.content)
    assert [r["n"] for r in body["items"]] == list(range(39, -1, -1))
    assert (body["total"], body["limit"], body["offset"]) == (40, 40, 0)
    small = client.get(f"{API}/data/blobs", params={"limit": "2"}, headers=identity)
    assert int(small.headers["content-length"]) == len(small.content)


def test_dumps_of_large_tables_stream_as_json_and_ndjson(client: TestClient) -> None:
    for start in range(0, 6000, 1000):
        create_many(
            client,
            "many",
            [{"n": n, "s": "y" * 300} for n in range(start, start + 1000)],
        )
    whole = client.get(f"{API}/dump/many")
    assert "content-length" not in whole.headers
    body = whole.json()
    assert body["count"] == 6000 and [r["n"] for r in body["items"]] == list(
        range(6000)
    )
    lines = client.get(f"{API}/dump/many", headers={"Accept": "application/x-ndjson"})
    assert [orjson.loads(x)["n"] for x in lines.content.splitlines()] == list(
        range(6000)
    )
    everything = dump(client)
    assert len(everything["many"]) == 6000


def test_an_index_on_a_large_table_is_built_in_slices(client: TestClient) -> None:
    for start in range(0, 20_000, 1000):
        create_many(client, "wide", [{"g": n % 7} for n in range(start, start + 1000)])
    response = client.post(f"{API}/tables/wide/indexes", json={"field": "g"})
    assert response.status_code == 201
    found = client.get(f"{API}/data/wide", params={"g": "3", "limit": "0"}).json()
    assert found["total"] == len([n for n in range(20_000) if n % 7 == 3])
    stats = client.get(f"{API}/stats").json()
    assert stats["tables"]["wide"]["indexes"] == {"g": 20_000}


def _log_with_users(directory: Path, *emails: str) -> None:
    directory.mkdir()
    users = [
        {
            "id": f"u{i}",
            "email": email,
            "full_name": "A",
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
        }
        for i, email in enumerate(emails)
    ]
    entry = frame({"op": "put", "table": "users", "records": users})
    (directory / "appendonly.0.aof").write_bytes(entry)


def loaded(client: TestClient) -> httpx.Response:
    """``/ready`` once loading has ended, one way or the other."""
    for _ in range(500):
        response = client.get("/ready")
        if "still loading" not in response.text:
            return response
        time.sleep(0.01)
    raise AssertionError("the store did not finish loading")


def test_stored_emails_are_normalised_on_load(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _log_with_users(data, "U@XN--BCHER-KVA.DE", "ada@example.com")
    settings = make_settings(persistence="aof", data_dir=str(data))
    with TestClient(create_app(settings)) as client:
        assert loaded(client).status_code == 200
        emails = [u["email"] for u in dump(client)["users"]]
        assert emails == ["u@bücher.de", "ada@example.com"]
        assert_error(
            client.post(
                f"{API}/data/users", json={"data": {**USER, "email": "u@bücher.de"}}
            ),
            409,
            "conflict",
        )


def test_two_stored_users_of_one_mailbox_stop_the_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    composed = unicodedata.normalize("NFC", "café@example.com")
    _log_with_users(data, composed, unicodedata.normalize("NFD", composed))
    settings = make_settings(persistence="aof", data_dir=str(data))
    with TestClient(create_app(settings)) as client:
        error = assert_error(loaded(client), 503, "not_ready")
        assert "'u0' and 'u1'" in error["message"]
        assert "same email" in error["message"]
        service = service_of(client.app)
        assert service is not None and service.fatal is True


@pytest.mark.memory_only
def test_a_store_whose_data_breaks_a_rule_stops_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A store that cannot make a built-in index on open (Redis holding two
    users of one email) stops the start with the reason, where the service
    used to stay "still loading" without a word (the same code serves every
    store: the memory store stands in for Redis here)."""

    async def refuse(store: MemoryStore) -> None:
        raise DuplicateKey("users", "email", "twice@example.com")

    monkeypatch.setattr(MemoryStore, "open", refuse)
    with TestClient(create_app(make_settings())) as client:
        error = assert_error(loaded(client), 503, "not_ready")
        assert "users.email already holds 'twice@example.com'" in error["message"]
        service = service_of(client.app)
        assert service is not None and service.fatal is True


@pytest.mark.parametrize(
    "door",
    [[], [(b"origin", b"http://elsewhere.example")]],
    ids=["fast-path", "full-stack"],
)
def test_a_client_that_leaves_mid_body_is_499_not_a_server_error(
    capsys: pytest.CaptureFixture[str], door: list[tuple[bytes, bytes]]
) -> None:
    """A PUT on either door (a browser's request, with ``Origin``, goes through
    the full stack)."""
    app = create_app(make_settings())
    with TestClient(app) as client:
        record = create(client, "things", {"a": 1})
        messages = iter(
            [
                {"type": "http.request", "body": b'{"data": {', "more_body": True},
                {"type": "http.disconnect"},
            ]
        )
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return next(messages)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "PUT",
            "scheme": "http",
            "path": f"{API}/data/things/{record['id']}",
            "raw_path": f"{API}/data/things/{record['id']}".encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"content-type", b"application/json"),
                (b"x-request-id", b"gone-1"),
                *door,
            ],
            "client": ("127.0.0.1", 1),
            "server": ("testserver", 80),
            "app": app,
        }
        capsys.readouterr()
        asyncio.run(app(scope, receive, send))
        out = capsys.readouterr().out
        stats = client.get(f"{API}/stats").json()["requests"]
    assert sent == []
    events = [orjson.loads(line) for line in out.splitlines() if line.strip()]
    assert not [e for e in events if e["event"] == "request.failed"]
    (aborted,) = [e for e in events if e["event"] == "request.aborted"]
    assert aborted["request_id"] == "gone-1"
    (access,) = [
        e
        for e in events
        if e.get("request_id") == "gone-1" and e["event"] == "http.request"
    ]
    assert access["status"] == 499
    (put,) = [r for r in stats if r["method"] == "PUT"]
    assert put["errors_5xx"] == 0 and put["aborted"] == 1
