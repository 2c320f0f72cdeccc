"""``create_app()`` builds the service; the lifespan builds its state. Nothing runs at import."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import anyio.to_thread
import structlog
import uvicorn
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from app import __version__
from app.api import compat, fastpath, health, operations, ui
from app.api.compat import owned
from app.api.deps import Services
from app.api.openapi import build_openapi, operation_id
from app.api.state import ServiceState, service_of
from app.api.v1.changes import DIRECT_SEND
from app.api.v1.router import router as v1_router
from app.core.config import Settings, refusal
from app.core.errors import DomainError
from app.core.handlers import install_error_handlers
from app.api.operations import install_docs
from app.core.cors import SettingsCORSMiddleware
from app.core.encoding import CompressionMiddleware, as_get
from app.core.logging import AccessLog, configure_logging
from app.core.loop import GcMonitor, LoopMonitor
from app.core.metrics import Metrics, Peers
from app.core.middleware import (
    CHANGES_PATH,
    GuardMiddleware,
    RequestContextMiddleware,
    Runtime,
)
from app.core.security import ApiKeys
from app.services.changes import ChangeService
from app.services.compat import CompatService, parse_document
from app.services.imports import ImportService
from app.services.joins import JoinService
from app.services.passwords import PasswordHasher
from app.services.query import QueryService
from app.schemas.builtin import schemas_of
from app.services.records import RecordService
from app.services.stats import StatsService
from app.services.tables import TableService
from app.services.work import Limits
from app.storage.aof import AppendOnlyLog, CorruptLog
from app.storage.base import JournalError, StoreBackend, StoreError, Unavailable
from app.storage.dbfile import DbFile
from app.storage.memory import MemoryStore
from app.storage.redis import RedisStore

log = structlog.get_logger("memdb")

DESCRIPTION = """
An in-memory database over HTTP: tables of JSON records with CRUD, bulk writes,
joins and dumps. Every error answers with one envelope:
`{"error": {"code", "message", "details", "request_id"}}`.
"""


def build_store(settings: Settings) -> StoreBackend:
    """The backend ``MEMDB_STORE`` names, with the built-in rules."""
    if settings.store == "redis":
        return RedisStore(
            url=settings.redis_url,
            cluster=settings.redis_cluster,
            prefix=settings.redis_prefix,
            pool_size=settings.redis_pool_size,
            timeout=settings.redis_timeout,
            wait_replicas=settings.redis_wait_replicas,
            max_records=settings.max_records,
            max_tables=settings.max_tables,
            rules=schemas_of(settings).rules,
            changes_retain=settings.changes_retain,
        )
    return MemoryStore(
        max_records=settings.max_records,
        max_tables=settings.max_tables,
        rules=schemas_of(settings).rules,
    )


def build_state(app: FastAPI, settings: Settings) -> ServiceState:
    """The store, the services and the middleware's runtime, as
    ``app.state.service`` for the routes and the middleware."""
    store = build_store(settings)
    schemas = schemas_of(settings)
    hasher = PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_kib=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
    )
    limits = Limits(budget=settings.query_budget, max_heavy=settings.max_heavy_requests)
    records = RecordService(
        store,
        hasher=hasher,
        max_bulk=settings.max_bulk,
        max_passwords=settings.max_passwords,
        limits=limits,
        schemas=schemas,
    )
    gc_monitor = GcMonitor()
    loop_monitor = LoopMonitor(gc_monitor)
    started = time.monotonic()
    service = ServiceState(
        settings=settings,
        started=started,
        store=store,
        limits=limits,
        services=Services(
            records=records,
            joins=JoinService(
                store, limits, max_rows=settings.max_join_rows, schemas=schemas
            ),
            tables=TableService(store, limits, schemas),
            queries=QueryService(
                store, limits, max_filters=settings.max_filters, schemas=schemas
            ),
            imports=ImportService(store, records),
            stats=StatsService(store),
        ),
        runtime=build_runtime(settings, started, limits, loop_monitor, gc_monitor),
        gc_monitor=gc_monitor,
        loop_monitor=loop_monitor,
        changes=ChangeService(
            store,
            max_subscribers=settings.max_subscribers,
            max_lag=settings.changes_max_lag,
            heartbeat_s=settings.changes_heartbeat_s,
            send_timeout_s=settings.changes_send_timeout_s,
        ),
    )
    metrics = service.runtime.metrics
    if metrics is not None:
        changes = service.changes
        metrics.followers = lambda: changes.followers
    if settings.json_server_file:
        service.compat = CompatService(
            store,
            records,
            service.services.imports,
            limits,
            dialect=settings.json_server_dialect,
        )
    app.state.service = service
    return service


async def load_store(app: MemDB, service: ServiceState) -> None:
    """Open the store; with the memory store, recover the log
    (``MEMDB_PERSISTENCE=aof``) and load ``MEMDB_SEED_FILE`` into an empty store;
    then declare the service ready. A damaged log or a seed file that cannot be
    loaded stops the service."""
    settings = service.settings
    backend = service.store
    problem = refusal(settings)
    if problem is not None:
        _fatal(app, service, problem)
        return
    try:
        await _open(service)
    except StoreError as exc:  # the store's own data breaks a rule (a unique index)
        _fatal(app, service, f"the store cannot be opened: {exc}")
        return
    fresh = True
    if settings.persistence == "aof" and isinstance(backend, MemoryStore):
        store = backend.engine
        aof = AppendOnlyLog(
            Path(settings.data_dir),
            fsync=settings.fsync,
            rewrite_percent=settings.aof_rewrite_percent,
            rewrite_min_bytes=settings.aof_rewrite_min_bytes,
        )
        service.aof = aof
        started = time.perf_counter()
        log.info("aof.loading", data_dir=settings.data_dir, fsync=settings.fsync)
        try:
            replayed = await anyio.to_thread.run_sync(
                lambda: aof.recover(store, progress=_progress)
            )
        except (CorruptLog, OSError) as exc:
            _fatal(
                app, service, f"the data directory cannot be loaded: {_describe(exc)}"
            )
            return
        try:
            normalised = await service.services.records.normalise_stored_emails()
        except DomainError as exc:
            _fatal(app, service, f"the data directory cannot be loaded: {exc.message}")
            return
        if normalised:
            log.info("users.emails_normalised", count=normalised)
        aof.open(store)
        aof.start()
        fresh = replayed == 0
        log.info(
            "aof.loaded",
            entries=replayed,
            records=store.total,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
    if isinstance(backend, RedisStore):
        fresh = sum(t.count for t in await backend.describe()) == 0
    if settings.json_server_file and isinstance(backend, MemoryStore):
        if not await load_json_server_file(app, service, backend):
            return
        fresh = False
    if settings.seed_file and fresh:
        if not await load_seed(app, service, settings.seed_file):
            return
    # the loaded records live as long as the service: keep the cycle collector
    # from walking them again and again (records are freed by refcount anyway)
    service.gc_monitor.loaded()
    if isinstance(backend, MemoryStore):
        backend.follow(settings.changes_retain, settings.changes_retain_bytes)
    service.runtime.ready = True


async def _open(service: ServiceState) -> None:
    """Open the store, waiting (not ready, the reason in ``/ready``) while it
    cannot be reached, and going on by itself once it can."""
    delay = 0.5
    while True:
        try:
            await service.store.open()
        except Unavailable as exc:
            service.runtime.load_error = f"the store cannot be reached: {exc}"
            log.warning("store.unavailable", error=str(exc), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        service.runtime.load_error = None
        return


async def load_json_server_file(
    app: MemDB, service: ServiceState, backend: MemoryStore
) -> bool:
    """``memdb serve``: load the db.json, then keep it in step with the store;
    a file that cannot be loaded stops the service."""
    settings = service.settings
    compat = service.compat
    assert compat is not None and settings.json_server_file is not None
    path = Path(settings.json_server_file)
    started = time.perf_counter()
    try:
        raw = await anyio.to_thread.run_sync(path.read_bytes)
        document = await anyio.to_thread.run_sync(parse_document, raw, path.suffix)
        counts = await compat.load(document, replace=True)
    except (OSError, DomainError, JournalError) as exc:
        _fatal(app, service, f"{path.name} cannot be served: {_describe(exc)}")
        return False
    dbfile = DbFile(
        path,
        fsync=settings.fsync,
        encode=compat.document,
        watch=settings.json_server_watch,
        reload=lambda raw: _reload(compat, raw, path.suffix),
    )
    dbfile.open(backend.engine)
    if compat.completed:  # the ids given to records that had none, kept
        await dbfile.save()
    dbfile.start()
    service.dbfile = dbfile
    log.info(
        "json_server.loaded",
        file=path.name,
        dialect=settings.json_server_dialect,
        resources=len(counts),
        records=sum(counts.values()),
        fsync=settings.fsync,
        watch=settings.json_server_watch,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )
    shadowed = sorted(set(counts) & owned(app))
    if shadowed:
        log.warning(
            "json_server.shadowed",
            resources=shadowed,
            message="these resources share a name with the service's own routes; "
            "reach them under /api/v1/data/",
        )
    return True


async def _reload(compat: CompatService, raw: bytes, suffix: str) -> bool:
    """The file, edited by someone, loaded again; True when records without an
    id were given one (then saved, so that they keep it)."""
    document = await anyio.to_thread.run_sync(parse_document, raw, suffix)
    await compat.load(document, replace=True)
    return compat.completed


def _progress(done: int, total: int) -> None:
    log.info("aof.progress", bytes_read=done, bytes_total=total)


def _fatal(app: MemDB, service: ServiceState, message: str) -> None:
    """Stay not ready with the reason, and stop the server when one runs us."""
    service.runtime.load_error = message
    service.fatal = True
    log.error("service.cannot_start", message=message)
    if app.stop_server is not None:
        app.stop_server()


async def load_seed(app: MemDB, service: ServiceState, path: str) -> bool:
    """Load ``MEMDB_SEED_FILE`` (db.json shape); when it cannot be loaded, stop
    the service with the reason (``_fatal``) and answer False."""
    services = service.services
    started = time.perf_counter()
    log.info("seed.loading", path=path)
    try:
        raw = await anyio.to_thread.run_sync(Path(path).read_bytes)
        plan = await anyio.to_thread.run_sync(services.imports.plan_bytes, raw)
        counts = await services.imports.apply(plan, mode="merge")
    except (OSError, DomainError, JournalError) as exc:
        log.error("seed.failed", path=path, error=_describe(exc))
        _fatal(app, service, f"the seed file could not be loaded: {_describe(exc)}")
        return False
    log.info(
        "seed.loaded",
        path=path,
        records=sum(counts.values()),
        tables=len(counts),
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
    )
    return True


def _describe(exc: Exception) -> str:
    if isinstance(exc, DomainError):
        first = exc.details[0] if exc.details else None
        where = (
            f" at {'.'.join(map(str, first['loc']))}: {first['msg']}" if first else ""
        )
        return f"{exc.message}{where}"
    if isinstance(exc, OSError):
        return f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc.strerror)
    return str(exc)


def build_runtime(
    settings: Settings,
    started: float,
    limits: Limits,
    loop_monitor: LoopMonitor,
    gc_monitor: GcMonitor,
) -> Runtime:
    """What the middleware reads on every request: limits, keys, metrics."""
    try:
        keys = ApiKeys(settings.api_keys)
    except ValueError as exc:
        log.error("security.bad_keys", message=str(exc))
        raise SystemExit(2) from None
    metrics = Metrics(
        started=started,
        work=limits.stats,
        loop=loop_monitor,
        gc_monitor=gc_monitor,
        max_tables=settings.metrics_max_tables,
    )
    shared = os.environ.get(WORKER_METRICS_ENV)
    if shared:  # one of several workers: counters are added up across them
        metrics.peers = Peers(shared, metrics)
    return Runtime(
        max_body_bytes=settings.max_body_bytes,
        max_query_bytes=settings.max_query_bytes,
        cors_origins=settings.cors_origins,
        keys=keys,
        metrics=metrics,
        access_log=AccessLog(structlog.get_logger("memdb.http").bind()),
    )


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document (built once), with the API key schemes when keys
    are configured."""
    if app.openapi_schema is None:
        service = service_of(app)
        keys = service is not None and bool(service.runtime.keys)
        compat_on = service is not None and service.compat is not None
        tags = TAGS + [JSON_SERVER_TAG] if compat_on else TAGS
        app.openapi_schema = build_openapi(app, keys=keys, tags=tags)
        if service is not None and service.compat is not None:
            app.openapi_schema["paths"].update(
                compat.openapi_paths(service.compat.dialect, keys=keys)
            )
    return app.openapi_schema


TAGS = [
    {"name": "records", "description": "Create, list, read, update and delete records"},
    {"name": "joins", "description": "Hash joins of two tables"},
    {"name": "dumps", "description": "Every record of a table or of the store"},
    {"name": "import and export", "description": "Load the db.json shape"},
    {"name": "tables", "description": "Tables, schemas and indexes"},
    {"name": "operations", "description": "Statistics and Prometheus metrics"},
    {"name": "health", "description": "Liveness and readiness"},
]


JSON_SERVER_TAG = {
    "name": "json-server",
    "description": "json-server's routes at the root (memdb serve db.json)",
}


# Set by ``python -m app`` for its workers: where they share their counters.
WORKER_METRICS_ENV = "MEMDB_WORKER_METRICS_DIR"
# Set by ``python -m app``: log lines leave in one write per loop turn.
BATCHED_LOGS_ENV = "MEMDB_BATCHED_LOGS"
# How long the start waits for the store to load before it serves requests.
STARTUP_WAIT_S = 1.0


class MemDB(FastAPI):
    """FastAPI, with the hottest routes answered ahead of its stack (ADR 0009)."""

    # set by ``python -m app``: ends the server (a data directory that cannot load)
    stop_server: Callable[[], None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["method"] == "HEAD":  # both doors answer it as its GET
                scope, send = as_get(scope, send)
            if await fastpath.serve(self, scope, receive, send):
                return
            if await compat.serve(self, scope, receive, send):
                return
            if scope["path"] == CHANGES_PATH:
                # a stream's events go straight to the server; its start
                # (status, headers) goes through the stack like any answer
                scope.setdefault("state", {})[DIRECT_SEND] = send
        await super().__call__(scope, receive, send)


def _on_server_exit(stop: Callable[[], None]) -> Callable[[], None]:
    """Under uvicorn (whose handlers take SIGTERM and SIGINT while it serves):
    call ``stop`` on the event loop as soon as the server is asked to stop, so
    that the change-feed streams end at once instead of holding the graceful
    shutdown open. Returns what puts the handlers back."""
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    for number in (signal.SIGTERM, signal.SIGINT):
        handler = signal.getsignal(number)
        if not isinstance(getattr(handler, "__self__", None), uvicorn.Server):
            continue
        previous[number] = handler

        def chained(sig: int, frame: Any, handler: Any = handler) -> None:
            loop.call_soon_threadsafe(stop)
            handler(sig, frame)

        signal.signal(number, chained)

    def restore() -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)

    return restore


def create_app(settings: Settings | None = None) -> MemDB:
    """A fresh app. Settings are read from the environment when the app starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        assert isinstance(app, MemDB)
        current = settings or Settings()
        batched = True if os.environ.get(BATCHED_LOGS_ENV) else None
        configure_logging(
            level=current.log_level, fmt=current.log_format, batched=batched
        )
        service = build_state(app, current)
        runtime = service.runtime
        log.info(
            "service.started",
            version=__version__,
            store=current.store,
            persistence=current.persistence,
            api_keys=bool(runtime.keys),
        )
        if not current.api_keys:
            log.warning(
                "security.open",
                message="MEMDB_API_KEYS is not set: the API is open to every client",
            )
        service.loop_monitor.start()
        service.gc_monitor.install()
        peers = runtime.metrics.peers if runtime.metrics is not None else None
        if peers is not None:
            peers.start()
        restore = _on_server_exit(service.changes.stopping.set)
        loading = asyncio.create_task(load_store(app, service))
        # a quick load (an empty store, a reachable Redis) is over before the
        # first request; a long one (a large log, a store out of reach) goes
        # on in the background while /health answers and /ready says 503
        await asyncio.wait({loading}, timeout=STARTUP_WAIT_S)
        yield
        restore()
        if not loading.done():
            loading.cancel()
            await asyncio.wait({loading})
        await service.loop_monitor.stop()
        service.gc_monitor.remove()
        if peers is not None:
            await peers.stop()
        runtime.access_log.flush()
        if service.dbfile is not None:
            await service.dbfile.close()
            log.info("json_server.saved", saves=service.dbfile.saves)
        if service.aof is not None:
            await service.aof.close()
            log.info("aof.closed", synced_bytes=service.aof.synced)
        await service.store.close()
        log.info("service.stopped")

    app = MemDB(
        title="memdb",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_tags=TAGS,
        generate_unique_id_function=operation_id,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(operations.router)
    app.include_router(ui.router)
    app.include_router(v1_router)
    install_docs(app)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    # the last added is the outermost: every answer, CORS preflights included,
    # passes through the request context (request id, headers, log, metrics)
    # and compression; refusals come from inside CORS, so browsers can read
    # them. The fast path applies the same pieces (MIDDLEWARE in its tests).
    app.add_middleware(GuardMiddleware)
    app.add_middleware(SettingsCORSMiddleware)
    app.add_middleware(CompressionMiddleware)
    app.add_middleware(RequestContextMiddleware)
    return app


app = create_app()
