"""The store: a dict of tables, each a dict of records by id, behind one lock.

Records are plain dicts that are never changed once stored: an update stores
a new dict. A reader that copies the list of record references under the lock
therefore holds a consistent snapshot, and can serialise it outside the lock.

The store knows nothing of HTTP or schemas. It enforces what must hold for
every table: ids are unique, unique indexes hold, the record limit holds. Every
method takes the lock itself; the lock is re-entrant, so a service can hold it
across several calls to make a read-check-write sequence atomic.
"""

from __future__ import annotations

import asyncio
import sys
from sys import getsizeof
import threading
from itertools import islice
from operator import eq, itemgetter
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Iterator,
    Sequence,
)

import anyio.to_thread

from app.storage.base import (
    MAX_FIELDS,
    SNAPSHOT_CURSOR,
    Bound,
    CapacityExceeded,
    Change,
    ChangeEvent,
    DuplicateKey,
    IndexedSide,
    IndexInfo,
    JournalError,
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
    UnknownIndex,
    UnknownRecord,
    UnknownTable,
    Walk,
    record_version,
)
from app.storage.changes import Feed
from app.storage.index import HashIndex, SortedIndex, index_spec, make_index
from app.storage.keys import MISSING, json_key, resolve
from app.storage.merge import grown_past, merge_fields
from app.storage.shared import Shared

Journal = Callable[[dict[str, Any]], None]

__all__ = [
    "CapacityExceeded",
    "DuplicateKey",
    "JournalError",
    "MemoryStore",
    "Record",
    "Secret",
    "StaleRecord",
    "Store",
    "StoreError",
    "UnknownIndex",
    "UnknownRecord",
    "UnknownTable",
]


class Table:
    """One table: records by id in insertion order, plus its indexes."""

    __slots__ = (
        "name",
        "records",
        "indexes",
        "seq",
        "next_seq",
        "secrets",
        "size",
        "builds",
        "shared",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.records: dict[str, Record] = {}
        # estimated bytes of the records, kept up to date by every write
        self.size = 0
        # indexes being built while writes go on (Store.start_index)
        self.builds: dict[str, IndexBuild] = {}
        self.indexes: dict[str, HashIndex] = {}
        # Insertion positions, kept only while the table has an index, so that
        # ids found through an index can be put back in insertion order.
        self.seq: dict[str, int] | None = None
        self.next_seq = 0
        # Write-only values (password hashes) kept beside the records, never in them.
        self.secrets: dict[str, Secret] = {}
        # the short string values that repeat, one object each
        self.shared = Shared()

    def touch(self, record_id: str, *, inserted: bool) -> None:
        """Note a write for the index builds under way."""
        for build in self.builds.values():
            build.touched.add(record_id)
            if inserted:
                build.inserted.append(record_id)

    def in_order(self, ids: Iterable[str]) -> list[str]:
        """The given ids of this table, in insertion order."""
        seq = self.seq
        if seq is None:
            wanted = set(ids)
            if len(wanted) <= 1:
                return list(wanted)
            return [i for i in self.records if i in wanted]
        return sorted(ids, key=seq.__getitem__)


class IndexBuild:
    """An index being built from a copy of a table, with the writes made since."""

    STEP = 4096

    def __init__(self, table: Table, index: HashIndex, snapshot: dict[str, Record]):
        self.table = table
        self.index = index
        self.snapshot = snapshot
        self.touched: set[str] = set()
        self.inserted: list[str] = []
        self.cancelled = False

    def add(self, record_id: str, record: Record) -> None:
        index = self.index
        key = index.key_of(record)
        if index.unique:
            holder = index.holder(key)
            if holder is not None and holder != record_id:
                raise DuplicateKey(
                    self.table.name,
                    index.field,
                    resolve_field(record, index),
                    (holder, record_id),
                )
        index.add(record_id, key)

    def steps(self) -> Iterator[int]:
        """Index the copy, ``STEP`` records at a time: yields the count of each."""
        items = list(self.snapshot.items())
        for start in range(0, len(items), self.STEP):
            chunk = items[start : start + self.STEP]
            for record_id, record in chunk:
                self.add(record_id, record)
            yield len(chunk)

    def positions(self, records: dict[str, Record]) -> dict[str, int]:
        """Insertion positions of ``records`` (the table now): the copy's order,
        then the records inserted since, in the order they came."""
        seq = {rid: i for i, rid in enumerate(self.snapshot) if rid in records}
        after = len(self.snapshot)
        for position, record_id in enumerate(self.inserted):
            if record_id in records:
                seq[record_id] = after + position
        return seq


class Store:
    """Tables of records behind one re-entrant lock."""

    def __init__(
        self, *, max_records: int, max_tables: int = 10_000, rules: Rules | None = None
    ) -> None:
        self.lock = threading.RLock()
        self.max_records = max_records
        self.max_tables = max_tables
        self.rules = rules or Rules()
        self.total = 0
        self.tables: dict[str, Table] = {}
        self.journal: Journal | None = None
        self.durable: Callable[[], Awaitable[None]] | None = None
        # the change feed, attached once the data is loaded (a replay of the
        # log is not news)
        self.feed: Feed | None = None

    # -- reads -------------------------------------------------------------

    def table(self, name: str) -> Table | None:
        return self.tables.get(name)

    def require(self, name: str) -> Table:
        table = self.tables.get(name)
        if table is None:
            raise UnknownTable(name)
        return table

    def get(self, name: str, record_id: str) -> Record | None:
        table = self.tables.get(name)
        if table is None:
            return None
        return table.records.get(record_id)

    def snapshot(self, name: str) -> list[Record]:
        """Every record of a table, as they are at one instant."""
        with self.lock:
            records = list(self.require(name).records.values())
            self.mark_snapshot()
            return records

    def snapshot_all(self) -> dict[str, list[Record]]:
        """Every table, all taken at the same instant."""
        with self.lock:
            self.mark_snapshot()
            return {n: list(t.records.values()) for n, t in self.tables.items()}

    def mark_snapshot(self) -> None:
        """Note the change-feed cursor of a read made under the lock (the
        request's first read keeps its cursor: see ``SNAPSHOT_CURSOR``)."""
        if self.feed is not None and SNAPSHOT_CURSOR.get() is None:
            SNAPSHOT_CURSOR.set(self.feed.cursor())

    # -- writes ------------------------------------------------------------

    def create_table(self, name: str) -> Table:
        with self.lock:
            table = self.tables.get(name)
            if table is None:
                self._check_tables(1)
                self._emit({"op": "create_table", "table": name})
                table = self.tables[name] = Table(name)
            return table

    def insert(
        self,
        name: str,
        records: Sequence[Record],
        *,
        secrets: Sequence[Secret | None] | None = None,
    ) -> None:
        """Add new records, creating the table on first write: all or none."""
        self._put(name, records, secrets, upsert=False)

    def upsert(
        self,
        name: str,
        records: Sequence[Record],
        *,
        secrets: Sequence[Secret | None] | None = None,
    ) -> None:
        """Add records, replacing those whose id exists: all or none."""
        self._put(name, records, secrets, upsert=True)

    def replace(
        self,
        name: str,
        record: Record,
        *,
        secret: Secret | None | Any = MISSING,
        expected: Record | None = None,
        event: str = "update",
    ) -> Record:
        """Store a new version of an existing record and return the old one
        (``event``: what the change feed calls the change).

        With ``expected``, the write happens only while that exact version is
        current (compare-and-swap); otherwise ``UnknownRecord`` is raised when
        the record is gone and ``StaleRecord`` when it changed.
        """
        record_id = record["id"]
        with self.lock:
            table = self.require(name)
            old = table.records.get(record_id)
            if old is None:
                raise UnknownRecord(record_id)
            if expected is not None and old is not expected:
                raise StaleRecord(record_id)
            self._check_unique(table, [record], replacing=True)
            self._check_references(name, [record])
            op: dict[str, Any] = {"op": "replace", "table": name, "record": record}
            if secret is not MISSING:
                op["secret"] = secret
            self._emit(op)
            for index in table.indexes.values():
                old_key, new_key = index.key_of(old), index.key_of(record)
                if old_key != new_key or type(old_key) is not type(new_key):
                    index.remove(record_id, old_key)
                    index.add(record_id, new_key)
            table.records[record_id] = record
            size = record_size(record)
            table.size += size - record_size(old)
            if table.builds:
                table.touch(record_id, inserted=False)
            if secret is not MISSING:
                self._set_secret(table, record_id, secret)
            if self.feed is not None:  # applied: now it is news
                self.feed.add(event, name, record_id, record, size)
            return old

    def delete(
        self, name: str, record_id: str, *, expected: frozenset[str] | None = None
    ) -> Record:
        """Delete a record (only at one of the ``expected`` versions, if given);
        refused while records of another table name it."""
        with self.lock:
            table = self.require(name)
            current = table.records.get(record_id)
            if current is None:
                raise UnknownRecord(record_id)
            if expected is not None and record_version(current) not in expected:
                raise StaleRecord(record_id)
            for reference in self.rules.references_to(name):
                if self._named(reference, json_key(record_id)):
                    raise StillReferenced(reference)
            self._emit({"op": "delete", "table": name, "id": record_id})
            old = table.records.pop(record_id)
            table.size -= record_size(old)
            if table.builds:
                table.touch(record_id, inserted=False)
            for index in table.indexes.values():
                index.remove(record_id, index.key_of(old))
            if table.seq is not None:
                del table.seq[record_id]
            table.secrets.pop(record_id, None)
            self.total -= 1
            if self.feed is not None:
                self.feed.add("delete", name, record_id, None)
            return old

    def drop(self, name: str) -> None:
        """Remove a table with its records and indexes."""
        with self.lock:
            table = self.require(name)
            self._check_emptying(name)
            self._emit({"op": "drop", "table": name})
            self.total -= len(table.records)
            self._cancel_builds(table)
            del self.tables[name]
            if self.feed is not None:
                self.feed.add("drop", name, None, None)

    def clear(self, name: str, *, checked: bool = False) -> None:
        """Remove every record of a table, keeping the table and its indexes."""
        with self.lock:
            table = self.require(name)
            if not checked:
                self._check_emptying(name)
            self._emit({"op": "clear", "table": name})
            self.total -= len(table.records)
            table.records.clear()
            table.shared = Shared()
            self._cancel_builds(table)
            table.size = 0
            table.secrets.clear()
            for index in table.indexes.values():
                index.clear()
            if table.seq is not None:
                table.seq.clear()
            if self.feed is not None:
                self.feed.add("drop", name, None, None)

    def check_load(
        self,
        batches: Sequence[tuple[str, Sequence[Record], Sequence[Secret | None] | None]],
        *,
        replace: bool,
    ) -> None:
        """Raise what ``load`` would raise for these batches, writing nothing."""
        with self.lock:
            change = 0
            for name, records, _ in batches:
                table = self.tables.get(name)
                existing = table.records if table is not None and not replace else {}
                seen: set[str] = set()
                for record in records:
                    record_id = record["id"]
                    if record_id in seen:
                        raise DuplicateKey(name, "id", record_id)
                    seen.add(record_id)
                    if record_id not in existing:
                        change += 1
                if table is not None:
                    if replace:
                        change -= len(table.records)
                    self._check_unique(
                        table, records, replacing=True, existing=not replace
                    )
            if self.total + change > self.max_records:
                raise CapacityExceeded(
                    f"the store holds {self.total} of at most {self.max_records} records"
                )
            self._check_tables(len({n for n, _, _ in batches} - self.tables.keys()))
            self._check_load_references(batches, replace=replace)

    def _check_load_references(
        self,
        batches: Sequence[tuple[str, Sequence[Record], Sequence[Secret | None] | None]],
        *,
        replace: bool,
    ) -> None:
        """After the load, every reference must name an existing record."""
        given = {name: records for name, records, _ in batches}
        for reference in self.rules.references:
            target = self.tables.get(reference.target)
            existing = set(target.records) if target is not None else set()
            if reference.target in given:
                ids = {r["id"] for r in given[reference.target]}
                names = ids if replace else ids | existing
            else:
                names = existing
            rows = given.get(reference.table)
            if rows is not None:
                missing = [
                    (position, row.get(reference.field))
                    for position, row in enumerate(rows)
                    if row.get(reference.field) not in names
                ]
                if missing:
                    raise MissingReference(
                        reference, [p for p, _ in missing], [v for _, v in missing]
                    )
            if replace and reference.target in given and reference.table not in given:
                source = self.tables.get(reference.table)
                kept = source.records.values() if source is not None else ()
                if any(row.get(reference.field) not in names for row in kept):
                    raise StillReferenced(reference)

    def load(
        self,
        batches: Sequence[tuple[str, Sequence[Record], Sequence[Secret | None] | None]],
        *,
        replace: bool,
    ) -> None:
        """Write several tables at once, all or nothing: each batch is upserted into
        its table, or replaces the table's records when ``replace`` is set."""
        with self.lock:
            self.check_load(batches, replace=replace)
            self._emit(
                {
                    "op": "load",
                    "replace": replace,
                    "batches": [
                        [n, list(r), list(s) if s else None] for n, r, s in batches
                    ],
                }
            )
            journal, self.journal = self.journal, None
            try:
                # empty every replaced table first: the room they free is what
                # the capacity check above counted on
                for name, _, _ in batches:
                    if name not in self.tables:
                        self.create_table(name)
                    elif replace:
                        self.clear(name, checked=True)
                for name, records, secrets in batches:
                    self._put(name, records, secrets, upsert=True, checked=True)
            finally:
                self.journal = journal

    def create_index(
        self, name: str, field: str, *, unique: bool = False, kind: str = "hash"
    ) -> HashIndex:
        """Build an index (``kind``: hash or sorted) over the table's records at
        once; a unique one refuses duplicates. (``start_index`` builds one while
        writes go on.)"""
        with self.lock:
            build = self.start_index(name, field, unique=unique, kind=kind)
            try:
                for _ in build.steps():
                    pass
                return self.finish_index(build)
            finally:
                self.abort_index(build)

    def start_index(
        self, name: str, field: str, *, unique: bool = False, kind: str = "hash"
    ) -> IndexBuild:
        """Begin an index build over a copy of the table's records. The steps
        run without the lock; writes meanwhile are noted, and ``finish_index``
        applies them under the lock, so the index ends exactly as if it had
        been built at that instant. ``abort_index`` ends a build that failed."""
        with self.lock:
            table = self.require(name)
            if field in table.indexes or field in table.builds:
                raise DuplicateKey(name, "index", field)
            build = IndexBuild(
                table, make_index(field, unique=unique, kind=kind), table.records.copy()
            )
            table.builds[field] = build
            return build

    def finish_index(self, build: IndexBuild) -> HashIndex:
        table, index = build.table, build.index
        with self.lock:
            if table.builds.get(index.field) is not build or build.cancelled:
                raise UnknownTable(table.name)
            records = table.records
            for record_id in build.touched:
                old = build.snapshot.get(record_id)
                if old is not None:
                    index.remove(record_id, index.key_of(old))
            for record_id in build.touched:
                record = records.get(record_id)
                if record is not None:
                    build.add(record_id, record)
            described = index_spec(index)
            self._emit({"op": "create_index", "table": table.name, **described})
            if self.feed is not None:
                self.feed.add("create_index", table.name, None, described)
            del table.builds[index.field]
            if table.seq is None:
                table.seq = build.positions(records)
                table.next_seq = max(table.next_seq, len(table.seq))
            table.indexes[index.field] = index
            return index

    def abort_index(self, build: IndexBuild) -> None:
        with self.lock:
            if build.table.builds.get(build.index.field) is build:
                del build.table.builds[build.index.field]

    def drop_index(self, name: str, field: str) -> None:
        with self.lock:
            table = self.require(name)
            if field not in table.indexes:
                raise UnknownIndex(field)
            self._emit({"op": "drop_index", "table": name, "field": field})
            if self.feed is not None:
                self.feed.add("drop_index", name, None, {"field": field})
            del table.indexes[field]
            if not table.indexes:
                table.seq = None

    # -- internals ---------------------------------------------------------

    def check_insert(self, name: str, records: Sequence[Record]) -> None:
        """Raise what ``insert`` would raise for these records, writing nothing."""
        with self.lock:
            self._check_put(name, records, upsert=False)

    def _check_put(self, name: str, records: Sequence[Record], *, upsert: bool) -> int:
        """Ids, capacity and unique indexes for a put; returns the records it adds."""
        table = self.tables.get(name)
        existing = table.records if table is not None else {}
        batch_ids: set[str] = set()
        added = 0
        for record in records:
            record_id = record["id"]
            if record_id in batch_ids:
                raise DuplicateKey(name, "id", record_id)
            batch_ids.add(record_id)
            if record_id in existing:
                if not upsert:
                    raise DuplicateKey(name, "id", record_id)
            else:
                added += 1
        if self.total + added > self.max_records:
            raise CapacityExceeded(
                f"the store holds {self.total} of at most {self.max_records} records"
            )
        if table is not None:
            self._check_unique(table, records, replacing=upsert)
        else:
            self._check_tables(1)
        self._check_references(name, records)
        return added

    def _check_references(self, name: str, records: Sequence[Record]) -> None:
        for reference in self.rules.references_from(name):
            target = self.tables.get(reference.target)
            ids = target.records if target is not None else {}
            missing = [
                (position, record.get(reference.field))
                for position, record in enumerate(records)
                if record.get(reference.field) not in ids
            ]
            if missing:
                raise MissingReference(
                    reference, [p for p, _ in missing], [v for _, v in missing]
                )

    def _named(self, reference: Reference, key: Any) -> bool:
        """Whether any record of ``reference.table`` names ``key``."""
        source = self.tables.get(reference.table)
        if source is None:
            return False
        index = source.indexes.get(reference.field)
        if index is not None:
            return index.size(key) > 0
        field = reference.field
        return any(json_key(r.get(field)) == key for r in source.records.values())

    def _check_emptying(self, name: str) -> None:
        """A table whose records are named by another table's cannot be emptied."""
        for reference in self.rules.references_to(name):
            source = self.tables.get(reference.table)
            if source is not None and source.records:
                raise StillReferenced(reference)

    def update(self, name: str, record_id: str, change: Change) -> Record:
        """Merge ``change`` into a record at once; the new record."""
        with self.lock:
            table = self.require(name)
            old = table.records.get(record_id)
            if old is None:
                raise UnknownRecord(record_id)
            if (
                change.expected is not None
                and record_version(old) not in change.expected
            ):
                raise StaleRecord(record_id)
            fields = merge_fields(
                old, change.fields, patch=change.patch, replace=change.replace
            )
            if len(fields) > MAX_FIELDS or (
                change.patch and grown_past(fields, change.fields, MAX_FIELDS)
            ):
                raise TooManyFields(record_id)
            new = {
                "id": record_id,
                **fields,
                "created_at": old["created_at"],
                "updated_at": change.updated_at,
            }
            event = "patch" if change.patch else "update"
            self.replace(name, new, secret=change.secret, expected=old, event=event)
            return new

    def _check_tables(self, new: int) -> None:
        if new and len(self.tables) + new > self.max_tables:
            raise CapacityExceeded(
                f"the store holds {len(self.tables)} of at most {self.max_tables} tables"
            )

    def _put(
        self,
        name: str,
        records: Sequence[Record],
        secrets: Sequence[Secret | None] | None,
        *,
        upsert: bool,
        checked: bool = False,
    ) -> None:
        with self.lock:
            table = self.tables.get(name)
            if checked:
                existing = table.records if table is not None else {}
                added = sum(1 for r in records if r["id"] not in existing)
            else:
                added = self._check_put(name, records, upsert=upsert)
            op: dict[str, Any] = {"op": "put", "table": name, "records": list(records)}
            if secrets is not None and any(s is not None for s in secrets):
                op["secrets"] = list(secrets)
            self._emit(op)
            if table is None:
                table = self.tables[name] = Table(name)
            sizes = []
            # a bulk write: its repeated strings stored once (held: the bound)
            bulk, held = len(records) > 1, len(table.records) + len(records)
            for position, record in enumerate(records):
                if bulk:
                    table.shared.share(record, held)
                sizes.append(self._apply(table, record))
                if secrets is not None and secrets[position] is not None:
                    self._set_secret(table, record["id"], secrets[position])
            self.total += added
            if self.feed is not None:  # applied: now it is news
                self.feed.add_many(
                    "import" if upsert else "create",
                    name,
                    [(r["id"], r, n) for r, n in zip(records, sizes)],
                )

    def _apply(self, table: Table, record: Record) -> int:
        """Put one record in its table; its estimated size."""
        record_id = record["id"]
        old = table.records.get(record_id)
        for index in table.indexes.values():
            if old is not None:
                index.remove(record_id, index.key_of(old))
            index.add(record_id, index.key_of(record))
        table.records[record_id] = record
        size = record_size(record)
        table.size += size - (record_size(old) if old else 0)
        if table.builds:
            table.touch(record_id, inserted=old is None)
        if old is None and table.seq is not None:
            table.seq[record_id] = table.next_seq
        if old is None:
            table.next_seq += 1
        return size

    def _check_unique(
        self,
        table: Table,
        records: Sequence[Record],
        *,
        replacing: bool,
        existing: bool = True,
    ) -> None:
        """Unique indexes hold within the batch and, with ``existing``, against the
        records that stay (those the batch replaces do not count)."""
        for index in table.indexes.values():
            if not index.unique:
                continue
            seen: dict[Hashable, str] = {}
            batch = {r["id"] for r in records} if replacing else set()
            for record in records:
                key = index.key_of(record)
                if key is None or key is MISSING:
                    continue
                if key in seen:
                    raise DuplicateKey(
                        table.name,
                        index.field,
                        resolve_field(record, index),
                        (seen[key], record["id"]),
                    )
                seen[key] = record["id"]
                holder = index.holder(key) if existing else None
                if (
                    holder is not None
                    and holder != record["id"]
                    and holder not in batch
                ):
                    raise DuplicateKey(
                        table.name,
                        index.field,
                        resolve_field(record, index),
                        (holder, record["id"]),
                    )

    @staticmethod
    def _cancel_builds(table: Table) -> None:
        for build in table.builds.values():
            build.cancelled = True
        table.builds.clear()

    @staticmethod
    def _set_secret(table: Table, record_id: str, secret: Secret | None) -> None:
        if secret:
            table.secrets[record_id] = secret
        else:
            table.secrets.pop(record_id, None)

    def _emit(self, op: dict[str, Any]) -> None:
        """Hand a change to the journal before it is applied: a change the journal
        refuses (``JournalError``) is not applied."""
        if self.journal is not None:
            self.journal(op)

    async def sync(self) -> None:
        """Wait until the changes made so far are as durable as the journal promises."""
        if self.journal is not None and self.durable is not None:
            await self.durable()

    def apply(self, op: dict[str, Any]) -> None:
        """Replay one journal entry (from the log or a snapshot), without journaling."""
        kind = op["op"]
        name = op.get("table", "")
        if kind == "put":
            self.upsert(name, op["records"], secrets=op.get("secrets"))
        elif kind == "replace":
            extra = {"secret": op["secret"]} if "secret" in op else {}
            table = self.tables.get(name)
            if table is not None and op["record"]["id"] in table.records:
                self.replace(name, op["record"], **extra)
            else:
                self.upsert(name, [op["record"]], secrets=[extra.get("secret")])
        elif kind == "delete":
            self.delete(name, op["id"])
        elif kind == "drop":
            self.drop(name)
        elif kind == "clear":
            self.clear(name)
        elif kind == "create_table":
            self.create_table(name)
        elif kind == "create_index":
            if op["field"] not in self.require(name).indexes:
                self.create_index(
                    name,
                    op["field"],
                    unique=op["unique"],
                    kind=op.get("kind", "hash"),
                )
        elif kind == "drop_index":
            self.drop_index(name, op["field"])
        elif kind == "load":
            self.load([tuple(b) for b in op["batches"]], replace=op["replace"])
        else:
            raise ValueError(f"unknown journal entry {kind!r}")

    # -- sizes -------------------------------------------------------------

    def memory_estimate(self) -> int:
        """Estimated bytes held by records and indexes, from the sizes every
        write keeps up to date: O(tables), whatever the records hold."""
        with self.lock:
            total = 0
            for table in self.tables.values():
                total += sys.getsizeof(table.records) + table.size
                for index in table.indexes.values():
                    total += (
                        sys.getsizeof(index.groups) + index.count * _INDEX_ENTRY_BYTES
                    )
            return total


# A set slot plus a share of the set object, for ids grouped under one key.
_INDEX_ENTRY_BYTES = 48
_CONTAINERS = (list, dict)
_CONTAINER_TYPES = frozenset(_CONTAINERS)


def record_size(record: Record) -> int:
    """The estimated bytes of a record: the dict and its values, nested lists
    and objects walked (their cost was paid once already, to parse them)."""
    values = record.values()
    size = getsizeof(record) + sum(map(getsizeof, values))
    if _CONTAINER_TYPES.isdisjoint(map(type, values)):
        return size  # flat, as most records are: no walk
    for value in values:
        if value.__class__ in _CONTAINER_TYPES:
            size += _deep_size(value) - getsizeof(value)
    return size


def _deep_size(value: Any) -> int:
    size = 0
    stack = [value]
    while stack:
        item = stack.pop()
        size += getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return size


# The most records a sorted walk puts in order under the lock; past it the
# query scans (in slices, within its work budget) instead.
MAX_WALK = 50_000


# a sorted index entry is (rank, value, id); equal values of two ranks (1 and
# true) only make a walk take the general way
_ENTRY_VALUE = itemgetter(1)
_ENTRY_ID = itemgetter(2)


def _walk(
    table: Table,
    index: SortedIndex,
    rank: int | None,
    low: Bound | None,
    high: Bound | None,
    descending: bool,
    offset: int,
    limit: int | None,
    table_order: bool,
) -> Walk | None:
    """``MemoryStore.sorted_walk`` under the store's lock."""
    if rank is None:
        start, stop = 0, len(index.ordered)
        absent = len(index.absent)
    else:
        start, stop = index.span(low, high, rank)
        absent = 0
    size = stop - start
    total = size + absent
    end = total if limit is None else min(total, offset + limit)
    if offset >= end:
        return Walk([], offset, total)
    runs: list[list[str]] = []
    first = size
    if offset < size:
        stretch = min(end, size)
        if descending:
            a, b = stop - stretch, stop - offset
        else:
            a, b = start + offset, start + stretch
        if end <= size and not table_order and b - a <= MAX_WALK:
            # the stretch and one entry each side: when no two of them share a
            # value, the stretch holds whole runs of one record each, and the
            # index's order is the answer's (the common case, a unique field)
            lo, hi = max(start, a - 1), min(stop, b + 1)
            near = index.ordered[lo:hi]
            values = list(map(_ENTRY_VALUE, near))
            if not any(map(eq, values, islice(values, 1, None))):
                ids = list(map(_ENTRY_ID, near[a - lo : b - lo]))
                if descending:
                    ids.reverse()
                first = stop - b if descending else a - start
                return Walk([], first, total, list(map(table.records.__getitem__, ids)))
        a = max(start, index.group_start(a))
        b = min(stop, index.group_stop(b - 1))
        if b - a > MAX_WALK:
            return None
        first = stop - b if descending else a - start
        run: list[str] = []
        last_rank, last = -1, None
        for entry_rank, value, record_id in index.ordered.islice(a, b):
            if entry_rank != last_rank or value != last:
                run = [record_id]
                runs.append(run)
                last_rank, last = entry_rank, value
            else:
                run.append(record_id)
        if descending:
            runs.reverse()
    if end > size:
        if absent > MAX_WALK:
            return None
        runs.append(list(index.absent))
    if table_order:
        runs = [[i for run in runs for i in run]]
    records = table.records
    return Walk(
        [
            (
                [records[run[0]]]
                if len(run) == 1
                else list(map(records.__getitem__, table.in_order(run)))
            )
            for run in runs
        ],
        first,
        total,
    )


def resolve_field(record: Record, index: HashIndex) -> Any:
    return resolve(record, index.parts)


class MemoryScan(Scan):
    """A copy of a table's list of records, taken at one instant under the lock
    (a consistent snapshot: records are never changed in place)."""

    def __init__(self, rows: list[Record]) -> None:
        self.rows = rows
        self.count = len(rows)

    async def batches(self, size: int = 2048) -> AsyncIterator[list[Record]]:
        rows = self.rows
        for start in range(0, len(rows), size):
            yield rows[start : start + size]


class MemoryStore(StoreBackend):
    """The default backend: ``Store``'s tables in this process's memory.

    Every method takes the store's lock for the few microseconds it needs; a
    scan is a copy of the table's list of record references, so lists, joins and
    dumps read a consistent snapshot while writes go on. Writes return once they
    are as durable as ``MEMDB_PERSISTENCE`` makes them (the append-only log is
    the inner ``engine``'s journal).
    """

    kind = "memory"

    def __init__(
        self, *, max_records: int, max_tables: int = 10_000, rules: Rules | None = None
    ) -> None:
        self.rules = rules or Rules()
        self.engine = Store(
            max_records=max_records, max_tables=max_tables, rules=self.rules
        )

    @classmethod
    def around(cls, engine: Store) -> MemoryStore:
        """The backend over an existing engine (its rules and data as they are)."""
        backend = cls.__new__(cls)
        backend.rules = engine.rules
        backend.engine = engine
        return backend

    async def open(self) -> None:
        self.ensure_builtins()

    def ensure_builtins(self) -> None:
        """The built-in tables and their indexes, where they are missing."""
        engine = self.engine
        with engine.lock:
            for name in self.rules.tables:
                engine.create_table(name)
            for table, field, unique in self.rules.indexes:
                if field not in engine.require(table).indexes:
                    engine.create_index(table, field, unique=unique)

    async def sync(self) -> None:
        await self.engine.sync()

    # -- reads --------------------------------------------------------------------

    async def read(self, table: str, record_id: str) -> Record | None:
        return self.engine.get(table, record_id)

    async def read_many(self, table: str, ids: Sequence[str]) -> list[Record]:
        engine = self.engine
        with engine.lock:
            current = engine.table(table)
            if current is None:
                return []
            records = current.records
            wanted = {i for i in ids if isinstance(i, str) and i in records}
            return [records[i] for i in current.in_order(wanted)]

    async def has_table(self, table: str) -> bool:
        return table in self.engine.tables

    async def secret(self, table: str, record_id: str) -> Secret | None:
        current = self.engine.table(table)
        return None if current is None else current.secrets.get(record_id)

    async def page(
        self, table: str, offset: int, limit: int
    ) -> tuple[list[Record], int]:
        engine = self.engine
        with engine.lock:
            records = engine.require(table).records
            engine.mark_snapshot()
            total = len(records)
            if offset >= total:
                return [], total
            return list(islice(records.values(), offset, offset + limit)), total

    async def scan(self, table: str) -> Scan:
        return MemoryScan(self.engine.snapshot(table))

    async def lookup(
        self,
        table: str,
        field: str,
        keys: Sequence[Any],
        *,
        offset: int = 0,
        limit: int | None = None,
    ) -> tuple[list[Record], int] | None:
        engine = self.engine
        with engine.lock:
            current = engine.require(table)
            found: set[str] = set()
            if field == "id":
                found = {k for k in keys if isinstance(k, str) and k in current.records}
            else:
                index = current.indexes.get(field)
                if index is None:
                    return None  # no read made: the caller scans instead
                for key in {json_key(k) for k in keys}:
                    found.update(index.ids(key))
            engine.mark_snapshot()
            ordered = current.in_order(found)
            end = len(ordered) if limit is None else offset + limit
            records = current.records
            return [records[i] for i in ordered[offset:end]], len(ordered)

    async def lookup_size(
        self, table: str, field: str, keys: Sequence[Any]
    ) -> int | None:
        engine = self.engine
        with engine.lock:
            current = engine.require(table)
            if field == "id":
                return len({k for k in keys if isinstance(k, str)})
            index = current.indexes.get(field)
            if index is None:
                return None
            return sum(index.size(key) for key in {json_key(k) for k in keys})

    async def join_side(self, table: str, field: str) -> IndexedSide | None:
        engine = self.engine
        with engine.lock:
            current = engine.require(table)
            index = current.indexes.get(field)
            if index is None or current.seq is None:
                return None
            engine.mark_snapshot()
            return IndexedSide(
                index.shared(), current.records.copy(), current.seq.copy()
            )

    async def sorted_walk(
        self,
        table: str,
        field: str,
        *,
        rank: int | None = None,
        low: Bound | None = None,
        high: Bound | None = None,
        descending: bool = False,
        offset: int = 0,
        limit: int | None = None,
        table_order: bool = False,
    ) -> Walk | None:
        engine = self.engine
        with engine.lock:
            current = engine.require(table)
            index = current.indexes.get(field)
            if not isinstance(index, SortedIndex):
                return None
            walk = _walk(
                current, index, rank, low, high, descending, offset, limit, table_order
            )
            if walk is not None:
                engine.mark_snapshot()
            return walk

    async def describe(self) -> list[TableInfo]:
        engine = self.engine
        with engine.lock:
            return [
                TableInfo(
                    name=name,
                    count=len(table.records),
                    size=table.size,
                    indexes=[
                        IndexInfo(i.field, i.unique, i.entries(), i.kind)
                        for i in table.indexes.values()
                    ],
                )
                for name, table in engine.tables.items()
            ]

    async def memory(self) -> int:
        return self.engine.memory_estimate()

    # -- writes -------------------------------------------------------------------

    async def check_insert(self, table: str, records: Sequence[Record]) -> None:
        self.engine.check_insert(table, records)

    async def insert(
        self,
        table: str,
        records: Sequence[Record],
        secrets: Sequence[Secret | None] | None = None,
    ) -> None:
        engine = self.engine
        engine.insert(table, records, secrets=secrets)
        if engine.journal is not None:
            await engine.sync()

    async def update(self, table: str, record_id: str, change: Change) -> Record:
        record = self.engine.update(table, record_id, change)
        await self.engine.sync()
        return record

    async def delete(
        self, table: str, record_id: str, *, expected: frozenset[str] | None = None
    ) -> None:
        self.engine.delete(table, record_id, expected=expected)
        await self.engine.sync()

    async def drop(self, table: str) -> None:
        engine = self.engine
        if table in self.rules.tables:
            engine.clear(table)
        else:
            engine.drop(table)
        await engine.sync()

    async def create_index(
        self, table: str, field: str, *, unique: bool, kind: str = "hash"
    ) -> None:
        engine = self.engine
        with engine.lock:
            current = engine.require(table)
            if len(current.indexes) >= MAX_INDEXES:
                raise TooManyIndexes(table)
            build = engine.start_index(table, field, unique=unique, kind=kind)
        # built from a copy in steps while writes go on; the writes made
        # meanwhile are applied to it at the end, under the lock
        try:
            for _ in build.steps():
                await asyncio.sleep(0)
            engine.finish_index(build)
        finally:
            engine.abort_index(build)
        await engine.sync()

    async def drop_index(self, table: str, field: str) -> None:
        self.engine.drop_index(table, field)
        await self.engine.sync()

    # -- the change feed ------------------------------------------------------------

    def follow(self, retain: int, retain_bytes: int | None = None) -> Feed:
        """Start the change feed (once the data is loaded)."""
        feed = Feed(retain, retain_bytes=retain_bytes or DEFAULT_RETAIN_BYTES)
        feed.bind(asyncio.get_running_loop())
        self.engine.feed = feed
        return feed

    def _feed(self) -> Feed:
        if self.engine.feed is None:  # a store whose feed was not started
            self.engine.feed = Feed(DEFAULT_RETAIN)
        return self.engine.feed

    async def changes(
        self,
        since: str | None,
        *,
        tables: frozenset[str] | None = None,
        limit: int = 1000,
    ) -> tuple[list[ChangeEvent], str]:
        return self._feed().read(since, tables=tables, limit=limit)

    async def wait_changes(self, since: str, timeout: float) -> None:
        await self._feed().wait(since, timeout)

    async def cursor(self) -> str:
        return self._feed().cursor()

    async def check_load(
        self, batches: Sequence[tuple[str, Sequence[Record]]], *, replace: bool
    ) -> None:
        await self._locked(
            sum(len(r) for _, r in batches),
            self.engine.check_load,
            [(name, records, None) for name, records in batches],
            replace,
        )

    async def load(
        self,
        batches: Sequence[tuple[str, Sequence[Record], Sequence[Secret | None] | None]],
        *,
        replace: bool,
    ) -> None:
        await self._locked(
            sum(len(r) for _, r, _ in batches), self.engine.load, batches, replace
        )
        await self.engine.sync()

    @staticmethod
    async def _locked(size: int, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn`` (which takes the lock): on the event loop for a small
        batch, in a worker thread for a large one (a seed file), so that the
        loop keeps answering meanwhile."""
        if size > _INLINE_RECORDS:
            await anyio.to_thread.run_sync(lambda: fn(*args[:-1], replace=args[-1]))
        else:
            fn(*args[:-1], replace=args[-1])


# The changes a feed keeps when ``follow`` did not say (MEMDB_CHANGES_RETAIN).
DEFAULT_RETAIN = 10_000
DEFAULT_RETAIN_BYTES = 64 * 1024 * 1024
# An import of more records than this is checked and written in a worker thread.
_INLINE_RECORDS = 10_000
# Indexes one table may have: each one costs memory and time on every write.
MAX_INDEXES = 32
