"""A 100,000-record seed file through ``MEMDB_SEED_FILE``, then every page of it."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Callable

import orjson
import pytest

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e

COUNT = 100_000
PAGE = 1000
READY_TIMEOUT_S = 60.0
NEXT = re.compile(r'<([^>]*)>; rel="next"')


def write_seed(path: Path) -> None:
    """db.json with one schemaless table; numeric ids, as json-server writes them."""
    events = [
        {"id": i, "kind": ("a", "b", "c")[i % 3], "n": i, "tags": [i % 7]}
        for i in range(COUNT)
    ]
    path.write_bytes(orjson.dumps({"events": events}))


def test_a_large_seed_file_loads_and_pages_in_order(
    server_factory: Callable[..., Server],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed = tmp_path / "db.json"
    write_seed(seed)
    # The server factory waits for /ready; give the load the time it may need
    # (patched where the factory reads it, whatever name its module has).
    factory_globals = server_factory.__globals__  # type: ignore[attr-defined]
    assert "START_TIMEOUT_S" in factory_globals
    monkeypatch.setitem(factory_globals, "START_TIMEOUT_S", READY_TIMEOUT_S)
    started = time.monotonic()
    server = server_factory(MEMDB_SEED_FILE=str(seed))
    loaded_in = time.monotonic() - started

    with server.client() as client:
        # Ready means loaded: the whole table is there at once.
        tables = {t["name"]: t["count"] for t in client.get("/api/v1/tables").json()}
        assert tables == {"users": 0, "orders": 0, "events": COUNT}, loaded_in

        seen: list[str] = []
        url: str | None = f"/api/v1/data/events?limit={PAGE}&fields=n"
        pages = 0
        while url is not None:
            response = client.get(url)
            assert response.status_code == 200, response.text
            assert response.headers["x-total-count"] == str(COUNT)
            body = response.json()
            assert body["offset"] == pages * PAGE and body["limit"] == PAGE
            seen.extend(r["id"] for r in body["items"])
            assert all(r == {"id": r["id"], "n": int(r["id"])} for r in body["items"])
            found = NEXT.search(response.headers.get("link", ""))
            url = found.group(1) if found else None
            pages += 1

    assert pages == COUNT // PAGE
    assert len(seen) == len(set(seen)) == COUNT
    assert seen == [str(i) for i in range(COUNT)]
