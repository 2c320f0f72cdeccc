"""The change feed of the memory store: every applied change, in commit order.

The store appends an event under its lock, in the same critical section as the
change itself, so the feed's order is the commit order and a change is in the
feed if and only if it was applied. An event holds a reference to the record
as the change left it (records are never changed in place), so an event costs
a small tuple, not a copy.

A cursor names a position in the feed: ``<epoch>-<n>``, where ``epoch`` is the
millisecond at which this process's feed began (a restart begins a new one: a
cursor of an earlier process is gone, never silently reused) and ``n`` counts
the changes (a cursor ahead of the newest change was not given by this feed:
gone too). The last ``retain`` events are kept; a cursor older than that is
gone (``CursorGone``, 410 with the oldest cursor still served).

Followers do not get a buffer of their own: each reads the shared list from its
own cursor, so a slow follower costs nothing until it falls behind the
retention. ``wait`` parks a follower until an event after its cursor exists;
writers wake the parked followers once a loop turn, whatever thread they run on.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Iterable

from app.storage.base import BadCursor, ChangeEvent, CursorGone, Record


def parse_cursor(cursor: str) -> tuple[int, int]:
    """``<epoch>-<n>`` as two integers; ``BadCursor`` when it is not one."""
    epoch, dash, count = cursor.partition("-")
    if (
        not dash
        or not epoch.isdigit()
        or not count.isdigit()
        or len(epoch) > 20
        or len(count) > 20
    ):
        raise BadCursor(f"not a cursor: {cursor[:40]!r}")
    return int(epoch), int(count)


class Feed:
    """The last ``retain`` changes of one memory store."""

    def __init__(
        self,
        retain: int,
        *,
        retain_bytes: int = 64 * 1024 * 1024,
        epoch_ms: int | None = None,
    ) -> None:
        self.retain = retain
        # the estimated bytes of the records the kept events name: a record
        # overwritten 10,000 times must not keep 10,000 large versions alive
        self.retain_bytes = retain_bytes
        self.sizes: list[int] = []
        self.bytes = 0
        self.epoch = epoch_ms if epoch_ms is not None else int(time.time() * 1000)
        self.count = 0  # changes appended since the feed began
        # events[i] is change number base + i + 1
        self.events: list[ChangeEvent] = []
        self.base = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        # the parked followers, each on a future of its own (cancelling one
        # follower cancels nothing of the others')
        self._waiters: set[asyncio.Future[None]] = set()
        self._wake_scheduled = False

    # -- writing (under the store's lock) -------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop whose followers the writers wake."""
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def add(
        self,
        op: str,
        table: str,
        record_id: str | None,
        record: Record | None,
        size: int = 0,
    ) -> None:
        self.add_many(op, table, [(record_id, record, size)])

    def add_many(
        self,
        op: str,
        table: str,
        changes: Iterable[tuple[str | None, Record | None, int]],
    ) -> None:
        """Append applied changes (``size``: the record's estimated bytes)."""
        now = time.time()
        with self._lock:
            events, sizes = self.events, self.sizes
            number = self.base + len(events)
            prefix = f"{self.epoch}-"
            for record_id, record, size in changes:
                number += 1
                cursor = prefix + str(number)
                events.append(ChangeEvent(cursor, op, table, record_id, record, now))
                sizes.append(size)
                self.bytes += size
            self.count = number
            if len(events) > 2 * self.retain:
                self._cut(len(events) - self.retain)
            if self.bytes > self.retain_bytes:
                # the oldest go until half the bytes are left (at least one)
                left, cut = self.bytes, 0
                while cut < len(sizes) - 1 and left > self.retain_bytes // 2:
                    left -= sizes[cut]
                    cut += 1
                self._cut(cut)
        self._wake()

    def _cut(self, count: int) -> None:
        self.bytes -= sum(self.sizes[:count])
        del self.events[:count]
        del self.sizes[:count]
        self.base += count

    def _wake(self) -> None:
        loop = self._loop
        if loop is None or not self._waiters or self._wake_scheduled:
            return
        self._wake_scheduled = True
        if threading.get_ident() == self._loop_thread:
            loop.call_soon(self._wake_now)
        else:
            try:
                loop.call_soon_threadsafe(self._wake_now)
            except RuntimeError:  # the loop is closed: nobody is waiting
                self._wake_scheduled = False

    def _wake_now(self) -> None:
        self._wake_scheduled = False
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            _release(waiter)

    # -- reading ------------------------------------------------------------------

    def cursor(self) -> str:
        """The cursor of the newest change (a follower from now starts here)."""
        return f"{self.epoch}-{self.count}"

    def oldest(self) -> str:
        """The oldest cursor a follower may resume from."""
        return f"{self.epoch}-{self._first() - 1}"

    def _first(self) -> int:
        """The number of the oldest change still served."""
        return max(self.base, self.count - self.retain) + 1

    def position(self, since: str | None) -> int:
        """The number of the last change a follower from ``since`` has seen."""
        if since is None:
            return self._first() - 1
        epoch, count = parse_cursor(since)
        if epoch != self.epoch or count > self.count:  # not a cursor it gave
            raise CursorGone(self.oldest(), known=False)
        if count < self._first() - 1:
            raise CursorGone(self.oldest())
        return count

    def read(
        self,
        since: str | None,
        *,
        tables: frozenset[str] | None = None,
        limit: int = 1000,
        scan: int = 10_000,
    ) -> tuple[list[ChangeEvent], str]:
        """The changes after ``since`` (``None``: the oldest retained) of
        ``tables`` (all when ``None``), at most ``limit`` of them, looking at
        most ``scan`` changes; and the cursor to read on from."""
        with self._lock:
            seen = self.position(since)
            start = seen - self.base
            if tables is None:
                found = self.events[start : start + min(limit, scan)]
                return found, found[-1].cursor if found else self._at(seen)
            window = self.events[start : start + scan]
        found = []
        last = seen
        for number, event in enumerate(window, start=seen + 1):
            if len(found) >= limit:
                break
            last = number
            if event.table in tables:
                found.append(event)
        return found, self._at(last)

    def _at(self, number: int) -> str:
        return f"{self.epoch}-{number}"

    async def wait(self, since: str, timeout: float) -> None:
        """Return once a change after ``since`` exists, or after ``timeout``."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self.bind(loop)
        waiter: asyncio.Future[None] = loop.create_future()
        # parked before the check: a writer either sees the waiter or the
        # waiter sees the writer's change, so no wakeup is missed
        self._waiters.add(waiter)
        try:
            try:
                seen = self.position(since)
            except (CursorGone, BadCursor):
                return  # the next read says so
            if seen < self.count or timeout <= 0:
                return
            timer = loop.call_later(timeout, _release, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
        finally:
            self._waiters.discard(waiter)


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
