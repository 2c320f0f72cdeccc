"""Shared fixtures: settings that hash passwords quickly, a fresh app, a client."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from app.services.passwords import PasswordHasher
from app.schemas.builtin import BUILTIN_RULES
from app.services.records import RecordService
from app.storage.memory import MemoryStore, Store
from tests.redis_servers import (
    CannotStart,
    RedisCluster,
    RedisServer,
    cluster,
    must_run,
    standalone,
    unique_prefix,
)

# argon2id at its cheapest: the same code path, milliseconds instead of seconds.
FAST_HASH: dict[str, Any] = {
    "argon2_time_cost": 1,
    "argon2_memory_kib": 64,
    "argon2_parallelism": 1,
}

USER = {
    "email": "john.doe@example.com",
    "full_name": "John Doe",
    "age": 30,
    "password": "securepass123",
}


# The store backend the current test runs on (see ``backend`` below): its
# settings are added to every app a test makes, each with a key prefix of its own.
BACKEND: dict[str, Any] = {"name": "memory", "settings": {}}
BACKENDS = ("memory", "redis", "cluster")


def make_settings(**overrides: Any) -> Settings:
    chosen: dict[str, Any] = {}
    memory_only = overrides.get("persistence") == "aof" or "store" in overrides
    if BACKEND["name"] != "memory" and not memory_only:
        chosen = {**BACKEND["settings"], "redis_prefix": unique_prefix()}
    return Settings(**{**FAST_HASH, **chosen, **overrides})


@pytest.fixture(scope="session")
def redis_standalone(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisServer | CannotStart]:
    """One standalone Redis for the session (or why it cannot start)."""
    try:
        server = standalone(tmp_path_factory.mktemp("redis"))
    except CannotStart as exc:
        yield exc
        return
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RedisCluster | CannotStart]:
    """One three-master Redis Cluster for the session (or why it cannot start)."""
    try:
        started = cluster(tmp_path_factory.mktemp("cluster"))
    except CannotStart as exc:
        yield exc
        return
    yield started
    started.stop()


@pytest.fixture
def standalone_up(redis_standalone: RedisServer | CannotStart) -> RedisServer:
    """The session's standalone Redis; skipped (never in CI) when it cannot start."""
    if isinstance(redis_standalone, CannotStart):
        if must_run():
            raise redis_standalone
        pytest.skip(str(redis_standalone))
    return redis_standalone


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """The store backend of this test (``memory``, ``redis`` or ``cluster``),
    parametrised by ``pytest_generate_tests`` where a directory asks for it."""
    name = getattr(request, "param", "memory")
    settings: dict[str, Any] = {}
    if name != "memory":
        server = request.getfixturevalue(
            "redis_standalone" if name == "redis" else "redis_cluster"
        )
        if isinstance(server, CannotStart):
            if must_run():
                raise server
            pytest.skip(f"{name}: {server}")
        settings = {
            "store": "redis",
            "redis_url": server.url,
            "redis_cluster": name == "cluster",
        }
    BACKEND.update(name=name, settings=settings)
    try:
        yield name
    finally:
        BACKEND.update(name="memory", settings={})


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
def client_factory() -> Iterator[Callable[..., TestClient]]:
    """``client_factory(max_bulk=2)`` opens a client on a fresh app with those settings."""
    opened: list[TestClient] = []

    def open_client(**overrides: Any) -> TestClient:
        client = TestClient(create_app(make_settings(**overrides)))
        client.__enter__()
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(make_settings())) as c:
        yield c


@pytest.fixture
def memory() -> MemoryStore:
    """The memory backend with the built-in tables and rules."""
    backend = MemoryStore(max_records=1_000_000, rules=BUILTIN_RULES)
    backend.ensure_builtins()
    return backend


@pytest.fixture
def store(memory: MemoryStore) -> Store:
    """The memory backend's engine (the synchronous store inside it)."""
    return memory.engine


@pytest.fixture
def hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=1, memory_kib=64, parallelism=1)


@pytest.fixture
def records(memory: MemoryStore, hasher: PasswordHasher) -> RecordService:
    return RecordService(memory, hasher=hasher, max_bulk=100)
