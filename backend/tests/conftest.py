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


def make_settings(**overrides: Any) -> Settings:
    return Settings(**{**FAST_HASH, **overrides})


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
