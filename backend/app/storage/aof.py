"""Durability: an append-only log of every change, compacted into snapshots.

Files in the data directory, by generation ``g``:

* ``snapshot.<g>.db``: the whole store at one instant, as journal entries;
* ``appendonly.<g>.aof``: every change made after that instant.

Each line of either file is ``<crc32 as 8 hex digits> <JSON entry>\\n``. The
state is the newest complete snapshot plus every log of its generation or
later, replayed in order. Compaction opens the next generation's log under the
store's lock (so no change falls between), writes the new snapshot to a
temporary file, fsyncs it, renames it into place and fsyncs the directory; the
rename is the commit point, and only then are older files removed. A crash at
any moment therefore leaves a loadable state that holds every logged change.

Recovery and the offline ``check`` and ``repair`` find problems the same way
(``examine``): each file's records are read, and its entries replayed into a
store built as the service builds it. A log can be cut at its first problem; a
snapshot cannot.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import re
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import orjson
import structlog

from app.storage.index import index_spec
from app.storage.memory import JournalError, Store, StoreError

log = structlog.get_logger("memdb.aof")

Fsync = Literal["always", "everysec", "no"]
_SNAPSHOT = re.compile(r"snapshot\.(\d+)\.db")
_LOG = re.compile(r"appendonly\.(\d+)\.aof")
_CHUNK = 1000
CRASH_ENV = "MEMDB_CRASH_AT"
# held (flock) by the service that has the directory open
LOCK_FILE = "memdb.lock"


INCOMPLETE = "the snapshot is incomplete"
# what to do about a damaged snapshot: it cannot be cut as a log can
SNAPSHOT_ADVICE = (
    "a snapshot is the compacted state and `python -m app.cli repair` cannot cut "
    "it: restore the data directory from a backup, or move {name} out of the "
    "directory so that the service loads the files that remain (an older "
    "snapshot or logs still there, and the logs after it); what only {name} "
    "held is then lost, and `python -m app.cli check` shows whether the rest loads"
)
LOG_ADVICE = (
    "`python -m app.cli repair` can cut the log there, keeping the removed bytes "
    "in a .corrupt file"
)


class CorruptLog(Exception):
    """A complete record is damaged, an entry cannot be replayed, or a snapshot
    is incomplete: the service must not start. The message says what to do:
    a log can be cut there by ``repair``, a snapshot cannot."""

    def __init__(
        self, path: Path, offset: int, reason: str, *, snapshot: bool = False
    ) -> None:
        if reason == INCOMPLETE:
            what = f"{reason} (no end record after byte offset {offset})"
        else:
            what = f"damaged record at byte offset {offset} ({reason})"
        advice = SNAPSHOT_ADVICE.format(name=path.name) if snapshot else LOG_ADVICE
        super().__init__(f"{path.name}: {what}; {advice}")
        self.path = path
        self.offset = offset
        self.reason = reason
        self.snapshot = snapshot


def crash_point(step: str) -> None:
    """Fault injection for the crash tests: exit abruptly at the named step."""
    if os.environ.get(CRASH_ENV) == step:
        os._exit(137)


def frame(entry: dict[str, Any]) -> bytes:
    body = orjson.dumps(entry)
    return b"%08x %s\n" % (zlib.crc32(body), body)


@dataclass
class Scan:
    """What reading one file found: its entries and where the good part ends."""

    path: Path
    entries: list[dict[str, Any]] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    good_bytes: int = 0
    size: int = 0
    torn: str | None = None  # why the tail was dropped, if it was
    damage: str | None = None  # why the record at ``good_bytes`` is damaged


def scan(path: Path, *, last: bool) -> Scan:
    """Read a log or snapshot file, checking every record's checksum.

    A last record of the newest log that lacks its line end is a write cut
    short (torn) and is reported in ``torn``. Every complete record that fails
    its check, the last one too, raises ``CorruptLog``: it was acknowledged
    whole, so its bytes are damaged, not torn.
    """
    result = read(path, last=last)
    if result.damage is not None:
        raise CorruptLog(path, result.good_bytes, result.damage)
    return result


def read(path: Path, *, last: bool) -> Scan:
    """``scan``, but a damaged record ends the reading instead of raising: the
    entries before it are returned, and ``damage`` says why it is damaged."""
    data = path.read_bytes()
    result = Scan(path, size=len(data))
    offset = 0
    while offset < len(data):
        end = data.find(b"\n", offset)
        line = data[offset:] if end < 0 else data[offset:end]
        reason = _check(line) if end >= 0 else "no line end"
        if reason is None:
            result.entries.append(orjson.loads(line[9:]))
            result.offsets.append(offset)
            offset = end + 1
            result.good_bytes = offset
            continue
        if last and end < 0:
            result.torn = reason
        else:
            result.damage = reason
        return result
    return result


def _check(line: bytes) -> str | None:
    if len(line) < 10 or line[8:9] != b" ":
        return "malformed record"
    try:
        expected = int(line[:8], 16)
    except ValueError:
        return "malformed checksum"
    if zlib.crc32(line[9:]) != expected:
        return "checksum mismatch"
    try:
        entry = orjson.loads(line[9:])
    except orjson.JSONDecodeError:
        return "not JSON"
    if not isinstance(entry, dict) or "op" not in entry:
        return "not a journal entry"
    return None


@dataclass
class Files:
    snapshots: dict[int, Path]
    logs: dict[int, Path]


def list_files(directory: Path) -> Files:
    snapshots: dict[int, Path] = {}
    logs: dict[int, Path] = {}
    for path in directory.iterdir():
        if match := _SNAPSHOT.fullmatch(path.name):
            snapshots[int(match[1])] = path
        elif match := _LOG.fullmatch(path.name):
            logs[int(match[1])] = path
    return Files(snapshots, logs)


@dataclass
class Plan:
    """The files to load, oldest first, and the generation to go on writing."""

    snapshot: Path | None
    base: int
    logs: list[Path]
    generation: int


def recovery_plan(directory: Path) -> Plan:
    files = list_files(directory)
    base = max(files.snapshots) if files.snapshots else None
    first = base if base is not None else min(files.logs, default=0)
    logs = [files.logs[g] for g in sorted(files.logs) if g >= first]
    generation = max([first, *files.logs])
    snapshot = files.snapshots[base] if base is not None else None
    return Plan(snapshot, first, logs, generation)


@dataclass(frozen=True)
class Finding:
    """One problem of a file the service would load: the first record of it
    that is damaged or cannot be replayed, a torn last record, or a snapshot
    without its end record."""

    path: Path
    offset: int
    reason: str
    size: int  # of the file
    snapshot: bool = False
    torn: bool = False

    def __str__(self) -> str:
        name = self.path.name
        dropped = self.size - self.offset
        if self.torn:
            return (
                f"{name}: torn last record at byte offset {self.offset} "
                f"({self.reason}); {dropped} bytes would be dropped"
            )
        error = self.error()
        if self.snapshot:
            return str(error)
        # the bytes from the bad record to the end: what repair would cut off
        return f"{error} of {dropped} bytes"

    def error(self) -> CorruptLog:
        """What the service raises when it meets this (a torn tail it drops)."""
        return CorruptLog(self.path, self.offset, self.reason, snapshot=self.snapshot)


_REPLAY_ERRORS = (StoreError, KeyError, TypeError, ValueError)


def _load(
    path: Path, *, last: bool, snapshot: bool, store: Store | None
) -> tuple[Scan, Finding | None, int]:
    """Read one file and replay its entries into ``store`` (none: only read),
    as recovery does; the file, its first problem (none: it loads) and how many
    entries were replayed. An entry that cannot be replayed stops the replay
    there: what follows it in the file is not applied."""
    found = read(path, last=last)
    replayed = 0
    if store is not None:
        for entry, offset in zip(found.entries, found.offsets):
            if entry["op"] in ("snapshot", "end"):
                continue
            try:
                store.apply(entry)
            except _REPLAY_ERRORS as exc:
                reason = f"the entry cannot be replayed: {type(exc).__name__}"
                return found, Finding(path, offset, reason, found.size, snapshot), 0
            replayed += 1
    if found.damage is not None:
        problem = Finding(path, found.good_bytes, found.damage, found.size, snapshot)
        return found, problem, replayed
    if snapshot and (not found.entries or found.entries[-1]["op"] != "end"):
        problem = Finding(path, found.good_bytes, INCOMPLETE, found.size, True)
        return found, problem, replayed
    return found, None, replayed


def examine(directory: Path, store: Store | None = None) -> list[Finding]:
    """The problems of the files the service would load from ``directory``,
    found as it finds them: each record's checksum, then each entry replayed
    into ``store``, which should be built as the service builds its store at
    startup (its rules and built-in tables; by default an empty store without
    either). The replay holds the data in memory, as the service does.

    A log's first problem is where ``repair`` cuts it; the replay goes on with
    the next log from the state before that problem, as the service would load
    it after the repair. A snapshot's problem cannot be cut: after it, the logs
    are only read (their checksums), not replayed, since the state they apply
    to is unknown.
    """
    if store is None:
        store = Store(max_records=sys.maxsize, max_tables=sys.maxsize)
    plan = recovery_plan(directory)
    paths = ([plan.snapshot] if plan.snapshot else []) + plan.logs
    findings: list[Finding] = []
    replay: Store | None = store
    for position, path in enumerate(paths):
        is_snapshot = path == plan.snapshot
        found, problem, _ = _load(
            path, last=position == len(paths) - 1, snapshot=is_snapshot, store=replay
        )
        if problem is not None:
            findings.append(problem)
            if is_snapshot:
                replay = None
        elif found.torn:
            torn = Finding(path, found.good_bytes, found.torn, found.size, torn=True)
            findings.append(torn)
    return findings


def check(directory: Path, store: Store | None = None) -> list[str]:
    """Findings of a check of the data directory, one line each (empty: all
    good); ``store``: as for ``examine``."""
    return [str(finding) for finding in examine(directory, store)]


def keep_aside(path: Path, offset: int, data: bytes) -> Path:
    """Copy the bytes a log is about to lose beside it, as
    ``<log>.<offset>.corrupt`` (fsynced), before the log is cut."""
    aside = path.with_name(f"{path.name}.{offset}.corrupt")
    descriptor = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    fsync_directory(path.parent)
    return aside


def truncate(path: Path, offset: int, data: bytes) -> Path:
    """Cut ``path`` at ``offset`` once the bytes after it are kept aside."""
    aside = keep_aside(path, offset, data[offset:])
    with path.open("r+b") as handle:
        handle.truncate(offset)
        handle.flush()
        os.fsync(handle.fileno())
    return aside


def repair(directory: Path, store: Store | None = None) -> list[str]:
    """Truncate every log at its first problem (like redis-check-aof --fix): a
    damaged record, an entry that cannot be replayed (``store``: as for
    ``examine``) or a torn last record; what is cut off is kept beside the log
    in a ``.corrupt`` file. A snapshot is left as it is: it cannot be cut."""
    return cut(examine(directory, store))


def cut(findings: list[Finding]) -> list[str]:
    """Truncate each log with a finding at its offset (``repair``); one line
    for each log cut."""
    done: list[str] = []
    for finding in findings:
        if finding.snapshot:
            continue
        path = finding.path
        data = path.read_bytes()
        aside = truncate(path, finding.offset, data)
        done.append(
            f"{path.name}: truncated to {finding.offset} bytes (dropped "
            f"{len(data) - finding.offset}, kept in {aside.name})"
        )
    return done


def fsync_directory(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AppendOnlyLog:
    """The store's journal: appends each change before it is applied.

    ``append`` runs under the store's lock, so lines are in commit order. With
    ``always``, writers then await ``wait_durable``: one fsync covers every line
    written before it started (group commit). ``everysec`` fsyncs from a
    background task about once a second; ``no`` leaves it to the OS.
    """

    def __init__(
        self,
        directory: Path,
        *,
        fsync: Fsync,
        rewrite_percent: int = 100,
        rewrite_min_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.directory = directory
        self.fsync = fsync
        self.rewrite_percent = rewrite_percent
        self.rewrite_min_bytes = rewrite_min_bytes
        self.generation = 0
        self.fd: int | None = None
        self.written = 0  # bytes appended since start, across files
        self.synced = 0  # of those, bytes known to be on disk
        self.log_bytes = 0  # size of the current log file
        self.base_bytes = 0  # size of the snapshot the current log follows
        self.failure: str | None = None
        self.store: Store | None = None
        self._sync_lock = threading.Lock()
        self._syncing: asyncio.Future[None] | None = None
        self._compacting = False
        self._tasks: list[asyncio.Task[None]] = []
        self._lock: int | None = None

    # -- startup -----------------------------------------------------------

    def recover(
        self, store: Store, *, progress: Callable[[int, int], None] | None = None
    ) -> int:
        """Load the newest snapshot and replay the logs after it into ``store``.

        A torn last record (no line end) is dropped with a warning: the file is
        cut back to the last good record, and the bytes cut off are kept in a
        ``.corrupt`` file beside it. A damaged complete record raises ``CorruptLog``.
        Returns the number of entries replayed.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_directory()
        try:
            return self._recover(store, progress)
        except BaseException:
            self._unlock()
            raise

    def _recover(
        self, store: Store, progress: Callable[[int, int], None] | None
    ) -> int:
        for leftover in self.directory.glob("*.tmp"):
            leftover.unlink()
        plan = recovery_plan(self.directory)
        paths = ([plan.snapshot] if plan.snapshot else []) + plan.logs
        total = sum(p.stat().st_size for p in paths)
        seen = replayed = 0
        last_report = time.monotonic()
        for position, path in enumerate(paths):
            found, problem, count = _load(
                path,
                last=position == len(paths) - 1,
                snapshot=path == plan.snapshot,
                store=store,
            )
            if problem is not None:
                raise problem.error()
            replayed += count
            seen += found.size
            if found.torn:
                log.warning(
                    "aof.torn_tail",
                    file=path.name,
                    offset=found.good_bytes,
                    dropped_bytes=found.size - found.good_bytes,
                    reason=found.torn,
                )
                truncate(path, found.good_bytes, path.read_bytes())
            if progress is not None and time.monotonic() - last_report > 1:
                progress(seen, total)
                last_report = time.monotonic()
        self.generation = plan.generation
        self.base_bytes = plan.snapshot.stat().st_size if plan.snapshot else 0
        if plan.snapshot is not None:
            # files older than the snapshot are no longer needed
            self._remove_older(plan.base)
        return replayed

    def _lock_directory(self) -> None:
        """Hold the directory's lock for as long as the log is open: a second
        service on the same directory would interleave its changes with ours,
        and a compaction of either would drop the other's."""
        if self._lock is not None:
            return
        path = self.directory / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:  # a read-only directory: the log takes no write there
            return
        try:
            # a POSIX lock is the process's: another process is refused, and
            # it goes with the process, however that ends
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            raise OSError(
                errno.EBUSY,
                "in use by another memdb service (stop it, or give this one "
                "a MEMDB_DATA_DIR of its own)",
                str(self.directory),
            ) from None
        self._lock = fd

    def in_use(self) -> bool:
        """Whether a service holds the directory (its lock), as a tool asks
        before it changes files (``repair``)."""
        try:
            self._lock_directory()
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                return True
            raise
        self._unlock()
        return False

    def open(self, store: Store) -> None:
        """Start appending to the current generation's log and journal ``store``."""
        self.store = store
        path = self.directory / f"appendonly.{self.generation}.aof"
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self.log_bytes = os.fstat(self.fd).st_size
            fsync_directory(self.directory)
        except OSError as exc:
            self.failure = f"cannot open the log: {exc.strerror}"
            log.error("aof.unavailable", file=path.name, error=exc.strerror)
        store.journal = self.append
        store.durable = self.wait_durable

    # -- writing -----------------------------------------------------------

    def append(self, entry: dict[str, Any]) -> None:
        """Write one entry; raises ``JournalError`` (and nothing is applied) if it fails."""
        if self.failure is not None or self.fd is None:
            raise JournalError(self.failure or "the log is closed")
        line = frame(entry)
        try:
            written = os.write(self.fd, line)
        except OSError as exc:
            self._undo_partial()
            raise JournalError(f"cannot write the log: {exc.strerror}") from None
        if written != len(line):
            self._undo_partial()
            raise JournalError("cannot write the log: short write")
        self.written += written
        self.log_bytes += written

    def _undo_partial(self) -> None:
        """Cut a partly written line off, so that the next one starts clean."""
        assert self.fd is not None
        try:
            os.ftruncate(self.fd, self.log_bytes)
        except OSError as exc:
            self.failure = (
                f"the log could not be repaired after a failed write: {exc.strerror}"
            )
            log.error("aof.failed", error=exc.strerror)

    async def wait_durable(self) -> None:
        """With ``always``: return once everything written so far is fsynced."""
        if self.fsync != "always":
            return
        target = self.written
        while self.synced < target:
            if self.failure is not None or self.fd is None:
                raise JournalError(self.failure or "the log is closed")
            if self._syncing is None:
                self._syncing = asyncio.ensure_future(self._sync_now())
            syncing = self._syncing
            await asyncio.shield(syncing)
        if self.failure is not None:
            raise JournalError(self.failure)

    async def _sync_now(self) -> None:
        try:
            await asyncio.to_thread(self.sync)
        finally:
            self._syncing = None

    def sync(self) -> None:
        """fsync the log, covering every byte written before the call."""
        with self._sync_lock:
            target, fd = self.written, self.fd
            if fd is None or self.synced >= target:
                return
            try:
                os.fsync(fd)
            except OSError as exc:
                self.failure = f"cannot fsync the log: {exc.strerror}"
                log.error("aof.failed", error=exc.strerror)
                return
            self.synced = max(self.synced, target)

    # -- background work ---------------------------------------------------

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._every_second()))

    async def _every_second(self) -> None:
        while True:
            await asyncio.sleep(1)
            if self.fsync == "everysec" and self.synced < self.written:
                await asyncio.to_thread(self.sync)
            if self.should_compact():
                await self.compact()

    def should_compact(self) -> bool:
        if self._compacting or self.failure is not None:
            return False
        grown = self.log_bytes * 100 > self.base_bytes * self.rewrite_percent
        return self.log_bytes >= self.rewrite_min_bytes and grown

    async def compact(self) -> None:
        """Write a snapshot of the store and start a fresh log, without stopping
        writers for longer than it takes to copy the lists of record references."""
        if self._compacting or self.store is None:
            return
        self._compacting = True
        started = time.perf_counter()
        try:
            state = self._rotate()
            crash_point("after-rotate")
            size = await asyncio.to_thread(self._write_snapshot, *state)
            self.base_bytes = size
            self._remove_older(state[0])
            log.info(
                "aof.compacted",
                generation=state[0],
                snapshot_bytes=size,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )
        except OSError as exc:
            log.error("aof.compaction_failed", error=exc.strerror)
        finally:
            self._compacting = False

    def _rotate(
        self,
    ) -> tuple[int, list[tuple[str, list[Any], dict[str, Any], list[Any]]]]:
        """Under the store's lock: capture the state and switch to the next log."""
        assert self.store is not None
        store = self.store
        with store.lock:
            generation = self.generation + 1
            path = self.directory / f"appendonly.{generation}.aof"
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            fsync_directory(self.directory)
            old = self.fd
            if old is not None:
                os.fsync(old)
            self.synced = self.written
            self.fd, self.generation, self.log_bytes = fd, generation, 0
            state = [
                (
                    name,
                    list(table.records.values()),
                    dict(table.secrets),
                    [index_spec(i) for i in table.indexes.values()],
                )
                for name, table in store.tables.items()
            ]
        if old is not None:
            os.close(old)
        return generation, state

    def _write_snapshot(
        self,
        generation: int,
        state: list[tuple[str, list[Any], dict[str, Any], list[Any]]],
    ) -> int:
        final = self.directory / f"snapshot.{generation}.db"
        temporary = final.with_name(final.name + ".tmp")
        count = 0
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(frame({"op": "snapshot", "version": 1, "generation": generation}))
            for entry in snapshot_entries(state):
                out.write(frame(entry))
                count += len(entry.get("records", ()))
            out.write(frame({"op": "end", "records": count}))
            out.flush()
            crash_point("before-snapshot-fsync")
            os.fsync(out.fileno())
        crash_point("before-snapshot-rename")
        os.replace(temporary, final)
        fsync_directory(self.directory)
        crash_point("after-snapshot-rename")
        return final.stat().st_size

    def _remove_older(self, generation: int) -> None:
        files = list_files(self.directory)
        removed = False
        for older in [*files.snapshots.items(), *files.logs.items()]:
            if older[0] < generation:
                older[1].unlink(missing_ok=True)
                removed = True
        if removed:
            fsync_directory(self.directory)

    # -- shutdown ----------------------------------------------------------

    async def close(self) -> None:
        """Flush and fsync the log; called when the service stops."""
        await stop_tasks(self._tasks)
        if self.fd is not None:
            self.sync()
            os.close(self.fd)
            self.fd = None
        if self.store is not None:
            self.store.journal = None
            self.store.durable = None
        self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # the lock goes with its descriptor
            self._lock = None


async def stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel background tasks, wait until they have ended, forget them."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            pass
    tasks.clear()


def snapshot_entries(
    state: list[tuple[str, list[Any], dict[str, Any], list[Any]]],
) -> Iterator[dict[str, Any]]:
    """The journal entries that rebuild ``state``: tables, indexes, records in chunks."""
    for name, records, secrets, indexes in state:
        yield {"op": "create_table", "table": name}
        for spec in indexes:
            yield {"op": "create_index", "table": name, **spec}
        for start in range(0, len(records), _CHUNK):
            chunk = records[start : start + _CHUNK]
            entry: dict[str, Any] = {"op": "put", "table": name, "records": chunk}
            chunk_secrets = [secrets.get(r["id"]) for r in chunk]
            if any(s is not None for s in chunk_secrets):
                entry["secrets"] = chunk_secrets
            yield entry
