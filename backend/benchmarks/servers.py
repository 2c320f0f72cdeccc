"""The servers of one run: how each is started, preloaded, and asked for each scenario.

Every server holds the same small table (``items``) and gets the same requests,
spelt in its own API: the service wraps bodies in ``{"data": ...}``, the floor
and json-server take the raw object.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import httpx
import orjson

from benchmarks import data
from benchmarks.harness import BACKEND, HOST, Process, Processes, Request, free_port
from benchmarks.harness import wait_http

START_TIMEOUT_S = 60.0
IMPORT_BATCH_BYTES = 900_000  # under the service's default 1 MiB body limit

MEMDB = "memdb"
FLOOR = "floor"
RAW_FLOOR = "raw ASGI floor"
FASTAPI = "fastapi"
JSON_SERVER_1 = "json-server 1.x"
JSON_SERVER_017 = "json-server 0.17"
SERVE_1 = "memdb serve"
SERVE_017 = "memdb serve --compat 0.17"
AOF_EVERYSEC = "memdb aof everysec"
AOF_ALWAYS = "memdb aof always"

GET_ID = "7"
PUT_ID = "8"

# The sorted-index rows: a page of 20 sorted on the indexed field, the same
# page sorted on two fields no index holds, and a range on the indexed field.
SORTED_FIELD = "value"
SORTED_PAGE = "sort=-value&limit=20&offset=100"
UNINDEXED_PAGE = "sort=-name,value&limit=20&offset=100"
RANGE_PAGE = "value__gte=500&value__lt=510&limit=20"


@dataclass
class Server:
    """A started, preloaded server and the requests it answers."""

    name: str
    process: Process
    requests: dict[str, Request] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.process.url


def _body(value: object) -> bytes:
    return orjson.dumps(value)


def memdb_requests(table: str = data.SMALL_TABLE) -> dict[str, Request]:
    base = f"/api/v1/data/{table}"
    return {
        "get": Request("GET", f"{base}/{GET_ID}"),
        "post": Request(
            "POST", f"/api/v1/data/{data.POST_TABLE}", _body({"data": data.POST_BODY})
        ),
        "put": Request("PUT", f"{base}/{PUT_ID}", _body({"data": data.PUT_BODY})),
        "list": Request("GET", f"{base}?sort=-value&limit=10&offset=20"),
    }


def floor_requests() -> dict[str, Request]:
    return {
        "get": Request("GET", f"/items/{GET_ID}"),
        "post": Request("POST", "/items", _body(data.POST_BODY)),
    }


def json_server_requests(major: int) -> dict[str, Request]:
    if major >= 1:
        listing = "/items?_sort=-value&_page=3&_per_page=10"
    else:
        listing = "/items?_sort=value&_order=desc&_page=3&_limit=10"
    return {
        "get": Request("GET", f"/items/{GET_ID}"),
        "post": Request("POST", f"/{data.POST_TABLE}", _body(data.POST_BODY)),
        "put": Request("PUT", f"/items/{PUT_ID}", _body(data.PUT_BODY)),
        "list": Request("GET", listing),
    }


def python_env(**extra: str) -> dict[str, str]:
    """The environment of a Python server: no MEMDB_* of the caller's shell leaks
    in; unbuffered output, as in the container image."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMDB_")}
    env.update(PYTHONPATH=str(BACKEND), PYTHONUNBUFFERED="1", **extra)
    return env


def _workdir(base: Path, name: str) -> Path:
    """An empty working directory, so that no ``.env`` file is read."""
    slug = "".join(c if c.isalnum() else "-" for c in name)
    path = base / f"cwd-{slug}-{time.monotonic_ns()}"
    path.mkdir(parents=True)
    return path


def start_memdb(
    processes: Processes,
    base: Path,
    *,
    name: str = MEMDB,
    env: Mapping[str, str] | None = None,
    wait: bool = True,
) -> Process:
    """``python -m app`` as ``make run`` starts it, on a free port."""
    port = free_port()
    process = processes.start(
        name,
        [sys.executable, "-m", "app", "--host", HOST, "--port", str(port)],
        cwd=_workdir(base, name),
        env=python_env(**(env or {})),
    )
    process.url = f"http://{HOST}:{port}"
    if wait:
        wait_http(process, "/ready", timeout_s=START_TIMEOUT_S)
    return process


def import_records(
    process: Process, table: str, records: object, *, timeout_s: float = 300.0
) -> int:
    """Load records through ``POST /api/v1/import`` in batches under the body limit."""
    total = 0
    with httpx.Client(base_url=process.url, timeout=timeout_s) as client:
        for group in data.batches(records, IMPORT_BATCH_BYTES):  # type: ignore[arg-type]
            response = client.post(
                "/api/v1/import",
                content=data.import_body(table, group),
                headers={"Content-Type": "application/json"},
            )
            if response.status_code != 200:
                raise RuntimeError(
                    f"import into {table} failed: {response.status_code} "
                    f"{response.text[:500]}"
                )
            total += len(group)
    return total


def create_index(process: Process, table: str, field_name: str) -> None:
    with httpx.Client(base_url=process.url, timeout=600.0) as client:
        response = client.post(
            f"/api/v1/tables/{table}/indexes", json={"field": field_name}
        )
    if response.status_code != 201:
        raise RuntimeError(f"index on {table}.{field_name}: {response.text[:500]}")


def create_sorted_index(process: Process, table: str, field_name: str) -> str:
    """A sorted index on ``table.field_name``: "" when made, else why not (the
    status and message of the answer, e.g. 422 where sorted indexes do not
    exist yet)."""
    with httpx.Client(base_url=process.url, timeout=600.0) as client:
        response = client.post(
            f"/api/v1/tables/{table}/indexes",
            json={"field": field_name, "kind": "sorted"},
        )
    if response.status_code == 201:
        return ""
    try:
        error = response.json()["error"]
        message = error["message"]
        details = [d.get("msg", "") for d in error.get("details") or []]
        if details:
            message += ": " + "; ".join(details)
    except Exception:
        message = response.text[:200]
    return (
        f"not run: POST /api/v1/tables/{table}/indexes with kind sorted "
        f"answered {response.status_code} ({message})"
    )


def check_page(process: Process, path: str, key: str, expected: list[object]) -> None:
    """Raise unless ``GET path`` answers 200 with items whose ``key`` values are
    ``expected``, in that order."""
    with httpx.Client(base_url=process.url, timeout=60.0) as client:
        answer = client.get(path)
    if answer.status_code != 200:
        raise RuntimeError(f"{path} answered {answer.status_code}: {answer.text[:300]}")
    got = [item.get(key) for item in answer.json()["items"]]
    if got != expected:
        raise RuntimeError(f"{path} answered {key} {got}, not {expected}")


def start_python_app(
    processes: Processes, base: Path, *, name: str, module: str, items: int
) -> Process:
    """The floor or the FastAPI reference, preloaded through its own POST."""
    port = free_port()
    process = processes.start(
        name,
        [sys.executable, "-m", module, "--host", HOST, "--port", str(port)],
        cwd=_workdir(base, name),
        env=python_env(),
    )
    process.url = f"http://{HOST}:{port}"
    wait_http(
        process, "/items/0", timeout_s=START_TIMEOUT_S, ok=lambda status: status < 500
    )
    with httpx.Client(base_url=process.url, timeout=10.0) as client:
        for item in data.small_items(items):
            response = client.post("/items", json=item)
            if response.status_code != 201:
                raise RuntimeError(f"{name} preload: {response.text[:300]}")
    return process


def start_json_server(
    processes: Processes,
    base: Path,
    *,
    name: str,
    entry: Path,
    items: int,
) -> Process:
    """json-server on its own ``db.json`` holding the small table and an empty one
    for the POSTs (json-server 0.17 only routes the collections it starts with)."""
    workdir = _workdir(base, name)
    db = data.write_db_json(
        workdir / "db.json",
        {data.SMALL_TABLE: data.small_items(items), data.POST_TABLE: []},
    )
    port = free_port()
    node = os.environ.get("BENCH_NODE", "node")
    process = processes.start(
        name,
        [node, str(entry), "--host", HOST, "--port", str(port), str(db)],
        cwd=workdir,
        env=dict(os.environ),
    )
    process.url = f"http://{HOST}:{port}"
    wait_http(process, f"/items/{GET_ID}", timeout_s=START_TIMEOUT_S)
    return process


def start_memdb_serve(
    processes: Processes, base: Path, *, name: str, dialect: str, items: int
) -> Process:
    """``memdb serve`` (json-server's routes) on the db.json json-server gets."""
    workdir = _workdir(base, name)
    db = data.write_db_json(
        workdir / "db.json",
        {data.SMALL_TABLE: data.small_items(items), data.POST_TABLE: []},
    )
    port = free_port()
    process = processes.start(
        name,
        [
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            str(db),
            "--host",
            HOST,
            "--port",
            str(port),
            "--compat",
            dialect,
            "--fsync",
            "everysec",
        ],
        cwd=workdir,
        env=python_env(MEMDB_LOG_FORMAT="json"),
    )
    process.url = f"http://{HOST}:{port}"
    wait_http(process, "/ready", timeout_s=START_TIMEOUT_S)
    return process


def start_small_memdb(
    processes: Processes,
    base: Path,
    *,
    name: str,
    items: int,
    env: Mapping[str, str] | None = None,
) -> Process:
    process = start_memdb(processes, base, name=name, env=env)
    import_records(process, data.SMALL_TABLE, iter(data.small_items(items)))
    return process
