"""The hottest routes answered in pure ASGI, in one frame ahead of the whole stack.

``GET /api/v1/data/{table}/{record_id}``, ``POST /api/v1/data/{table}``,
``PUT`` and ``PATCH /api/v1/data/{table}/{record_id}`` (with no query string)
and the list ``GET /api/v1/data/{table}`` are most of a typical load. Routing,
dependency solving and a stack of middleware frames cost more than the work
itself, so ``serve`` recognises these requests by their path and
answers them in one frame: it applies the request context (``RequestContext``:
request id, added headers, metrics, the access line, the last-resort 500), the
guard (``guard()``: keys, readiness, the body's size and encoding), the one
error answer (``error_answer``) and compression (``CompressionMiddleware``) that the
middleware applies, and calls the same services the routers call, with the
same answers.

It passes on, to the full stack, every request it does not recognise and every
one that something else has to answer: a browser's request (an ``Origin``
header, which the CORS middleware answers), a refusal of the guard (no key, a
read-only key writing, not ready yet, a declared body over the limit), and any
request before the lifespan has built the runtime.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.api.answers import (
    CREATE,
    DATA,
    LIST,
    READ,
    Answer,
    Result,
    created_answer,
    envelope_data,
    list_answer,
    read_answer,
    record_answer,
)
from app.api.deps import Services
from app.api.state import service_of
from app.core.encoding import (
    COMPRESS_MIN_BYTES,
    CompressionMiddleware,
    accepts_gzip,
    body_reader,
)
from app.core.errors import DomainError
from app.core.etags import joined
from app.core.handlers import error_answer, persistence_error
from app.core.http import send_body
from app.core.jsonbody import (
    MERGE_PATCH,
    check_json_type,
    media_type,
    parse_json_off_loop,
)
from app.core.middleware import RequestContext, Runtime, guard
from app.services.validation import TABLE_NAME
from app.storage.memory import JournalError

PREFIX = DATA + "/"
PATH_PARAMS = ("table", "record_id")

Headers = dict[bytes, bytes]


class Call:
    """What a handler gets: the request and the services."""

    __slots__ = ("scope", "receive", "services", "runtime", "table", "key", "headers")

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        services: Services,
        runtime: Runtime,
        table: str,
        key: str,
        headers: Headers,
    ) -> None:
        self.scope = scope
        self.headers = headers
        self.receive = receive
        self.services = services
        self.runtime = runtime
        self.table = table
        self.key = key

    def conditions(self) -> tuple[str | None, str | None]:
        """``If-Match`` and ``If-None-Match``, each line of either joined."""
        if b"if-match" not in self.headers and b"if-none-match" not in self.headers:
            return None, None
        matches: list[str] = []
        none_match: list[str] = []
        for key, value in self.scope["headers"]:
            if key == b"if-match":
                matches.append(value.decode("latin-1"))
            elif key == b"if-none-match":
                none_match.append(value.decode("latin-1"))
        return joined(matches), joined(none_match)

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
    if not TABLE_NAME.fullmatch(table):
        return None
    plain = not scope["query_string"]
    if method == "GET" and len(parts) == 1:
        return _list, LIST, table, ""
    if method == "GET" and len(parts) == 2 and parts[1] and plain:
        return _read, READ, table, parts[1]
    if method == "POST" and len(parts) == 1 and plain:
        return _create, CREATE, table, ""
    if method in ("PUT", "PATCH") and len(parts) == 2 and parts[1] and plain:
        return _update, READ, table, parts[1]
    return None


async def serve(app: Any, scope: Scope, receive: Receive, send: Send) -> bool:
    """Answer the request here and return True, or return False to pass it on."""
    found = match(scope)
    if found is None:
        return False
    headers: Headers = dict(scope["headers"])
    if b"origin" in headers:
        return False
    service = service_of(app)
    if service is None:
        return False
    runtime = service.runtime
    if guard(scope, headers, runtime) is not None:
        return False
    handler, route, table, key = found
    context = RequestContext(scope, headers, runtime)
    call = Call(scope, receive, service.services, runtime, table, key, headers)
    response: Response | None = None
    try:
        result = await handler(call)
        if isinstance(result, Response):
            response = result
            status, body, out = response.status_code, b"", list[tuple[bytes, bytes]]()
        else:
            status, body, out = result
    except DomainError as exc:
        status, body, out = error_answer(exc, context.request_id, PATH_PARAMS)
    except JournalError as exc:
        status, body, out = error_answer(persistence_error(exc), context.request_id)
    except ClientDisconnect:
        context.aborted(route)
        return True
    except Exception as exc:  # the last resort: never a stack trace to the client
        status, body, out = context.failed(exc, route)
    out.extend(context.extras)

    async def emit(scope: Scope, receive: Receive, send: Send) -> None:
        if response is not None:
            response.raw_headers.extend(out)
            await response(scope, receive, send)
        elif status == 304:  # no body, and no length (RFC 9110 section 15.4.5)
            await send({"type": "http.response.start", "status": 304, "headers": out})
            await send({"type": "http.response.body", "body": b""})
        else:
            await send_body(send, status, body, out)

    try:
        if response is None and len(body) < COMPRESS_MIN_BYTES:
            # what compression would send as it is, sent without its frames
            await emit(scope, receive, send)
        elif accepts_gzip(headers):
            await CompressionMiddleware(emit)(scope, receive, send)
        else:
            await emit(scope, receive, send)
    except Exception as exc:  # the answer could not be sent: logged, not raised
        context.failed(exc, route)
    context.finish(route, status)
    return True


async def _read(call: Call) -> Answer:
    record = await call.services.records.read_record(call.table, call.key)
    if_match, if_none_match = call.conditions()
    return read_answer(record, if_none_match, if_match)


async def _list(call: Call) -> Result:
    scope = call.scope
    params = query_params(scope["query_string"].decode("latin-1"))
    queries = call.services.queries
    page = await queries.list_records(call.table, queries.parse(params))
    return await list_answer(scope["path"], params, page, queries.limits.work())


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
    limit = call.runtime.max_body_bytes
    raw = await _body(body_reader(call.receive, call.headers, limit))
    data = envelope_data(await parse_json_off_loop(content_type, raw))
    bulk = isinstance(data, list)
    created = await call.services.records.create_records(
        call.table, data if bulk else [data], bulk=bulk, weight=len(raw)
    )
    return created_answer(call.table, created, bulk)


async def _update(call: Call) -> Answer:
    """PUT merges the given fields, PATCH applies a merge patch (the body
    ``{"data": ...}``, or with ``application/merge-patch+json`` the patch
    itself), only at the ``If-Match`` version when there is one."""
    patch = call.scope["method"] == "PATCH"
    content_type = call.header(b"content-type") or ""
    check_json_type(content_type)
    limit = call.runtime.max_body_bytes
    raw = await _body(body_reader(call.receive, call.headers, limit))
    body = await parse_json_off_loop(content_type, raw)
    bare = patch and media_type(content_type) == MERGE_PATCH
    records = call.services.records
    record = await records.update_record(
        call.table,
        call.key,
        body if bare else envelope_data(body),
        patch=patch,
        expected=await records.expected_for(call.table, call.key, *call.conditions()),
        loc=() if bare else ("data",),
    )
    return record_answer(record)


async def _body(receive: Receive) -> bytes:
    """The whole body (the guard's reader refuses it past the limit)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()  # a part of a body is never taken for all of it
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
