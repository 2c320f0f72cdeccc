"""Pure ASGI middleware on the hot path, in two frames around CORS:

* ``RequestContextMiddleware`` (outermost): request id, security headers,
  metrics, the access log and the last-resort 500;
* ``GuardMiddleware`` (inside CORS): API keys, readiness and the body size limit.
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

import structlog
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import PayloadTooLarge
from app.core.handlers import error_body
from app.core.http import request_headers, send_body
from app.core.logging import AccessLog
from app.core.metrics import Metrics
from app.core.security import WRITE_METHODS, ApiKeys, presented_key

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


def account(
    runtime: Runtime,
    method: str,
    route: str,
    status: int,
    started: float,
    request_id: str,
) -> None:
    """Count the request in the metrics and write its access line."""
    seconds = time.perf_counter() - started
    if runtime.metrics is not None:
        runtime.metrics.observe(method, route, status, seconds)
    runtime.access_log(method, route, status, round(seconds * 1000, 3), request_id)


def report_failure(exc: Exception, request_id: str, method: str, route: str) -> None:
    """The log line of an unexpected error: its type and where, never a trace."""
    log.error(
        "request.failed",
        request_id=request_id,
        method=method,
        route=route,
        error_type=type(exc).__name__,
        where=_where(exc),
    )


def report_abort(request_id: str, method: str, route: str) -> None:
    """The client went away before its request was read whole: not an error
    of the service, so logged and counted as 499, never as a 5xx."""
    log.info("request.aborted", request_id=request_id, method=method, route=route)


INTERNAL_ERROR = "an unexpected error occurred; it has been logged"
# the status nginx logs for a client that closed the connection first
ABORTED = 499


class RequestContextMiddleware:
    """Request id in and out, security headers, metrics, the access log and the
    last-resort 500 (keys, readiness and the body limit are the guard's)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope["app"].state
        runtime: Runtime = getattr(state, "runtime", None) or Runtime()
        headers = dict(scope["headers"])
        request_id = sanitise_request_id(text(headers.get(b"x-request-id")))
        request_state = scope.setdefault("state", {})
        request_state["request_id"] = request_id
        request_state["headers"] = headers  # the inner layers read it, not rebuild it
        extra = response_extras(request_id, scope["path"].startswith("/api/"))
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
            status = ABORTED
            report_abort(request_id, scope["method"], _route(scope))
        except Exception as exc:  # the last resort: never a stack trace to the client
            report_failure(exc, request_id, scope["method"], _route(scope))
            if not response_started:
                await _send_error(
                    send_wrapper,
                    status=500,
                    code="internal_error",
                    message=INTERNAL_ERROR,
                    request_id=request_id,
                )
        account(runtime, scope["method"], _route(scope), status, started, request_id)


class GuardMiddleware:
    """API keys, the readiness gate and the body size limit. It sits inside the
    CORS middleware, so that a browser can read the envelope of a refusal."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        runtime: Runtime = getattr(state, "runtime", None) or Runtime()
        headers = request_headers(scope)
        is_api = scope["path"].startswith("/api/")
        refused = refusal(scope, headers, state, runtime, is_api)
        if refused is None:
            await self.app(scope, _limited(receive, runtime.max_body_bytes), send)
            return
        code, status_code, message, more = refused
        await _send_error(
            send,
            status=status_code,
            code=code,
            message=message,
            request_id=scope["state"]["request_id"],
            headers=more,
        )


def refusal(
    scope: Scope,
    headers: dict[bytes, bytes],
    state: Any,
    runtime: Runtime,
    is_api: bool,
) -> tuple[str, int, str, list[tuple[bytes, bytes]]] | None:
    """Why the request is answered here without reaching a route, if it is."""
    path: str = scope["path"]
    if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
        return None  # a CORS preflight carries no key; the CORS middleware answers
    if runtime.keys and (is_api or path == "/metrics"):
        role = runtime.keys.role(
            presented_key(
                text(headers.get(b"authorization")), text(headers.get(b"x-api-key"))
            )
        )
        if role is None:
            return (
                "unauthorized",
                401,
                "an API key is required: Authorization: Bearer <key> or X-API-Key",
                [(b"www-authenticate", b'Bearer realm="memdb"')],
            )
        if role == "ro" and scope["method"] in WRITE_METHODS:
            return ("forbidden", 403, "this API key is read-only", [])
    elif not runtime.keys and not runtime.warned_open:
        _warn_if_exposed(scope, runtime)
    if is_api and not getattr(state, "ready", False):
        message = getattr(state, "load_error", None) or "the store is still loading"
        return ("not_ready", 503, message, [])
    if is_api and len(scope["query_string"]) > runtime.max_query_bytes:
        message = f"the query string is longer than {runtime.max_query_bytes} bytes"
        return ("uri_too_long", 414, message, [])
    length = text(headers.get(b"content-length"))
    if length is not None and length.isdigit() and int(length) > runtime.max_body_bytes:
        message = f"the body is larger than {runtime.max_body_bytes} bytes"
        return ("payload_too_large", 413, message, [(b"connection", b"close")])
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


def _limited(receive: Receive, limit: int) -> Receive:
    """Count the body as it streams in; stop reading once it passes the limit."""
    received = 0

    async def wrapper() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        return message

    return wrapper


async def _send_error(
    send: Send,
    *,
    status: int,
    code: str,
    message: str,
    request_id: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = error_body(code=code, message=message, request_id=request_id)
    json_type = (b"content-type", b"application/json")
    await send_body(send, status, body, [json_type, *(headers or ())])
