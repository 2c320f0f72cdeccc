"""The process as a platform sees it: log lines, request ids, signals, body limit."""

from __future__ import annotations

import json
import re
import socket
import time
from typing import Any, Callable, Iterator

import pytest

from tests.e2e.conftest import HOST, Server

pytestmark = pytest.mark.e2e

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
TWO_MIB = 2 * 1024 * 1024


def json_object_or_none(line: str) -> dict[str, Any] | None:
    try:
        parsed = json.loads(line)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def test_every_log_line_is_json_from_start_to_stop(server: Server) -> None:
    with server.client() as client:
        assert client.get("/health").status_code == 200
    server.terminate()
    lines = server.log_lines()
    assert lines
    events = []
    for line in lines:
        event = json_object_or_none(line)
        assert event is not None, f"not a JSON object: {line!r}"
        assert isinstance(event.get("event"), str) and event["event"]
        assert event["level"] in ("debug", "info", "warning", "error")
        assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", event["timestamp"])
        events.append(event)
    names = [e["event"] for e in events]
    started = events[names.index("service.started")]
    assert started["level"] == "info"
    assert isinstance(started["version"], str) and started["version"]
    assert "security.open" in names  # no MEMDB_API_KEYS: the service says so
    assert names.index("service.started") < names.index("http.request")
    # the app's shutdown line comes after every request (uvicorn's own
    # "Finished server process" line may follow it)
    assert names.index("service.stopped") > max(
        i for i, n in enumerate(names) if n == "http.request"
    )
    assert names.count("service.started") == names.count("service.stopped") == 1


def access_line(server: Server, request_id: str) -> dict[str, Any]:
    (line,) = [e for e in server.access_lines() if e["request_id"] == request_id]
    return line


def test_one_access_line_per_request_with_the_route_template(server: Server) -> None:
    with server.client() as client:
        created = client.post(
            "/api/v1/data/things",
            json={"data": {"name": "one"}},
            headers={"X-Request-ID": "access-create"},
        )
        assert created.status_code == 201
        record_id = created.json()["id"]
        calls = [
            ("GET", f"/api/v1/data/things/{record_id}", "access-read", 200),
            ("GET", "/api/v1/data/things/no-such-id", "access-missing", 404),
            ("GET", "/api/v1/dump/things", "access-dump", 200),
            ("DELETE", f"/api/v1/data/things/{record_id}", "access-delete", 204),
            ("GET", "/health", "access-health", 200),
            ("GET", "/no/such/route", "access-unrouted", 404),
        ]
        for method, path, request_id, status in calls:
            response = client.request(
                method, path, headers={"X-Request-ID": request_id}
            )
            assert response.status_code == status, response.text
    server.terminate()

    expected = {
        "access-create": ("POST", "/api/v1/data/{table}", 201),
        "access-read": ("GET", "/api/v1/data/{table}/{record_id}", 200),
        "access-missing": ("GET", "/api/v1/data/{table}/{record_id}", 404),
        "access-dump": ("GET", "/api/v1/dump/{table}", 200),
        "access-delete": ("DELETE", "/api/v1/data/{table}/{record_id}", 204),
        "access-health": ("GET", "/health", 200),
    }
    for request_id, (method, route, status) in expected.items():
        line = access_line(server, request_id)
        assert (line["method"], line["route"], line["status"]) == (
            method,
            route,
            status,
        )
        assert isinstance(line["duration_ms"], (int, float))
        assert 0 <= line["duration_ms"] < 10_000
        assert line["level"] == "info"
        assert record_id not in json.dumps(line)  # the template, never the raw path
    unrouted = access_line(server, "access-unrouted")
    assert (unrouted["method"], unrouted["status"]) == ("GET", 404)
    assert "/no/such/route" != unrouted["route"]
    # Nothing but the ready probes and the requests above were logged.
    ours = [e for e in server.access_lines() if e["request_id"].startswith("access-")]
    assert len(ours) == len(expected) + 1


def test_console_log_format_is_not_json(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory(MEMDB_LOG_FORMAT="console")
    with server.client() as client:
        response = client.get("/health", headers={"X-Request-ID": "console-check-1"})
        assert response.status_code == 200
    server.terminate()
    lines = server.log_lines()
    assert lines
    for line in lines:
        assert json_object_or_none(line) is None, f"a JSON line: {line!r}"
    assert any("service.started" in line for line in lines)
    (access,) = [line for line in lines if "console-check-1" in line]
    assert "http.request" in access
    assert "route=/health" in access
    assert "status=200" in access
    assert any("service.stopped" in line for line in lines[-3:])


def port_is_open(url: str) -> bool:
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((HOST, port)) == 0


def test_sigterm_stops_the_process_cleanly(server: Server) -> None:
    # An idle keep-alive connection must not hold the shutdown up.
    with server.client() as client:
        assert client.get("/api/v1/dump").status_code == 200
        started = time.monotonic()
        code = server.terminate()
        elapsed = time.monotonic() - started
    assert code == 0, f"exit code {code} after SIGTERM"
    assert elapsed < 5.0
    assert not port_is_open(server.url)
    assert "service.stopped" in [e["event"] for e in server.events()[-3:]]


def test_request_id_is_echoed_sanitised_or_generated(server: Server) -> None:
    with server.client() as client:
        echoed = client.get("/health", headers={"X-Request-ID": "client-id.42:a/b"})
        assert echoed.headers["x-request-id"] == "client-id.42:a/b"

        cleaned = client.get("/health", headers={"X-Request-ID": "evil id<script>;"})
        assert cleaned.headers["x-request-id"] == "evilidscript"

        long = client.get("/health", headers={"X-Request-ID": "x" * 300})
        assert long.headers["x-request-id"] == "x" * 128

        first, second = client.get("/health"), client.get("/health")
        generated = [first.headers["x-request-id"], second.headers["x-request-id"]]
        assert all(REQUEST_ID.match(value) for value in generated)
        assert generated[0] != generated[1]

        missing = client.get(
            "/api/v1/data/nothing/here", headers={"X-Request-ID": "error-id-1"}
        )
        assert missing.status_code == 404
        assert missing.headers["x-request-id"] == "error-id-1"
        assert missing.json()["error"]["request_id"] == "error-id-1"
    server.terminate()
    assert access_line(server, "error-id-1")["status"] == 404
    assert access_line(server, "evilidscript")["route"] == "/health"


def big_body(size: int) -> bytes:
    """A valid JSON create body of about ``size`` bytes (strings of 1000 bytes)."""
    items = ",".join(['"' + "a" * 998 + '"'] * (size // 1001))
    return b'{"data": {"items": [' + items.encode() + b"]}}"


def test_two_mib_post_is_refused_with_413(server: Server) -> None:
    body = big_body(TWO_MIB)
    assert len(body) > 2_000_000

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    headers = {"Content-Type": "application/json"}
    with server.client() as client:
        sized = client.post(
            "/api/v1/data/things",
            content=body,
            headers={**headers, "X-Request-ID": "too-large-1"},
        )
        chunked = client.post(
            "/api/v1/data/things",
            content=chunks(),
            headers={**headers, "X-Request-ID": "too-large-2"},
        )
        for response, request_id in ((sized, "too-large-1"), (chunked, "too-large-2")):
            assert response.status_code == 413
            assert response.headers["content-type"] == "application/json"
            assert response.json() == {
                "error": {
                    "code": "payload_too_large",
                    "message": response.json()["error"]["message"],
                    "details": [],
                    "request_id": request_id,
                }
            }
            assert "1048576" in response.json()["error"]["message"]
        # Nothing was stored, and the server still serves; a body just under
        # the limit is accepted.
        missing = client.get("/api/v1/dump/things")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
        under = big_body(1_000_000)
        assert 990_000 < len(under) < 1024 * 1024
        accepted = client.post("/api/v1/data/things", content=under, headers=headers)
        assert accepted.status_code == 201, accepted.text[:300]
        dump = client.get("/api/v1/dump/things")
        assert dump.json()["count"] == 1
    server.terminate()
    for request_id in ("too-large-1", "too-large-2"):
        line = access_line(server, request_id)
        assert (line["method"], line["status"]) == ("POST", 413)
        assert "things" not in line["route"]
