"""The integration layer runs against every store backend: each test once on
the memory store, once on a standalone Redis and once on a Redis Cluster
(``tests/conftest.py``). A test marked ``memory_only`` exercises what only the
memory store has (its append-only log, its insides) and runs once; one marked
``backends("memory", "redis")`` runs on those it names (the change feed, which
a Cluster does not keep: its refusal there is a test of its own)."""

from __future__ import annotations

import pytest

from tests.conftest import BACKENDS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    memory_only = metafunc.definition.get_closest_marker("memory_only") is not None
    named = metafunc.definition.get_closest_marker("backends")
    backends = ("memory",) if memory_only else BACKENDS
    if named is not None:
        backends = tuple(b for b in BACKENDS if b in named.args)
    metafunc.parametrize("backend", backends, indirect=True)


@pytest.fixture(autouse=True)
def _on_backend(backend: str) -> str:
    """Every integration test runs on the backend of its parameter."""
    return backend
