"""``MEMDB_SEED_FILE``: a db.json-shaped file loaded at startup; ``/ready`` is 503
until it is loaded. One that cannot be loaded stops the service with the reason
(``python -m app`` then exits with status 1: tests/e2e/test_seed_refused.py);
under a test client, which has no server to stop, it stays 503 with the reason."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import orjson
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from app.api.state import service_of
from app.main import create_app
from tests.conftest import make_settings
from tests.integration.helpers import API, assert_error, fields_of

SEED: dict[str, Any] = {
    "orders": [
        {
            "id": "o1",
            "product_name": "Engine",
            "quantity": 1,
            "total_price": 1843.0,
            "user_id": "u1",
        }
    ],
    "users": [
        {
            "id": "u1",
            "email": "ada@example.com",
            "full_name": "Ada",
            "password": "longenough1",
            "created_at": "2020-01-01T00:00:00Z",
            "updated_at": "2020-06-01T00:00:00Z",
        }
    ],
    "posts": [{"id": 1, "title": "hello", "tags": ["a"]}, {"id": 2, "title": "bye"}],
}
TIMEOUT_S = 10.0


def write_seed(tmp_path: Path, content: Any, name: str = "db.json") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else orjson.dumps(content))
    return path


def wait_for_ready(
    client: TestClient, done: Callable[[Response], bool], timeout: float = TIMEOUT_S
) -> Response:
    """Poll ``/ready`` until ``done`` says the load has finished, one way or another."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/ready")
        if done(response):
            return response
        assert time.monotonic() < deadline, f"still not done: {response.text}"
        time.sleep(0.02)


def loaded(response: Response) -> bool:
    return response.status_code == 200


def failed(response: Response) -> bool:
    """The load has ended without success: the message says so, not "loading"."""
    if response.status_code == 200:
        return True
    return "loading" not in response.json()["error"]["message"]


def test_a_seed_file_is_loaded_before_the_service_is_ready(
    client_factory: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = client_factory(seed_file=str(write_seed(tmp_path, SEED)))
    ready = wait_for_ready(client, loaded)
    assert ready.json()["status"] == "ready"

    tables = {t["name"]: t["count"] for t in client.get(f"{API}/tables").json()}
    assert tables == {"users": 1, "orders": 1, "posts": 2}
    user = client.get(f"{API}/data/users/u1").json()
    assert fields_of(user) == {"email": "ada@example.com", "full_name": "Ada"}
    assert (user["created_at"], user["updated_at"]) == (  # as the service writes them
        "2020-01-01T00:00:00.000000Z",
        "2020-06-01T00:00:00.000000Z",
    )
    assert client.get(f"{API}/data/orders/o1").json()["user_id"] == "u1"
    posts = client.get(f"{API}/data/posts", params={"sort": "-id"}).json()
    assert [p["id"] for p in posts["items"]] == ["2", "1"]
    assert "longenough1" not in client.get(f"{API}/dump").text
    # The seeded user's unique email holds for later writes.
    response = client.post(
        f"{API}/data/users",
        json={"data": {"email": "ADA@example.com", "full_name": "Copy"}},
    )
    assert_error(response, 409, "conflict")


def test_an_empty_seed_file_object_is_ready_with_no_data(
    client_factory: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = client_factory(seed_file=str(write_seed(tmp_path, {})))
    wait_for_ready(client, loaded)
    tables = {t["name"]: t["count"] for t in client.get(f"{API}/tables").json()}
    assert tables == {"users": 0, "orders": 0}


def test_the_service_is_not_ready_while_the_seed_is_loading(
    client_factory: Callable[..., TestClient], tmp_path: Path
) -> None:
    # A named pipe: the service's read waits until the test writes the data.
    pipe = tmp_path / "seed.fifo"
    os.mkfifo(pipe)
    released = threading.Event()

    def release() -> None:
        if not released.is_set():
            released.set()
            with pipe.open("wb") as writer:
                writer.write(orjson.dumps(SEED))

    try:
        client = client_factory(seed_file=str(pipe))
        time.sleep(0.1)
        for _ in range(3):
            error = assert_error(client.get("/ready"), 503, "not_ready")
            assert "loading" in error["message"]
            assert_error(client.get(f"{API}/tables"), 503, "not_ready")
            assert_error(client.get(f"{API}/data/posts"), 503, "not_ready")
            response = client.post(f"{API}/data/notes", json={"data": {"a": 1}})
            assert_error(response, 503, "not_ready")
            health = client.get("/health")
            assert health.status_code == 200
            assert health.json()["status"] == "ok"
        release()
        wait_for_ready(client, loaded)
    finally:
        release()
    tables = {t["name"]: t["count"] for t in client.get(f"{API}/tables").json()}
    assert tables == {"users": 1, "orders": 1, "posts": 2}
    # The write refused while loading did not happen.
    assert client.get(f"{API}/data/notes").status_code == 404


BAD_SEEDS: list[Any] = [
    pytest.param(b'{"users": [', "JSON", id="invalid-json"),
    pytest.param(b"", "JSON", id="empty-file"),
    pytest.param(b"[1, 2]", "", id="a-list"),
    pytest.param({"users": [{"id": "u1", "email": "nope"}]}, "users", id="bad-user"),
    pytest.param({"notes": [{"id": "n1", "bad-name": 1}]}, "notes", id="bad-field"),
    pytest.param({"notes": 3}, "notes", id="table-not-a-list"),
    pytest.param(
        {"notes": {"id": "n1"}}, "object resource cannot hold an id", id="object-id"
    ),
    pytest.param(
        {"orders": [{**SEED["orders"][0], "user_id": "ghost"}]},
        "user",
        id="order-of-a-missing-user",
    ),
    pytest.param(
        {"users": [SEED["users"][0], {**SEED["users"][0], "id": "u2"}]},
        "email",
        id="duplicate-email",
    ),
    pytest.param(
        {"posts": [{"id": 1}, {"id": "1"}]},
        "1",
        id="duplicate-id",
    ),
]


def assert_not_ready_with(client: TestClient, words: list[str]) -> None:
    """The seed stopped the service (fatal) with the reason, and under a test
    client (no server to stop) it stays not ready."""
    ready = wait_for_ready(client, failed)
    error = assert_error(ready, 503, "not_ready")
    message = error["message"]
    assert "seed" in message.lower(), message
    for word in words:
        assert word.lower() in message.lower(), message
    service = service_of(client.app)
    assert service is not None and service.fatal is True
    for _ in range(2):  # it stays so
        time.sleep(0.05)
        assert_error(client.get("/ready"), 503, "not_ready")
        assert_error(client.get(f"{API}/tables"), 503, "not_ready")
        assert_error(client.get(f"{API}/dump"), 503, "not_ready")
        response = client.post(f"{API}/data/notes", json={"data": {"a": 1}})
        assert_error(response, 503, "not_ready")
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"


@pytest.mark.parametrize(("content", "word"), BAD_SEEDS)
def test_a_bad_seed_file_stops_the_service_with_a_message(
    client_factory: Callable[..., TestClient],
    tmp_path: Path,
    content: Any,
    word: str,
) -> None:
    client = client_factory(seed_file=str(write_seed(tmp_path, content)))
    assert_not_ready_with(client, [word] if word else [])


def test_a_missing_seed_file_stops_the_service(
    client_factory: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = client_factory(seed_file=str(tmp_path / "missing.json"))
    assert_not_ready_with(client, ["no such file"])


def test_a_directory_as_seed_file_stops_the_service(
    client_factory: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = client_factory(seed_file=str(tmp_path))
    assert_not_ready_with(client, [])


def test_a_seed_over_the_record_limit_stops_the_service(
    client_factory: Callable[..., TestClient], tmp_path: Path
) -> None:
    seed = {"notes": [{"id": f"n{i}"} for i in range(4)]}
    client = client_factory(seed_file=str(write_seed(tmp_path, seed)), max_records=3)
    assert_not_ready_with(client, [])


def test_a_bad_seed_file_asks_the_server_to_stop(tmp_path: Path) -> None:
    """What ``python -m app`` hooks (``stop_server``) is called once, with the
    service marked fatal and the reason given."""
    app = create_app(make_settings(seed_file=str(write_seed(tmp_path, b'{"users": ['))))
    stops: list[bool] = []
    app.stop_server = lambda: stops.append(True)
    with TestClient(app) as client:
        ready = wait_for_ready(client, failed)
        message = assert_error(ready, 503, "not_ready")["message"]
        assert message.startswith("the seed file could not be loaded: "), message
        assert "not valid JSON" in message
        service = service_of(app)
        assert service is not None and service.fatal is True
        assert service.runtime.ready is False
    assert stops == [True]


def test_a_good_seed_file_does_not_stop_the_server(tmp_path: Path) -> None:
    app = create_app(make_settings(seed_file=str(write_seed(tmp_path, SEED))))
    stops: list[bool] = []
    app.stop_server = lambda: stops.append(True)
    with TestClient(app) as client:
        wait_for_ready(client, loaded)
        service = service_of(app)
        assert service is not None and service.fatal is False
    assert stops == []


def test_without_a_seed_file_the_service_is_ready_at_once(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory()
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"
