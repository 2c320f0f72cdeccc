"""A seed file (``MEMDB_SEED_FILE``) that cannot be loaded stops ``python -m app``
at startup with status 1 and the reason in its log, instead of leaving it
answering 503 for ever."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import orjson
import pytest

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e

# the seed is read within the start's first second: the exit follows at once
EXIT_WITHIN_S = 8.0


def cannot_start(server: Server) -> dict[str, Any]:
    (refused,) = [
        e for e in server.events() if e.get("event") == "service.cannot_start"
    ]
    assert refused["level"] == "error"
    return refused


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param(b'{"users": [', "the file is not valid JSON", id="invalid-json"),
        pytest.param(
            orjson.dumps({"profile": {"id": 1, "name": "typicode"}}),
            "an object resource cannot hold an id",
            id="object-resource-with-an-id",
        ),
    ],
)
def test_a_bad_seed_file_exits_with_status_1_and_the_reason(
    server_factory: Callable[..., Server],
    tmp_path: Path,
    content: bytes,
    reason: str,
) -> None:
    seed = tmp_path / "db.json"
    seed.write_bytes(content)
    started = time.monotonic()
    server = server_factory(wait=False, MEMDB_SEED_FILE=str(seed))
    assert server.wait_exit(timeout=EXIT_WITHIN_S) == 1, server.logs()
    assert time.monotonic() - started < EXIT_WITHIN_S

    refused = cannot_start(server)
    assert refused["message"].startswith("the seed file could not be loaded: ")
    assert reason in refused["message"], refused
    (failed,) = [e for e in server.events() if e.get("event") == "seed.failed"]
    assert failed["path"] == str(seed)
    events = [e.get("event") for e in server.events()]
    assert "seed.loaded" not in events
    # it stopped as a server stops (its shutdown ran), never having been ready
    assert "service.stopped" in events, events


def test_a_missing_seed_file_exits_with_status_1_naming_it(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "db.json"
    server = server_factory(wait=False, MEMDB_SEED_FILE=str(missing))
    assert server.wait_exit(timeout=EXIT_WITHIN_S) == 1, server.logs()
    message = cannot_start(server)["message"]
    assert str(missing) in message and "No such file" in message, message


def test_a_good_seed_file_serves(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    seed = tmp_path / "db.json"
    seed.write_bytes(
        orjson.dumps(
            {
                "$schema": "./node_modules/json-server/schema.json",
                "posts": [{"id": 1, "title": "json-server"}],
                "comments": [{"id": 1, "body": "some comment", "postId": 1}],
                "profile": {"name": "typicode"},
            }
        )
    )
    server = server_factory(MEMDB_SEED_FILE=str(seed))
    with server.client() as client:
        profile = client.get("/api/v1/data/profile/_singleton").json()
        assert profile["name"] == "typicode"
        assert client.get("/api/v1/data/posts?id=1").json()["total"] == 1
        joined = client.get("/api/v1/join/comments/posts/postId").json()
        assert joined["count"] == 1
    assert server.terminate() == 0
    assert not [e for e in server.events() if e.get("event") == "service.cannot_start"]
