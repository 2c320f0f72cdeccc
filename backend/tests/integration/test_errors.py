"""Every row of the contract's error table: status, code, envelope, store unchanged."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterator

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.services.records import RecordService
from app.services.tables import TableService
from tests.conftest import USER, make_settings
from tests.integration.helpers import (
    API,
    assert_error,
    assert_validation_error,
    create,
    create_many,
    create_order,
    create_user,
    dump,
    store_unchanged,
)


@dataclass(frozen=True)
class Seeded:
    client: TestClient
    ids: dict[str, str]


@pytest.fixture
def seeded(client: TestClient) -> Seeded:
    """A store with a user, an order and a schemaless record, so that a change shows."""
    user = create_user(client)
    order = create_order(client, user["id"])
    create(client, "things", {"id": "t1", "n": 1, "nested": {"a": [1, 2]}})
    return Seeded(client, {"user": user["id"], "order": order["id"], "thing": "t1"})


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    status: int
    code: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def send(self, seeded: Seeded) -> httpx.Response:
        return seeded.client.request(
            self.method, self.path.format(**seeded.ids), **self.kwargs
        )


def _nested(depth: int) -> dict[str, Any]:
    """A JSON object nested ``depth`` levels deep (itself included)."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def _list_nested(depth: int) -> dict[str, Any]:
    """An object holding lists, ``depth`` levels deep (the object included)."""
    value: Any = [1]
    for _ in range(depth - 2):
        value = [value]
    return {"a": value}


JSON = {"Content-Type": "application/json"}
BAD_JSON = {"content": b'{"data": {"n": ', "headers": JSON}
GOOD = json.dumps({"data": {"n": 2}}).encode()
THING = API + "/data/things/{thing}"
USER_URL = API + "/data/users/{user}"
ORDER = {
    "product_name": "Widget",
    "quantity": 1,
    "total_price": 1.0,
    "user_id": "nobody",
}

CASES: dict[str, Case] = {
    # 400 invalid_json
    "invalid json on create": Case(
        "POST", API + "/data/things", 400, "invalid_json", BAD_JSON
    ),
    "invalid json on a new table": Case(
        "POST", API + "/data/fresh", 400, "invalid_json", BAD_JSON
    ),
    "invalid json on put": Case("PUT", THING, 400, "invalid_json", BAD_JSON),
    "invalid json on patch": Case("PATCH", THING, 400, "invalid_json", BAD_JSON),
    "empty body": Case(
        "POST",
        API + "/data/things",
        400,
        "invalid_json",
        {"content": b"", "headers": JSON},
    ),
    "trailing garbage": Case(
        "POST",
        API + "/data/things",
        400,
        "invalid_json",
        {"content": b'{"data": {}} x', "headers": JSON},
    ),
    "invalid utf-8": Case(
        "POST",
        API + "/data/things",
        400,
        "invalid_json",
        {"content": b'{"data": {"s": "\xff"}}', "headers": JSON},
    ),
    "NaN": Case(
        "POST",
        API + "/data/things",
        400,
        "invalid_json",
        {"content": b'{"data": {"n": NaN}}', "headers": JSON},
    ),
    # 400 bad_request
    "unknown join kind": Case(
        "GET",
        API + "/join/users/orders/user_id",
        400,
        "bad_request",
        {"params": {"how": "sideways"}},
    ),
    # 404 not_found
    "unknown route": Case("GET", "/nowhere", 404, "not_found"),
    "unknown api route": Case("GET", API + "/nowhere/at/all", 404, "not_found"),
    "unknown table": Case("GET", API + "/data/nothing/{thing}", 404, "not_found"),
    "unknown record": Case("GET", API + "/data/things/absent", 404, "not_found"),
    "put unknown record": Case(
        "PUT",
        API + "/data/things/absent",
        404,
        "not_found",
        {"json": {"data": {"n": 1}}},
    ),
    "patch unknown record": Case(
        "PATCH",
        API + "/data/users/absent",
        404,
        "not_found",
        {"json": {"data": {"age": 1}}},
    ),
    "delete unknown record": Case(
        "DELETE", API + "/data/things/absent", 404, "not_found"
    ),
    "drop unknown table": Case("DELETE", API + "/data/nothing", 404, "not_found"),
    "dump unknown table": Case("GET", API + "/dump/nothing", 404, "not_found"),
    "join unknown left": Case("GET", API + "/join/nothing/users/id", 404, "not_found"),
    "join unknown right": Case("GET", API + "/join/users/nothing/id", 404, "not_found"),
    # 405 method_not_allowed
    "delete on tables": Case("DELETE", API + "/tables", 405, "method_not_allowed"),
    "post on dump": Case(
        "POST", API + "/dump", 405, "method_not_allowed", {"json": {}}
    ),
    "put on a table": Case(
        "PUT", API + "/data/things", 405, "method_not_allowed", {"json": {"data": {}}}
    ),
    "post on a record": Case(
        "POST", THING, 405, "method_not_allowed", {"json": {"data": {"n": 1}}}
    ),
    "post on health": Case("POST", "/health", 405, "method_not_allowed"),
    # 409 conflict
    "duplicate id": Case(
        "POST", API + "/data/things", 409, "conflict", {"json": {"data": {"id": "t1"}}}
    ),
    "duplicate email": Case(
        "POST",
        API + "/data/users",
        409,
        "conflict",
        {"json": {"data": {**USER, "email": "JOHN.DOE@example.com"}}},
    ),
    "delete a referenced user": Case("DELETE", USER_URL, 409, "conflict"),
    "drop users with orders": Case("DELETE", API + "/data/users", 409, "conflict"),
    # 412 precondition_failed
    "put if-match": Case(
        "PUT",
        THING,
        412,
        "precondition_failed",
        {"json": {"data": {"n": 2}}, "headers": {"If-Match": '"stale"'}},
    ),
    "patch if-match": Case(
        "PATCH",
        USER_URL,
        412,
        "precondition_failed",
        {"json": {"data": {"age": 31}}, "headers": {"If-Match": '"stale", "older"'}},
    ),
    "delete if-match": Case(
        "DELETE",
        THING,
        412,
        "precondition_failed",
        {"headers": {"If-Match": '"stale"'}},
    ),
    # 415 unsupported_media_type
    "text/plain": Case(
        "POST",
        API + "/data/things",
        415,
        "unsupported_media_type",
        {"content": GOOD, "headers": {"Content-Type": "text/plain"}},
    ),
    "form encoded": Case(
        "POST",
        API + "/data/things",
        415,
        "unsupported_media_type",
        {"data": {"data": "x"}},
    ),
    "no content type": Case(
        "POST", API + "/data/things", 415, "unsupported_media_type", {"content": GOOD}
    ),
    "put text/plain": Case(
        "PUT",
        THING,
        415,
        "unsupported_media_type",
        {"content": GOOD, "headers": {"Content-Type": "text/plain"}},
    ),
    "patch no content type": Case(
        "PATCH", THING, 415, "unsupported_media_type", {"content": GOOD}
    ),
}

VALIDATION: dict[str, tuple[str, str, Any]] = {
    "bad field name": ("POST", API + "/data/things", {"data": {"bad-name": 1}}),
    "field name starts with a digit": (
        "POST",
        API + "/data/things",
        {"data": {"1a": 1}},
    ),
    "field name of 65 chars": ("POST", API + "/data/things", {"data": {"a" * 65: 1}}),
    "created_at on create": (
        "POST",
        API + "/data/things",
        {"data": {"created_at": "x"}},
    ),
    "updated_at on put": ("PUT", THING, {"data": {"updated_at": "x"}}),
    "another id on put": ("PUT", THING, {"data": {"id": "t2"}}),
    "another id on patch": ("PATCH", THING, {"data": {"id": "t2"}}),
    "no data member": ("POST", API + "/data/things", {"n": 1}),
    "data not an object": ("POST", API + "/data/things", {"data": "text"}),
    "bulk item not an object": ("POST", API + "/data/things", {"data": [{"n": 1}, 2]}),
    "users schema": ("POST", API + "/data/users", {"data": {"email": "x"}}),
    "unknown user field": ("PATCH", USER_URL, {"data": {"nickname": "J"}}),
    "order of an unknown user": ("POST", API + "/data/orders", {"data": ORDER}),
    "nested 33 levels": ("POST", API + "/data/things", {"data": _nested(33)}),
    "nested 40 levels": ("POST", API + "/data/things", {"data": _nested(40)}),
    "lists nested 33 levels": (
        "POST",
        API + "/data/things",
        {"data": _list_nested(33)},
    ),
    "deep patch": ("PATCH", THING, {"data": {"nested": _nested(40)}}),
    "string over 64 KiB": ("POST", API + "/data/things", {"data": {"s": "x" * 65537}}),
    "multibyte string over 64 KiB": (
        "POST",
        API + "/data/things",
        {"data": {"s": "é" * 32769}},
    ),
    "long string in a list": (
        "POST",
        API + "/data/things",
        {"data": {"s": [{"t": "x" * 65537}]}},
    ),
    "257 fields": (
        "POST",
        API + "/data/things",
        {"data": {f"f{i}": i for i in range(257)}},
    ),
    "257 nested fields": (
        "POST",
        API + "/data/things",
        {"data": {"inner": {f"f{i}": i for i in range(257)}}},
    ),
    "257 fields on put": ("PUT", THING, {"data": {f"f{i}": i for i in range(257)}}),
    "table name with a dash": ("POST", API + "/data/bad-name", {"data": {"n": 1}}),
    "table name with a digit first": ("POST", API + "/data/1abc", {"data": {"n": 1}}),
    "table name with an underscore first": ("GET", API + "/data/_abc/x", None),
    "table name of 65 chars": ("POST", API + "/data/" + "a" * 65, {"data": {"n": 1}}),
    "dump of a bad table name": ("GET", API + "/dump/bad-name", None),
    "join of a bad table name": ("GET", API + "/join/bad-name/users/id", None),
    "drop of a bad table name": ("DELETE", API + "/data/bad-name", None),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_an_error_answers_the_envelope_and_changes_nothing(
    seeded: Seeded, case: Case
) -> None:
    with store_unchanged(seeded.client):
        assert_error(case.send(seeded), case.status, case.code)


@pytest.mark.parametrize(
    ("method", "path", "body"), list(VALIDATION.values()), ids=list(VALIDATION)
)
def test_a_validation_error_is_422_with_details_and_changes_nothing(
    seeded: Seeded, method: str, path: str, body: Any
) -> None:
    url = path.format(**seeded.ids)
    kwargs: dict[str, Any] = {} if body is None else {"json": body}
    with store_unchanged(seeded.client):
        assert_validation_error(seeded.client.request(method, url, **kwargs))


def test_a_405_names_the_allowed_methods(client: TestClient) -> None:
    response = client.delete(f"{API}/tables")
    assert_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


def test_a_bad_query_parameter_is_named(client: TestClient) -> None:
    response = client.get(f"{API}/join/users/orders/user_id", params={"how": "x"})
    error = assert_error(response, 400, "bad_request")
    assert "how" in error["message"] or any(
        "how" in d.get("loc", []) for d in error["details"]
    )


def test_values_within_the_limits_are_accepted(client: TestClient) -> None:
    records = [
        {"deep": _nested(31)},
        {"lists": _list_nested(31)},
        {"s": "x" * 65536},
        {"s": "é" * 32768},
        {f"f{i}": i for i in range(256)},
        {"inner": {f"f{i}": i for i in range(256)}},
    ]
    for data in records:
        response = client.post(f"{API}/data/things", json={"data": data})
        assert response.status_code == 201, response.text[:300]


# -- 413 -------------------------------------------------------------------


def test_a_body_over_the_limit_with_a_content_length_is_413(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(max_body_bytes=1000)
    create(client, "things", {"n": 1})
    body = json.dumps({"data": {"s": "x" * 2000}}).encode()

    with store_unchanged(client):
        response = client.post(f"{API}/data/things", content=body, headers=JSON)
        assert_error(response, 413, "payload_too_large")
        bulk = json.dumps({"data": [{"s": "x" * 100} for _ in range(20)]}).encode()
        response = client.post(f"{API}/data/fresh", content=bulk, headers=JSON)
        assert_error(response, 413, "payload_too_large")

    small = client.post(f"{API}/data/things", json={"data": {"s": "x" * 900}})
    assert small.status_code == 201


def test_a_streamed_body_over_the_limit_is_413(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(max_body_bytes=1000)

    def chunks() -> Iterator[bytes]:
        yield b'{"data": {"s": "'
        for _ in range(10):
            yield b"x" * 300
        yield b'"}}'

    with store_unchanged(client):
        response = client.post(f"{API}/data/things", content=chunks(), headers=JSON)
        assert "content-length" not in response.request.headers
        assert_error(response, 413, "payload_too_large")


def test_a_body_over_the_limit_in_many_small_chunks_is_413() -> None:
    """Each ASGI message is small; only their sum is over the limit."""
    app = create_app(make_settings(max_body_bytes=1000))

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"data": {"s": "'
        for _ in range(10):
            yield b"x" * 300
        yield b'"}}'

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver"
        ) as http:
            return await http.post(f"{API}/data/things", content=chunks(), headers=JSON)

    with TestClient(app) as client, store_unchanged(client):
        response = anyio.run(send)
        assert_error(response, 413, "payload_too_large")


# -- 507 -------------------------------------------------------------------


def test_a_full_store_is_507_and_a_bulk_that_would_overflow_writes_nothing(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(max_records=5)
    create_many(client, "things", [{"n": n} for n in range(3)])

    with store_unchanged(client):
        response = client.post(
            f"{API}/data/things", json={"data": [{"n": n} for n in range(3)]}
        )
        assert_error(response, 507, "insufficient_storage")
        response = client.post(f"{API}/data/fresh", json={"data": [{"n": 1}] * 3})
        assert_error(response, 507, "insufficient_storage")

    create_many(client, "things", [{"n": 3}, {"n": 4}])
    with store_unchanged(client):
        assert_error(
            client.post(f"{API}/data/things", json={"data": {"n": 5}}),
            507,
            "insufficient_storage",
        )
        assert_error(
            client.post(f"{API}/data/users", json={"data": USER}),
            507,
            "insufficient_storage",
        )

    # an update does not add a record; a delete frees a place
    things = dump(client)["things"]
    url = f"{API}/data/things/{things[0]['id']}"
    assert client.patch(url, json={"data": {"n": 10}}).status_code == 200
    assert client.delete(url).status_code == 204
    create(client, "things", {"n": 6})


# -- 503 -------------------------------------------------------------------


def test_before_the_store_is_loaded_the_api_is_503() -> None:
    client = TestClient(create_app(make_settings()))  # no lifespan: not loaded
    for response in (
        client.get(f"{API}/tables"),
        client.post(f"{API}/data/things", json={"data": {"n": 1}}),
        client.get("/ready"),
    ):
        assert_error(response, 503, "not_ready")
    assert client.get("/health").status_code == 200


# -- 500 -------------------------------------------------------------------


def test_an_unexpected_error_is_500_without_internals(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(client, "things", {"id": "t1", "n": 1})

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(RecordService, "read_record", explode)
    monkeypatch.setattr(RecordService, "update_record", explode)
    with store_unchanged(client):
        for response in (
            client.get(f"{API}/data/things/t1"),
            client.put(f"{API}/data/things/t1", json={"data": {"n": 2}}),
        ):
            error = assert_error(response, 500, "internal_error")
            for leak in ("secret internals", "Traceback", "RuntimeError", "File "):
                assert leak not in response.text
            assert "secret" not in error["message"]


def test_an_unexpected_error_in_a_write_stores_nothing(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(RecordService, "create_records", explode)
    with store_unchanged(client):
        response = client.post(f"{API}/data/things", json={"data": {"n": 1}})
        assert_error(response, 500, "internal_error")
        assert "secret internals" not in response.text


def test_an_unexpected_error_in_a_dump_is_500(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(TableService, "list_tables", explode)
    response = client.get(f"{API}/tables", headers={"X-Request-ID": "boom-1"})
    error = assert_error(response, 500, "internal_error")
    assert error["request_id"] == "boom-1"
    assert "secret internals" not in response.text
