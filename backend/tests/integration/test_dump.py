"""``/api/v1/dump``: one table or the whole store, as JSON or NDJSON."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from fastapi.testclient import TestClient

from tests.integration.helpers import (
    API,
    assert_error,
    create,
    create_many,
    create_order,
    create_user,
    store_unchanged,
)

NDJSON = "application/x-ndjson"


def _ndjson(text: str) -> list[dict[str, Any]]:
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_dump_of_a_table_is_table_count_items_in_insertion_order(
    client: TestClient,
) -> None:
    records = [create(client, "things", {"id": i, "n": n}) for n, i in enumerate("cab")]

    response = client.get(f"{API}/dump/things")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"table": "things", "count": 3, "items": records}


def test_dump_order_survives_updates_and_a_recreated_id_goes_last(
    client: TestClient,
) -> None:
    for i in "cab":
        create(client, "things", {"id": i, "n": 0})
    client.put(f"{API}/data/things/c", json={"data": {"n": 1}})
    client.patch(f"{API}/data/things/a", json={"data": {"n": 2}})
    client.delete(f"{API}/data/things/c")
    create(client, "things", {"id": "c", "n": 3})

    items = client.get(f"{API}/dump/things").json()["items"]

    assert [(r["id"], r["n"]) for r in items] == [("a", 2), ("b", 0), ("c", 3)]


def test_dump_of_an_empty_builtin_table(client: TestClient) -> None:
    response = client.get(f"{API}/dump/orders")
    assert response.status_code == 200
    assert response.json() == {"table": "orders", "count": 0, "items": []}


def test_dump_of_users_has_no_password(client: TestClient) -> None:
    user = create_user(client)
    body = client.get(f"{API}/dump/users").json()
    assert body == {"table": "users", "count": 1, "items": [user]}
    assert "password" not in body["items"][0]


def test_ndjson_dump_is_one_record_a_line(client: TestClient) -> None:
    records = create_many(client, "things", [{"n": n, "s": "a\nb"} for n in range(5)])

    response = client.get(f"{API}/dump/things", headers={"Accept": NDJSON})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith(NDJSON)
    assert _ndjson(response.text) == records


def test_ndjson_dump_of_an_empty_table_is_empty(client: TestClient) -> None:
    response = client.get(f"{API}/dump/users", headers={"Accept": NDJSON})
    assert response.status_code == 200
    assert _ndjson(response.text) == []


@pytest.mark.parametrize("size", [2001, 4500])
def test_a_large_table_dumps_whole(
    client_factory: Callable[..., TestClient], size: int
) -> None:
    client = client_factory(max_bulk=5000)
    records = create_many(client, "things", [{"n": n} for n in range(size)])

    response = client.get(f"{API}/dump/things")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = json.loads(response.content)
    assert body == {"table": "things", "count": size, "items": records}

    lines = client.get(f"{API}/dump/things", headers={"Accept": NDJSON})
    assert lines.status_code == 200
    assert _ndjson(lines.text) == records


def test_dump_of_everything_is_the_db_json_shape(client: TestClient) -> None:
    user = create_user(client)
    order = create_order(client, user["id"])
    things = create_many(client, "things", [{"n": 1}, {"n": 2}])
    create(client, "empty", {"id": "gone", "n": 0})
    assert client.delete(f"{API}/data/empty/gone").status_code == 204

    response = client.get(f"{API}/dump")

    assert response.status_code == 200
    assert response.json() == {
        "users": [user],
        "orders": [order],
        "things": things,
        "empty": [],
    }


def test_dump_of_a_fresh_store_has_the_builtin_tables(client: TestClient) -> None:
    assert client.get(f"{API}/dump").json() == {"users": [], "orders": []}


def test_a_large_store_dumps_whole(client_factory: Callable[..., TestClient]) -> None:
    client = client_factory(max_bulk=5000)
    user = create_user(client)
    first = create_many(client, "first", [{"n": n} for n in range(2500)])
    second = create_many(client, "second", [{"m": n} for n in range(1500)])

    response = client.get(f"{API}/dump")

    assert response.status_code == 200
    body = json.loads(response.content)
    assert body == {
        "users": [user],
        "orders": [],
        "first": first,
        "second": second,
    }


@pytest.mark.parametrize("accept", [None, NDJSON])
def test_dump_of_a_missing_table_is_404(client: TestClient, accept: str | None) -> None:
    headers = {"Accept": accept} if accept else {}
    with store_unchanged(client):
        assert_error(
            client.get(f"{API}/dump/nothing", headers=headers), 404, "not_found"
        )
