"""``/api/v1/tables``: names, counts, schemas and indexes."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.integration.helpers import (
    API,
    create,
    create_many,
    create_order,
    create_user,
)


def _tables(client: TestClient) -> dict[str, dict[str, Any]]:
    response = client.get(f"{API}/tables")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, list)
    for table in body:
        assert {"name", "count", "schema", "indexes"} <= set(table)
    names = [t["name"] for t in body]
    assert len(names) == len(set(names))
    return {t["name"]: t for t in body}


def _indexes(table: dict[str, Any]) -> set[tuple[str, bool]]:
    return {(index["field"], index["unique"]) for index in table["indexes"]}


def test_a_fresh_store_lists_the_builtin_tables(client: TestClient) -> None:
    tables = _tables(client)

    assert set(tables) == {"users", "orders"}
    users, orders = tables["users"], tables["orders"]
    assert users["count"] == 0 and orders["count"] == 0
    assert _indexes(users) == {("email", True)}
    assert _indexes(orders) == {("user_id", False)}
    assert isinstance(users["schema"], dict)
    assert {"email", "full_name", "age", "password"} <= set(
        users["schema"]["properties"]
    )
    assert {"email", "full_name"} <= set(users["schema"]["required"])
    assert isinstance(orders["schema"], dict)
    assert {"product_name", "quantity", "total_price", "user_id"} <= set(
        orders["schema"]["properties"]
    )


def test_counts_follow_the_writes(client: TestClient) -> None:
    user = create_user(client)
    create_user(client, email="jane@example.com", full_name="Jane")
    create_order(client, user["id"])
    create_many(client, "things", [{"id": f"t{n}"} for n in range(4)])
    create(client, "notes", {"text": "hi"})

    tables = _tables(client)

    assert {name: t["count"] for name, t in tables.items()} == {
        "users": 2,
        "orders": 1,
        "things": 4,
        "notes": 1,
    }
    for name in ("things", "notes"):
        assert tables[name]["schema"] is None
        assert tables[name]["indexes"] == []

    assert client.delete(f"{API}/data/things/t0").status_code == 204
    assert _tables(client)["things"]["count"] == 3


def test_a_dropped_table_leaves_the_list(client: TestClient) -> None:
    create(client, "things", {"n": 1})
    assert "things" in _tables(client)

    assert client.delete(f"{API}/data/things").status_code == 204

    tables = _tables(client)
    assert "things" not in tables
    assert set(tables) == {"users", "orders"}


def test_an_emptied_builtin_table_keeps_schema_and_indexes(client: TestClient) -> None:
    create_user(client)
    assert client.delete(f"{API}/data/users").status_code == 204

    users = _tables(client)["users"]
    assert users["count"] == 0
    assert users["schema"] is not None
    assert _indexes(users) == {("email", True)}
