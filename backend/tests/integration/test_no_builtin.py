"""``MEMDB_BUILTIN_SCHEMAS=false``: no built-in tables, every table schemaless
(memdb serve's default), on every store backend."""

from __future__ import annotations

from typing import Callable

from fastapi.testclient import TestClient

from tests.integration.helpers import API


def test_users_and_orders_are_plain_tables(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(builtin_schemas=False)
    assert client.get(f"{API}/tables").json() == []  # nothing made at start
    user = {"id": "u1", "name": "Leanne", "password": "short", "email": "x"}
    made = client.post(f"{API}/data/users", json={"data": user})
    assert made.status_code == 201, made.text
    assert made.json()["password"] == "short"  # a field like any other
    found = client.get(f"{API}/data/users", params={"password": '"short"'}).json()
    assert [u["id"] for u in found["items"]] == ["u1"]
    order = {"id": "o1", "user_id": "nobody"}
    assert client.post(f"{API}/data/orders", json={"data": order}).status_code == 201
    assert client.delete(f"{API}/data/users/u1").status_code == 204
    tables = {t["name"]: t for t in client.get(f"{API}/tables").json()}
    assert tables["users"]["schema"] is None and tables["orders"]["indexes"] == []


def test_the_builtin_tables_by_default(client: TestClient) -> None:
    bad = client.post(f"{API}/data/users", json={"data": {"name": "x"}})
    assert bad.status_code == 422
