"""The Redis backend: the store interface over Redis or Valkey, standalone or a
Cluster (ADR 0011 has the data model, ``lua/common.lua`` the keys).

Every write that must be atomic is one Lua script on the keys of one hash slot:
the keys of a table share the hash tag of its *group* (tables that reference one
another, ``users`` and ``orders``, share one), so tables spread over a Cluster's
nodes and every rule within a group stays atomic. The service computes what a
script cannot (the canonical JSON key of each indexed value, the effect of an
update on each index) and the script checks and writes.

What a scan promises (lists, joins, dumps read tables in batches of ids taken
in insertion order, each batch one script): every record that exists for the
whole scan is read exactly once, at the version it had when its batch was
read; a record created or deleted during the scan may or may not be read; no
record is read twice. Unlike the memory store, a scan is not a snapshot of one
instant.

In standalone mode the total record count and the catalog of tables are kept in
the same scripts (so ``MEMDB_MAX_RECORDS`` and ``MEMDB_MAX_TABLES`` hold exactly);
in a Cluster they live on one node of their own, updated after each write, and
the limits are checked against them before it: they may be passed by one batch.

The change feed (standalone only) is the stream ``<prefix>:changes``: the
script that applies a change appends its entry (one per record changed), so
the stream's order is the commit order and a change is in it if and only if
it was applied; the entry's id is the change's cursor. A page or a lookup reads
the stream's newest id in the script that reads the records: the cursor the
list was read at, exactly. A scan reads it in one transaction with the table's
count, before its first batch; as a scan is not a snapshot, a record that a
later batch reads may already hold a change the feed gives after that cursor
(a follower applying it again gets the same record: an event carries the whole
record). In a Cluster a table group's scripts run on the node of its hash
slot, and no one stream can be written by all of them: the feed is refused
there (``FeedUnsupported``).
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence, TypeVar

import orjson
import structlog
from redis import exceptions as redis_errors

from app.storage.base import (
    MAX_FIELDS,
    SNAPSHOT_CURSOR,
    BadCursor,
    CapacityExceeded,
    Change,
    ChangeEvent,
    CursorGone,
    FeedUnsupported,
    DuplicateKey,
    IndexInfo,
    MissingReference,
    Record,
    Reference,
    Rules,
    Scan,
    Secret,
    StaleRecord,
    StillReferenced,
    StoreBackend,
    StoreError,
    TableInfo,
    TooManyFields,
    TooManyIndexes,
    Unavailable,
    UnknownIndex,
    UnknownRecord,
    UnknownTable,
    version_of,
)
from app.storage.keys import MISSING, json_key, resolve, split_path
from app.storage.links import ClusterLink, Link, WireLink, pairs, scored
from app.storage.wire import Command, Wire
from app.storage.merge import merged_record

log = structlog.get_logger("memdb.redis")

T = TypeVar("T")
MAX_INDEXES = 32
SCRIPTS = (
    *("write", "update", "delete", "empty", "page", "scan", "lookup", "index"),
    "changes",
)
_BATCH = 4096
# error replies of a Redis that cannot serve now (loading, failing over, busy)
_UNAVAILABLE = ("LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY", "READONLY")
_RETRIES = 16
# set while this task makes the built-in tables (their own catalog reads find
# them missing, and must not start making them again)
_MAKING: ContextVar[bool] = ContextVar("making_builtins", default=False)
# a readiness probe this recent is the answer (see ``RedisStore.state``)
_PROBE_REUSE_S = 0.5
# the errors of a Redis that is down, loading, failing over or out of reach
_DOWN = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.MasterDownError,
    redis_errors.ReadOnlyError,
    redis_errors.ClusterError,
    redis_errors.SlotNotCoveredError,
    redis_errors.MaxConnectionsError,
    OSError,
)


def index_key(value: Any) -> str:
    """The key of a value in an index: its canonical JSON text ("" when
    missing), equal for values equal as JSON (``1`` and ``1.0``)."""
    if value is MISSING:
        return ""
    key = json_key(value)
    if isinstance(key, tuple):  # a container, already canonical JSON
        if key[0] is bool:
            return "true" if key[1] else "false"
        return str(key[1].decode())
    if isinstance(key, float) and key.is_integer() and abs(key) < 2**63:
        key = int(key)
    return orjson.dumps(key).decode()


@dataclass
class Catalog:
    """A table's indexes as this worker last read them, with their version."""

    iv: str = "0"
    fields: list[str] = field(default_factory=list)
    unique: dict[str, bool] = field(default_factory=dict)
    ready: dict[str, bool] = field(default_factory=dict)


def _script(name: str) -> str:
    lua = files("app.storage") / "lua"
    return (lua / "common.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


class RedisScan(Scan):
    """A table read in batches in insertion order (the sorted set ``o``, scored
    by a sequence never reused within a table's life).

    A batch takes two steps: its ids (``ZRANGE``) come with the batch before,
    and its records (``HMGET``) come with the table's ``gen`` (which changes
    whenever a record leaves the table) and the next batch's ids. When ``gen``
    did not change between the two steps, no record left in between, so every
    record ``HMGET`` found was there, with the sequence ``ZRANGE`` gave, when it
    was read. When it did change (a delete meanwhile), the batch is read again
    in one step by a script, from the same cursor. Each step's commands leave
    before the service parses the batch before, so Redis reads one batch while
    the service parses another."""

    def __init__(
        self, store: RedisStore, table: str, count: int, size: int = 0
    ) -> None:
        self.store = store
        self.table = table
        self.count = count
        self.size = size  # the table's bytes, when known: the first batch's size

    async def batches(self, size: int = _BATCH) -> AsyncIterator[list[Record]]:
        store, link = self.store, self.store.link
        base = store.base(self.table)
        order, rows, meta = f"{base}:o", f"{base}:r", f"{base}:m"

        def ids_after(cursor: Any, count: int) -> Command:
            return (
                *("ZRANGE", order, f"({_text(cursor)}", "+inf", "BYSCORE"),
                *("LIMIT", 0, count, "WITHSCORES"),
            )

        def read(found: list[Any], count: int) -> Awaitable[list[Any]]:
            return link.start(
                [
                    ("HMGET", rows, *found[0::2]),
                    ("HMGET", meta, "gen", "seq"),
                    ids_after(found[-1], count),
                ]
            )

        def ids_from(cursor: Any, count: int) -> Awaitable[list[Any]]:
            return link.calls([("HMGET", meta, "gen", "seq"), ids_after(cursor, count)])

        # ``found``: the next batch's ids and scores, above ``cursor``, read
        # after ``gen`` was
        count = _batch_size(size, self.size, self.count)
        cursor: Any = 0
        (gen, seq), found = await store._guarded(lambda: ids_from(0, count))
        found = scored(found)
        pending = read(found, count) if found and seq is not None else None
        try:
            while pending is not None:
                waiting = pending
                jsons, (now, seq), after = await store._guarded(lambda: waiting)
                if seq is None:
                    return  # dropped meanwhile
                if now == gen:
                    cursor, gen, found = found[-1], now, scored(after)
                else:  # records left meanwhile: this batch again, in one step
                    step = await store.run("scan", [base], [_text(cursor), count])
                    if step[0] in (-1, b"-1"):
                        return
                    cursor, jsons = step[0], step[2:]
                    (gen, seq), found = await store._guarded(
                        lambda: ids_from(cursor, count)
                    )
                    found = scored(found)
                weight = sum(len(j) for j in jsons if j is not None)
                count = _batch_size(size, weight, len(jsons))
                pending = read(found, count) if found and seq is not None else None
                records = [orjson.loads(j) for j in jsons if j is not None]
                if records:
                    yield records
        finally:
            if isinstance(pending, asyncio.Future) and not pending.done():
                pending.cancel()


# what a batch of a scan aims at: records of about this many bytes in all
_BATCH_BYTES = 1 << 20


def _batch_size(most: int, size: int, count: int) -> int:
    """How many records the next batch asks for: about ``_BATCH_BYTES`` of
    records of the average size seen (``size`` bytes in ``count`` records)."""
    if size <= 0 or count <= 0:
        return min(most, 256)
    return max(16, min(most, _BATCH_BYTES * count // size))


def _refuse_record(status: str, table: str, record_id: str) -> None:
    """The refusals of every script that writes one record by id."""
    if status == "no_table":
        raise UnknownTable(table)
    if status == "unknown":
        raise UnknownRecord(record_id)
    if status == "changed":
        raise StaleRecord(record_id)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- the change feed ------------------------------------------------------------------

# the entries one read of the feed looks at, at most (matching or not)
_FEED_SCAN = 10_000
# how long the feed's reader blocks in one XREAD (a dead connection is noticed
# within this plus the command timeout)
_FEED_BLOCK_S = 2.0


def _position(cursor: str) -> tuple[int, int]:
    """A cursor (a stream entry id, ``<ms>-<seq>``) as two integers;
    ``BadCursor`` when it is not one."""
    ms, dash, seq = cursor.partition("-")
    if (
        not dash
        or not (ms.isascii() and ms.isdigit() and seq.isascii() and seq.isdigit())
        or len(ms) > 20
        or len(seq) > 20
        or int(ms) >= 1 << 64
        or int(seq) >= 1 << 64
    ):
        raise BadCursor(f"not a cursor: {cursor[:40]!r}")
    return int(ms), int(seq)


def _newest_id(reply: Any) -> str:
    """The id of the entry an ``XREVRANGE + - COUNT 1`` gave ("0-0": none)."""
    return _text(reply[0][0]) if reply else "0-0"


class _FeedReader:
    """The newest entry of the change feed, as this event loop knows it, kept
    by one task that waits on the stream for the loop's followers.

    The task blocks in ``XREAD BLOCK`` on a connection of its own (the shared
    connection multiplexes every other command and cannot block) and, in the
    same round trip, reads the newest id with ``XREVRANGE``: one connection
    and no polling however many followers wait, and a follower wakes as soon as
    Redis answers the XREAD. Each wake sets the event followers wait on and
    puts a fresh one in its place."""

    def __init__(self, url: str, key: str, timeout: float) -> None:
        self.key = key
        self.newest: tuple[int, int] | None = None  # None until first read
        self.moved = asyncio.Event()
        self._wire = Wire(url, timeout=timeout + _FEED_BLOCK_S)
        self._task = asyncio.ensure_future(self._follow())

    async def _follow(self) -> None:
        key, known, pause = self.key, "0-0", 0.05
        newest: list[Command] = [("XREVRANGE", key, "+", "-", "COUNT", 1)]
        block_ms = int(_FEED_BLOCK_S * 1000)
        try:
            while True:
                read: list[Command] = []
                if self.newest is not None:  # wait for an entry after it
                    read.append(
                        ("XREAD", "BLOCK", block_ms, "COUNT", 1, "STREAMS", key, known)
                    )
                try:
                    found = await self._wire.calls([*read, *newest])
                except (redis_errors.RedisError, OSError):
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, _FEED_BLOCK_S)
                    continue
                pause = 0.05
                known = _newest_id(found[-1])
                position = _position(known)
                if position != self.newest:
                    self.newest = position
                    moved, self.moved = self.moved, asyncio.Event()
                    moved.set()
        finally:
            await self._wire.close()

    @property
    def stopped(self) -> bool:
        return self._task.done()

    async def stop(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


def expected_arg(expected: frozenset[str] | None) -> str:
    """The versions a write may change, as the scripts read them: "" for any
    version, else "=" and the versions separated by commas ("=" alone allows
    none: an ``If-Match`` of weak or malformed tags matches no record)."""
    if expected is None:
        return ""
    return "=" + ",".join(sorted(v for v in expected if v and "," not in v))


class RedisStore(StoreBackend):
    """The store interface over Redis or Valkey (see the module docstring)."""

    kind = "redis"

    def __init__(
        self,
        *,
        url: str,
        cluster: bool = False,
        prefix: str = "memdb",
        pool_size: int = 64,
        timeout: float = 2.0,
        wait_replicas: int = 0,
        max_records: int = 5_000_000,
        max_tables: int = 10_000,
        rules: Rules | None = None,
        changes_retain: int = 10_000,
    ) -> None:
        self.rules = rules or Rules()
        self.changes_retain = changes_retain
        self.url = url
        self.cluster = cluster
        self.prefix = prefix
        self.timeout = timeout
        self.wait_replicas = wait_replicas
        self.max_records = max_records
        self.max_tables = max_tables
        self.pool_size = pool_size
        # one link per event loop (the service has one; a test may drive
        # the app from a second): connections belong to the loop they open on
        self._links: dict[int, Link] = {}
        self._sources = {name: _script(name) for name in SCRIPTS}
        self.catalogs: dict[str, Catalog] = {}
        self.groups = self._groups(self.rules)
        # the change feed's reader of each event loop (started by a follower)
        self._readers: dict[int, _FeedReader] = {}
        # the latest readiness probe of each event loop: when it began, and it
        self._probes: dict[int, tuple[float, asyncio.Future[str | None]]] = {}

    def _connect(self) -> Link:
        if self.cluster:
            return ClusterLink(
                self.url,
                timeout=self.timeout,
                pool_size=self.pool_size,
                sources=self._sources,
            )
        return WireLink(self.url, timeout=self.timeout, sources=self._sources)

    @property
    def link(self) -> Link:
        loop = id(asyncio.get_running_loop())
        found = self._links.get(loop)
        if found is None:
            found = self._links[loop] = self._connect()
        return found

    # -- names ------------------------------------------------------------------

    @staticmethod
    def _groups(rules: Rules) -> dict[str, str]:
        """Tables that reference one another share a hash tag: the first one's."""
        tag: dict[str, str] = {}
        for reference in rules.references:
            group = (
                tag.get(reference.target)
                or tag.get(reference.table)
                or reference.target
            )
            tag[reference.target] = tag[reference.table] = group
        return tag

    def base(self, table: str) -> str:
        return f"{self.prefix}:{{{self.groups.get(table, table)}}}:{table}"

    def _total_key(self, table: str) -> str:
        """The total counter, or (a Cluster, where it is not kept in the
        scripts) the table's own base, which the scripts read as "none"."""
        return self.base(table) if self.cluster else f"{self.prefix}:total"

    def _catalog_key(self, table: str) -> str:
        return self.base(table) if self.cluster else self._tables_key

    @property
    def _tables_key(self) -> str:
        return f"{self.prefix}:tables"

    @property
    def _changes_key(self) -> str:
        return f"{self.prefix}:changes"

    def _feed_key(self, table: str) -> str:
        """The change feed, or (a Cluster, which keeps none) the table's own
        base, which the scripts read as "none"."""
        return self.base(table) if self.cluster else self._changes_key

    # -- plumbing -----------------------------------------------------------------

    async def run(
        self,
        name: str,
        keys: list[str],
        args: Sequence[Any],
        *,
        durable: bool = False,
    ) -> Any:
        """Run one script; a Redis out of reach is ``Unavailable``. ``durable``
        (a write) with ``MEMDB_REDIS_WAIT_REPLICAS``: a write the script made
        (it answered "ok") is on that many replicas, or ``Unavailable``."""
        link = self.link
        if not durable or self.wait_replicas <= 0:
            return await self._guarded(lambda: link.script(name, keys, args))
        # WAIT gives up in half the time a command may take, so that its
        # answer (how many replicas) arrives before the command times out
        wanted, timeout_ms = self.wait_replicas, max(1, int(self.timeout * 500))
        found, acked = await self._guarded(
            lambda: link.script_then_wait(name, keys, args, wanted, timeout_ms)
        )
        if _text(found[0]) == "ok" and acked < wanted:
            raise Unavailable(
                f"the write was made but only {acked} of {wanted} replicas "
                "confirmed it in time"
            )
        return found

    async def _guarded(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except _DOWN as exc:
            raise Unavailable(_describe(exc)) from None
        except redis_errors.ResponseError as exc:
            if str(exc).startswith(_UNAVAILABLE):
                raise Unavailable(_describe(exc)) from None
            if "OOM command not allowed" in str(exc):  # maxmemory, no eviction
                raise CapacityExceeded(
                    "Redis is full (its maxmemory is reached): the write was "
                    "refused; free records, or give Redis more memory"
                ) from None
            raise

    async def catalog(self, table: str, *, fresh: bool = False) -> Catalog:
        """The table's index catalog as this worker knows it (read when unknown)."""
        known = self.catalogs.get(table)
        if known is not None and not fresh:
            return known
        base = self.base(table)

        link = self.link
        iv, specs = await self._guarded(
            lambda: link.calls([("HGET", f"{base}:m", "iv"), ("HGETALL", f"{base}:i")])
        )
        catalog = Catalog(iv=_text(iv) if iv is not None else "0")
        decoded = {_text(f): orjson.loads(v) for f, v in pairs(specs).items()}
        for name in sorted(decoded, key=lambda f: (decoded[f].get("at", 0), f)):
            spec = decoded[name]
            catalog.fields.append(name)
            catalog.unique[name] = bool(spec["unique"])
            catalog.ready[name] = bool(spec["ready"])
        self.catalogs[table] = catalog
        builtin = [f for t, f, _ in self.rules.indexes if t == table]
        if fresh and not _MAKING.get() and not set(builtin) <= set(catalog.fields):
            # Redis lost the table's built-in indexes (a FLUSHALL, a restart
            # without persistence): made again before any write goes on
            log.warning("store.builtins_restored", table=table, indexes=builtin)
            await self._builtins()
            return await self.catalog(table, fresh=True)
        return catalog

    async def open(self) -> None:
        await self._guarded(self.link.prepare)
        await self._builtins()

    async def _builtins(self) -> None:
        """Make the built-in tables and their indexes where they are missing
        (each request that finds them missing makes them: the steps are
        idempotent, so none writes before they exist)."""
        making = _MAKING.set(True)
        try:
            for name in self.rules.tables:
                if not await self.has_table(name):
                    await self._write("insert", [(name, [], None)])
            for table, field_name, unique in self.rules.indexes:
                catalog = await self.catalog(table, fresh=True)
                if field_name not in catalog.fields:
                    try:
                        await self.create_index(table, field_name, unique=unique)
                    except DuplicateKey as exc:
                        if exc.field != "index":  # another worker made it meanwhile
                            raise
        finally:
            _MAKING.reset(making)

    async def close(self) -> None:
        loop = id(asyncio.get_running_loop())
        reader = self._readers.pop(loop, None)
        if reader is not None:
            await reader.stop()
        probe = self._probes.pop(loop, None)
        if probe is not None and not probe[1].done():
            probe[1].cancel()
            await asyncio.wait({probe[1]})
        found = self._links.pop(loop, None)
        if found is not None:
            await found.close()

    async def state(self) -> str | None:
        """Why Redis cannot serve every key now, or ``None``: a ``PING`` of a
        standalone server; over a Cluster, ``CLUSTER INFO`` from each master
        (every one reachable and saying ``cluster_state:ok``). Probes that
        arrive together share one, and one begun under half a second ago is
        reused, so that a flood of ``/ready`` costs Redis little."""
        loop = asyncio.get_running_loop()
        known = self._probes.get(id(loop))
        if known is None or (
            known[1].done() and loop.time() - known[0] > _PROBE_REUSE_S
        ):
            probe = asyncio.ensure_future(self._probe())
            probe.add_done_callback(lambda t: t.cancelled() or t.exception())
            known = self._probes[id(loop)] = (loop.time(), probe)
        return await asyncio.shield(known[1])

    async def _probe(self) -> str | None:
        link = self.link
        try:
            return await self._guarded(link.health)
        except Unavailable as exc:
            return str(exc)

    # -- reads --------------------------------------------------------------------

    async def read(self, table: str, record_id: str) -> Record | None:
        raw = await self.read_json(table, record_id)
        return None if raw is None else orjson.loads(raw)

    async def read_json(self, table: str, record_id: str) -> bytes | None:
        base = self.base(table)
        link = self.link
        raw = await self._guarded(lambda: link.call("HGET", f"{base}:r", record_id))
        return None if raw is None else bytes(raw)

    async def read_many(self, table: str, ids: Sequence[str]) -> list[Record]:
        found = await self._lookup(table, "id", list(ids), mark=False)
        return found[0] if found is not None else []

    async def has_table(self, table: str) -> bool:
        base = self.base(table)
        link = self.link
        return bool(await self._guarded(lambda: link.call("EXISTS", f"{base}:m")))

    async def secret(self, table: str, record_id: str) -> Secret | None:
        base = self.base(table)
        link = self.link
        raw = await self._guarded(lambda: link.call("HGET", f"{base}:s", record_id))
        return None if raw is None else dict(orjson.loads(raw))

    async def page(
        self, table: str, offset: int, limit: int
    ) -> tuple[list[Record], int]:
        return await self._page(table, offset, limit, mark=True)

    async def _page(
        self, table: str, offset: int, limit: int, *, mark: bool
    ) -> tuple[list[Record], int]:
        """``page``; with ``mark``, noting the change-feed cursor it was read at."""
        keys = [self.base(table), self._feed_key(table)]
        found = await self.run("page", keys, [offset, limit])
        if found[0] == 0:
            raise UnknownTable(table)
        if mark:
            self._mark(found[2])
        return [orjson.loads(j) for j in found[3:] if j is not None], int(found[1])

    @staticmethod
    def _mark(cursor: Any) -> None:
        """Note the change-feed cursor a script read records at ("" or
        ``None``: there is no feed)."""
        if cursor and SNAPSHOT_CURSOR.get() is None:  # the request's first read
            SNAPSHOT_CURSOR.set(_text(cursor))

    async def scan(self, table: str) -> Scan:
        base = self.base(table)

        link = self.link
        head: list[Command] = [("HGET", f"{base}:m", "bytes"), ("ZCARD", f"{base}:o")]
        if self.cluster:
            size, total = await self._guarded(lambda: link.calls(head))
        else:
            # the feed's newest id at the same instant (a transaction): the
            # cursor a follower of this table resumes from once it has read it
            newest: Command = ("XREVRANGE", self._changes_key, "+", "-", "COUNT", 1)
            found = await self._guarded(
                lambda: link.calls([("MULTI",), *head, newest, ("EXEC",)])
            )
            size, total, last = found[-1]
            if size is not None:
                self._mark(_newest_id(last))
        if size is None:
            raise UnknownTable(table)
        return RedisScan(self, table, int(total), int(size))

    async def lookup(
        self,
        table: str,
        field: str,
        keys: Sequence[Any],
        *,
        offset: int = 0,
        limit: int | None = None,
    ) -> tuple[list[Record], int] | None:
        return await self._lookup(
            table, field, keys, offset=offset, limit=limit, mark=True
        )

    async def _lookup(
        self,
        table: str,
        field: str,
        keys: Sequence[Any],
        *,
        offset: int = 0,
        limit: int | None = None,
        mark: bool,
    ) -> tuple[list[Record], int] | None:
        """``lookup``; with ``mark``, noting the change-feed cursor it was read at."""
        args = self._lookup_args(field, keys)
        if args is None:  # nothing can match, at any instant
            if mark and not self.cluster:
                self._mark(await self.cursor())
            return [], 0
        found = await self.run(
            "lookup",
            [self.base(table), self._feed_key(table)],
            [field, offset, -1 if limit is None else limit, "0", *args],
        )
        status = _text(found[0])
        if status == "unknown":
            raise UnknownTable(table)
        if status == "none":
            return None
        if mark:
            self._mark(found[2])
        return [orjson.loads(j) for j in found[3:] if j is not None], int(found[1])

    async def lookup_size(
        self, table: str, field: str, keys: Sequence[Any]
    ) -> int | None:
        args = self._lookup_args(field, keys)
        if args is None:
            return 0
        found = await self.run("lookup", [self.base(table)], [field, 0, -1, "1", *args])
        status = _text(found[0])
        if status == "unknown":
            raise UnknownTable(table)
        return None if status == "none" else int(found[1])

    @staticmethod
    def _lookup_args(field: str, keys: Sequence[Any]) -> list[str] | None:
        if field == "id":
            ids = list(dict.fromkeys(k for k in keys if isinstance(k, str)))
            return ids or None
        return list(dict.fromkeys(index_key(k) for k in keys))

    async def describe(self) -> list[TableInfo]:
        names = await self._table_names()
        if not names:
            return []

        link = self.link
        first: list[Command] = []
        for name in names:
            base = self.base(name)
            first += [
                ("HLEN", f"{base}:r"),
                ("HGET", f"{base}:m", "bytes"),
                ("HGETALL", f"{base}:i"),
            ]
        found = await self._guarded(lambda: link.calls(first))
        counts = found[0::3]
        sizes = found[1::3]
        specs = [
            {_text(k): orjson.loads(v) for k, v in pairs(raw).items()}
            for raw in found[2::3]
        ]
        second: list[Command] = [
            ("ZCARD", f"{self.base(name)}:x:{field_name}")
            for name, spec in zip(names, specs)
            for field_name in sorted(spec)
        ]
        entries = iter(
            await self._guarded(lambda: link.calls(second)) if second else ()
        )
        out = []
        for name, count, size, spec in zip(names, counts, sizes, specs):
            sizes_of = {f: int(next(entries)) for f in sorted(spec)}
            indexes = [
                IndexInfo(
                    f, bool(spec[f]["unique"]), sizes_of[f], spec[f].get("kind", "hash")
                )
                for f in sorted(spec, key=lambda f: (spec[f].get("at", 0), f))
            ]
            out.append(TableInfo(name, int(count), int(size or 0), indexes))
        return out

    async def _table_names(self) -> list[str]:
        """The tables, in the order they were made."""
        key = self._tables_key
        link = self.link
        raw = await self._guarded(lambda: link.call("ZRANGE", key, 0, -1))
        return [_text(n) for n in raw]

    async def _catalogue(self, names: Sequence[str]) -> None:
        """A Cluster: add tables to the catalog (made, in order, by the writes)."""
        key = self._tables_key
        for name in names:

            async def add(name: str = name) -> None:
                at = await self.link.call("INCR", key + ":seq")
                await self.link.call("ZADD", key, "NX", at, name)

            await self._guarded(add)

    async def memory(self) -> int:
        """The records' bytes as stored, with a share for each index entry."""
        tables = await self.describe()
        return sum(
            t.size + t.count * 80 + sum(i.entries for i in t.indexes) * 120
            for t in tables
        )

    async def _count(self, change: int) -> None:
        """A Cluster's total counter, kept beside the writes (not in them)."""
        if self.cluster and change:
            key = f"{self.prefix}:total"
            await self._guarded(lambda: self.link.call("INCRBY", key, change))

    # -- writes -------------------------------------------------------------------

    def _references_of(self, table: str) -> tuple[Reference, ...]:
        return self.rules.references_from(table)

    async def _write(
        self,
        mode: str,
        batches: Sequence[tuple[str, Sequence[Record], Sequence[Secret | None] | None]],
    ) -> list[str]:
        """Run the write script over tables of one group: the tables it made."""
        for _ in range(_RETRIES):
            first = batches[0][0]
            keys = [self.base(name) for name, _, _ in batches]
            keys += [
                self._total_key(first),
                self._catalog_key(first),
                self._feed_key(first),
            ]
            args: list[Any] = [
                *(mode, self.max_records, self.max_tables, self.changes_retain),
                len(batches),
            ]
            references: list[str] = []
            positions: dict[str, int] = {}

            def key_index(base: str) -> int:
                if base not in positions:
                    references.append(base)
                    positions[base] = len(keys) + len(references)
                return positions[base]

            for name, records, secrets in batches:
                catalog = await self.catalog(name)
                refs = self._references_of(name)
                args += [
                    name,
                    catalog.iv,
                    len(records),
                    len(catalog.fields),
                    *catalog.fields,
                ]
                args.append(len(refs))
                for position, ref in enumerate(refs):
                    args += [ref.field, key_index(self.base(ref.target)), str(position)]
                parts = [split_path(f) for f in catalog.fields]
                for position, record in enumerate(records):
                    secret = secrets[position] if secrets is not None else None
                    args += [
                        record["id"],
                        orjson.dumps(record),
                        orjson.dumps(secret) if secret is not None else "",
                    ]
                    args += [index_key(resolve(record, p)) for p in parts]
                    for ref in refs:
                        value = record.get(ref.field)
                        args.append(value if isinstance(value, str) else "")
            kept = []
            if mode == "replace":
                written = {name for name, _, _ in batches}
                for ref in self.rules.references:
                    if ref.target in written and ref.table not in written:
                        kept.append(
                            (
                                key_index(self.base(ref.table)),
                                ref.field,
                                keys.index(self.base(ref.target)) + 1,
                            )
                        )
            args.append(len(kept))
            for source, field_name, target in kept:
                args += [source, field_name, target]
            found = await self.run("write", keys + references, args, durable=True)
            status = _text(found[0])
            if status == "stale":
                await self.catalog(_text(found[1]), fresh=True)
                continue
            if status == "ok":
                await self._count(int(found[1]))
                created = [_text(n) for n in found[2:]]
                if self.cluster and created:
                    # the catalog of tables lives on a node of its own
                    await self._catalogue(created)
                return created
            self._refuse(status, found, batches)
        raise Unavailable("the index catalog keeps changing; try again")

    def _refuse(self, status: str, found: list[Any], batches: Sequence[Any]) -> None:
        """Raise the store error a script answered."""
        if status == "duplicate":
            table, field_name, key = _text(found[1]), _text(found[2]), _text(found[3])
            value: Any = key if field_name == "id" else orjson.loads(key)
            raise DuplicateKey(
                table, field_name, value, (_text(found[4]), _text(found[5]))
            )
        if status == "missing":
            table = _text(found[1])
            ref = self._references_of(table)[int(found[2])]
            records = next(r for n, r, _ in batches if n == table)
            positions = [int(p) for p in found[3:]]
            raise MissingReference(
                ref, positions, [records[p].get(ref.field) for p in positions]
            )
        if status == "referenced":
            source = _text(found[1])
            field_name = _text(found[2])
            ref = next(
                r
                for r in self.rules.references
                if self.base(r.table) == source and r.field == field_name
            )
            raise StillReferenced(ref)
        if status == "full_records":
            raise CapacityExceeded(
                f"the store holds {_text(found[1])} of at most {self.max_records} records"
            )
        if status == "full_tables":
            raise CapacityExceeded(f"the store holds at most {self.max_tables} tables")
        raise StoreError(status)  # pragma: no cover - every answer is named above

    async def _check_limits(
        self,
        batches: Sequence[tuple[str, Sequence[Record]]],
        *,
        replace: bool | None = None,
    ) -> None:
        """In a Cluster, the record and table limits against their counters
        (``replace``: an import, whose existing ids and replaced tables free room)."""
        if not self.cluster:
            return
        key = f"{self.prefix}:total"
        total = int(await self._guarded(lambda: self.link.call("GET", key)) or 0)
        added = sum(len(r) for _, r in batches)
        if replace is not None:
            for name, records in batches:
                if not await self.has_table(name):
                    continue
                if replace:
                    _, count = await self._page(name, 0, 0, mark=False)
                    added -= count
                else:
                    ids = [r["id"] for r in records]
                    added -= len(await self.read_many(name, ids))
        if total + added > self.max_records:
            raise CapacityExceeded(
                f"the store holds {total} of at most {self.max_records} records"
            )
        names = set(await self._table_names())
        new = {n for n, _ in batches} - names
        if new and len(names) + len(new) > self.max_tables:
            raise CapacityExceeded(f"the store holds at most {self.max_tables} tables")

    async def _check_unique(
        self, table: str, records: Sequence[Record], *, existing: bool
    ) -> None:
        """Unique values hold within ``records`` and, with ``existing``, against
        the records kept (those the batch replaces do not count): one script a
        unique index."""
        if not await self.has_table(table):
            return
        catalog = await self.catalog(table)
        ids = {r["id"] for r in records}
        for field_name in catalog.fields:
            if not catalog.unique[field_name]:
                continue
            parts = split_path(field_name)
            keyed: list[tuple[str, Any, str]] = []
            seen: dict[str, str] = {}
            for record in records:
                value = resolve(record, parts)
                if value is MISSING or value is None:
                    continue
                key = index_key(value)
                if key in seen:
                    raise DuplicateKey(
                        table, field_name, value, (seen[key], record["id"])
                    )
                seen[key] = record["id"]
                keyed.append((key, value, record["id"]))
            if not existing or not keyed:
                continue
            found = await self._index(
                table, ["holders", field_name, *(k for k, _, _ in keyed)]
            )
            for (_, value, record_id), holder in zip(keyed, found[1:]):
                other = _text(holder)
                if other and other != record_id and other not in ids:
                    raise DuplicateKey(table, field_name, value, (other, record_id))

    async def check_insert(self, table: str, records: Sequence[Record]) -> None:
        # the script checks everything before it writes: a dry run is the
        # same script on a copy of nothing; here, what can be read cheaply
        ids = [r["id"] for r in records]
        if len(set(ids)) < len(ids):
            raise DuplicateKey(table, "id", next(i for i in ids if ids.count(i) > 1))
        existing = (
            await self._lookup(table, "id", ids, mark=False)
            if await self.has_table(table)
            else None
        )
        if existing and existing[0]:
            raise DuplicateKey(table, "id", existing[0][0]["id"])
        catalog = (
            await self.catalog(table) if await self.has_table(table) else Catalog()
        )
        for field_name in catalog.fields:
            if not catalog.unique[field_name]:
                continue
            parts = split_path(field_name)
            for record in records:
                value = resolve(record, parts)
                if value is MISSING or value is None:
                    continue
                found = await self._lookup(
                    table, field_name, [value], limit=1, mark=False
                )
                if found is not None and found[1]:
                    raise DuplicateKey(
                        table, field_name, value, (found[0][0]["id"], record["id"])
                    )
        for ref in self._references_of(table):
            targets = [r.get(ref.field) for r in records]
            there = {
                r["id"]
                for r in await self.read_many(
                    ref.target, [t for t in targets if isinstance(t, str)]
                )
            }
            missing = [p for p, t in enumerate(targets) if t not in there]
            if missing:
                raise MissingReference(ref, missing, [targets[p] for p in missing])
        await self._check_limits([(table, records)])

    async def insert(
        self,
        table: str,
        records: Sequence[Record],
        secrets: Sequence[Secret | None] | None = None,
    ) -> None:
        await self._check_limits([(table, records)])
        await self._write("insert", [(table, records, secrets)])

    async def update(self, table: str, record_id: str, change: Change) -> Record:
        refs = self._references_of(table)
        for _ in range(_RETRIES):
            catalog = await self.catalog(table)
            keys = [self._index_effect(f, change) for f in catalog.fields]
            if None in keys or change.replace:
                # an indexed object that a patch merges into, or a whole new
                # record: known only once the record is read; merged here,
                # written if it did not change
                record = await self._update_read(
                    table, record_id, change, catalog, refs
                )
                if record is None:
                    continue
                return record
            ref_ids = []
            for ref in refs:
                if ref.field in change.fields:
                    value = change.fields[ref.field]
                    ref_ids.append(value if isinstance(value, str) else "")
                else:
                    ref_ids.append("=")
            found = await self._run_update(
                table,
                record_id,
                catalog,
                expected=expected_arg(change.expected),
                how="1" if change.patch else "0",
                given=orjson.dumps(change.fields),
                change=change,
                keys=[k for k in keys if k is not None],
                refs=refs,
                ref_ids=ref_ids,
            )
            status = _text(found[0])
            if status == "stale":
                await self.catalog(table, fresh=True)
                continue
            if status == "ok":
                return dict(orjson.loads(found[1]))
            self._refuse_update(status, found, table, record_id, change, refs)
        raise Unavailable("the index catalog keeps changing; try again")

    async def _update_read(
        self,
        table: str,
        record_id: str,
        change: Change,
        catalog: Catalog,
        refs: Sequence[Reference],
    ) -> Record | None:
        """The update of a record read first (compare-and-set on its version)."""
        raw = await self.read_json(table, record_id)
        if raw is None:
            if not await self.has_table(table):
                raise UnknownTable(table)
            raise UnknownRecord(record_id)
        current_version = version_of(raw)
        if change.expected is not None and current_version not in change.expected:
            raise StaleRecord(record_id)
        old = orjson.loads(raw)
        new = merged_record(
            old,
            change.fields,
            patch=change.patch,
            updated_at=change.updated_at,
            replace=change.replace,
        )
        if len(new) - 3 > MAX_FIELDS:
            raise TooManyFields(record_id)
        keys = [index_key(resolve(new, split_path(f))) for f in catalog.fields]
        ref_ids = []
        for ref in refs:
            value = new.get(ref.field)
            ref_ids.append(value if isinstance(value, str) else "")
        found = await self._run_update(
            table,
            record_id,
            catalog,
            expected=expected_arg(frozenset({current_version})),
            how="2",
            given=orjson.dumps(new),
            change=change,
            keys=keys,
            refs=refs,
            ref_ids=ref_ids,
        )
        status = _text(found[0])
        if status == "stale":
            await self.catalog(table, fresh=True)
            return None
        if status == "changed":
            return None  # written meanwhile: read it again
        if status == "ok":
            return new
        self._refuse_update(status, found, table, record_id, change, refs)
        return None  # pragma: no cover

    async def _run_update(
        self,
        table: str,
        record_id: str,
        catalog: Catalog,
        *,
        expected: str,
        how: str,
        given: bytes,
        change: Change,
        keys: list[str],
        refs: Sequence[Reference],
        ref_ids: list[str],
    ) -> Any:
        """The update script (lua/update.lua has its arguments)."""
        return await self.run(
            "update",
            [
                self.base(table),
                self._feed_key(table),
                *(self.base(r.target) for r in refs),
            ],
            [
                catalog.iv,
                record_id,
                expected,
                how,
                given,
                orjson.dumps(change.updated_at),
                self._secret_arg(change.secret),
                MAX_FIELDS,
                len(catalog.fields),
                *catalog.fields,
                *keys,
                len(refs),
                *(r.field for r in refs),
                *ref_ids,
                table,
                "patch" if change.patch else "update",
                self.changes_retain,
            ],
            durable=True,
        )

    def _refuse_update(
        self,
        status: str,
        found: list[Any],
        table: str,
        record_id: str,
        change: Change,
        refs: Sequence[Reference],
    ) -> None:
        _refuse_record(status, table, record_id)
        if status == "too_many_fields":
            raise TooManyFields(record_id)
        if status == "duplicate":
            field_name = _text(found[1])
            raise DuplicateKey(
                table, field_name, orjson.loads(found[2]), (_text(found[3]), record_id)
            )
        if status == "missing":
            ref = refs[int(found[1]) - 1]
            raise MissingReference(ref, [0], [change.fields.get(ref.field)])
        raise StoreError(status)  # pragma: no cover

    @staticmethod
    def _secret_arg(secret: Any) -> bytes | str:
        if secret is MISSING:
            return "-"
        if secret is None:
            return ""
        return orjson.dumps(secret)

    @staticmethod
    def _index_effect(field_name: str, change: Change) -> str | None:
        """What an update does to one index: "=" (unchanged), "" (no value
        any more), a key, or ``None`` when it depends on the stored record
        (a patch that merges an object into the indexed value)."""
        parts = split_path(field_name)
        node: Any = change.fields
        if parts[0] not in node:
            return "="
        if not change.patch:  # the given top-level value replaces the old one
            return index_key(resolve(node, parts))
        for position, part in enumerate(parts):
            if part not in node:
                return "="  # the patch leaves this part as it was
            value = node[part]
            if value is None:
                return ""  # removed
            rest = parts[position + 1 :]
            if not isinstance(value, dict):  # replaces whatever was there
                return "" if rest else index_key(value)
            if not rest:
                return None
            node = value
        return None  # pragma: no cover - the loop returns

    async def delete(
        self, table: str, record_id: str, *, expected: frozenset[str] | None = None
    ) -> None:
        sources = self.rules.references_to(table)
        args: list[Any] = [
            record_id,
            expected_arg(expected),
            table,
            self.changes_retain,
            len(sources),
        ]
        for ref in sources:
            args += [ref.field, index_key(record_id)]
        found = await self.run(
            "delete",
            [
                self.base(table),
                self._total_key(table),
                self._feed_key(table),
                *(self.base(r.table) for r in sources),
            ],
            args,
            durable=True,
        )
        status = _text(found[0])
        _refuse_record(status, table, record_id)
        if status == "referenced":
            raise StillReferenced(sources[int(found[1]) - 1])
        await self._count(-1)

    async def drop(self, table: str) -> None:
        sources = self.rules.references_to(table)
        builtin = table in self.rules.tables
        found = await self.run(
            "empty",
            [
                self.base(table),
                self._total_key(table),
                self._catalog_key(table),
                self._feed_key(table),
                *(self.base(r.table) for r in sources),
            ],
            ["clear" if builtin else "drop", table, self.changes_retain],
            durable=True,
        )
        status = _text(found[0])
        if status == "unknown":
            raise UnknownTable(table)
        if status == "referenced":
            raise StillReferenced(sources[int(found[1]) - 1])
        await self._count(-int(found[1]))
        if not builtin:
            self.catalogs.pop(table, None)
            if self.cluster:
                key = self._tables_key
                await self._guarded(lambda: self.link.call("ZREM", key, table))

    async def _index(
        self, table: str, args: Sequence[Any], *, durable: bool = False
    ) -> Any:
        """The index script (lua/index.lua has its steps)."""
        keys = [self.base(table), self._feed_key(table)]
        return await self.run("index", keys, args, durable=durable)

    async def create_index(
        self, table: str, field: str, *, unique: bool, kind: str = "hash"
    ) -> None:
        found = await self._index(
            table, ["begin", field, "1" if unique else "0", MAX_INDEXES, kind]
        )
        status = _text(found[0])
        if status == "unknown":
            raise UnknownTable(table)
        if status == "exists":
            raise DuplicateKey(table, "index", field)
        if status == "too_many":
            raise TooManyIndexes(table)
        await self.catalog(table, fresh=True)
        parts = split_path(field)
        try:
            # every write from now on keeps the index; the records read here
            # are indexed only while they are still at the version read
            scan = RedisScan(self, table, 0)
            async for batch in scan.batches():
                args: list[Any] = ["fill", field, len(batch)]
                for record in batch:
                    args += [
                        record["id"],
                        version_of(orjson.dumps(record)),
                        index_key(resolve(record, parts)),
                    ]
                filled = await self._index(table, args)
                if _text(filled[0]) == "duplicate":
                    raise DuplicateKey(
                        table,
                        field,
                        orjson.loads(filled[1]),
                        (_text(filled[2]), _text(filled[3])),
                    )
                await asyncio.sleep(0)
            ready = ["ready", field, table, self.changes_retain]
            await self._index(table, ready, durable=True)
        except BaseException:
            await self._index(table, ["drop", field, table, self.changes_retain])
            raise
        finally:
            await self.catalog(table, fresh=True)

    async def drop_index(self, table: str, field: str) -> None:
        found = await self._index(
            table, ["drop", field, table, self.changes_retain], durable=True
        )
        status = _text(found[0])
        if status == "unknown":
            raise UnknownTable(table)
        if status == "unknown_index":
            raise UnknownIndex(field)
        await self.catalog(table, fresh=True)

    # -- the change feed --------------------------------------------------------------

    def _require_feed(self) -> None:
        if self.cluster:
            raise FeedUnsupported(
                "the change feed needs a standalone Redis: a Cluster's tables "
                "live in several hash slots"
            )

    async def changes(
        self,
        since: str | None,
        *,
        tables: frozenset[str] | None = None,
        limit: int = 1000,
    ) -> tuple[list[ChangeEvent], str]:
        """The changes after ``since`` (lua/changes.lua), one script: the
        retention check and the read see the stream at one instant."""
        self._require_feed()
        start = "" if since is None else "%d-%d" % _position(since)
        names = sorted(tables) if tables is not None else []
        found = await self.run(
            "changes",
            [self._changes_key],
            [
                *(start, self.changes_retain, limit, _FEED_SCAN),
                "1" if tables is not None else "0",
                *names,
            ],
        )
        status = _text(found[0])
        if status != "ok":
            raise CursorGone(_text(found[1]), known=status == "gone")
        events = []
        rows = found[2:]
        for at in range(0, len(rows), 6):
            cursor, op, table, record_id, record, when = rows[at : at + 6]
            events.append(
                ChangeEvent(
                    _text(cursor),
                    _text(op),
                    _text(table),
                    _text(record_id) or None,
                    orjson.loads(record) if record else None,
                    float(when),
                )
            )
        return events, _text(found[1])

    async def wait_changes(self, since: str, timeout: float) -> None:
        wanted = _position(since)
        self._require_feed()
        loop = asyncio.get_running_loop()
        reader = self._readers.get(id(loop))
        if reader is None or reader.stopped:
            reader = self._readers[id(loop)] = _FeedReader(
                self.url, self._changes_key, self.timeout
            )
        deadline = loop.time() + timeout
        checked = False
        while True:
            moved = reader.moved  # taken before the check: no wake is missed
            newest = reader.newest
            if newest is not None and newest > wanted:
                return
            if newest is not None and newest < wanted and not checked:
                # ahead of what the reader saw: ahead of the feed, or the
                # reader has not seen the newest entries yet
                checked = True
                now = _position(await self.cursor())
                if now != wanted:  # a change after it, or a cursor never
                    return  # given (the next read says it is gone)
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(moved.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def cursor(self) -> str:
        self._require_feed()
        key = self._changes_key
        link = self.link
        last = await self._guarded(
            lambda: link.call("XREVRANGE", key, "+", "-", "COUNT", 1)
        )
        return _newest_id(last)

    async def check_load(
        self, batches: Sequence[tuple[str, Sequence[Record]]], *, replace: bool
    ) -> None:
        ids_of: dict[str, set[str]] = {}
        for name, records in batches:
            ids = [r["id"] for r in records]
            if len(set(ids)) < len(ids):
                raise DuplicateKey(name, "id", next(i for i in ids if ids.count(i) > 1))
            ids_of[name] = set(ids)
            await self._check_unique(name, records, existing=not replace)
        for ref in self.rules.references:
            rows = dict(batches).get(ref.table)
            if rows is None:
                continue
            names = set(ids_of.get(ref.target, ()))
            if not (replace and ref.target in ids_of):
                wanted = [r.get(ref.field) for r in rows]
                names |= {
                    r["id"]
                    for r in await self.read_many(
                        ref.target,
                        [w for w in wanted if isinstance(w, str) and w not in names],
                    )
                }
            missing = [p for p, r in enumerate(rows) if r.get(ref.field) not in names]
            if missing:
                raise MissingReference(
                    ref, missing, [rows[p].get(ref.field) for p in missing]
                )
        await self._check_limits(batches, replace=replace)

    async def load(
        self,
        batches: Sequence[tuple[str, Sequence[Record], Sequence[Secret | None] | None]],
        *,
        replace: bool,
    ) -> None:
        """One script per group of tables: atomic within a group (every table,
        on one Redis server), not across groups on different Cluster nodes. A
        large load (a seed file) is written in batches of records, each atomic."""
        await self._check_limits([(n, r) for n, r, _ in batches], replace=replace)
        mode = "replace" if replace else "upsert"
        groups: dict[str, list[Any]] = {}
        for batch in batches:
            tag = "" if not self.cluster else self.groups.get(batch[0], batch[0])
            groups.setdefault(tag, []).append(batch)
        for group in groups.values():
            size = sum(len(r) for _, r, _ in group)
            if size <= 10_000:
                await self._write(mode, group)
                continue
            if replace:
                await self._write("replace", [(n, [], None) for n, _, _ in group])
            for name, records, secrets in group:
                for start in range(0, len(records), 1000):
                    part = records[start : start + 1000]
                    part_secrets = secrets[start : start + 1000] if secrets else None
                    await self._write("upsert", [(name, part, part_secrets)])


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # never a password of the URL in a message
    return text.split("@")[-1] if "://" in text else text
