"""The request context and the guard, for both front doors (ADR 0009).

* ``RequestContext``: one request's id, the headers added to its answer, its
  access line and metrics, and the last resort for what nothing else caught.
  ``RequestContextMiddleware`` (outermost) and the fast path both use it.
* ``guard()``: API keys, readiness, the query and body limits, the body's
  encoding; ``GuardMiddleware`` (inside CORS) and the fast path both ask it,
  and answer its domain error with the one error answer (``error_answer``).
  The guard also answers ``OPTIONS`` with the methods of the path.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import structlog
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.encoding import body_reader, body_refusal, method_of
from app.core.errors import (
    DomainError,
    Forbidden,
    InternalError,
    NotFound,
    NotReady,
    PayloadTooLarge,
    Unauthorized,
    UriTooLong,
)
from app.core.handlers import allowed_methods, error_answer
from app.core.http import request_headers, send_body
from app.core.logging import AccessLog
from app.core.metrics import Metrics
from app.core.security import WRITE_METHODS, ApiKeys, presented_key
from app.storage.base import SNAPSHOT_CURSOR

log = structlog.get_logger("memdb.http")

DEFAULT_MAX_BODY = 1024 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._:@/+=-]")
_NOSNIFF = (b"x-content-type-options", b"nosniff")
_API_CACHE = (b"cache-control", b"private, no-cache")


@dataclass
class Runtime:
    """What the middleware needs from the settings, built in the lifespan."""

    max_body_bytes: int = DEFAULT_MAX_BODY
    max_query_bytes: int = 8192
    keys: ApiKeys = field(default_factory=lambda: ApiKeys(""))
    metrics: Metrics | None = None
    warned_open: bool = False
    loopback_hosts: set[str] = field(default_factory=set)
    access_log: AccessLog = field(
        default_factory=lambda: AccessLog(structlog.get_logger("memdb.http"))
    )
    cors_origins: str = ""
    # the store is loaded; until then the API answers 503 with load_error
    ready: bool = False
    load_error: str | None = None


def runtime_of(app: Any) -> Runtime | None:
    """The runtime of the app's state (``app.state.service``), if built yet."""
    service = getattr(app.state, "service", None)
    runtime: Runtime | None = None if service is None else service.runtime
    return runtime


_PREFIX = os.urandom(10).hex()  # 20 hex digits; with the counter, 32 in all
_COUNTER = itertools.count(1)


def _new_request_id() -> str:
    """Unique per process without a random draw per request: a random prefix
    chosen at start, then a counter."""
    return f"{_PREFIX}{next(_COUNTER):012x}"


def sanitise_request_id(raw: str | None) -> str:
    """The client's id with anything unsafe for headers or logs removed, else a new one."""
    if raw:
        cleaned = _UNSAFE.sub("", raw)[:128]
        if cleaned:
            return cleaned
    return _new_request_id()


def response_extras(request_id: str, is_api: bool) -> list[tuple[bytes, bytes]]:
    """The headers every answer carries: its request id, ``nosniff``, and for the
    API, ``Cache-Control: private, no-cache``."""
    extra = [(b"x-request-id", request_id.encode()), _NOSNIFF]
    if is_api:
        extra.append(_API_CACHE)
    return extra


INTERNAL_ERROR = "an unexpected error occurred; it has been logged"
# the status nginx logs for a client that closed the connection first
ABORTED = 499


class RequestContext:
    """One request as the service accounts for it: its id, the headers every
    answer carries, and, when it ends, its metrics and access line."""

    __slots__ = ("runtime", "request_id", "method", "started", "extras")

    def __init__(self, scope: Scope, headers: dict[bytes, bytes], runtime: Runtime):
        self.started = time.perf_counter()
        self.runtime = runtime
        SNAPSHOT_CURSOR.set(None)  # set by the store's read, if the answer has one
        self.method = method_of(scope)
        self.request_id = sanitise_request_id(text(headers.get(b"x-request-id")))
        self.extras = response_extras(
            self.request_id, scope["path"].startswith("/api/")
        )

    def finish(self, route: str, status: int) -> None:
        """Count the request in the metrics and write its access line."""
        seconds = time.perf_counter() - self.started
        runtime = self.runtime
        if runtime.metrics is not None:
            runtime.metrics.observe(self.method, route, status, seconds)
        runtime.access_log(
            self.method, route, status, round(seconds * 1000, 3), self.request_id
        )

    def failed(self, exc: Exception, route: str) -> tuple[int, bytes, list[Header]]:
        """The last resort: the error logged by its type and place (never a
        trace), and the 500 to answer with."""
        log.error(
            "request.failed",
            request_id=self.request_id,
            method=self.method,
            route=route,
            error_type=type(exc).__name__,
            where=_where(exc),
        )
        return error_answer(InternalError(INTERNAL_ERROR), self.request_id)

    def aborted(self, route: str) -> None:
        """The client went away before its request was read whole: not an error
        of the service, so logged and counted as 499, never as a 5xx."""
        log.info(
            "request.aborted",
            request_id=self.request_id,
            method=self.method,
            route=route,
        )
        self.finish(route, ABORTED)


Header = tuple[bytes, bytes]


class RequestContextMiddleware:
    """Request id in and out, security headers, metrics, the access log and the
    last-resort 500 (keys, readiness and the body limit are the guard's)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        runtime = runtime_of(scope["app"]) or Runtime()
        headers = dict(scope["headers"])
        context = RequestContext(scope, headers, runtime)
        request_state = scope.setdefault("state", {})
        request_state["request_id"] = context.request_id
        request_state["headers"] = headers  # the inner layers read it, not rebuild it
        extra = context.extras
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except ClientDisconnect:
            context.aborted(_route(scope))
            return
        except Exception as exc:  # the last resort: never a stack trace to the client
            answer = context.failed(exc, _route(scope))
            if not response_started:
                await send_body(send_wrapper, *answer)
        context.finish(_route(scope), status)


class GuardMiddleware:
    """API keys, the readiness gate, the body's size and encoding, and the
    answer to ``OPTIONS``. It sits inside the CORS middleware, so that a
    browser can read the envelope of a refusal."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        runtime = runtime_of(scope["app"]) or Runtime()
        headers = request_headers(scope)
        request_id = scope["state"]["request_id"]
        if scope["method"] == "OPTIONS":
            await send_body(send, *_options(scope, request_id))
            return
        refused = guard(scope, headers, runtime)
        if refused is None:
            await self.app(
                scope, body_reader(receive, headers, runtime.max_body_bytes), send
            )
            return
        await send_body(send, *error_answer(refused, request_id))


def _options(scope: Scope, request_id: str) -> tuple[int, bytes, list[Header]]:
    """``OPTIONS``: 204 with the methods the path answers (a CORS preflight
    that reaches here has no allowed origin: it gets the same)."""
    methods = allowed_methods(scope["app"].router.routes, scope["path"])
    if not methods:
        return error_answer(NotFound("no such route"), request_id)
    return 204, b"", [(b"allow", ", ".join(methods).encode())]


def guard(
    scope: Scope,
    headers: dict[bytes, bytes],
    runtime: Runtime,
    *,
    protected: bool = False,
) -> DomainError | None:
    """Why the request is refused before it reaches a route, if it is
    (``protected``: a route of the data outside ``/api/``, json-server's)."""
    path: str = scope["path"]
    is_api = protected or path.startswith("/api/")
    if runtime.keys and (is_api or path == "/metrics"):
        presented = presented_key(
            text(headers.get(b"authorization")), text(headers.get(b"x-api-key"))
        )
        if presented is None and path == CHANGES_PATH:
            presented = _query_key(scope)
        role = runtime.keys.role(presented)
        if role is None:
            return Unauthorized(
                "an API key is required: Authorization: Bearer <key> or X-API-Key",
                headers=[("www-authenticate", 'Bearer realm="memdb"')],
            )
        if role == "ro" and scope["method"] in WRITE_METHODS:
            return Forbidden("this API key is read-only")
    elif not runtime.keys and not runtime.warned_open:
        _warn_if_exposed(scope, runtime)
    if is_api and not runtime.ready:
        return NotReady(runtime.load_error or "the store is still loading")
    if is_api and len(scope["query_string"]) > runtime.max_query_bytes:
        return UriTooLong(
            f"the query string is longer than {runtime.max_query_bytes} bytes"
        )
    length = text(headers.get(b"content-length"))
    if length is not None and length.isdigit() and int(length) > runtime.max_body_bytes:
        return PayloadTooLarge(
            f"the body is larger than {runtime.max_body_bytes} bytes",
            headers=[("connection", "close")],
        )
    return body_refusal(headers)


# A browser's EventSource cannot send headers: the change feed also takes the
# key as ``?key=`` (only there: a key in a URL can end up in logs and history).
CHANGES_PATH = "/api/v1/changes"


def _query_key(scope: Scope) -> str | None:
    query: str = scope["query_string"].decode("latin-1")
    for name, value in parse_qsl(query):
        if name == "key" and value:
            return str(value)
    return None


def _warn_if_exposed(scope: Scope, runtime: Runtime) -> None:
    """Once: warn when the open service answers on an address beyond loopback."""
    server = scope.get("server")
    if not server or server[0] in runtime.loopback_hosts:
        return
    try:
        loopback = ipaddress.ip_address(server[0]).is_loopback
    except ValueError:
        loopback = server[0] == "localhost"
    if loopback:
        runtime.loopback_hosts.add(server[0])
    else:
        runtime.warned_open = True
        log.warning(
            "security.open_network",
            address=str(server[0]),
            message="the API is open (no MEMDB_API_KEYS) on a non-loopback address",
        )


def _where(exc: BaseException) -> str:
    """The innermost frame that raised, as ``file.py:line in function`` (no trace)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown"
    last = frames[-1]
    return f"{os.path.basename(last.filename)}:{last.lineno} in {last.name}"


def text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _route(scope: Scope) -> str:
    """The route template (``/api/v1/data/{table}``), never the raw path of a request."""
    path = getattr(scope.get("route"), "path", None)
    if path:
        return str(path)
    if "endpoint" in scope:
        # a mounted app (the docs assets) is labelled by its mount point; the
        # docs pages themselves are a fixed set of paths
        return str(scope.get("root_path") or scope["path"])
    return "unmatched"
