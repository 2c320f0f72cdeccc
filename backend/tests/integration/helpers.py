"""Assertions and small builders shared by the integration tests."""

from __future__ import annotations

import re
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Iterator

from fastapi.testclient import TestClient
from httpx import Response

from tests.conftest import USER

API = "/api/v1"
STRONG_ETAG = re.compile(r'^"[^"\s]+"$')
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
SERVER_FIELDS = ("id", "created_at", "updated_at")


def assert_error(response: Response, status: int, code: str) -> dict[str, Any]:
    """The response is the contract's error envelope with this status and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert set(error) == {"code", "message", "details", "request_id"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["details"], list), error
    assert error["request_id"], error
    assert error["request_id"] == response.headers["x-request-id"]
    return dict(error)


def assert_validation_error(response: Response) -> list[dict[str, Any]]:
    """A 422 ``validation_error`` whose details each carry ``loc``, ``msg``, ``type``."""
    error = assert_error(response, 422, "validation_error")
    details: list[dict[str, Any]] = error["details"]
    assert details, error
    for detail in details:
        assert isinstance(detail["loc"], list) and detail["loc"], detail
        assert all(isinstance(part, (str, int)) for part in detail["loc"]), detail
        assert isinstance(detail["msg"], str) and detail["msg"], detail
        assert isinstance(detail["type"], str) and detail["type"], detail
    return details


def locs(details: list[dict[str, Any]]) -> list[list[str | int]]:
    return [detail["loc"] for detail in details]


def dump(client: TestClient) -> dict[str, Any]:
    response = client.get(f"{API}/dump")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@contextmanager
def store_unchanged(client: TestClient) -> Iterator[None]:
    """The whole store (``GET /api/v1/dump``) is the same after the block."""
    before = dump(client)
    yield
    assert dump(client) == before


def create(client: TestClient, table: str, data: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"{API}/data/{table}", json={"data": data})
    assert response.status_code == 201, response.text
    record: dict[str, Any] = response.json()
    return record


def create_many(
    client: TestClient, table: str, items: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    response = client.post(f"{API}/data/{table}", json={"data": items})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["count"] == len(items)
    created: list[dict[str, Any]] = body["items"]
    return created


def create_user(client: TestClient, **overrides: Any) -> dict[str, Any]:
    return create(client, "users", {**USER, **overrides})


def create_order(client: TestClient, user_id: str, **overrides: Any) -> dict[str, Any]:
    order = {
        "product_name": "Widget Pro",
        "quantity": 2,
        "total_price": 99.99,
        "user_id": user_id,
    }
    return create(client, "orders", {**order, **overrides})


def assert_timestamp(value: Any) -> datetime:
    """An RFC 3339 UTC timestamp with a ``Z``, close to now."""
    assert isinstance(value, str) and RFC3339_UTC.match(value), value
    moment = datetime.fromisoformat(value)
    assert moment.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=5), value
    return moment


def fields_of(record: dict[str, Any]) -> dict[str, Any]:
    """A record without its server-owned fields."""
    return {k: v for k, v in record.items() if k not in SERVER_FIELDS}
