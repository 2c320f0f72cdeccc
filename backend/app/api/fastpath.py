"""The hottest routes answered in pure ASGI, ahead of FastAPI's router.

``GET /api/v1/data/{table}/{record_id}`` and ``POST /api/v1/data/{table}`` (with
no query string) and the list ``GET /api/v1/data/{table}`` are most of a
typical load. Routing and dependency solving cost
more than the work itself, so this middleware recognises them by their path and
calls the same service functions the routers call, with the same answers: the
record, its ETag, 304 on ``If-None-Match``, the error envelope. Every other
request (and every one it does not recognise) goes on to FastAPI unchanged. It
sits inside the guard middleware, so keys, readiness and body limits apply.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from urllib.parse import parse_qsl

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.v1.data import envelope_data, page_links
from app.core.errors import DomainError
from app.core.handlers import error_body, persistence_error
from app.core.http import (
    etag_matches,
    etag_of,
    parse_json,
    request_headers,
    send_body,
)
from app.services.query import QueryService, parse_query
from app.services.records import RecordService
from app.storage.memory import JournalError

PREFIX = "/api/v1/data/"
_TABLE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
READ = SimpleNamespace(path="/api/v1/data/{table}/{record_id}")
LIST = SimpleNamespace(path="/api/v1/data/{table}")
CREATE = SimpleNamespace(path="/api/v1/data/{table}")
_JSON = (b"content-type", b"application/json")


class FastPathMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and path.startswith(PREFIX):
            parts = path[len(PREFIX) :].split("/")
            method, table = scope["method"], parts[0]
            plain = not scope["query_string"]
            if _TABLE.fullmatch(table):
                if method == "GET" and len(parts) == 1:
                    scope["route"] = LIST
                    await _list(scope, send, table)
                    return
                if method == "GET" and len(parts) == 2 and parts[1] and plain:
                    scope["route"] = READ
                    await _read(scope, send, table, parts[1])
                    return
                if method == "POST" and len(parts) == 1 and plain:
                    scope["route"] = CREATE
                    await _create(scope, receive, send, table)
                    return
        await self.app(scope, receive, send)


def _records(scope: Scope) -> RecordService:
    service: RecordService = scope["app"].state.services.records
    return service


async def _read(scope: Scope, send: Send, table: str, record_id: str) -> None:
    try:
        record = _records(scope).read_record(table, record_id)
    except DomainError as exc:
        await _error(scope, send, exc)
        return
    body = orjson.dumps(record)
    etag = etag_of(body).encode()
    wanted = _header(scope, b"if-none-match")
    if wanted is not None and etag_matches(wanted, etag.decode()):
        await send(
            {"type": "http.response.start", "status": 304, "headers": [(b"etag", etag)]}
        )
        await send({"type": "http.response.body", "body": b""})
        return
    await send_body(send, 200, body, [_JSON, (b"etag", etag)])


async def _list(scope: Scope, send: Send, table: str) -> None:
    params = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
    queries: QueryService = scope["app"].state.services.queries
    try:
        page = queries.list_records(table, parse_query(params))
    except DomainError as exc:
        await _error(scope, send, exc)
        return
    body = orjson.dumps(
        {
            "items": page.items,
            "total": page.total,
            "limit": page.limit,
            "offset": page.offset,
        }
    )
    headers = [_JSON, (b"x-total-count", str(page.total).encode())]
    link = page_links(scope["path"], params, page)
    if link:
        headers.append((b"link", link.encode("latin-1")))
    await send_body(send, 200, body, headers)


async def _create(scope: Scope, receive: Receive, send: Send, table: str) -> None:
    try:
        content_type = _header(scope, b"content-type") or ""
        data = envelope_data(parse_json(content_type, await _body(receive)))
        records = _records(scope)
        if isinstance(data, list):
            created = await records.create_records(table, data, bulk=True)
            body = orjson.dumps({"items": created, "count": len(created)})
            await send_body(send, 201, body, [_JSON])
            return
        (record,) = await records.create_records(table, [data], bulk=False)
    except DomainError as exc:
        await _error(scope, send, exc)
        return
    except JournalError as exc:
        await _error(scope, send, persistence_error(exc))
        return
    body = orjson.dumps(record)
    location = f"{PREFIX}{table}/{record['id']}".encode()
    headers = [_JSON, (b"etag", etag_of(body).encode()), (b"location", location)]
    await send_body(send, 201, body, headers)


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _header(scope: Scope, name: bytes) -> str | None:
    value = request_headers(scope).get(name)
    return None if value is None else value.decode("latin-1")


async def _error(scope: Scope, send: Send, exc: DomainError) -> None:
    body = error_body(
        code=exc.code,
        message=exc.message,
        request_id=scope["state"]["request_id"],
        details=exc.details,
    )
    await send_body(send, exc.status_code, body, [_JSON])
