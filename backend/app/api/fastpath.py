"""The hottest routes answered in pure ASGI, in one frame ahead of the whole stack.

``GET /api/v1/data/{table}/{record_id}`` and ``POST /api/v1/data/{table}`` (with
no query string) and the list ``GET /api/v1/data/{table}`` are most of a typical
load. Routing, dependency solving and a stack of middleware frames cost more
than the work itself, so ``serve`` recognises these requests by their path and
answers them in one frame: it applies the request context (request id, security
headers, metrics, the access line, the last-resort 500) and the guard (keys,
readiness, body limit) with the same functions the middleware uses, and calls
the same services the routers call, with the same answers.

It passes on, to the full stack, every request it does not recognise and every
one that something else has to answer: a browser's request (an ``Origin``
header, which the CORS middleware answers), a refusal of the guard (no key, a
read-only key writing, not ready yet, a declared body over the limit), and any
request before the lifespan has built the runtime.
"""

from __future__ import annotations

import re
import time
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from starlette.responses import Response

from app.api.deps import Services
from app.api.paging import list_body, list_headers
from app.api.streaming import answer
from app.api.v1.data import envelope_data
from app.core.errors import DomainError, InternalError, PayloadTooLarge
from app.core.handlers import error_body, persistence_error
from app.core.http import (
    check_json_type,
    etag_matches,
    etag_of,
    parse_json_off_loop,
    send_body,
)
from app.core.middleware import (
    ABORTED,
    INTERNAL_ERROR,
    Runtime,
    account,
    refusal,
    report_abort,
    report_failure,
    response_extras,
    sanitise_request_id,
    text,
)
from app.storage.memory import JournalError

PREFIX = "/api/v1/data/"
READ = "/api/v1/data/{table}/{record_id}"
LIST = "/api/v1/data/{table}"
CREATE = "/api/v1/data/{table}"
_TABLE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_JSON = (b"content-type", b"application/json")

Headers = dict[bytes, bytes]
Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]
# a handler answers with its parts, or with a response to run (a long list)
Result = Answer | Response


class Call:
    """What a handler gets: the request and the services."""

    __slots__ = ("scope", "receive", "services", "runtime", "table", "key")

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        services: Services,
        runtime: Runtime,
        table: str,
        key: str,
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.services = services
        self.runtime = runtime
        self.table = table
        self.key = key

    def header(self, name: bytes) -> str | None:
        """The first value of a request header, as the routes read it."""
        value: bytes
        for key, value in self.scope["headers"]:
            if key == name:
                return value.decode("latin-1")
        return None


Handler = Callable[[Call], Awaitable[Result]]


def match(scope: Scope) -> tuple[Handler, str, str, str] | None:
    """The handler, route template, table and record id of a request it answers."""
    path: str = scope["path"]
    if not path.startswith(PREFIX):
        return None
    parts = path[len(PREFIX) :].split("/")
    method, table = scope["method"], parts[0]
    if not _TABLE.fullmatch(table):
        return None
    plain = not scope["query_string"]
    if method == "GET" and len(parts) == 1:
        return _list, LIST, table, ""
    if method == "GET" and len(parts) == 2 and parts[1] and plain:
        return _read, READ, table, parts[1]
    if method == "POST" and len(parts) == 1 and plain:
        return _create, CREATE, table, ""
    return None


async def serve(app: Any, scope: Scope, receive: Receive, send: Send) -> bool:
    """Answer the request here and return True, or return False to pass it on."""
    started = time.perf_counter()
    found = match(scope)
    if found is None:
        return False
    headers: Headers = dict(scope["headers"])
    if b"origin" in headers:
        return False
    state = app.state
    runtime: Runtime | None = getattr(state, "runtime", None)
    if runtime is None or refusal(scope, headers, state, runtime, True) is not None:
        return False
    handler, route, table, key = found
    method: str = scope["method"]
    request_id = sanitise_request_id(text(headers.get(b"x-request-id")))
    call = Call(scope, receive, state.services, runtime, table, key)
    response: Response | None = None
    try:
        result = await handler(call)
        if isinstance(result, Response):
            response = result
            status, body, out = response.status_code, b"", list[tuple[bytes, bytes]]()
        else:
            status, body, out = result
    except DomainError as exc:
        status, body, out = _error(exc, request_id)
    except JournalError as exc:
        status, body, out = _error(persistence_error(exc), request_id)
    except ClientDisconnect:
        report_abort(request_id, method, route)
        account(runtime, method, route, ABORTED, started, request_id)
        return True
    except Exception as exc:  # the last resort: never a stack trace to the client
        report_failure(exc, request_id, method, route)
        status, body, out = _error(InternalError(INTERNAL_ERROR), request_id)
    out.extend(response_extras(request_id, True))
    try:
        if response is not None:
            response.raw_headers.extend(out)
            await response(scope, receive, send)
        elif status == 304:  # no body, and no length (RFC 9110 section 15.4.5)
            await send({"type": "http.response.start", "status": 304, "headers": out})
            await send({"type": "http.response.body", "body": b""})
        else:
            await send_body(send, status, body, out)
    except Exception as exc:  # the answer could not be sent: logged, not raised
        report_failure(exc, request_id, method, route)
    account(runtime, method, route, status, started, request_id)
    return True


def _error(exc: DomainError, request_id: str) -> Answer:
    body = error_body(
        code=exc.code,
        message=exc.message,
        request_id=request_id,
        details=exc.details,
    )
    more = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers]
    return exc.status_code, body, [_JSON, *more]


async def _read(call: Call) -> Answer:
    record = await call.services.records.read_record(call.table, call.key)
    body = orjson.dumps(record)
    etag = etag_of(body)
    wanted = call.header(b"if-none-match")
    if wanted is not None and etag_matches(wanted, etag):
        return 304, b"", [(b"etag", etag.encode())]
    return 200, body, [_JSON, (b"etag", etag.encode())]


async def _list(call: Call) -> Result:
    scope = call.scope
    params = query_params(scope["query_string"].decode("latin-1"))
    queries = call.services.queries
    page = await queries.list_records(call.table, queries.parse(params))
    headers = list_headers(scope["path"], params, page)
    body = list_body(page)
    if not isinstance(body, bytes):
        return await answer(body, queries.limits.work(), headers=headers)
    out = [_JSON]
    out += [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()]
    return 200, body, out


def query_params(query: str) -> list[tuple[str, str]]:
    """``parse_qsl(query, keep_blank_values=True)``, without its decoding work
    when there is nothing to decode."""
    if "%" in query or "+" in query:
        return parse_qsl(query, keep_blank_values=True)
    pairs = []
    for part in query.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((name, value))
    return pairs


async def _create(call: Call) -> Answer:
    content_type = call.header(b"content-type") or ""
    check_json_type(content_type)
    raw = await _body(call.receive, call.runtime.max_body_bytes)
    data = envelope_data(await parse_json_off_loop(content_type, raw))
    records = call.services.records
    weight = len(raw)
    if isinstance(data, list):
        created = await records.create_records(
            call.table, data, bulk=True, weight=weight
        )
        body = orjson.dumps({"items": created, "count": len(created)})
        return 201, body, [_JSON]
    (record,) = await records.create_records(
        call.table, [data], bulk=False, weight=weight
    )
    body = orjson.dumps(record)
    location = f"{PREFIX}{call.table}/{record['id']}".encode()
    return (
        201,
        body,
        [_JSON, (b"etag", etag_of(body).encode()), (b"location", location)],
    )


async def _body(receive: Receive, limit: int) -> bytes:
    """The whole body, refused once it passes the limit while it streams in."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()  # a part of a body is never taken for all of it
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
