"""``python -m app``: serve the app with uvicorn (uvloop, httptools, each answer
written in one system call: ``app.core.protocol``): one worker,
or ``MEMDB_WORKERS`` worker processes on one port when the store is Redis.

Logging is configured before uvicorn starts, so every line is structured from
the first one. SIGTERM and SIGINT stop the server gracefully (in-flight requests
finish, the lifespan's shutdown runs, the log is fsynced) and the process then
exits with status 0; a data directory that cannot be loaded exits with 1, and
settings that cannot run together (several workers over the memory store, the
append-only log with Redis) stop it at once with status 2 and the reason.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
from typing import Sequence

import structlog
import uvicorn
from pydantic import ValidationError
from uvicorn.supervisors import Multiprocess

from app.api.state import service_of
from app.core.config import Settings, refusal, setting_errors
from app.core.logging import OUTPUT, configure_logging
from app.core.protocol import HttpProtocol, ServerConfig
from app.main import BATCHED_LOGS_ENV, WORKER_METRICS_ENV
from app.main import app as asgi


def _ignore(signum: int, frame: object) -> None:
    """Installed under uvicorn's own handlers: uvicorn re-raises the signal that
    stopped it once it is done, and this turns that into a normal exit."""


def build_config(argv: Sequence[str] | None = None) -> ServerConfig:
    parser = argparse.ArgumentParser(prog="python -m app", description="Serve memdb.")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=os.environ.get("PORT", "8000"))
    args = parser.parse_args(argv)
    return ServerConfig(
        "app.main:app",
        host=args.host,
        port=args.port,
        workers=1,
        loop="uvloop",
        http=HttpProtocol,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=15,
        server_header=False,
        # nothing the service answers or logs uses the client's address, and its
        # links are paths: X-Forwarded-* headers are not read
        proxy_headers=False,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = build_config(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        configure_logging(level="info", fmt="json", batched=False)
        refused = "; ".join(setting_errors(exc))
        structlog.get_logger("memdb").error("service.cannot_start", message=refused)
        OUTPUT.flush()
        return 2
    configure_logging(level=settings.log_level, fmt=settings.log_format, batched=True)
    problem = refusal(settings)
    if problem is not None:
        structlog.get_logger("memdb").error("service.cannot_start", message=problem)
        OUTPUT.flush()
        return 2
    config.header_timeout = settings.header_timeout_s
    config.body_timeout = settings.body_timeout_s
    os.environ[BATCHED_LOGS_ENV] = "1"
    if settings.workers > 1:
        return serve_workers(config, settings.workers)
    signal.signal(signal.SIGTERM, _ignore)
    signal.signal(signal.SIGINT, _ignore)
    server = uvicorn.Server(config)
    # The same app object uvicorn imports from "app.main:app"; a store that
    # cannot be loaded (a damaged log) asks the server to stop.
    asgi.stop_server = lambda: setattr(server, "should_exit", True)
    try:
        server.run()
    finally:
        OUTPUT.flush()
    service = service_of(asgi)
    return 1 if service is not None and service.fatal else 0


def serve_workers(config: uvicorn.Config, workers: int) -> int:
    """``workers`` uvicorn processes on one socket (uvicorn's supervisor
    restarts one that dies), sharing their request counters in a directory of
    this run's own."""
    with tempfile.TemporaryDirectory(prefix="memdb-workers-") as shared:
        os.environ[WORKER_METRICS_ENV] = shared
        config.workers = workers
        sock = config.bind_socket()
        try:
            Multiprocess(config, sockets=[sock]).run()
        finally:
            OUTPUT.flush()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
