"""``create_app()`` builds the service; the lifespan builds its state. Nothing runs at import."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

import structlog
from fastapi import FastAPI

from app import __version__
from app.api import health
from app.api.deps import Services
from app.api.v1.router import router as v1_router
from app.core.config import Settings
from app.core.handlers import install_error_handlers
from app.core.logging import configure_logging
from app.core.middleware import RequestContextMiddleware
from app.services.joins import JoinService
from app.services.passwords import PasswordHasher
from app.services.records import RecordService, ensure_builtins
from app.services.tables import TableService
from app.storage.memory import Store

log = structlog.get_logger("memdb")

DESCRIPTION = """
An in-memory database over HTTP: tables of JSON records with CRUD, bulk writes,
joins and dumps. Every error answers with one envelope:
`{"error": {"code", "message", "details", "request_id"}}`.
"""


def build_state(app: FastAPI, settings: Settings) -> None:
    """The store and the services, on ``app.state`` for the dependencies."""
    store = Store(max_records=settings.max_records)
    ensure_builtins(store)
    hasher = PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_kib=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
    )
    app.state.store = store
    app.state.services = Services(
        records=RecordService(store, hasher=hasher, max_bulk=settings.max_bulk),
        joins=JoinService(store),
        tables=TableService(store),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """A fresh app. Settings are read from the environment when the app starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        current = settings or Settings()
        configure_logging(level=current.log_level, fmt=current.log_format)
        app.state.settings = current
        app.state.started = time.monotonic()
        app.state.ready = False
        app.state.max_body_bytes = current.max_body_bytes
        build_state(app, current)
        app.state.ready = True
        log.info(
            "service.started", version=__version__, persistence=current.persistence
        )
        if not current.api_keys:
            log.warning(
                "security.open",
                message="MEMDB_API_KEYS is not set: the API is open to every client",
            )
        yield
        log.info("service.stopped")

    app = FastAPI(
        title="memdb",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.ready = False
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(v1_router)
    app.add_middleware(RequestContextMiddleware)
    return app


app = create_app()
