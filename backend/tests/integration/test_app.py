"""The app around the routes: request ids, health, docs, OpenAPI and the access log."""

from __future__ import annotations

import json
import re
import time
from html.parser import HTMLParser
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.services.records import RecordService
from tests.conftest import USER, make_settings
from tests.integration.helpers import API, assert_error, create_user

SAFE_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def _events(out: str) -> list[dict[str, Any]]:
    """Every log line, each of which must be one JSON object."""
    events = []
    for line in out.splitlines():
        if not line.strip():
            continue
        event = json.loads(line)
        assert isinstance(event, dict), line
        events.append(event)
    return events


def _access(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e.get("event") == "http.request"]


# -- X-Request-ID ----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/health", {}, 200),
        ("POST", API + "/data/things", {"json": {"data": {"n": 1}}}, 201),
        ("GET", API + "/data/things/absent", {}, 404),
        ("DELETE", API + "/tables", {}, 405),
        ("POST", API + "/data/things", {"content": b"{}"}, 415),
        ("POST", API + "/data/things", {"json": {"data": {"bad-name": 1}}}, 422),
    ],
)
def test_a_client_request_id_is_echoed(
    client: TestClient, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    rid = "req-42_a.b:c"
    response = client.request(method, path, headers={"X-Request-ID": rid}, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["x-request-id"] == rid
    if status >= 400:
        assert (
            assert_error(response, status, response.json()["error"]["code"])[
                "request_id"
            ]
            == rid
        )


def test_the_request_id_is_on_204_and_304(client: TestClient) -> None:
    created = client.post(f"{API}/data/things", json={"data": {"id": "t", "n": 1}})
    etag = created.headers["etag"]
    headers = {"X-Request-ID": "r-304", "If-None-Match": etag}
    not_modified = client.get(f"{API}/data/things/t", headers=headers)
    assert not_modified.status_code == 304
    assert not_modified.headers["x-request-id"] == "r-304"
    deleted = client.delete(f"{API}/data/things/t", headers={"X-Request-ID": "r-204"})
    assert deleted.status_code == 204
    assert deleted.headers["x-request-id"] == "r-204"


def test_a_request_id_is_generated_when_absent(client: TestClient) -> None:
    first = client.get("/health").headers["x-request-id"]
    second = client.get("/health").headers["x-request-id"]
    error = client.get(f"{API}/data/nothing/x")

    for rid in (first, second, error.headers["x-request-id"]):
        assert SAFE_ID.match(rid), rid
    assert len({first, second, error.headers["x-request-id"]}) == 3
    assert_error(error, 404, "not_found")


def test_a_request_id_with_header_injection_is_sanitised(client: TestClient) -> None:
    response = client.get("/health", headers={"X-Request-ID": "abc\r\nX-Evil: 1"})

    rid = response.headers["x-request-id"]
    assert rid.startswith("abc")
    assert not set(rid) & set("\r\n \t")
    assert SAFE_ID.match(rid)
    assert "x-evil" not in response.headers


def test_spaces_and_control_characters_are_removed(client: TestClient) -> None:
    response = client.get("/health", headers={"X-Request-ID": " a b\tc\x00d "})
    assert response.headers["x-request-id"] == "abcd"


def test_a_long_request_id_is_cut_to_128(client: TestClient) -> None:
    response = client.get(f"{API}/data/nothing/x", headers={"X-Request-ID": "a" * 300})
    assert response.headers["x-request-id"] == "a" * 128
    assert response.json()["error"]["request_id"] == "a" * 128


def test_a_request_id_of_only_unsafe_characters_is_replaced(
    client: TestClient,
) -> None:
    response = client.get("/health", headers={"X-Request-ID": " \t ;;; "})
    assert SAFE_ID.match(response.headers["x-request-id"])


# -- health, docs, OpenAPI -------------------------------------------------


def test_health_is_ok(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_health_counts_the_uptime_from_the_start(client: TestClient) -> None:
    first = client.get("/health").json()["uptime_s"]
    time.sleep(0.05)
    second = client.get("/health").json()["uptime_s"]
    assert 0 < first < second  # it was 0.0 at every request
    stats = client.get(f"{API}/stats").json()["uptime_s"]
    assert abs(stats - second) < 5


def test_ready_is_200_once_loaded(client: TestClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")


def test_openapi_lists_the_routes(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]

    expected = {
        "/health": {"get"},
        "/ready": {"get"},
        f"{API}/data/{{table}}": {"post", "delete"},
        f"{API}/data/{{table}}/{{record_id}}": {"get", "put", "patch", "delete"},
        f"{API}/join/{{left}}/{{right}}/{{key}}": {"get"},
        f"{API}/dump": {"get"},
        f"{API}/dump/{{table}}": {"get"},
        f"{API}/tables": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))


def test_openapi_documents_errors_with_the_envelope(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    record = document["paths"][f"{API}/data/{{table}}/{{record_id}}"]
    shared = document["components"]["responses"]
    for method, status in [("get", "404"), ("put", "412"), ("put", "422")]:
        ref = record[method]["responses"][status]["$ref"]
        name = ref.rsplit("/", 1)[1]
        content = shared[name]["content"]["application/json"]
        assert content["schema"]["$ref"].endswith("/ErrorEnvelope")
        assert set(content["example"]["error"]) == {
            "code",
            "message",
            "details",
            "request_id",
        }
    assert "HTTPValidationError" not in json.dumps(document)


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_every_asset_from_the_service(
    client: TestClient, page: str
) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")

    parser = _Assets()
    parser.feed(response.text)
    assert parser.urls, "the page loads no script or stylesheet"
    for url in parser.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        assert client.get(url).status_code == 200, url
    assert not re.search(r"https?://", response.text)


# -- the access log --------------------------------------------------------


def test_every_request_writes_one_access_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with TestClient(create_app(make_settings())) as client:
        capsys.readouterr()
        created = client.post(
            f"{API}/data/things",
            json={"data": {"n": 1}},
            headers={"X-Request-ID": "r1"},
        )
        record_id = created.json()["id"]
        client.get(f"{API}/data/things/{record_id}", headers={"X-Request-ID": "r2"})
        client.get(f"{API}/data/things/absent", headers={"X-Request-ID": "r3"})
        client.get("/health", headers={"X-Request-ID": "r4"})
        out = capsys.readouterr().out

    lines = {e["request_id"]: e for e in _access(_events(out))}
    assert set(lines) == {"r1", "r2", "r3", "r4"}
    assert len(_access(_events(out))) == 4
    expected = {
        "r1": ("POST", f"{API}/data/{{table}}", 201),
        "r2": ("GET", f"{API}/data/{{table}}/", 200),
        "r3": ("GET", f"{API}/data/{{table}}/", 404),
        "r4": ("GET", "/health", 200),
    }
    for rid, (method, route, status) in expected.items():
        line = lines[rid]
        assert line["method"] == method
        assert line["route"].startswith(route), line
        assert record_id not in line["route"] and "absent" not in line["route"]
        assert line["status"] == status
        assert isinstance(line["duration_ms"], (int, float))
        assert line["duration_ms"] >= 0
        assert line["level"] == "info"
        assert "timestamp" in line


def test_the_log_holds_no_password_and_no_body(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with TestClient(create_app(make_settings())) as client:
        user = create_user(client)
        client.put(
            f"{API}/data/users/{user['id']}",
            json={"data": {"password": "another-secret-9"}},
        )
        client.post(f"{API}/data/users", json={"data": {**USER, "age": "old"}})
        client.post(
            f"{API}/data/things",
            content=b'{"data": {"note": "body-marker-77"',
            headers={"Content-Type": "application/json"},
        )
        out = capsys.readouterr().out

    assert _access(_events(out))
    for secret in (
        USER["password"],
        "another-secret-9",
        "$argon2",
        USER["email"],
        USER["full_name"],
        "body-marker-77",
    ):
        assert secret not in out


def test_the_log_has_startup_and_shutdown_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with TestClient(create_app(make_settings())):
        pass
    names = [e.get("event") for e in _events(capsys.readouterr().out)]
    assert "service.started" in names
    assert "service.stopped" in names
    assert names.index("service.started") < names.index("service.stopped")


def test_a_500_is_logged_with_its_request_id(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(RecordService, "read_record", explode)
    with TestClient(create_app(make_settings())) as client:
        capsys.readouterr()
        response = client.get(f"{API}/data/things/x", headers={"X-Request-ID": "r500"})
        out = capsys.readouterr().out

    assert_error(response, 500, "internal_error")
    events = _events(out)
    errors = [e for e in events if e.get("level") == "error"]
    assert errors and all(e.get("request_id") == "r500" for e in errors)
    access = _access(events)
    assert [(e["request_id"], e["status"]) for e in access] == [("r500", 500)]


def test_a_sanitised_request_id_is_what_the_log_shows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with TestClient(create_app(make_settings())) as client:
        capsys.readouterr()
        response = client.get("/health", headers={"X-Request-ID": "x y\r\nz"})
        out = capsys.readouterr().out
    (line,) = _access(_events(out))
    assert line["request_id"] == response.headers["x-request-id"] == "xyz"


def test_the_console_format_is_not_json(capsys: pytest.CaptureFixture[str]) -> None:
    with TestClient(create_app(make_settings(log_format="console"))) as client:
        capsys.readouterr()
        client.get("/health", headers={"X-Request-ID": "console-1"})
        out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "http.request" in x)
    assert "console-1" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_the_log_level_filters_the_access_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with TestClient(create_app(make_settings(log_level="warning"))) as client:
        capsys.readouterr()
        client.get("/health")
        out = capsys.readouterr().out
    assert _access(_events(out)) == []
