"""The bad-input corpus: what a careless or hostile client can send.

Malformed and truncated JSON, wrong content types, numbers out of range,
NaN/Infinity, deep nesting, 64 KiB+ strings, invalid UTF-8, control characters
and unicode in table names, ids and query parameters, path traversal,
duplicate keys, oversized and slow bodies, and header injection through
``X-Request-ID``. Each gets the contract's error (the status and ``error.code``
of CONTRACT section 6, never a 500) and leaves the store as it was (``GET
/api/v1/dump`` before and after). The log (stdout) stays one JSON object a
line, with nothing of the input in it but the sanitised request id.

The last section holds the requests of the review's attack on the running
service (costly rather than malformed: a backtracking ``like``, a 25-million-row
join, 8,000 filters, deep literals, empty tables, password-heavy imports, two
spellings of one mailbox): each is refused, or answered at once, and changes
nothing. The same attacks against a real server, with ``/health`` timed and the
RSS watched, are ``tests/e2e/test_abuse.py``; the worst latency and RSS growth
each one caused are listed in 3_EVALUATION.yaml (reliability, abuse suite).

Most requests go through ``TestClient``; the ones a client library would
refuse or rewrite (raw ``..`` segments, CR/LF and non-ASCII bytes in headers,
70 KB paths) go to the ASGI app as they are. The last tests send bytes over a
socket to a real ``python -m app``.
"""

from __future__ import annotations

import io
import json
import re
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, MutableMapping

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import make_settings
from tests.e2e.conftest import start_server
from tests.integration.helpers import API, assert_error, create, dump, store_unchanged

JSON = {"Content-Type": "application/json"}
SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
# Never in a log line: request bodies, raw paths, injected headers.
MARKER = "BODY-MARKER-7f3a"
NEVER_LOGGED = (MARKER, "etc/passwd", "\x1b", "<script")

# (method, path, body wrapper): every route that reads a JSON body. The wrapper
# puts one record (a dict) where that route expects it.
WRITES = [
    ("POST", f"{API}/data/notes", lambda r: {"data": r}),
    ("PUT", f"{API}/data/notes/n1", lambda r: {"data": r}),
    ("PATCH", f"{API}/data/notes/n1", lambda r: {"data": r}),
    ("POST", f"{API}/import", lambda r: {"notes": [r]}),
    ("POST", f"{API}/tables/notes/indexes", lambda r: {"field": "kind", **r}),
]
WRITE_IDS = [f"{m} {p.removeprefix(API)}" for m, p, _ in WRITES]


@dataclass
class Harness:
    """A seeded app, its client, and what it logged."""

    client: TestClient
    stdout: io.StringIO
    events: list[dict[str, Any]] = field(default_factory=list)
    read: int = 0

    @property
    def routes(self) -> set[str]:
        """The route templates an access line may name."""
        paths = self.client.app.openapi()["paths"]  # type: ignore[attr-defined]
        return {*paths, "unmatched", "/static/docs", "/docs", "/redoc", "/openapi.json"}

    def log_events(self) -> list[dict[str, Any]]:
        """The log lines written since the last call, checked: each one JSON
        object, with no raw control character and nothing of the input in it."""
        out = self.stdout.getvalue()
        new, self.read = out[self.read :], len(out)
        events = []
        for line in new.splitlines():
            if not line.strip():
                continue
            assert "\r" not in line and "\x00" not in line, repr(line)
            event = json.loads(line)  # strict: a raw control character fails
            assert isinstance(event, dict), line
            assert event.get("level") in ("debug", "info", "warning", "error"), line
            for text in NEVER_LOGGED:
                assert text not in line, line
            events.append(event)
        self.events.extend(events)
        return events

    def access(self, request_id: str) -> dict[str, Any]:
        """The one access line of a request, among the lines since the last read."""
        found = [
            e
            for e in self.log_events()
            if e.get("event") == "http.request" and e.get("request_id") == request_id
        ]
        assert len(found) == 1, found
        return found[0]


# Every app of this module logs here. The app's logging writes to the
# ``sys.stdout`` of the moment its lifespan starts, and the configuration is
# process-wide: the apps must all be started with the same stdout.
LOG = io.StringIO()


@contextmanager
def opened(**overrides: Any) -> Iterator[TestClient]:
    """A started app (lifespan run) that logs to ``LOG``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdout", LOG)
        client = TestClient(create_app(make_settings(**overrides)))
        client.__enter__()
    try:
        yield client
    finally:
        client.__exit__(None, None, None)


@contextmanager
def open_harness() -> Iterator[Harness]:
    """A seeded app and its log lines."""
    read = len(LOG.getvalue())
    with opened() as client:
        create(client, "notes", {"id": "n1", "kind": "red", "n": 1})
        create(
            client,
            "users",
            {"id": "u1", "email": "ann@example.com", "full_name": "Ann"},
        )
        check = Harness(client, LOG, read=read)
        assert any(e["event"] == "service.started" for e in check.log_events())
        yield check
        check.log_events()


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    """One app for the requests that must change nothing (each test checks)."""
    with open_harness() as check:
        yield check


@pytest.fixture
def fresh() -> Iterator[Harness]:
    """An app of its own, for a test that writes."""
    with open_harness() as check:
        yield check


def refused(
    harness: Harness, response: httpx.Response, status: int, code: str
) -> dict[str, Any]:
    """The contract's error, and an access line that names the route template
    and the status, never the raw path."""
    error = assert_error(response, status, code)
    line = harness.access(error["request_id"])
    assert line["status"] == status
    assert line["route"] in harness.routes, line
    return error


# -- raw ASGI ------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k.lower() == name]

    def error(self, status: int, code: str) -> dict[str, Any]:
        assert self.status == status, (self.status, self.body[:300])
        body = json.loads(self.body)
        assert list(body) == ["error"], body
        assert set(body["error"]) == {"code", "message", "details", "request_id"}
        assert body["error"]["code"] == code, body
        (request_id,) = self.header(b"x-request-id")
        assert body["error"]["request_id"] == request_id.decode()
        return dict(body["error"])


def send_raw(
    client: TestClient,
    method: str,
    path: str,
    *,
    raw_path: bytes | None = None,
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
) -> RawResponse:
    """One request handed to the ASGI app exactly as given: no normalised
    ``..``, no header validation, no length limit on the path."""
    messages: list[dict[str, Any]] = []

    async def call() -> None:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await anyio.sleep_forever()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            messages.append(dict(message))

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": raw_path if raw_path is not None else path.encode("utf-8"),
            "root_path": "",
            "query_string": query,
            "headers": [(b"host", b"testserver"), *(headers or [])],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
            "state": {},
        }
        await client.app(scope, receive, send)

    assert client.portal is not None
    client.portal.call(call)
    start = messages[0]
    assert start["type"] == "http.response.start"
    content = b"".join(m.get("body", b"") for m in messages[1:])
    return RawResponse(start["status"], list(start["headers"]), content)


# -- malformed JSON --------------------------------------------------------------

MALFORMED = {
    "truncated object": b'{"data": {"a": 1}',
    "truncated string": b'{"data": {"a": "x',
    "truncated number": b'{"data": {"a": 1.',
    "unquoted key": b"{data: {}}",
    "single quotes": b"{'data': {}}",
    "trailing comma": b'{"data": {"a": 1,}}',
    "comment": b'{"data": {} /* x */}',
    "empty body": b"",
    "only whitespace": b"  \n",
    "trailing garbage": b'{"data": {}} x',
    "two documents": b'{"data": {}}{"data": {}}',
    "NUL after the document": b'{"data": {}}\x00',
    "byte order mark": b'\xef\xbb\xbf{"data": {}}',
    "NaN": b'{"data": {"a": NaN}}',
    "Infinity": b'{"data": {"a": Infinity}}',
    "-Infinity": b'{"data": {"a": -Infinity}}',
    "invalid UTF-8": b'{"data": {"a": "\xff\xfe"}}',
    "invalid UTF-8 in a key": b'{"data": {"\xc3": 1}}',
    "overlong UTF-8": b'{"data": {"a": "\xc0\xaf"}}',
    "UTF-8 encoded surrogate": b'{"data": {"a": "\xed\xa0\x80"}}',
    "lone surrogate escape": b'{"data": {"a": "\\ud800"}}',
    "raw control character in a string": b'{"data": {"a": "x\x01y"}}',
    "10,000 unclosed brackets": b'{"data": {"a": ' + b"[" * 10_000 + b"}}",
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=list(MALFORMED))
@pytest.mark.parametrize(("method", "path", "wrap"), WRITES, ids=WRITE_IDS)
def test_malformed_json_is_400_invalid_json(
    harness: Harness, method: str, path: str, wrap: Any, body: bytes
) -> None:
    with store_unchanged(harness.client):
        response = harness.client.request(method, path, content=body, headers=JSON)
        refused(harness, response, 400, "invalid_json")


@pytest.mark.parametrize(
    "number", [b"1e400", b"-1e400", b"1.7976931348623157e309"], ids=str
)
def test_a_number_beyond_a_double_is_refused(harness: Harness, number: bytes) -> None:
    """Valid JSON syntax, but no double holds it: 400 (or 422), never infinity."""
    body = b'{"data": {"a": ' + number + b"}}"
    with store_unchanged(harness.client):
        response = harness.client.post(f"{API}/data/notes", content=body, headers=JSON)
        assert (response.status_code, response.json()["error"]["code"]) in {
            (400, "invalid_json"),
            (422, "validation_error"),
        }, response.text
        refused(
            harness, response, response.status_code, response.json()["error"]["code"]
        )


@pytest.mark.parametrize(
    "number", [2**70, -(2**70), 2**64], ids=["2**70", "-2**70", "2**64"]
)
def test_an_integer_beyond_64_bits_is_refused_or_kept_exactly(
    fresh: Harness, number: int
) -> None:
    body = b'{"data": {"id": "big", "a": ' + str(number).encode() + b"}}"
    response = fresh.client.post(f"{API}/data/notes", content=body, headers=JSON)
    if response.status_code == 201:
        stored = fresh.client.get(f"{API}/data/notes/big").content
        assert b'"a":' + str(number).encode() in stored, stored
    else:
        assert response.json()["error"]["code"] in ("invalid_json", "validation_error")


@pytest.mark.parametrize("number", ["1e400", "-1e999", "123e456"])
def test_a_number_past_a_double_is_422_and_changes_nothing(
    fresh: Harness, number: str
) -> None:
    """Valid JSON (RFC 8259 lets a reader bound its numbers): refused as too
    large, like an integer past 64 bits, not as a body that does not parse."""
    body = b'{"data": {"id": "big", "a": ' + number.encode() + b"}}"
    response = fresh.client.post(f"{API}/data/notes", content=body, headers=JSON)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert [d["type"] for d in error["details"]] == ["float_too_large"]
    refused(fresh, response, 422, "validation_error")


# -- valid JSON that breaks the limits: 422 -----------------------------------------

BIG = 64 * 1024
OVER_LIMITS = {
    "64 KiB + 1 string": {"a": "x" * (BIG + 1)},
    "64 KiB string of multi-byte characters": {"a": "\u00e9" * (BIG // 2 + 1)},
    "64 KiB + 1 string in a nested list": {"a": [1, {"b": ["y" * (BIG + 1)]}]},
    "64 KiB field name": {"f" * BIG: 1},
    "64 KiB id": {"id": "i" * BIG},
    "40 levels of nesting": {"a": json.loads("[" * 40 + "]" * 40)},
    "500 levels of nesting": {"a": json.loads("[" * 500 + "]" * 500)},
    "300 fields": {f"f{i}": i for i in range(300)},
    "a control character in a field name": {"a\x00b": 1},
    "a newline in a field name": {"a\nb": 1},
    "a unicode field name": {"caf\u00e9": 1},
    "a right-to-left override in a field name": {"\u202eab": 1},
}
RECORD_WRITES = WRITES[:4]


@pytest.mark.parametrize("record", OVER_LIMITS.values(), ids=list(OVER_LIMITS))
@pytest.mark.parametrize(
    ("method", "path", "wrap"), RECORD_WRITES, ids=WRITE_IDS[: len(RECORD_WRITES)]
)
def test_a_record_over_the_limits_is_422(
    harness: Harness, method: str, path: str, wrap: Any, record: dict[str, Any]
) -> None:
    body = json.dumps(wrap(record)).encode()
    with store_unchanged(harness.client):
        response = harness.client.request(method, path, content=body, headers=JSON)
        error = refused(harness, response, 422, "validation_error")
        assert error["details"], error


@pytest.mark.parametrize("depth", [2_000, 10_000])
def test_deep_but_well_formed_json_is_422(harness: Harness, depth: int) -> None:
    body = b'{"data": {"a": ' + b"[" * depth + b"]" * depth + b"}}"
    with store_unchanged(harness.client):
        response = harness.client.post(f"{API}/data/notes", content=body, headers=JSON)
        assert_error(response, 422, "validation_error")


def test_deep_but_well_formed_json_is_refused_without_a_500(harness: Harness) -> None:
    """What the app does today for 10,000 levels: refused, never a crash."""
    body = b'{"data": {"a": ' + b"[" * 10_000 + b"]" * 10_000 + b"}}"
    with store_unchanged(harness.client):
        response = harness.client.post(f"{API}/data/notes", content=body, headers=JSON)
        assert response.status_code in (400, 422), response.text
        assert response.json()["error"]["code"] in ("invalid_json", "validation_error")


# -- content types: 415 ------------------------------------------------------------

CONTENT_TYPES = [
    "text/plain",
    "text/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    "application/jsonx",
    "application/octet-stream",
    "json",
    None,
]


@pytest.mark.parametrize("content_type", CONTENT_TYPES, ids=str)
@pytest.mark.parametrize(("method", "path", "wrap"), WRITES, ids=WRITE_IDS)
def test_a_body_that_is_not_declared_json_is_415(
    harness: Harness, method: str, path: str, wrap: Any, content_type: str | None
) -> None:
    body = json.dumps(wrap({"marker": MARKER})).encode()
    headers = {} if content_type is None else {"Content-Type": content_type}
    with store_unchanged(harness.client):
        response = harness.client.request(method, path, content=body, headers=headers)
        refused(harness, response, 415, "unsupported_media_type")


# -- names, ids and query parameters ----------------------------------------------

BAD_TABLES = [
    "ta%00ble",
    "ta%0Able",
    "ta%0D%0Able",
    "t%C3%A9",
    "%E2%80%AEtable",
    "ta%20ble",
    "ta%2Fble",
    "1table",
    "_table",
    "%2e%2e",
    "t" * 65,
]


@pytest.mark.parametrize("table", BAD_TABLES)
@pytest.mark.parametrize(
    ("method", "template", "body"),
    [
        ("GET", "/data/{}", None),
        ("POST", "/data/{}", {"data": {"marker": MARKER}}),
        ("DELETE", "/data/{}", None),
        ("GET", "/data/{}/n1", None),
        ("PUT", "/data/{}/n1", {"data": {"marker": MARKER}}),
        ("DELETE", "/data/{}/n1", None),
        ("GET", "/dump/{}", None),
        ("POST", "/tables/{}/indexes", {"field": "kind"}),
        ("GET", "/join/{}/users/id", None),
    ],
)
def test_a_bad_table_name_in_the_path_is_422(
    harness: Harness, method: str, template: str, body: Any, table: str
) -> None:
    url = API + template.format(table)
    with store_unchanged(harness.client):
        response = harness.client.request(method, url, json=body)
        if "%2F" in table:
            # an encoded slash splits the path: no route has that shape
            assert response.status_code in (404, 405, 422), response.text
            code = {404: "not_found", 405: "method_not_allowed"}.get(
                response.status_code, "validation_error"
            )
            refused(harness, response, response.status_code, code)
        else:
            refused(harness, response, 422, "validation_error")


def test_a_70_kb_table_name_is_422(harness: Harness) -> None:
    name = "t" * 70_000
    with store_unchanged(harness.client):
        raw = send_raw(harness.client, "POST", f"{API}/data/{name}", headers=[])
        raw.error(422, "validation_error")


@pytest.mark.parametrize(
    "record_id",
    ["%00", "n%0A1", "n%0D%0A1", "%C3%A9", "%E2%80%AE", "%2e%2e", "n1%00", "a" * 300],
)
@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_an_unknown_strange_id_in_the_path_is_404(
    harness: Harness, method: str, record_id: str
) -> None:
    body = {"data": {"marker": MARKER}} if method in ("PUT", "PATCH") else None
    with store_unchanged(harness.client):
        response = harness.client.request(
            method, f"{API}/data/notes/{record_id}", json=body
        )
        error = refused(harness, response, 404, "not_found")
        assert MARKER not in error["message"]


@pytest.mark.parametrize(
    "record_id",
    [
        "\x00",
        "n\n1",
        "n\r\n1",
        "\u00e9",
        "\u202e",
        "..",
        ".",
        "",
        "a b",
        "a/b",
        "i" * 129,
    ],
    ids=repr,
)
@pytest.mark.parametrize(
    "wrap",
    [lambda r: {"data": r}, lambda r: {"data": [r]}, lambda r: {"notes": [r]}],
    ids=["create", "bulk create", "import"],
)
def test_a_bad_id_in_a_body_is_422(harness: Harness, wrap: Any, record_id: str) -> None:
    path = f"{API}/import" if "notes" in wrap({}) else f"{API}/data/notes"
    with store_unchanged(harness.client):
        response = harness.client.post(path, json=wrap({"id": record_id, "a": 1}))
        refused(harness, response, 422, "validation_error")


def test_a_bad_table_name_in_an_import_is_422(harness: Harness) -> None:
    with store_unchanged(harness.client):
        for name in ("ta\x00ble", "t\u00e9", "\u202etable", "../etc", "t" * 65):
            response = harness.client.post(f"{API}/import", json={name: [{"a": 1}]})
            refused(harness, response, 422, "validation_error")


@pytest.mark.parametrize(
    "query",
    [
        "name%00=1",
        "na%0Ame=1",
        "k%C3%A9=1",
        "%E2%80%AE=1",
        "kind__bogus=1",
        "kind__%00=1",
        "sort=%00",
        "sort=k%C3%A9",
        "fields=%00",
        "fields=..%2F..",
        "limit=%00",
        "limit=%EF%BC%91",
        "limit=-1",
        "limit=1e3",
        "limit=99999999999999999999",
        "offset=%0A",
        "kind__exists=%00",
        "password=x",
    ],
)
def test_a_bad_query_parameter_is_400(harness: Harness, query: str) -> None:
    with store_unchanged(harness.client):
        response = harness.client.get(f"{API}/data/notes?{query}")
        error = refused(harness, response, 400, "bad_request")
        assert error["details"] and error["details"][0]["loc"][0] == "query"


@pytest.mark.parametrize(
    "query",
    ["kind=%00", "kind=%C3%A9", "kind=%E2%80%AE", "q=%00%0A", "kind__in=%00,%0A"],
)
def test_a_strange_query_value_is_only_a_value(harness: Harness, query: str) -> None:
    with store_unchanged(harness.client):
        response = harness.client.get(f"{API}/data/notes?{query}")
        assert response.status_code == 200
        assert response.json()["items"] == []


def test_a_60_kb_query_string_is_414(harness: Harness) -> None:
    with store_unchanged(harness.client):
        raw = send_raw(
            harness.client, "GET", f"{API}/data/notes", query=b"k" * 60_000 + b"=1"
        )
        raw.error(414, "uri_too_long")


@pytest.mark.parametrize(
    "url", ["/join/users/orders/a%00b", "/join/users/orders/%2e%2e"]
)
def test_a_join_key_that_is_no_field_name_is_422(harness: Harness, url: str) -> None:
    """The key is a part of the path, as a table name is (CONTRACT section 5)."""
    response = harness.client.get(API + url)
    error = assert_error(response, 422, "validation_error")
    assert error["details"][0]["loc"] == ["path", "key"]


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("left_on=%00", "left_on"),
        ("right_on=k%C3%A9", "right_on"),
        ("left_on=", "left_on"),
        ("left_on=a..b", "left_on"),
    ],
)
def test_a_join_column_that_is_no_field_name_is_a_bad_parameter(
    harness: Harness, query: str, name: str
) -> None:
    """A bad query parameter is 400 (CONTRACT section 6), as ``how=outer`` is."""
    response = harness.client.get(f"{API}/join/users/orders/user_id?{query}")
    error = assert_error(response, 400, "bad_request")
    assert error["details"][0]["loc"] == ["query", name]


# -- path traversal ------------------------------------------------------------------

TRAVERSALS = [
    ("/api/v1/data/../../etc/passwd", b"/api/v1/data/../../etc/passwd"),
    ("/api/v1/data/../../etc/passwd", b"/api/v1/data/%2e%2e/%2e%2e/etc/passwd"),
    ("/api/v1/data/../../etc/passwd", b"/api/v1/data/..%2F..%2Fetc%2Fpasswd"),
    (
        "/api/v1/data/notes/../../../etc/passwd",
        b"/api/v1/data/notes/%2E%2E/%2E%2E/%2E%2E/etc/passwd",
    ),
    ("/../../etc/passwd", b"/../../etc/passwd"),
    ("/static/docs/../../../../etc/passwd", b"/static/docs/../../../../etc/passwd"),
    ("/static/docs/../../../../etc/passwd", b"/static/docs/%2e%2e/%2e%2e/etc/passwd"),
    ("/static/docs/..\\..\\etc\\passwd", b"/static/docs/..%5C..%5Cetc%5Cpasswd"),
    ("/api/v1/dump/..", b"/api/v1/dump/.."),
    ("/api/v1/data/notes/..", b"/api/v1/data/notes/.."),
]


@pytest.mark.parametrize(
    ("path", "raw_path"), TRAVERSALS, ids=[t[1].decode() for t in TRAVERSALS]
)
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_path_traversal_finds_no_file_and_changes_nothing(
    harness: Harness, method: str, path: str, raw_path: bytes
) -> None:
    with store_unchanged(harness.client):
        raw = send_raw(harness.client, method, path, raw_path=raw_path)
        assert raw.status in (404, 405, 422), raw.body
        code = {404: "not_found", 405: "method_not_allowed", 422: "validation_error"}
        raw.error(raw.status, code[raw.status])
        assert b"root:" not in raw.body
    harness.log_events()


# -- duplicate keys ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "kept"),
    [
        (b'{"data": {"id": "d1", "a": 1, "a": 2}}', {"a": 2}),
        (b'{"data": {"id": "d1", "a": 1}, "data": {"id": "d1", "b": 2}}', {"b": 2}),
        (
            b'{"data": {"id": "d1", "m": {"x": 1, "x": {"y": 2}}}}',
            {"m": {"x": {"y": 2}}},
        ),
    ],
    ids=["in a record", "the data member", "nested"],
)
def test_duplicate_keys_are_read_last_one_wins(
    fresh: Harness, body: bytes, kept: dict[str, Any]
) -> None:
    """RFC 8259 leaves duplicate names to the parser. What the app does: it takes
    the last one, silently, as JSON.parse and Python's json do; it never mixes
    the two and never fails. (A refusal, 400 or 422 with nothing written, would
    pass this test too.)"""
    before = dump(fresh.client)
    response = fresh.client.post(f"{API}/data/notes", content=body, headers=JSON)
    if response.status_code == 201:
        record = fresh.client.get(f"{API}/data/notes/d1").json()
        assert {k: v for k, v in record.items() if k in kept} == kept
        assert set(record) == {"id", "created_at", "updated_at", *kept}
    else:
        assert response.json()["error"]["code"] in ("invalid_json", "validation_error")
        assert dump(fresh.client) == before


def test_duplicate_keys_in_an_import_are_read_last_one_wins(fresh: Harness) -> None:
    body = b'{"things": [{"id": "t1", "a": 1}], "things": [{"id": "t2", "a": 2}]}'
    before = dump(fresh.client)
    response = fresh.client.post(f"{API}/import", content=body, headers=JSON)
    if response.status_code == 200:
        assert response.json()["counts"] == {"things": 1}
        assert [r["id"] for r in dump(fresh.client)["things"]] == ["t2"]
    else:
        assert response.json()["error"]["code"] in ("invalid_json", "validation_error")
        assert dump(fresh.client) == before


# -- oversized and slow bodies -------------------------------------------------------


def _post_streamed(
    app: Any, path: str, chunks: AsyncIterator[bytes], headers: dict[str, str]
) -> httpx.Response:
    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver"
        ) as http:
            return await http.post(path, content=chunks, headers=headers)

    return anyio.run(post)


def test_a_slow_body_in_tiny_chunks_is_read_whole() -> None:
    body = json.dumps({"data": {"id": "slow", "text": "a" * 200, "n": 7}}).encode()

    async def trickle() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 3):
            await anyio.sleep(0.001)
            yield body[start : start + 3]

    with opened() as client:
        app = client.app
        response = _post_streamed(app, f"{API}/data/notes", trickle(), JSON)
        assert response.status_code == 201, response.text
        stored = client.get(f"{API}/data/notes/slow").json()
        assert (stored["text"], stored["n"]) == ("a" * 200, 7)


@pytest.mark.parametrize("path", [f"{API}/data/notes", f"{API}/import"])
def test_a_slow_oversized_body_is_413_before_it_ends(path: str) -> None:
    limit = 8 * 1024
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        yield b'{"data": {"s": "' if "data" in path else b'{"notes": [{"s": "'
        for _ in range(100_000):
            pulled += 1
            await anyio.sleep(0)
            yield MARKER.encode() * 8

    with opened(max_body_bytes=limit) as client, store_unchanged(client):
        app = client.app
        response = _post_streamed(app, path, endless(), JSON)
        assert_error(response, 413, "payload_too_large")
    assert pulled * len(MARKER) * 8 <= limit + 1024, pulled


@pytest.mark.parametrize("length", ["2000000", "99999999999999999999"])
def test_a_declared_oversized_body_is_413_unread(harness: Harness, length: str) -> None:
    with store_unchanged(harness.client):
        raw = send_raw(
            harness.client,
            "POST",
            f"{API}/data/notes",
            headers=[
                (b"content-type", b"application/json"),
                (b"content-length", length.encode()),
            ],
            body=b'{"data": {}}',
        )
        raw.error(413, "payload_too_large")


# -- X-Request-ID: header injection ---------------------------------------------------

INJECTIONS = {
    "CR LF and a header": b"abc\r\nSet-Cookie: session=stolen",
    "LF only": b"abc\nSet-Cookie: x=1",
    "NUL": b"ab\x00cd",
    "ANSI escape": b"\x1b[31mred\x1b[0m",
    "markup": b"<script>alert(1)</script>",
    "non-ASCII bytes": b"\xc3\xa9\xff\xfe",
    "10,000 characters": b"r" * 10_000,
    "JSON breaking": b'x","level":"critical","event":"forged',
}


@pytest.mark.parametrize("value", INJECTIONS.values(), ids=list(INJECTIONS))
@pytest.mark.parametrize(
    "path", ["/health", f"{API}/data/ta\x00ble", f"{API}/data/notes/n1"], ids=repr
)
def test_a_hostile_request_id_is_sanitised_everywhere(
    harness: Harness, path: str, value: bytes
) -> None:
    harness.log_events()  # the same sanitised id came in an earlier test
    with store_unchanged(harness.client):
        raw = send_raw(harness.client, "GET", path, headers=[(b"x-request-id", value)])
    assert raw.status in (200, 422)
    (echoed,) = raw.header(b"x-request-id")
    request_id = echoed.decode("ascii")
    assert SAFE_REQUEST_ID.match(request_id), request_id
    assert not any(k.lower() == b"set-cookie" for k, _ in raw.headers)
    if raw.status == 422:
        assert raw.error(422, "validation_error")["request_id"] == request_id
    line = harness.access(request_id)
    assert line["status"] == raw.status
    assert set(line) >= {"method", "route", "status", "duration_ms", "request_id"}
    assert line["level"] == "info"
    assert line["route"] in harness.routes


def test_a_long_request_id_is_cut_to_128_characters(harness: Harness) -> None:
    response = harness.client.get("/health", headers={"X-Request-ID": "a" * 500})
    assert response.headers["x-request-id"] == "a" * 128


# -- wire level: a real server --------------------------------------------------------


def _exchange(url: str, request: bytes, *, trickle: bool = False) -> bytes:
    """Send raw bytes, read one answer. The server may answer (and close) before
    the whole request is sent: what it said is still read."""
    host, port = url.removeprefix("http://").split(":")
    answer = b""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        try:
            step = 5 if trickle else len(request)
            for start in range(0, len(request), step):
                sock.sendall(request[start : start + step])
                if trickle:
                    time.sleep(0.002)
        except OSError:
            pass
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: (\d+)", head)
            if length and len(body) >= int(length.group(1)):
                break
    return answer


CHUNK = b"1000\r\n" + b" " * 4096 + b"\r\n"
# name: (request bytes, the statuses it may get). 400 is the HTTP parser's own
# plain-text refusal: the request never reaches the app.
WIRE: dict[str, tuple[bytes, set[int]]] = {
    "raw dot segments": (
        b"GET /api/v1/data/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
        {404},
    ),
    "encoded dot segments": (
        b"GET /static/docs/%2e%2e/%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\n"
        b"Host: x\r\n\r\n",
        {404},
    ),
    "bare CR in a header": (
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-ID: a\rb\r\n\r\n",
        {200, 400},
    ),
    "NUL in a header": (
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-ID: a\x00b\r\n\r\n",
        {200, 400},
    ),
    "NUL in the path": (
        b"GET /api/v1/data/ta\x00ble HTTP/1.1\r\nHost: x\r\n\r\n",
        {400, 422},
    ),
    "raw UTF-8 in the path": (
        b"GET /api/v1/data/t\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
        {400, 422},
    ),
    "oversized chunked body": (
        b"POST /api/v1/data/notes HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + CHUNK * 300
        + b"0\r\n\r\n",
        {413},
    ),
}


@pytest.mark.e2e
def test_bad_bytes_on_the_wire_never_reach_the_store(tmp_path: Path) -> None:
    """What the HTTP parser refuses and what reaches the app (as the envelope)
    leave the store, the process and the log intact; a body sent a few bytes at
    a time is read whole."""
    server = start_server(tmp_path)
    try:
        with server.client() as client:
            created = client.post(f"{API}/data/notes", json={"data": {"id": "n1"}})
            assert created.status_code == 201
            before = client.get(f"{API}/dump").json()
        for name, (request, statuses) in WIRE.items():
            answer = _exchange(server.url, request)
            status = int(answer.split(b" ", 2)[1])
            assert status in statuses, (name, answer[:300])
            assert b"root:" not in answer
            head, _, payload = answer.partition(b"\r\n\r\n")
            if b"application/json" in head:
                error = json.loads(payload)["error"]
                assert set(error) == {"code", "message", "details", "request_id"}
            else:
                assert status in (200, 400), (name, answer[:300])
        body = b'{"data": {"id": "slow", "marker": "' + MARKER.encode() + b'"}}'
        slow = (
            b"POST /api/v1/data/notes HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        ) + body
        assert _exchange(server.url, slow, trickle=True).startswith(b"HTTP/1.1 201 ")
        with server.client() as client:
            assert client.get("/ready").status_code == 200
            after = client.get(f"{API}/dump").json()
        assert after["notes"].pop()["marker"] == MARKER
        assert after == before
    finally:
        server.stop()
    for line in server.log_lines():
        assert isinstance(json.loads(line), dict), line
        for text in NEVER_LOGGED:
            assert text not in line, line


# -- the review's attacks ------------------------------------------------------------

ATTACKS = [
    ("GET", f"{API}/data/notes?s__like=%25a%25a%25a%25a%25b", None, 200, None),
    ("GET", f"{API}/data/notes?s__like=" + "%25" * 257, None, 400, "bad_request"),
    (
        "GET",
        f"{API}/data/notes?" + "&".join(["k__ne=2"] * 8000),
        None,
        414,
        "uri_too_long",
    ),
    (
        "GET",
        f"{API}/data/notes?" + "&".join(["k__ne=2"] * 33),
        None,
        400,
        "bad_request",
    ),
    ("GET", f"{API}/data/notes?x=" + "[" * 255 + "]" * 255, None, 400, "bad_request"),
    ("GET", f"{API}/data/notes?x=" + "[" * 500 + "]" * 500, None, 400, "bad_request"),
    (
        "GET",
        f"{API}/data/notes?fields=" + ".".join(["a"] * 33),
        None,
        400,
        "bad_request",
    ),
    (
        "GET",
        f"{API}/data/notes?sort=" + ",".join("abcdefghi"),
        None,
        400,
        "bad_request",
    ),
    ("POST", f"{API}/data/e1", {"data": []}, 422, "validation_error"),
    (
        "POST",
        f"{API}/tables/notes/indexes",
        {"field": "kind", "unique": "yes"},
        422,
        "validation_error",
    ),
    ("GET", f"{API}/join/notes/notes/kind?limit=-1", None, 400, "bad_request"),
]


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "code"),
    ATTACKS,
    ids=[
        "like-backtracking",
        "like-pattern-too-long",
        "8000-filters",
        "33-filters",
        "literal-255-deep",
        "literal-500-deep",
        "path-33-parts",
        "nine-sort-keys",
        "empty-bulk",
        "unique-yes",
        "join-negative-limit",
    ],
)
def test_the_reviews_attacks_are_refused_or_answered_at_once(
    harness: Harness,
    method: str,
    url: str,
    body: Any,
    status: int,
    code: str | None,
) -> None:
    with store_unchanged(harness.client):
        response = harness.client.request(method, url, json=body)
        if code is None:
            assert response.status_code == status, response.text
        else:
            assert_error(response, status, code)
    harness.log_events()
