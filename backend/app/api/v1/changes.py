"""``/changes``: the change feed, as Server-Sent Events or NDJSON (long poll)."""

from __future__ import annotations

from typing import Annotated, Any, Callable

import anyio
import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response
from starlette.types import Message, Receive, Scope, Send

from app.api.paging import CURSOR_HEADER
from app.api.responses import errors
from app.services.changes import ChangeService, Cut, parse_tables
from app.storage.base import ChangeEvent

router = APIRouter(prefix="/api/v1/changes", tags=["changes"])

EVENT_STREAM = "text/event-stream"
NDJSON = "application/x-ndjson"
CURSOR_PATTERN = r"^(now|[0-9]{1,20}-[0-9]{1,20})$"
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
    changes: ChangesDep,
    since: Cursor = None,
    tables: Annotated[
        str | None,
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
        str | None, Header(max_length=64, pattern=CURSOR_PATTERN)
    ] = None,
) -> Response:
    """Every applied change (create, update, patch, delete, drop, import,
    create_index, drop_index) in commit order, as ``{"cursor", "op", "table",
    "id", "record", "version", "at"}`` (no ``record`` for a delete or a drop).
    A cursor older than the changes kept is 410 with the oldest cursor kept:
    reload, then follow from the reload's cursor."""
    only = parse_tables(tables)
    if accept is not None and EVENT_STREAM in accept:
        # a stream with no cursor follows from the newest change
        start = await changes.start(last_event_id or since or "now")
        follower = changes.follower()
        return EventStream(changes, start, only, follower.release)
    events, cursor = await changes.poll(since, only, limit=limit, wait=wait)
    body = b"".join(changes.encoded(e) + b"\n" for e in events)
    return Response(body, media_type=NDJSON, headers={CURSOR_HEADER: cursor})


def frame(
    item: list[ChangeEvent] | Cut | None, encoded: Callable[[ChangeEvent], bytes]
) -> bytes:
    """Server-Sent Events: each change an event whose id is its cursor; a
    comment to keep a quiet connection open; ``resume`` as the last word."""
    if item is None:
        return b": keep-alive\n\n"
    if isinstance(item, Cut):
        data = orjson.dumps({"cursor": item.cursor, "reason": item.reason})
        cursor = item.cursor.encode()
        return b"event: resume\nid: " + cursor + b"\ndata: " + data + b"\n\n"
    return b"".join(map(encoded, item))


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
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": self.raw_headers,
                }
            )
            hello = f"retry: {RETRY_MS}\n\n".encode()
            await send({"type": "http.response.body", "body": hello, "more_body": True})

            async def deliver(item: list[ChangeEvent] | Cut | None) -> None:
                message: Message = {
                    "type": "http.response.body",
                    "body": frame(item, self.changes.encoded.frame),
                    "more_body": True,
                }
                await send(message)

            async with anyio.create_task_group() as group:

                async def until_gone() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(until_gone)
                await self.changes.follow(self.since, self.tables, deliver)
                group.cancel_scope.cancel()
            with anyio.move_on_after(1):  # a client that stalled gets no more
                end: Message = {"type": "http.response.body", "body": b""}
                await send(end)
        except OSError:  # the client went while a write was under way
            pass
        finally:
            self.release()
