"""``/changes``: the change feed, as Server-Sent Events or NDJSON (long poll)."""

from __future__ import annotations

from typing import Annotated, Any, Awaitable, Iterator, TypeVar

import anyio
import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response
from pydantic import WithJsonSchema
from starlette.types import Message, Receive, Scope, Send

from app.api.deps import TABLE_PATTERN
from app.api.paging import CURSOR_HEADER
from app.api.responses import errors
from app.core.logging import LEFT_UNFINISHED
from app.services.changes import (
    ChangeService,
    Cut,
    Encoded,
    Item,
    Mark,
    parse_tables,
)

router = APIRouter(prefix="/api/v1/changes", tags=["changes"])
T = TypeVar("T")

EVENT_STREAM = "text/event-stream"
NDJSON = "application/x-ndjson"
CURSOR_PATTERN = r"^(now|[0-9]{1,20}-[0-9]{1,20})$"
EVENT_ID_PATTERN = r"^(now|[0-9]{1,20}-[0-9]{1,20})?$"
LAST_EVENT_ID = ("header", "last-event-id")
# table names, comma-separated (documented; the service checks it: 400)
_NAME = TABLE_PATTERN.strip("^$")
TableList = Annotated[
    str,
    WithJsonSchema(
        {
            "type": "string",
            "maxLength": 4096,
            "pattern": f"^ *(?:{_NAME})? *(?:, *(?:{_NAME})? *)*$",
        }
    ),
]
# where the front door leaves the server's own send for a stream's events
DIRECT_SEND = "memdb.direct_send"
# how long a browser waits before it reconnects, told once per stream
RETRY_MS = 2000


async def get_changes(request: Request) -> ChangeService:
    service: ChangeService = request.app.state.service.changes
    return service


ChangesDep = Annotated[ChangeService, Depends(get_changes)]
Cursor = Annotated[
    str | None,
    Query(
        max_length=64,
        pattern=CURSOR_PATTERN,
        description="Follow from this cursor (a list's or a dump's "
        "X-Changes-Cursor, or an event's); `now`: from the newest change; "
        "none: NDJSON from the oldest change kept, a stream from the newest",
    ),
]


@router.get(
    "",
    summary="Follow the changes (Server-Sent Events, or NDJSON long poll)",
    response_model=None,
    responses={
        200: {
            "description": "NDJSON: one change a line, and X-Changes-Cursor to "
            "read on from. With Accept: text/event-stream, a stream of events "
            "(id: the cursor; data: the change)",
            "content": {
                NDJSON: {"schema": {"type": "string"}},
                EVENT_STREAM: {"schema": {"type": "string"}},
            },
        },
        **errors(400, 410, 422, 501),
    },
)
async def follow_changes(
    request: Request,
    changes: ChangesDep,
    since: Cursor = None,
    tables: Annotated[
        TableList | None,
        Query(max_length=4096, description="Only these tables, e.g. users,orders"),
    ] = None,
    wait: Annotated[
        float,
        Query(
            ge=0, le=60, description="NDJSON: wait up to this many seconds for a change"
        ),
    ] = 0,
    limit: Annotated[
        int, Query(ge=1, le=10_000, description="NDJSON: at most this many changes")
    ] = 1000,
    accept: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[
        str | None, Header(max_length=64, pattern=EVENT_ID_PATTERN)
    ] = None,
) -> Response:
    """Every applied change (create, update, patch, delete, drop, import,
    create_index, drop_index) in commit order, as ``{"cursor", "op", "table",
    "id", "record", "version", "at"}`` (no ``record`` for a delete or a drop).
    A cursor older than the changes kept, or one this feed never gave (from
    before a restart, or a store emptied or failed over since), is 410 with
    the oldest cursor kept: reload, then follow from the reload's cursor."""
    only = parse_tables(tables)
    if accept is not None and EVENT_STREAM in accept.lower():
        # a stream with no cursor follows from the newest change; a
        # Last-Event-ID sent empty (some clients do) is none
        if last_event_id:
            start = await changes.start(last_event_id, loc=LAST_EVENT_ID)
        else:
            start = await changes.start(since or "now")
        follower = changes.follower()
        return EventStream(changes, start, only, follower.release)
    polled = changes.poll(since, only, limit=limit, wait=wait)
    found = await (until_gone(request.receive, polled) if wait > 0 else polled)
    if found is None:  # the client left during its long poll
        return Response(status_code=204)
    events, cursor = found
    lines: list[bytes] = []
    size = 0
    for event in events:
        line = changes.encoded(event) + b"\n"
        if lines and size + len(line) > MAX_NDJSON_BYTES:
            cursor = events[len(lines) - 1].cursor  # the rest in the next read
            break
        lines.append(line)
        size += len(line)
    return Response(b"".join(lines), media_type=NDJSON, headers={CURSOR_HEADER: cursor})


async def until_gone(receive: Receive, work: Awaitable[T]) -> T | None:
    """``work``'s result, or None once the client has gone (a long poll or a
    stream keeps a follower's place: it is given back when the client goes);
    what ``work`` raises is raised as it is, not in an exception group."""
    result: list[T] = []
    failed: list[Exception] = []
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

        group.start_soon(watch)
        try:
            result.append(await work)
        except Exception as exc:
            failed.append(exc)
        group.cancel_scope.cancel()
    if failed:
        raise failed[0]
    return result[0] if result else None


# an NDJSON answer holds at most this many bytes of changes (at least one
# change): X-Changes-Cursor then says where the rest begins
MAX_NDJSON_BYTES = 4 * 1024 * 1024


def frames(
    item: Item, encoded: Encoded, tables: frozenset[str] | None
) -> Iterator[bytes]:
    """Server-Sent Events: each change an event whose id is its cursor, in
    writes of about ``PIECE`` bytes (``Encoded.page``); a comment to keep a
    quiet connection open (with the cursor as id when it moved past other
    tables' changes); ``resume`` (or ``gone``: reload) as the last word."""
    if item is None:
        yield b": keep-alive\n\n"
    elif isinstance(item, Mark):
        yield b": keep-alive\nid: " + item.cursor.encode() + b"\n\n"
    elif isinstance(item, Cut):
        if item.gone:
            data = orjson.dumps({"oldest": item.cursor, "reason": item.reason})
            yield b"event: gone\ndata: " + data + b"\n\n"
        else:
            data = orjson.dumps({"cursor": item.cursor, "reason": item.reason})
            cursor = item.cursor.encode()
            yield b"event: resume\nid: " + cursor + b"\ndata: " + data + b"\n\n"
    elif item:
        yield from encoded.page(item, tables)


class EventStream(Response):
    """The stream of one follower, until the client goes, the follower falls
    behind or the service stops."""

    media_type = EVENT_STREAM

    def __init__(
        self,
        changes: ChangeService,
        since: str | None,
        tables: frozenset[str] | None,
        release: Any,
    ) -> None:
        # the API's Cache-Control (private, no-cache) is added on the way out
        super().__init__(headers={"X-Accel-Buffering": "no"})
        self.raw_headers = [h for h in self.raw_headers if h[0] != b"content-length"]
        self.changes = changes
        self.since = since
        self.tables = tables
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = send
        # the start and the first piece go through the middleware (which may
        # hold a start until the first piece); the events then skip its
        # wrappers: a write to 100 streams is 100 sends, not 800 awaits
        send = scope.get("state", {}).get(DIRECT_SEND, send)
        try:
            await start(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": self.raw_headers,
                }
            )
            hello = f"retry: {RETRY_MS}\n\n".encode()
            await start(
                {"type": "http.response.body", "body": hello, "more_body": True}
            )

            async def deliver(item: Item) -> None:
                for body in frames(item, self.changes.encoded, self.tables):
                    message: Message = {
                        "type": "http.response.body",
                        "body": body,
                        "more_body": True,
                    }
                    await send(message)

            await until_gone(
                receive, self.changes.follow(self.since, self.tables, deliver)
            )
            with anyio.move_on_after(1) as waited:  # a stalled client gets no more
                end: Message = {"type": "http.response.body", "body": b""}
                await send(end)
            if waited.cancelled_caught:  # let go: not an error of the service
                LEFT_UNFINISHED.set(True)
        except OSError:  # the client went while a write was under way
            pass
        finally:
            self.release()
