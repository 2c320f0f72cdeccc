"""Large answers in pieces of bounded size, sent as the client reads them.

Rows are written with one ``orjson.dumps`` per run of rows, and the length of
a run adapts to the rows' size so that each piece is about ``PIECE`` bytes:
thousands of small records a call, a single large one alone. An answer that
fits in ``INLINE_BYTES`` is sent whole with its length; a longer one is sent
as it is made (chunked), so that no answer is ever held whole in memory and a
slow reader slows only its own answer down (the transport's flow control
pauses the writer).
"""

from __future__ import annotations

from typing import Any, AsyncIterable, AsyncIterator, Callable, Iterable, Mapping

import anyio
import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.services.work import Work, paced_bytes

PIECE = 128 * 1024
INLINE_BYTES = 1024 * 1024
_FIRST_RUN = 8
_MAX_RUN = 4096

Row = Callable[[Any], Any]


async def rows_json(
    batches: AsyncIterable[list[Any]], row: Row | None = None
) -> AsyncIterator[bytes]:
    """The rows of ``batches`` as the inside of a JSON array (``a,b,c``), in
    pieces of about ``PIECE`` bytes."""
    run = _FIRST_RUN
    first = True
    async for batch in batches:
        start = 0
        while start < len(batch):
            part = batch[start : start + run]
            start += len(part)
            body = orjson.dumps(part if row is None else [row(r) for r in part])
            run = max(1, min(_MAX_RUN, PIECE * len(part) // max(1, len(body))))
            yield body[1:-1] if first else b"," + body[1:-1]
            first = False


async def rows_ndjson(batches: AsyncIterator[list[Any]]) -> AsyncIterator[bytes]:
    """One JSON document a line, in pieces of about ``PIECE`` bytes."""
    dumps = orjson.dumps
    async for batch in batches:
        piece: list[bytes] = []
        size = 0
        for item in batch:
            line = dumps(item) + b"\n"
            piece.append(line)
            size += len(line)
            if size >= PIECE:
                yield b"".join(piece)
                piece, size = [], 0
        if piece:
            yield b"".join(piece)


async def json_object(
    head: Mapping[str, Any],
    key: str,
    rows: AsyncIterator[bytes],
    tail: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
) -> AsyncIterator[bytes]:
    """``{**head, key: [rows...], **tail}`` in pieces; ``rows`` from ``rows_json``.
    A callable ``tail`` is called once the rows are written (a count of them)."""
    opening = orjson.dumps(dict(head))[:-1]
    yield opening + (b"," if head else b"") + orjson.dumps(key) + b":["
    async for piece in rows:
        yield piece
    ending = tail() if callable(tail) else tail
    closing = orjson.dumps(dict(ending)) if ending else b"{}"
    yield b"]" + (b"," + closing[1:] if ending else b"}")


async def db_object(
    tables: Iterable[tuple[str, AsyncIterator[bytes]]],
) -> AsyncIterator[bytes]:
    """``{"table": [rows...], ...}`` in pieces."""
    yield b"{"
    for position, (name, rows) in enumerate(tables):
        yield (b"," if position else b"") + orjson.dumps(name) + b":["
        async for piece in rows:
            yield piece
        yield b"]"
    yield b"}"


class Counted:
    """Batches passed through, their rows counted (``rows``)."""

    def __init__(self, batches: AsyncIterator[list[Any]]) -> None:
        self.batches = batches
        self.rows = 0

    def __aiter__(self) -> AsyncIterator[list[Any]]:
        return self._count()

    async def _count(self) -> AsyncIterator[list[Any]]:
        async for batch in self.batches:
            self.rows += len(batch)
            yield batch


async def batches_of(rows: list[Any], size: int = 2048) -> AsyncIterator[list[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


class Stream(Response):
    """An answer sent as its pieces are made; ``on_close`` runs when it ends,
    whether it was sent whole, failed, or the client went away."""

    def __init__(
        self,
        pieces: AsyncIterator[bytes],
        *,
        status_code: int = 200,
        media_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(
            status_code=status_code, media_type=media_type, headers=headers
        )
        # a streamed answer has no length
        self.raw_headers = [h for h in self.raw_headers if h[0] != b"content-length"]
        self.pieces = pieces
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stop_when_gone() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(stop_when_gone)
                await send(
                    {
                        "type": "http.response.start",
                        "status": self.status_code,
                        "headers": self.raw_headers,
                    }
                )
                async for piece in self.pieces:
                    await send(
                        {"type": "http.response.body", "body": piece, "more_body": True}
                    )
                await send({"type": "http.response.body", "body": b""})
                group.cancel_scope.cancel()
        finally:
            close = getattr(self.pieces, "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()
            if self.on_close is not None:
                self.on_close()


async def prefetch(
    pieces: AsyncIterator[bytes], limit: int = INLINE_BYTES
) -> tuple[bytes | None, AsyncIterator[bytes]]:
    """Read pieces until the answer ends or passes ``limit``: ``(body, ...)``
    when it ended (send it whole), else ``(None, rest)`` where ``rest`` yields
    what was read and then the remaining pieces."""
    read: list[bytes] = []
    size = 0
    async for piece in pieces:
        read.append(piece)
        size += len(piece)
        if size > limit:
            return None, _again(read, pieces)
    return b"".join(read), pieces


async def _again(
    read: list[bytes], pieces: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    try:
        for piece in read:
            yield piece
        read.clear()
        async for piece in pieces:
            yield piece
    finally:
        close = getattr(pieces, "aclose", None)
        if close is not None:
            await close()


async def answer(
    pieces: AsyncIterator[bytes],
    work: Work,
    *,
    status_code: int = 200,
    media_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The answer made of ``pieces``: whole, with its length, when it is at most
    ``INLINE_BYTES``; else streamed, as a heavy request (which may still be
    refused, 503 ``busy``, before anything is sent). ``work`` is closed when
    the answer is done."""
    try:
        body, rest = await prefetch(paced_bytes(pieces, work))
        if body is not None:
            work.close()
            return Response(
                body, status_code=status_code, headers=headers, media_type=media_type
            )
        work.become_heavy()
        work.commit()
    except BaseException:
        work.close()
        close = getattr(pieces, "aclose", None)
        if close is not None:
            await close()
        raise
    return Stream(
        rest,
        status_code=status_code,
        media_type=media_type,
        headers=headers,
        on_close=work.close,
    )
