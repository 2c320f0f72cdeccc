"""Limits and headers: the body size limit (413) as declared and as streamed, the
record limit (507) with nothing half-written, security headers, and CORS."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Callable, Iterator

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.services.records import RecordService
from tests.conftest import USER, make_settings
from tests.integration.helpers import (
    API,
    assert_error,
    create,
    create_many,
    dump,
    store_unchanged,
)

JSON = {"Content-Type": "application/json"}
LIMIT = 1000
NOSNIFF = "nosniff"
API_CACHE = "private, no-cache"


def _body_of_size(size: int) -> bytes:
    """A valid create body of exactly ``size`` bytes."""
    head, tail = b'{"data": {"s": "', b'"}}'
    body = head + b"x" * (size - len(head) - len(tail)) + tail
    assert len(body) == size
    json.loads(body)
    return body


def _chunks(body: bytes, size: int = 100) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


# -- 413 -------------------------------------------------------------------


def test_a_streamed_body_over_the_limit_is_413_and_changes_nothing(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(max_body_bytes=LIMIT)
    create(client, "things", {"n": 1})

    with store_unchanged(client):
        for path in (f"{API}/data/things", f"{API}/data/fresh", f"{API}/import"):
            body = (
                _body_of_size(LIMIT + 1)
                if "import" not in path
                else json.dumps({"fresh": [{"s": "x" * LIMIT}]}).encode()
            )
            response = client.post(path, content=_chunks(body), headers=JSON)
            assert "content-length" not in response.request.headers
            assert response.request.headers["transfer-encoding"] == "chunked"
            assert_error(response, 413, "payload_too_large")
            assert response.headers["x-content-type-options"] == NOSNIFF
            assert response.headers["cache-control"] == API_CACHE


def test_a_huge_streamed_upload_is_cut_off_early() -> None:
    """The limit is enforced while the body arrives: a 10 MiB upload to a 4 KiB
    limit is refused after a few KiB, not read to its end."""
    app = create_app(make_settings(max_body_bytes=4096))
    chunk = 1024
    sent = 0

    async def upload() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"data": {"s": "'
        for _ in range(10 * 1024):
            sent += 1
            yield b"x" * chunk

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver"
        ) as http:
            return await http.post(f"{API}/data/things", content=upload(), headers=JSON)

    with TestClient(app) as client, store_unchanged(client):
        response = anyio.run(post)
        assert_error(response, 413, "payload_too_large")
    assert sent <= 4096 // chunk + 2, sent


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"{API}/data/things"),
        ("PUT", f"{API}/data/things/t1"),
        ("PATCH", f"{API}/data/things/t1"),
        ("POST", f"{API}/import"),
    ],
)
def test_a_declared_length_over_the_limit_is_413_and_changes_nothing(
    method: str, path: str, client_factory: Callable[..., TestClient]
) -> None:
    client = client_factory(max_body_bytes=LIMIT)
    create(client, "things", {"id": "t1", "n": 1})
    body = _body_of_size(LIMIT + 1)

    with store_unchanged(client):
        response = client.request(method, path, content=body, headers=JSON)
        assert response.request.headers["content-length"] == str(LIMIT + 1)
        assert_error(response, 413, "payload_too_large")
        assert response.headers["cache-control"] == API_CACHE


@pytest.mark.parametrize("streamed", [False, True], ids=["declared", "streamed"])
def test_a_body_exactly_at_the_limit_is_accepted(
    streamed: bool, client_factory: Callable[..., TestClient]
) -> None:
    client = client_factory(max_body_bytes=LIMIT)
    body = _body_of_size(LIMIT)
    content: Any = _chunks(body) if streamed else body

    response = client.post(f"{API}/data/things", content=content, headers=JSON)
    assert response.status_code == 201, response.text
    assert dump(client)["things"][0]["s"] == json.loads(body)["data"]["s"]


@pytest.mark.parametrize("streamed", [False, True], ids=["declared", "streamed"])
def test_one_byte_over_the_limit_is_refused(
    streamed: bool, client_factory: Callable[..., TestClient]
) -> None:
    client = client_factory(max_body_bytes=LIMIT)
    body = _body_of_size(LIMIT + 1)
    content: Any = _chunks(body) if streamed else body
    with store_unchanged(client):
        response = client.post(f"{API}/data/things", content=content, headers=JSON)
        assert_error(response, 413, "payload_too_large")


def test_the_default_limit_is_one_mebibyte(client: TestClient) -> None:
    at_limit = _body_of_size(1024 * 1024)
    over = _body_of_size(1024 * 1024 + 1)
    with store_unchanged(client):
        response = client.post(f"{API}/data/things", content=over, headers=JSON)
        assert_error(response, 413, "payload_too_large")
    assert (
        client.post(f"{API}/data/things", content=at_limit, headers=JSON).status_code
        != 413
    )


# -- 507 -------------------------------------------------------------------


def test_a_single_create_at_the_limit_is_507_and_writes_nothing(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(max_records=3)
    create_many(client, "things", [{"n": n} for n in range(3)])

    with store_unchanged(client):
        for table, data in (("things", {"n": 3}), ("fresh", {"n": 1}), ("users", USER)):
            response = client.post(f"{API}/data/{table}", json={"data": data})
            assert_error(response, 507, "insufficient_storage")
            assert response.headers["cache-control"] == API_CACHE

    # nothing of the refused user was kept: not its record, not its email
    thing = dump(client)["things"][0]
    assert client.delete(f"{API}/data/things/{thing['id']}").status_code == 204
    assert create(client, "users", USER)["email"] == USER["email"]


def test_a_bulk_that_would_pass_the_limit_is_507_and_writes_nothing(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(max_records=4)
    create(client, "things", {"n": 0})
    create(client, "things", {"n": 1})

    users = [{**USER, "email": f"u{n}@example.com"} for n in range(3)]
    with store_unchanged(client):
        response = client.post(
            f"{API}/data/things", json={"data": [{"n": n} for n in range(2, 5)]}
        )
        assert_error(response, 507, "insufficient_storage")
        response = client.post(f"{API}/data/users", json={"data": users})
        assert_error(response, 507, "insufficient_storage")

    # exactly filling the store is fine, and the refused emails are free
    assert len(create_many(client, "users", users[:2])) == 2
    assert len(dump(client)["users"]) == 2


def test_an_import_that_would_pass_the_limit_is_507_and_writes_nothing(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(max_records=4)
    create_many(client, "things", [{"n": n} for n in range(2)])

    payloads: list[dict[str, list[dict[str, Any]]]] = [
        {"things": [{"n": n} for n in range(3)]},
        {"a": [{"x": 1}], "b": [{"x": 2}], "c": [{"x": 3}]},
        {"users": [{**USER, "email": f"i{n}@example.com"} for n in range(3)]},
    ]
    with store_unchanged(client):
        for payload in payloads:
            response = client.post(f"{API}/import", json=payload)
            assert_error(response, 507, "insufficient_storage")
        response = client.post(
            f"{API}/import?mode=replace",
            json={"things": [{"n": n} for n in range(3)], "more": [{"x": 1}] * 2},
        )
        assert_error(response, 507, "insufficient_storage")

    response = client.post(f"{API}/import", json={"users": payloads[2]["users"][:2]})
    assert response.status_code == 200, response.text
    assert len(dump(client)["users"]) == 2


def test_a_replacing_import_at_the_limit_counts_what_it_frees(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(max_records=3)
    create_many(client, "things", [{"n": n} for n in range(3)])
    response = client.post(
        f"{API}/import?mode=replace", json={"things": [{"m": m} for m in range(3)]}
    )
    assert response.status_code == 200, response.text
    assert [r["m"] for r in dump(client)["things"]] == [0, 1, 2]


# -- security headers ------------------------------------------------------


CASES: list[tuple[str, str, dict[str, Any], int]] = [
    ("GET", "/health", {}, 200),
    ("GET", "/ready", {}, 200),
    ("GET", "/metrics", {}, 200),
    ("GET", "/docs", {}, 200),
    ("GET", "/redoc", {}, 200),
    ("GET", "/openapi.json", {}, 200),
    ("GET", "/static/docs/swagger-ui.css", {}, 200),
    ("GET", "/nowhere", {}, 404),
    ("GET", f"{API}/tables", {}, 200),
    ("GET", f"{API}/stats", {}, 200),
    ("GET", f"{API}/dump", {}, 200),
    ("GET", f"{API}/data/things", {}, 200),
    ("GET", f"{API}/data/things/t1", {}, 200),
    ("GET", f"{API}/data/things/t1", {}, 304),
    ("POST", f"{API}/data/things", {"json": {"data": {"n": 2}}}, 201),
    ("DELETE", f"{API}/data/things/t1", {}, 204),
    ("GET", f"{API}/data/things/absent", {}, 404),
    ("GET", f"{API}/nowhere", {}, 404),
    ("DELETE", f"{API}/tables", {}, 405),
    ("POST", f"{API}/data/things", {"content": b"{", "headers": JSON}, 400),
    ("POST", f"{API}/data/things", {"content": b"{}"}, 415),
    ("POST", f"{API}/data/things", {"json": {"data": {"bad-name": 1}}}, 422),
    ("GET", f"{API}/data/things?n__nope=1", {}, 400),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status"), CASES)
def test_every_answer_says_nosniff_and_api_answers_are_not_cached(
    method: str, path: str, kwargs: dict[str, Any], status: int, client: TestClient
) -> None:
    create(client, "things", {"id": "t1", "n": 1})
    if status == 304:
        etag = client.get(path).headers["etag"]
        kwargs = {"headers": {"If-None-Match": etag}}
    response = client.request(method, path, **kwargs)
    assert response.status_code == status, response.text[:300]
    assert response.headers.get_list("x-content-type-options") == [NOSNIFF]
    if path.startswith("/api/"):
        assert response.headers.get_list("cache-control") == [API_CACHE]


def test_refusals_carry_the_headers_too(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(api_keys="hdr-rw-key:rw,hdr-ro-key:ro", max_body_bytes=100)
    responses = [
        client.get(f"{API}/tables"),
        client.post(
            f"{API}/data/things",
            json={"data": {"n": 1}},
            headers={"X-API-Key": "hdr-ro-key"},
        ),
        client.post(
            f"{API}/data/things",
            content=_body_of_size(101),
            headers={**JSON, "X-API-Key": "hdr-rw-key"},
        ),
    ]
    assert [r.status_code for r in responses] == [401, 403, 413]
    for response in responses:
        assert response.headers.get_list("x-content-type-options") == [NOSNIFF]
        assert response.headers.get_list("cache-control") == [API_CACHE]


def test_a_503_and_a_500_carry_the_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    not_loaded = TestClient(create_app(make_settings()))  # no lifespan: not ready
    response = not_loaded.get(f"{API}/tables")
    assert_error(response, 503, "not_ready")
    assert response.headers["x-content-type-options"] == NOSNIFF
    assert response.headers["cache-control"] == API_CACHE

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(RecordService, "read_record", explode)
    with TestClient(create_app(make_settings())) as client:
        response = client.get(f"{API}/data/things/x")
    assert_error(response, 500, "internal_error")
    assert response.headers["x-content-type-options"] == NOSNIFF
    assert response.headers["cache-control"] == API_CACHE


# -- CORS ------------------------------------------------------------------

ORIGIN = "http://a.example"
OTHER = "http://b.example"


def _preflight(client: TestClient, origin: str, method: str = "POST") -> httpx.Response:
    return client.options(
        f"{API}/data/things",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type, if-match",
        },
    )


def _cors_headers(response: httpx.Response) -> dict[str, str]:
    return {
        k: v for k, v in response.headers.items() if k.startswith("access-control-")
    }


def _listed(value: str) -> set[str]:
    return {part.strip().lower() for part in value.split(",")}


def test_a_preflight_from_an_allowed_origin_is_answered(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(cors_origins=ORIGIN)
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        response = _preflight(client, ORIGIN, method)
        assert response.status_code == 200, response.text
        assert response.headers["access-control-allow-origin"] == ORIGIN
        assert method.lower() in _listed(
            response.headers["access-control-allow-methods"]
        )
        allowed = _listed(response.headers["access-control-allow-headers"])
        assert {"authorization", "content-type", "if-match", "x-api-key"} <= allowed


def test_an_answer_to_an_allowed_origin_exposes_the_api_headers(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(cors_origins=ORIGIN)
    record = create(client, "things", {"n": 1})
    for path in (f"{API}/data/things", f"{API}/data/things/{record['id']}"):
        response = client.get(path, headers={"Origin": ORIGIN})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ORIGIN
        exposed = _listed(response.headers["access-control-expose-headers"])
        assert {"etag", "x-total-count", "link", "location", "x-request-id"} <= exposed


def test_another_origin_gets_no_cors_grant(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(cors_origins=ORIGIN)
    preflight = _preflight(client, OTHER)
    assert "access-control-allow-origin" not in preflight.headers
    response = client.get(f"{API}/data/things", headers={"Origin": OTHER})
    assert "access-control-allow-origin" not in response.headers


def test_several_origins_are_a_comma_list(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(cors_origins=f" {ORIGIN} , {OTHER} ,")
    for origin in (ORIGIN, OTHER):
        response = _preflight(client, origin)
        assert response.headers["access-control-allow-origin"] == origin
    third = _preflight(client, "http://c.example")
    assert "access-control-allow-origin" not in third.headers


def test_without_origins_there_are_no_cors_headers(client: TestClient) -> None:
    responses = [
        _preflight(client, ORIGIN),
        client.get(f"{API}/data/things", headers={"Origin": ORIGIN}),
        client.get("/health", headers={"Origin": ORIGIN}),
    ]
    for response in responses:
        assert _cors_headers(response) == {}, response.headers


def test_cors_works_with_keys_on(client_factory: Callable[..., TestClient]) -> None:
    """Browsers send no credentials on a preflight, and the page must be able to
    read a 401's envelope."""
    client = client_factory(cors_origins=ORIGIN, api_keys="cors-rw-key:rw")
    preflight = _preflight(client, ORIGIN)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN

    refused = client.get(f"{API}/tables", headers={"Origin": ORIGIN})
    assert_error(refused, 401, "unauthorized")
    assert refused.headers["access-control-allow-origin"] == ORIGIN

    allowed = client.get(
        f"{API}/tables", headers={"Origin": ORIGIN, "X-API-Key": "cors-rw-key"}
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN


def test_a_preflight_answer_carries_the_request_id_and_nosniff(
    client_factory: Callable[..., TestClient],
) -> None:
    """CONTRACT 7: X-Request-ID on every response; nosniff on every response."""
    client = client_factory(cors_origins=ORIGIN)
    for origin in (ORIGIN, OTHER):
        response = _preflight(client, origin)
        assert response.headers.get("x-request-id"), (origin, response.headers)
        assert response.headers.get("x-content-type-options") == NOSNIFF
