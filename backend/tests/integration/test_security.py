"""API keys (CONTRACT section 7): the auth matrix for every route group, the open
pages, OpenAPI's security schemes, keys kept out of logs and answers, and a
malformed ``MEMDB_API_KEYS`` refusing to start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, NamedTuple

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from app.core.logging import configure_logging
from app.core.loop import GcMonitor, LoopMonitor
from app.main import build_runtime, create_app
from app.services.work import Limits
from tests.conftest import USER, make_settings
from tests.integration.helpers import API, assert_error

BACKEND = Path(__file__).resolve().parents[2]
RW_KEY = "rw-key-7f3a91c2d4e5"
RO_KEY = "ro-key-0b8e6d1f2a3c"
WRONG_KEY = "wrong-key-55aa66bb"
KEYS = f"{RW_KEY}:rw,{RO_KEY}:ro"


class Call(NamedTuple):
    method: str
    path: str
    body: Any
    ok: int


READS = {
    "read record": Call("GET", f"{API}/data/things/t1", None, 200),
    "list": Call("GET", f"{API}/data/things?n=1", None, 200),
    "join": Call("GET", f"{API}/join/users/orders/user_id", None, 200),
    "dump all": Call("GET", f"{API}/dump", None, 200),
    "dump table": Call("GET", f"{API}/dump/things", None, 200),
    "tables": Call("GET", f"{API}/tables", None, 200),
    "stats": Call("GET", f"{API}/stats", None, 200),
    "metrics": Call("GET", "/metrics", None, 200),
}
WRITES = {
    "create": Call("POST", f"{API}/data/things", {"data": {"n": 3}}, 201),
    "bulk create": Call(
        "POST", f"{API}/data/things", {"data": [{"n": 4}, {"n": 5}]}, 201
    ),
    "put": Call("PUT", f"{API}/data/things/t1", {"data": {"n": 10}}, 200),
    "patch": Call("PATCH", f"{API}/data/things/t1", {"data": {"n": None}}, 200),
    "delete record": Call("DELETE", f"{API}/data/things/t1", None, 204),
    "drop table": Call("DELETE", f"{API}/data/things", None, 204),
    "import": Call("POST", f"{API}/import", {"things": [{"n": 9}]}, 200),
    "create index": Call("POST", f"{API}/tables/things/indexes", {"field": "m"}, 201),
    "drop index": Call("DELETE", f"{API}/tables/things/indexes/n", None, 204),
}
EVERY = {**READS, **WRITES}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def api_key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


HEADER_STYLES = {"bearer": bearer, "x-api-key": api_key}


def _send(client: TestClient, call: Call, headers: dict[str, str]) -> Response:
    kwargs: dict[str, Any] = {"headers": headers}
    if call.body is not None:
        kwargs["json"] = call.body
    return client.request(call.method, call.path, **kwargs)


def _keyed(client_factory: Callable[..., TestClient]) -> TestClient:
    """A client on an app with keys, holding a user, an order and two things."""
    return _seed(client_factory(api_keys=KEYS))


def _seed(client: TestClient) -> TestClient:
    rw = bearer(RW_KEY)
    user = client.post(f"{API}/data/users", json={"data": USER}, headers=rw)
    assert user.status_code == 201, user.text
    order = {
        "product_name": "Widget",
        "quantity": 1,
        "total_price": 5.0,
        "user_id": user.json()["id"],
    }
    for table, data in (
        ("orders", order),
        ("things", {"id": "t1", "n": 1}),
        ("things", {"id": "t2", "n": 2}),
    ):
        response = client.post(f"{API}/data/{table}", json={"data": data}, headers=rw)
        assert response.status_code == 201, response.text
    index = client.post(f"{API}/tables/things/indexes", json={"field": "n"}, headers=rw)
    assert index.status_code == 201, index.text
    return client


def _state(client: TestClient) -> tuple[Any, Any]:
    """Every record and every index, read with the read-write key."""
    dumped = client.get(f"{API}/dump", headers=bearer(RW_KEY))
    tables = client.get(f"{API}/tables", headers=bearer(RW_KEY))
    assert dumped.status_code == tables.status_code == 200
    return dumped.json(), tables.json()


def _assert_unauthorized(response: Response) -> None:
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].lower().startswith("bearer")


# -- the matrix ------------------------------------------------------------


@pytest.mark.parametrize("name", list(EVERY))
def test_no_key_is_401_and_changes_nothing(
    name: str, client_factory: Callable[..., TestClient]
) -> None:
    client = _keyed(client_factory)
    before = _state(client)
    _assert_unauthorized(_send(client, EVERY[name], {}))
    assert _state(client) == before


@pytest.mark.parametrize("style", list(HEADER_STYLES))
@pytest.mark.parametrize("name", list(EVERY))
def test_a_wrong_key_is_401_and_changes_nothing(
    name: str, style: str, client_factory: Callable[..., TestClient]
) -> None:
    client = _keyed(client_factory)
    before = _state(client)
    _assert_unauthorized(_send(client, EVERY[name], HEADER_STYLES[style](WRONG_KEY)))
    assert _state(client) == before


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": RW_KEY},
        {"Authorization": f"Basic {RW_KEY}"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Bearer {RW_KEY}x"},
        {"Authorization": f"Bearer {RW_KEY[:-1]}"},
        {"X-API-Key": ""},
        {"X-Api-Token": RW_KEY},
    ],
)
def test_a_key_in_the_wrong_form_is_401(
    headers: dict[str, str], client_factory: Callable[..., TestClient]
) -> None:
    client = client_factory(api_keys=KEYS)
    _assert_unauthorized(client.get(f"{API}/tables", headers=headers))


@pytest.mark.parametrize("style", list(HEADER_STYLES))
@pytest.mark.parametrize("name", list(READS))
def test_a_read_only_key_reads(
    name: str, style: str, client_factory: Callable[..., TestClient]
) -> None:
    client = _keyed(client_factory)
    call = READS[name]
    response = _send(client, call, HEADER_STYLES[style](RO_KEY))
    assert response.status_code == call.ok, response.text


@pytest.mark.parametrize("style", list(HEADER_STYLES))
@pytest.mark.parametrize("name", list(WRITES))
def test_a_read_only_key_cannot_write(
    name: str, style: str, client_factory: Callable[..., TestClient]
) -> None:
    client = _keyed(client_factory)
    before = _state(client)
    response = _send(client, WRITES[name], HEADER_STYLES[style](RO_KEY))
    assert_error(response, 403, "forbidden")
    assert _state(client) == before


@pytest.mark.parametrize("style", list(HEADER_STYLES))
@pytest.mark.parametrize("name", list(EVERY))
def test_a_read_write_key_does_everything(
    name: str, style: str, client_factory: Callable[..., TestClient]
) -> None:
    client = _keyed(client_factory)
    before = _state(client)
    call = EVERY[name]
    response = _send(client, call, HEADER_STYLES[style](RW_KEY))
    assert response.status_code == call.ok, response.text
    if name in WRITES:
        assert _state(client) != before


def test_the_bearer_scheme_is_case_insensitive(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(api_keys=KEYS)
    for scheme in ("bearer", "BEARER", "Bearer"):
        response = client.get(
            f"{API}/tables", headers={"Authorization": f"{scheme} {RO_KEY}"}
        )
        assert response.status_code == 200, scheme


def test_a_read_only_key_is_refused_before_the_body_is_judged(
    client_factory: Callable[..., TestClient],
) -> None:
    """A read-only key learns nothing about the data from a write's answer."""
    client = _keyed(client_factory)
    for body in ({"data": {"id": "t1"}}, {"data": {"bad-name": 1}}):
        response = client.post(f"{API}/data/things", json=body, headers=api_key(RO_KEY))
        assert_error(response, 403, "forbidden")


def test_without_keys_everything_is_open(client: TestClient) -> None:
    assert client.post(f"{API}/data/things", json={"data": {"n": 1}}).status_code == 201
    assert client.get(f"{API}/tables").status_code == 200
    assert client.get("/metrics").status_code == 200
    response = client.get(f"{API}/tables", headers=bearer(WRONG_KEY))
    assert response.status_code == 200


# -- what stays open -------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/health",
        "/ready",
        "/docs",
        "/redoc",
        "/openapi.json",
        "/static/docs/swagger-ui-bundle.js",
    ],
)
def test_health_and_docs_stay_open_with_keys(
    path: str, client_factory: Callable[..., TestClient]
) -> None:
    client = client_factory(api_keys=KEYS)
    response = client.get(path)
    assert response.status_code == 200, response.text[:300]
    assert "www-authenticate" not in response.headers


# -- OpenAPI ---------------------------------------------------------------


def test_openapi_declares_the_key_schemes_when_keys_are_on(
    client_factory: Callable[..., TestClient],
) -> None:
    schema = client_factory(api_keys=KEYS).get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert {"type": "http", "scheme": "bearer"} in schemes.values()
    assert {"type": "apiKey", "in": "header", "name": "X-API-Key"} in schemes.values()

    guarded = 0
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            security = operation.get("security")
            if path.startswith("/api/") or path == "/metrics":
                guarded += 1
                assert security, (method, path)
                names = {name for option in security for name in option}
                assert names == set(schemes), (method, path, security)
            else:
                assert not security, (method, path)
    assert guarded >= len(EVERY) - 1


def test_openapi_declares_no_security_without_keys(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "securitySchemes" not in schema.get("components", {})
    assert "security" not in schema
    for operations in schema["paths"].values():
        for operation in operations.values():
            assert "security" not in operation


# -- keys stay secret ------------------------------------------------------


def test_keys_never_reach_the_log_or_an_answer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    responses = []
    with TestClient(create_app(make_settings(api_keys=KEYS))) as client:
        _seed(client)
        for call in EVERY.values():
            for headers in (bearer(RW_KEY), api_key(RO_KEY), bearer(WRONG_KEY)):
                responses.append(_send(client, call, headers))
        for path in ("/openapi.json", "/docs", "/health", "/ready"):
            responses.append(client.get(path, headers=bearer(RW_KEY)))
    out = capsys.readouterr()

    assert "http.request" in out.out
    for key in (RW_KEY, RO_KEY, WRONG_KEY):
        assert key not in out.out and key not in out.err
        for response in responses:
            assert key not in response.text, (response.request.url, response.text)
            assert all(key not in value for value in response.headers.values())


# -- a malformed MEMDB_API_KEYS --------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        "nokind",
        "secret-a:rw,secret-b",
        "secret-a:admin",
        ":rw",
        "secret-a:RW",
        "secret-a:rw,secret-b:read",
    ],
)
def test_a_malformed_key_list_refuses_to_build_the_runtime(
    spec: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging()  # to this test's captured stdout
    limits = Limits(budget=1000, max_heavy=1)
    gc_monitor = GcMonitor()
    with pytest.raises(SystemExit) as stopped:
        build_runtime(
            make_settings(api_keys=spec),
            0.0,
            limits,
            LoopMonitor(gc_monitor),
            gc_monitor,
        )
    assert stopped.value.code not in (0, None)
    out = capsys.readouterr().out
    assert "security.bad_keys" in out
    assert "secret-a" not in out and "secret-b" not in out


def test_a_malformed_key_list_stops_the_server_process(tmp_path: Path) -> None:
    """``python -m app`` exits with a failure status and names the setting,
    without printing the key and without serving."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MEMDB_") and key not in ("HOST", "PORT")
    }
    env.update(
        MEMDB_API_KEYS="top-secret-value-91",
        PYTHONPATH=str(BACKEND),
    )
    done = subprocess.run(
        [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "MEMDB_API_KEYS" in output
    assert "top-secret-value-91" not in output
    assert "Uvicorn running" not in output


def test_the_key_setting_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MEMDB_API_KEYS", f"{RO_KEY}:ro")
    monkeypatch.setenv("MEMDB_ARGON2_MEMORY_KIB", "64")
    with TestClient(create_app()) as client:
        _assert_unauthorized(client.get(f"{API}/tables"))
        assert client.get(f"{API}/tables", headers=api_key(RO_KEY)).status_code == 200
        response = client.post(
            f"{API}/data/things", json={"data": {"n": 1}}, headers=api_key(RO_KEY)
        )
        assert_error(response, 403, "forbidden")
