"""HTTP's own rules (CONTRACT section 4): HEAD and OPTIONS, ``Allow``, gzip in
and out, JSON merge patch, and links that stay within the pages. Each case
that a hot route can take is sent to both front doors: plain (the fast path)
and with an ``Origin`` header (the full stack)."""

from __future__ import annotations

import gzip
import zlib
from typing import Any, Callable

import orjson
import pytest
from fastapi.testclient import TestClient

from tests.conftest import USER
from tests.integration.helpers import (
    API,
    assert_error,
    assert_validation_error,
    create,
    locs,
    store_unchanged,
)

ORIGIN = {"Origin": "http://elsewhere.example"}
DOORS = pytest.mark.parametrize("door", [{}, ORIGIN], ids=["fast path", "full stack"])
# long enough that its answer passes the compression threshold
BIG_TEXT = "memdb keeps its records in memory. " * 80
NO_GZIP = {"Accept-Encoding": "identity"}


def _parts(response: Any) -> tuple[int, dict[str, str]]:
    headers = {
        k: v for k, v in response.headers.items() if k not in ("date", "x-request-id")
    }
    return response.status_code, headers


@DOORS
@pytest.mark.parametrize(
    "path",
    [
        "/data/things/t1",
        "/data/things/absent",
        "/data/things",
        "/data/things?sort=-n&limit=1",
        "/dump/things",
        "/tables",
    ],
)
def test_head_answers_as_get_without_the_body(
    client: TestClient, door: dict[str, str], path: str
) -> None:
    create(client, "things", {"id": "t1", "n": 1})
    got = client.get(f"{API}{path}", headers={**door, **NO_GZIP})
    head = client.head(f"{API}{path}", headers={**door, **NO_GZIP})
    assert head.content == b""
    assert _parts(head) == _parts(got)
    assert int(head.headers["content-length"]) == len(got.content) > 0


def test_head_on_the_service_routes(client: TestClient) -> None:
    for path in ("/health", "/ready", "/metrics", "/openapi.json", "/docs"):
        head = client.head(path)
        assert head.status_code == 200, path
        assert head.content == b""


def test_head_is_logged_and_counted_as_head(client: TestClient) -> None:
    client.head(f"{API}/data/things")
    metrics = client.get("/metrics").text
    assert 'method="HEAD",route="/api/v1/data/{table}",status="404"' in metrics


def test_head_where_get_is_not_allowed_is_405(client: TestClient) -> None:
    response = client.head(f"{API}/import")
    assert response.status_code == 405
    assert response.headers["allow"] == "OPTIONS, POST"


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/api/v1/data/things", "DELETE, GET, HEAD, OPTIONS, POST"),
        ("/api/v1/data/things/t1", "DELETE, GET, HEAD, OPTIONS, PATCH, PUT"),
        ("/api/v1/join/a/b/k", "GET, HEAD, OPTIONS"),
        ("/api/v1/import", "OPTIONS, POST"),
        ("/health", "GET, HEAD, OPTIONS"),
    ],
)
def test_options_lists_the_methods_of_the_path(
    client: TestClient, path: str, allow: str
) -> None:
    with store_unchanged(client):
        response = client.options(path)
    assert response.status_code == 204
    assert response.headers["allow"] == allow
    assert response.content == b""
    assert response.headers["x-request-id"]


def test_options_needs_no_key_but_the_route_still_does(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(api_keys="k1:rw")
    response = client.options(f"{API}/data/things")
    assert response.status_code == 204
    assert_error(client.get(f"{API}/data/things"), 401, "unauthorized")


def test_options_of_no_route_is_404(client: TestClient) -> None:
    assert_error(client.options("/nowhere"), 404, "not_found")


def test_every_405_lists_head_and_options(client: TestClient) -> None:
    response = client.post(f"{API}/data/things/t1", json={"data": {}})
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "DELETE, GET, HEAD, OPTIONS, PATCH, PUT"


def test_a_cors_preflight_is_still_answered_by_cors(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(cors_origins="http://app.example")
    response = client.options(
        f"{API}/data/things",
        headers={
            "Origin": "http://app.example",
            "Access-Control-Request-Method": "POST",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://app.example"


@pytest.mark.parametrize(
    ("asked", "names"),
    [
        ({"Origin": "http://elsewhere.example"}, "origin"),
        ({"Access-Control-Request-Method": "TRACE"}, "method"),
        ({"Access-Control-Request-Headers": "X-Secret"}, "headers"),
    ],
)
def test_a_refused_cors_preflight_is_in_the_error_envelope(
    client_factory: Callable[..., TestClient], asked: dict[str, str], names: str
) -> None:
    """It was 400 in plain text ("Disallowed CORS origin")."""
    client = client_factory(cors_origins="http://app.example")
    headers = {
        "Origin": "http://app.example",
        "Access-Control-Request-Method": "POST",
        "X-Request-ID": "preflight-1",
        **asked,
    }
    response = client.options(f"{API}/data/things", headers=headers)
    error = assert_error(response, 400, "bad_request")
    assert names in error["message"] and "MEMDB_CORS_ORIGINS" in error["message"]
    assert error["request_id"] == "preflight-1"


# -- compression out ---------------------------------------------------------


def _raw(client: TestClient, path: str, headers: dict[str, str]) -> Any:
    """The answer as sent: not decoded by the client."""
    with client.stream("GET", f"{API}{path}", headers=headers) as response:
        response.raw = b"".join(response.iter_raw())
    return response


@DOORS
@pytest.mark.parametrize(
    "path", ["/data/things/big", "/data/things", "/dump/things", "/dump"]
)
def test_large_answers_are_gzipped_when_the_client_accepts_it(
    client: TestClient, door: dict[str, str], path: str
) -> None:
    create(client, "things", {"id": "big", "text": BIG_TEXT})
    for i in range(30):  # a list of more than 20 items is streamed
        create(client, "things", {"id": f"t{i}", "text": BIG_TEXT[:100]})
    plain = client.get(f"{API}{path}", headers={**door, **NO_GZIP})
    packed = _raw(client, path, {**door, "Accept-Encoding": "gzip"})
    assert packed.status_code == plain.status_code == 200
    assert packed.headers["content-encoding"] == "gzip"
    assert "accept-encoding" in packed.headers["vary"].lower()
    assert gzip.decompress(packed.raw) == plain.content
    assert len(packed.raw) < len(plain.content) / 3
    assert "content-encoding" not in plain.headers


@DOORS
def test_small_answers_are_sent_as_they_are(
    client: TestClient, door: dict[str, str]
) -> None:
    create(client, "things", {"id": "t1", "n": 1})
    response = _raw(client, "/data/things/t1", {**door, "Accept-Encoding": "gzip"})
    assert "content-encoding" not in response.headers
    assert orjson.loads(response.raw)["n"] == 1


def test_a_streamed_ndjson_dump_is_gzipped_piece_by_piece(client: TestClient) -> None:
    # over 1 MiB of NDJSON: sent as it is made, not whole
    items = [{"id": f"r{i}", "text": BIG_TEXT[:300]} for i in range(4000)]
    for start in range(0, len(items), 1000):
        batch = items[start : start + 1000]
        response = client.post(f"{API}/data/things", json={"data": batch})
        assert response.status_code == 201
    headers = {"Accept": "application/x-ndjson", "Accept-Encoding": "gzip"}
    with client.stream("GET", f"{API}/dump/things", headers=headers) as streamed:
        assert streamed.headers["content-encoding"] == "gzip"
        assert "content-length" not in streamed.headers
        pieces = list(streamed.iter_raw())
    lines = gzip.decompress(b"".join(pieces)).splitlines()
    assert [orjson.loads(line)["id"] for line in lines] == [i["id"] for i in items]


# -- compression in ----------------------------------------------------------


def _send(
    client: TestClient,
    path: str,
    content: bytes,
    door: dict[str, str],
    *,
    encoding: str = "gzip",
    method: str = "POST",
) -> Any:
    """A JSON body sent with this ``Content-Encoding``, through one door."""
    return client.request(
        method,
        f"{API}{path}",
        content=content,
        headers={
            "Content-Type": "application/json",
            "Content-Encoding": encoding,
            **door,
        },
    )


@DOORS
def test_a_gzip_body_is_read_on_both_doors(
    client: TestClient, door: dict[str, str]
) -> None:
    body = orjson.dumps({"data": {"id": "g1", "text": BIG_TEXT}})
    response = _send(client, "/data/things", gzip.compress(body), door)
    assert response.status_code == 201, response.text
    assert client.get(f"{API}/data/things/g1").json()["text"] == BIG_TEXT
    patch = orjson.dumps({"data": {"n": 2}})
    response = _send(
        client, "/data/things/g1", gzip.compress(patch), door, method="PATCH"
    )
    assert response.status_code == 200 and response.json()["n"] == 2


@DOORS
def test_a_zip_bomb_is_413_and_changes_nothing(
    client_factory: Callable[..., TestClient], door: dict[str, str]
) -> None:
    client = client_factory(max_body_bytes=64 * 1024)
    create(client, "things", {"id": "t1"})
    # 32 MiB of JSON in about 32 KiB of gzip: under the limit as sent
    bomb = b'{"data": {"id": "b", "pad": "' + b" " * (32 * 1024 * 1024) + b'"}}'
    packed = gzip.compress(bomb, compresslevel=9)
    assert len(packed) < 64 * 1024
    with store_unchanged(client):
        response = _send(client, "/data/things", packed, door)
        assert_error(response, 413, "payload_too_large")


@DOORS
@pytest.mark.parametrize(
    "body",
    [
        b"not gzip at all",
        gzip.compress(b'{"data": {"id": "x"}}')[:-12],  # cut short
        gzip.compress(b'{"data": {"id": "x"}}') + b"trailing",
    ],
    ids=["garbage", "truncated", "trailing bytes"],
)
def test_a_bad_gzip_body_is_400_and_changes_nothing(
    client: TestClient, door: dict[str, str], body: bytes
) -> None:
    create(client, "things", {"id": "t1"})
    with store_unchanged(client):
        response = _send(client, "/data/things", body, door)
        assert_error(response, 400, "bad_request")


@DOORS
@pytest.mark.parametrize("encoding", ["br", "deflate", "compress, gzip"])
def test_another_content_encoding_is_415_and_changes_nothing(
    client: TestClient, door: dict[str, str], encoding: str
) -> None:
    create(client, "things", {"id": "t1"})
    with store_unchanged(client):
        body = zlib.compress(b'{"data": {"id": "x"}}')
        response = _send(client, "/data/things", body, door, encoding=encoding)
        error = assert_error(response, 415, "unsupported_media_type")
    assert "Content-Encoding" in error["message"]


# -- merge patch and links ---------------------------------------------------


def test_patch_takes_a_plain_merge_patch(client: TestClient) -> None:
    create(client, "things", {"id": "t1", "n": 1, "gone": True, "deep": {"a": 1}})
    response = client.patch(
        f"{API}/data/things/t1",
        content=orjson.dumps({"n": 2, "gone": None, "deep": {"b": 2}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status_code == 200, response.text
    record = client.get(f"{API}/data/things/t1").json()
    assert record["n"] == 2 and "gone" not in record
    assert record["deep"] == {"a": 1, "b": 2}
    # the wrapper still works with application/json
    response = client.patch(f"{API}/data/things/t1", json={"data": {"n": 3}})
    assert response.status_code == 200 and response.json()["n"] == 3


@pytest.mark.parametrize("patch", [b"[1, 2]", b'"text"', b"null", b"3"])
def test_a_merge_patch_that_is_not_an_object_is_422(
    client: TestClient, patch: bytes
) -> None:
    create(client, "things", {"id": "t1", "n": 1})
    with store_unchanged(client):
        response = client.patch(
            f"{API}/data/things/t1",
            content=patch,
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert_error(response, 422, "validation_error")


def _links(response: Any) -> dict[str, str]:
    out = {}
    for part in response.headers.get("link", "").split(", "):
        if part:
            url, rel = part.split("; ")
            out[rel[5:-1]] = url[1:-1]
    return out


@pytest.mark.parametrize("offset", [4, 5, 9, 100])
def test_no_link_points_past_the_end(client: TestClient, offset: int) -> None:
    client.post(f"{API}/data/things", json={"data": [{"n": i} for i in range(5)]})
    response = client.get(f"{API}/data/things?limit=2&offset={offset}")
    links = _links(response)
    assert links["last"].endswith("offset=4")
    assert links["prev"].endswith(f"offset={min(offset - 2, 4)}")
    assert "next" not in links


def test_a_plain_merge_patch_names_its_fields_at_the_top_of_the_body(
    client: TestClient,
) -> None:
    user = create(client, "users", {**USER})
    with store_unchanged(client):
        response = client.patch(
            f"{API}/data/users/{user['id']}",
            content=b'{"age": -1}',
            headers={"Content-Type": "application/merge-patch+json"},
        )
        details = assert_validation_error(response)
    assert locs(details) == [["body", "age"]]
    wrapped = client.patch(f"{API}/data/users/{user['id']}", json={"data": {"age": -1}})
    assert locs(assert_validation_error(wrapped)) == [["body", "data", "age"]]
