"""structlog, configured once when the app is built: JSON lines or console.

Every line goes to standard output through one ``LineWriter``. Under the server
(``python -m app``) it batches: the lines of one turn of the event loop leave in
one write, made as soon as that turn is over, instead of one write a request.
Warnings, errors and lines logged outside the event loop's thread are written
at once, after whatever lines are still pending, which keeps their order.

The access lines (``AccessLog``) go one step further under the server: a
request leaves its five fields behind, and the structlog events of one loop turn
are made together when the turn is over. Rendering them in one tight loop costs
a fraction of rendering each in the middle of its request. So an access line
comes after the other lines logged in the same turn (a request's
``request.failed`` comes before its access line either way), and its timestamp
is when it is made, at most one loop turn after the answer.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import threading
from contextvars import ContextVar
from typing import Any, Iterable

import orjson
import structlog
from structlog.contextvars import get_contextvars

from app.core.clock import RFC3339

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class LineWriter:
    """structlog's output and the standard library's handler: lines to stdout."""

    def __init__(self) -> None:
        self.batched = False
        self.stream: Any = sys.stdout
        self._lock = threading.Lock()
        self._pending: list[str] = []

    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The running event loop of this thread when batching, else None."""
        if not self.batched:
            return None
        try:
            return asyncio.get_running_loop()
        except RuntimeError:
            return None

    def msg(self, message: str) -> None:
        loop = self.loop()
        if loop is not None:
            with self._lock:
                self._pending.append(message)
                first = len(self._pending) == 1
            if first:
                loop.call_soon(self.flush)
            return
        self.urgent(message)

    def urgent(self, message: str) -> None:
        """Written now, after the lines still pending."""
        with self._lock:
            self._pending.append(message)
            self._write_pending()

    def flush(self) -> None:
        with self._lock:
            self._write_pending()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        text = "\n".join(self._pending) + "\n"
        self._pending = []
        self.stream.write(text)
        self.stream.flush()

    def extend(self, lines: Iterable[str]) -> None:
        """Lines made by the caller, written with the next flush."""
        with self._lock:
            self._pending.extend(lines)

    debug = info = msg
    warning = warn = error = err = critical = exception = fatal = failure = urgent


OUTPUT = LineWriter()
atexit.register(OUTPUT.flush)

_Access = tuple[str, str, int, float, str]


class AccessLog:
    """One ``http.request`` event a request: method, route template, status,
    duration_ms and request_id, through the configured structlog processors."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger
        self._pending: list[_Access] = []

    def __call__(
        self, method: str, route: str, status: int, duration_ms: float, request_id: str
    ) -> None:
        loop = OUTPUT.loop()
        if loop is not None:
            self._pending.append((method, route, status, duration_ms, request_id))
            if len(self._pending) == 1:
                loop.call_soon(self.flush)
            return
        self._emit((method, route, status, duration_ms, request_id))

    def flush(self) -> None:
        """Make the pending events and write them (the end of a loop turn)."""
        pending, self._pending = self._pending, []
        if RENDER.plain_json and RENDER.info and not get_contextvars():
            OUTPUT.extend(_access_line(entry) for entry in pending)
        else:
            for entry in pending:
                self._emit(entry)
        OUTPUT.flush()

    def _emit(self, entry: _Access) -> None:
        method, route, status, duration_ms, request_id = entry
        self.logger.info(
            "http.request",
            method=method,
            route=route,
            status=status,
            duration_ms=duration_ms,
            request_id=request_id,
        )


# A response the service leaves unfinished on purpose (a change-feed stream
# whose client stopped reading is let go: its last write could not be made).
LEFT_UNFINISHED: ContextVar[bool] = ContextVar("memdb_left_unfinished", default=False)
_UNFINISHED = "ASGI callable returned without completing response."


class _Handler(logging.Handler):
    """The standard library's records (uvicorn's) on the same writer; uvicorn's
    error line for a response left unfinished on purpose is not an error."""

    def emit(self, record: logging.LogRecord) -> None:
        if LEFT_UNFINISHED.get() and record.msg == _UNFINISHED:
            return
        try:
            OUTPUT.urgent(self.format(record))
        except Exception:  # pragma: no cover - the logging module's own convention
            self.handleError(record)


class _Timestamp:
    """``timestamp`` as RFC 3339 UTC with microseconds, like structlog's
    ``TimeStamper(fmt="iso", utc=True)``."""

    def __call__(self, _: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        event["timestamp"] = RFC3339.now()
        return event


class _Rendering:
    """How lines are rendered, as ``configure_logging`` last set it."""

    plain_json = False  # JSON lines through the default processors
    info = True  # info lines are written
    stamp = _Timestamp()


RENDER = _Rendering()


def _access_line(entry: _Access) -> str:
    """The access line structlog's JSON renderer makes, made directly: the same
    keys in the same order (the fields, then event, level and timestamp)."""
    method, route, status, duration_ms, request_id = entry
    return orjson.dumps(
        {
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": duration_ms,
            "request_id": request_id,
            "event": "http.request",
            "level": "info",
            "timestamp": RFC3339.now(),
        }
    ).decode()


def _dumps(event: dict[str, Any], **_: Any) -> str:
    return orjson.dumps(event, default=str).decode()


def configure_logging(
    *, level: str = "info", fmt: str = "json", batched: bool | None = None
) -> None:
    """Route structlog and the standard library (uvicorn) to stdout, one line an
    event; ``batched`` (the server's choice) groups the writes of one loop turn."""
    OUTPUT.flush()
    OUTPUT.stream = sys.stdout  # the stdout of the moment, as ``print`` would
    if batched is not None:
        OUTPUT.batched = batched
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        RENDER.stamp,
    ]
    RENDER.plain_json = fmt == "json"
    RENDER.info = _LEVELS[level] <= _LEVELS["info"]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer(serializer=_dumps)
    )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *args: OUTPUT,
        cache_logger_on_first_use=False,
    )
    handler = _Handler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
