"""A json-server ``db.json`` kept in step with the memory store (``memdb serve``).

The file is the store's journal: every change marks it out of date, and a
save writes the whole store to a temporary file beside it, fsyncs it, renames
it over the file and fsyncs the folder, so the file on disk is always a whole
db.json, the old one or the new one. Saves are batched: with ``always`` a
writer waits for the first save that began after its change (one save covers
every change made before it began: group commit); with ``everysec`` a
background task saves once a second while changes come (a save of a large
file pauses twice its duration); ``no`` saves as often but leaves
the fsync to the operating system. ``watch`` reloads the file when someone
else changes it.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Literal, Sequence

import structlog

from app.storage.aof import fsync_directory
from app.storage.aof import stop_tasks
from app.storage.base import JournalError, Record
from app.storage.memory import Store

log = structlog.get_logger("memdb.dbfile")

Fsync = Literal["always", "everysec", "no"]
State = list[tuple[str, list[Record]]]
Encode = Callable[[Sequence[tuple[str, list[Record]]]], Iterable[bytes]]
# a reload of the file's text; True when the store then holds what the file
# does not (ids given to records that had none), to be saved
Reload = Callable[[bytes], Awaitable[bool]]
# the journal entries a reload makes: the file holds them already
_RELOAD_OPS = frozenset({"load", "drop", "clear", "create_table"})
# the background saves (everysec, no): one a second while changes come, and a
# pause of at least twice the last save's duration, so that saving a large
# file takes at most a third of a core
EVERY_S = 1.0
WATCH_EVERY_S = 0.5


class SaveFailed(JournalError):
    """The file could not be saved (the change stays in memory)."""


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return found.st_ino, found.st_size, found.st_mtime_ns


class DbFile:
    """The store saved into one JSON file, atomically and in batches."""

    def __init__(
        self,
        path: Path,
        *,
        fsync: Fsync,
        encode: Encode,
        watch: bool = False,
        reload: Reload | None = None,
    ) -> None:
        self.path = path
        self.fsync = fsync
        self.encode = encode
        self.watch = watch
        self.reload = reload
        self.changed = 0  # changes made since start
        self.saved = 0  # of those, the changes the file on disk holds
        self.saves = 0
        self.failure: str | None = None  # why the last save failed
        self.store: Store | None = None
        self.identity = _identity(path)
        self.pause_s = EVERY_S
        self._saving: asyncio.Future[None] | None = None
        self._absorbing = False
        self._tasks: list[asyncio.Task[None]] = []

    # -- the journal -----------------------------------------------------------

    def open(self, store: Store) -> None:
        """Journal ``store`` into the file."""
        self.store = store
        store.journal = self.append
        store.durable = self.wait_durable

    def append(self, entry: dict[str, Any]) -> None:
        """A change is about to be applied: the file is out of date."""
        self.changed += 1
        if self._absorbing and entry.get("op") in _RELOAD_OPS:
            self.saved += 1  # a reload of the file itself

    async def wait_durable(self) -> None:
        """With ``always``: return once the file holds every change made so far."""
        if self.fsync != "always":
            return
        target = self.changed
        while self.saved < target:
            await self._save_once()
            if self.saved < target and self.failure is not None:
                raise SaveFailed(f"the file could not be saved: {self.failure}")

    async def _save_once(self) -> None:
        """Join the save under way, or start one (group commit)."""
        if self._saving is None:
            self._saving = asyncio.ensure_future(self._save())
        saving = self._saving
        await asyncio.shield(saving)

    async def _save(self) -> None:
        try:
            await self.save()
        finally:
            self._saving = None

    async def save(self) -> None:
        """Write the store as it is now to the file (atomically)."""
        assert self.store is not None
        with self.store.lock:  # a consistent state, and the changes it holds
            target = self.changed
            state = [
                (n, list(t.records.values())) for n, t in self.store.tables.items()
            ]
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self._write, state)
        except Exception as exc:  # a disk error, or a value JSON cannot hold
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)[:200]
            self.failure = reason or type(exc).__name__
            log.error("dbfile.save_failed", file=self.path.name, error=self.failure)
            return
        took = time.perf_counter() - started
        self.pause_s = max(EVERY_S - took, 2 * took)
        self.failure = None
        self.saved = max(self.saved, target)
        self.saves += 1

    def _write(self, state: State) -> None:
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        try:
            mode = self.path.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            with os.fdopen(descriptor, "wb") as out:
                for piece in self.encode(state):
                    out.write(piece)
                out.flush()
                if self.fsync != "no":
                    os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        if self.fsync != "no":
            fsync_directory(self.path.parent)
        self.identity = _identity(self.path)

    # -- background work ---------------------------------------------------------

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._keep_saving()))
        if self.watch and self.reload is not None:
            self._tasks.append(asyncio.create_task(self._watch()))

    async def _keep_saving(self) -> None:
        while True:
            await asyncio.sleep(self.pause_s)
            if self.saved < self.changed:
                await self._save_once()

    async def _watch(self) -> None:
        assert self.reload is not None
        while True:
            await asyncio.sleep(WATCH_EVERY_S)
            now = _identity(self.path)
            if now is None or now == self.identity or self._saving is not None:
                continue
            self.identity = now
            try:
                raw = await asyncio.to_thread(self.path.read_bytes)
            except OSError as exc:
                log.warning("dbfile.reload_failed", error=exc.strerror)
                continue
            self._absorbing = True
            try:
                completed = await self.reload(raw)
            except Exception as exc:  # the file is kept as it is; so is the store
                log.warning("dbfile.reload_failed", error=str(exc)[:300])
            else:
                log.info("dbfile.reloaded", file=self.path.name)
                if completed:  # the file is out of date: the next save writes it
                    self.changed += 1
            finally:
                self._absorbing = False

    async def close(self) -> None:
        """Stop, and save what the file does not hold yet."""
        await stop_tasks(self._tasks)
        if self._saving is not None:
            await asyncio.shield(self._saving)
        if self.store is not None and self.saved < self.changed:
            await self.save()
        if self.store is not None:
            self.store.journal = None
            self.store.durable = None
