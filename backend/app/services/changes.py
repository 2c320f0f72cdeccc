"""The change feed as followers see it (``GET /api/v1/changes``).

The store keeps the feed (``StoreBackend.changes``); this service turns its
events into the documents clients read, counts the followers against
``MEMDB_MAX_SUBSCRIBERS``, and runs a follower's loop: read the changes after
its cursor, hand them over, wait for more. It owns the rules of delivery:

- a follower reads the shared feed from its own cursor: it is never given a
  buffer of its own, and its writes wait on the client (the transport's flow
  control), so a slow follower holds one answer's worth of memory;
- a follower that stays behind the newest change for more than ``max_lag``
  changes in a row is told where to resume (``Cut``) and let go: it reconnects
  from its cursor while the feed still retains it;
- a follower whose client takes longer than ``send_timeout`` to take one
  write is let go (its connection is full: the resume notice could not reach
  it, and the client resumes from the last event it got);
- every follower ends when the service stops (``stopping``), told where to
  resume.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import Any, Awaitable, Callable, Iterable, Iterator

import orjson

from app.core.clock import RFC3339
from app.core.errors import (
    BadRequest,
    Busy,
    DomainError,
    StoreUnavailable,
    param_error,
)
from app.services.errors import store_errors
from app.services.validation import TABLE_NAME
from app.storage.base import (
    BadCursor,
    ChangeEvent,
    CursorGone,
    FeedUnsupported,
    StoreBackend,
    Unavailable,
    record_version,
)

# the changes one read of the feed hands over at most
PAGE = 500
# followers write at most once in this time, all on one beat: the changes that
# come meanwhile go in one write, so that 100 followers of 5,000 writes a second
# make 4,000 writes a second instead of half a million, and those 100 writes
# carry the same bytes, made once (a change on a quiet feed goes at once)
BATCH_S = 0.025
# a page of Server-Sent Events leaves in writes of about this size, so that a
# page of large records is never one buffer
PIECE = 256 * 1024
# a quiet follower looks whether the service is stopping this often
STOP_CHECK_S = 1.0
# the longest a long poll may wait
MAX_WAIT_S = 60.0
MAX_TABLES = 64
# where a cursor comes from, as a 410 names it (a stream may give it in
# the Last-Event-ID header instead)
SINCE = ("query", "since")


class FeedUnavailable(DomainError):
    """The store keeps no change feed."""

    status_code = 501
    code = "not_implemented"


class Gone(DomainError):
    """The cursor is older than the retained changes: reload, then follow."""

    status_code = 410
    code = "gone"


def document(event: ChangeEvent) -> dict[str, Any]:
    """An event as clients read it: the record and its version where there is
    one (never for a delete or a drop)."""
    out: dict[str, Any] = {
        "cursor": event.cursor,
        "op": event.op,
        "table": event.table,
        "id": event.id,
    }
    if event.record is not None:
        out["record"] = event.record
        if event.id is not None:
            out["version"] = record_version(event.record)
    out["at"] = RFC3339.at(event.at)
    return out


def parse_tables(raw: str | None) -> frozenset[str] | None:
    if raw is None or not raw.strip():
        return None
    names = frozenset(n.strip() for n in raw.split(",") if n.strip())
    if len(names) > MAX_TABLES:
        raise BadRequest(f"tables names at most {MAX_TABLES} tables")
    for name in sorted(names):
        if not TABLE_NAME.fullmatch(name):  # a typo would follow nothing, silently
            raise BadRequest(
                f"bad query parameter 'tables': {name!r} is not a table name",
                details=[param_error("tables", "not a table name", "table_name")],
            )
    return names


Page = tuple[frozenset[str] | None, str, str, int]


class Encoded:
    """The JSON of the latest changes, made once however many followers read
    them (a change that 100 streams send is encoded once, not 100 times), and
    the latest pages of Server-Sent Events, joined once (followers on one beat
    read the same page)."""

    PAGES = 8

    def __init__(self, size: int = 8192, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.size = size
        # of each of the first two (at most 32 MiB), and of each kept page (one
        # sixteenth: at most 8 MiB for the PAGES pages)
        self.max_bytes = max_bytes
        self.done: dict[str, bytes] = {}
        self.frames: dict[str, bytes] = {}
        self.pages: dict[Page, list[bytes]] = {}
        self.held = {id(self.done): 0, id(self.frames): 0}

    def __call__(self, event: ChangeEvent) -> bytes:
        """The change as JSON."""
        found = self.done.get(event.cursor)
        if found is None:
            found = orjson.dumps(document(event))
            self._keep(self.done, event.cursor, found)
        return found

    def frame(self, event: ChangeEvent) -> bytes:
        """The change as a Server-Sent Event: its cursor as the id."""
        found = self.frames.get(event.cursor)
        if found is None:
            cursor = event.cursor.encode()
            found = b"id: " + cursor + b"\ndata: " + self(event) + b"\n\n"
            self._keep(self.frames, event.cursor, found)
        return found

    def page(
        self, events: list[ChangeEvent], tables: frozenset[str] | None
    ) -> Iterable[bytes]:
        """Events (a read of the feed from one cursor with ``tables``) as
        Server-Sent Events, in writes of about ``PIECE`` bytes. A read's events
        are all the changes of ``tables`` between its first and its last, so
        those two and the filter name the page. A page over a sixteenth of
        ``max_bytes`` is not kept: its pieces past that are made as they are
        sent, so a follower holds about that much of it at once."""
        key = (tables, events[0].cursor, events[-1].cursor, len(events))
        found = self.pages.get(key)
        if found is not None:
            return found
        pieces = self._pieces(events)
        made: list[bytes] = []
        size = 0
        for piece in pieces:
            made.append(piece)
            size += len(piece)
            if size > self.max_bytes // 16:
                return chain(made, pieces)
        self.pages[key] = made
        if len(self.pages) > self.PAGES:
            del self.pages[next(iter(self.pages))]
        return made

    def _pieces(self, events: list[ChangeEvent]) -> Iterator[bytes]:
        piece: list[bytes] = []
        size = 0
        for event in events:
            made = self.frame(event)
            piece.append(made)
            size += len(made)
            if size >= PIECE:
                yield b"".join(piece)
                piece, size = [], 0
        if piece:
            yield b"".join(piece)

    def _keep(self, done: dict[str, bytes], cursor: str, encoded: bytes) -> None:
        if len(encoded) > self.max_bytes // 64:  # a large record: made each time
            return
        done[cursor] = encoded
        held = self.held[id(done)] + len(encoded)
        if len(done) > self.size or held > self.max_bytes:
            for old in list(islice(done, max(1, len(done) // 8))):
                held -= len(done.pop(old))
        self.held[id(done)] = held


class Beat:
    """The followers' shared rhythm: one write each at most every ``period``
    seconds, all on the same beat, with one timer for all of them.

    A follower that has just written waits for the next beat (``next``). One
    that was woken by a change awaits the beat itself: after a quiet spell the
    first one goes at once, and so does every follower woken in the same turn
    of the loop; the others wait for the next beat."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.last = -math.inf  # when followers last went
        self.open = False
        self.waiting: list[asyncio.Future[None]] = []

    async def __call__(self) -> None:
        if self.open:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not self.waiting and now - self.last >= self.period:
            self.last = now
            self.open = True  # for the rest of this turn of the loop
            loop.call_soon(self._close)
            return
        await self.next()

    async def next(self) -> None:
        """Return at the next beat."""
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        if not self.waiting:
            due = max(self.last + self.period, loop.time())
            loop.call_at(due, self._release, loop)
        self.waiting.append(waiter)
        await waiter

    def _close(self) -> None:
        self.open = False

    def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        self.last = loop.time()
        waiting, self.waiting = self.waiting, []
        for waiter in waiting:
            if not waiter.done():  # a follower cancelled meanwhile
                waiter.set_result(None)


@dataclass
class Cut:
    """The last word to a follower: resume from ``cursor`` (``reason`` why);
    ``gone``: the cursor is no longer kept, reload (``cursor``: the oldest)."""

    cursor: str
    reason: str
    gone: bool = False


@dataclass
class Mark:
    """Quiet, but the follower's cursor moved past changes of other tables: a
    keep-alive that carries the cursor, so that a reconnect starts there."""

    cursor: str


Item = list[ChangeEvent] | Cut | Mark | None


@dataclass
class ChangeService:
    store: StoreBackend
    max_subscribers: int = 1000
    max_lag: int = 5000
    heartbeat_s: float = 15.0
    send_timeout_s: float = 10.0
    followers: int = 0
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    encoded: Encoded = field(default_factory=Encoded)
    beat: Beat = field(default_factory=lambda: Beat(BATCH_S))

    # -- one read ----------------------------------------------------------------

    async def start(
        self, since: str | None, *, loc: tuple[str, str] = SINCE
    ) -> str | None:
        """Where a follower starts: ``now`` is the newest change; a cursor is
        checked (410 when gone, 400 when not one); ``loc``: where it came
        from, as a 410 names it."""
        if since == "now":
            return await self.cursor()
        if since is not None:
            await self.read(since, None, 1, loc=loc)  # raises if not served
        return since

    async def cursor(self) -> str:
        try:
            with store_errors():  # a store that cannot be reached: 503
                return await self.store.cursor()
        except FeedUnsupported as exc:
            raise FeedUnavailable(str(exc)) from None

    async def read(
        self,
        since: str | None,
        tables: frozenset[str] | None,
        limit: int,
        *,
        loc: tuple[str, str] = SINCE,
    ) -> tuple[list[ChangeEvent], str]:
        try:
            with store_errors():
                return await self.store.changes(since, tables=tables, limit=limit)
        except CursorGone as exc:
            what = (
                "older than the changes kept"
                if exc.known
                else "not one this feed gave (it is from before a restart, or "
                "the store was emptied or failed over since)"
            )
            raise Gone(
                f"the cursor is {what}; reload, then follow from the cursor of "
                f"the reload (the oldest cursor kept is {exc.oldest})",
                details=[
                    {
                        "loc": list(loc),
                        "msg": (
                            "older than the retained changes"
                            if exc.known
                            else "not a cursor of this feed"
                        ),
                        "type": "cursor_gone",
                        "oldest": exc.oldest,
                    }
                ],
                headers=[("x-changes-oldest", exc.oldest)],
            ) from None
        except BadCursor as exc:
            raise BadRequest(str(exc)) from None
        except FeedUnsupported as exc:
            raise FeedUnavailable(str(exc)) from None

    async def poll(
        self,
        since: str | None,
        tables: frozenset[str] | None,
        *,
        limit: int,
        wait: float,
    ) -> tuple[list[ChangeEvent], str]:
        """A long poll: the changes after ``since``, waiting up to ``wait``
        seconds for one when there is none yet."""
        since = await self.start(since)
        events, cursor = await self.read(since, tables, limit)
        deadline = time.monotonic() + min(wait, MAX_WAIT_S)
        if events or wait <= 0:
            return events, cursor
        with self.follower():
            while not events and not self.stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                with store_errors():
                    await self.store.wait_changes(cursor, min(left, 1.0))
                events, cursor = await self.read(cursor, tables, limit)
                await asyncio.sleep(0)  # a filter that matches nothing scans on
        return events, cursor

    # -- followers -----------------------------------------------------------------

    def follower(self) -> _Follower:
        """Count one follower; 503 past ``max_subscribers``."""
        if self.followers >= self.max_subscribers:
            raise Busy(
                f"{self.followers} followers already (MEMDB_MAX_SUBSCRIBERS); "
                "retry shortly",
                retry_after=5,
            )
        return _Follower(self)

    async def follow(
        self,
        since: str | None,
        tables: frozenset[str] | None,
        send: Callable[[Item], Awaitable[None]],
    ) -> None:
        """Hand the changes after ``since`` to ``send`` as they come (``None``
        or a ``Mark``: a keep-alive after ``heartbeat_s`` of silence), until
        the client goes, the follower falls behind or the service stops."""
        cursor = await self.cursor() if since is None else since
        told = cursor  # the cursor the client last heard of
        behind = 0  # changes handed over since the follower last caught up
        quiet = time.monotonic()
        while True:
            if self.stopping.is_set():
                await self._deliver(send, Cut(cursor, "the service is stopping"))
                return
            try:
                events, after = await self.read(cursor, tables, PAGE)
            except Gone as gone:  # fell out of the retention while it waited
                oldest = gone.details[0]["oldest"]
                reason = "the changes after the cursor are no longer kept: reload"
                await self._deliver(send, Cut(oldest, reason, gone=True))
                return
            except StoreUnavailable:
                reason = "the store cannot be reached: follow again shortly"
                await self._deliver(send, Cut(cursor, reason))
                return
            caught_up = after == cursor or len(events) < PAGE
            if events:
                if not await self._deliver(send, events):
                    return
                quiet = time.monotonic()
                told = events[-1].cursor
            cursor = after
            if caught_up:
                behind = 0
                if events:
                    # the changes that come meanwhile go in the next beat's
                    # write (under write load, a follower's whole wait)
                    await self.beat.next()
                    continue
                wait = self.heartbeat_s - (time.monotonic() - quiet)
                if wait <= 0:
                    mark = Mark(cursor) if cursor != told else None
                    if not await self._deliver(send, mark):
                        return
                    told = cursor
                    quiet = time.monotonic()
                    continue
                if await self._wait(cursor, wait):
                    await self.beat()
                continue
            behind += len(events)
            if behind > self.max_lag:
                await self._deliver(
                    send,
                    Cut(cursor, f"more than {self.max_lag} changes behind"),
                )
                return
            await asyncio.sleep(0)  # other requests between two pages

    async def _wait(self, cursor: str, seconds: float) -> bool:
        """Wait for a change after ``cursor``, for ``seconds`` at most (and a
        second at most between two looks at ``stopping``); True when the
        service goes on."""
        try:
            await self.store.wait_changes(cursor, min(seconds, STOP_CHECK_S))
        except Unavailable:  # the next read says so to the follower
            pass
        return not self.stopping.is_set()

    async def _deliver(
        self, send: Callable[[Item], Awaitable[None]], item: Item
    ) -> bool:
        """Send, or give up after ``send_timeout_s``: False when the follower
        is let go."""
        try:
            async with asyncio.timeout(self.send_timeout_s):
                await send(item)
        except TimeoutError:
            return False
        return True


class _Follower:
    def __init__(self, service: ChangeService) -> None:
        self.service = service
        service.followers += 1
        self.counted = True

    def __enter__(self) -> _Follower:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    def release(self) -> None:
        if self.counted:
            self.counted = False
            self.service.followers -= 1
