"""The store interface: everything a service may ask of a store, and nothing more.

Two backends implement it: ``MemoryStore`` (``app/storage/memory.py``, tables of
dicts in this process behind one lock) and ``RedisStore``
(``app/storage/redis.py``, Redis or Valkey, standalone or a Cluster). Services
never see which one they talk to, never take a lock and never read a table's
insides: every rule that must be atomic is one method here (create with ids,
unique indexes, references and limits; update and delete with an expected
version; an import of several tables), and each backend makes it atomic its own
way (a lock; a Lua script).

The built-in rules (``Rules``: unique indexes, plain indexes, references between
tables, write-only fields) are declared once, outside the storage, and handed to
the backend when it is built.

Records are plain JSON objects; a record's *version* is a hash of its JSON text
(``record_version``), which the HTTP layer sends as its ETag.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import (
    Any,
    AsyncIterator,
    Collection,
    Hashable,
    Iterable,
    Mapping,
    NamedTuple,
    Sequence,
)

import orjson

from app.storage.keys import MISSING

Record = dict[str, Any]
Secret = dict[str, Any]


def version_of(body: bytes) -> str:
    """A record's version: 16 hex digits of the SHA-1 of its JSON text (SHA-1,
    because a Redis script can compute it too: ``redis.sha1hex``)."""
    return hashlib.sha1(body, usedforsecurity=False).hexdigest()[:16]


def record_version(record: Record) -> str:
    return version_of(orjson.dumps(record))


# -- the rules ---------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """``table.field`` must name a record of ``target`` (by id); a record of
    ``target`` that is named cannot be deleted, nor ``target`` emptied."""

    table: str
    field: str
    target: str


@dataclass(frozen=True)
class Rules:
    """The built-in tables' rules, enforced atomically by every backend."""

    tables: tuple[str, ...] = ()
    # (table, field, unique): created at start, never dropped
    indexes: tuple[tuple[str, str, bool], ...] = ()
    references: tuple[Reference, ...] = ()
    # fields stored only as a secret beside the record, never in it
    write_only: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # fields that hold an email address, stored in its normalised form
    emails: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # the references of each table, asked on every write: looked up, not searched
    _from: dict[str, tuple[Reference, ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        for reference in self.references:
            sources = self._from.get(reference.table, ())
            self._from[reference.table] = (*sources, reference)

    def builtin_index(self, table: str, field_name: str) -> bool:
        return any(t == table and f == field_name for t, f, _ in self.indexes)

    def references_from(self, table: str) -> tuple[Reference, ...]:
        return self._from.get(table, ())

    def references_to(self, table: str) -> list[Reference]:
        return [r for r in self.references if r.target == table]

    def load_order(self, tables: Iterable[str]) -> list[str]:
        """``tables`` with each referenced table before the tables that
        reference it (``users`` before ``orders``), the rest as given."""
        targets = {r.target for r in self.references}
        return sorted(tables, key=lambda t: 0 if t in targets else 1)


# -- what the store refuses ---------------------------------------------------------


class StoreError(Exception):
    """Base of what the store refuses."""


class DuplicateKey(StoreError):
    """An id, or a value of a unique index, is taken."""

    def __init__(
        self, table: str, field: str, value: Any, ids: tuple[str, str] | None = None
    ) -> None:
        super().__init__(f"{table}.{field} already holds {value!r}")
        self.table = table
        self.field = field
        self.value = value
        self.ids = ids  # the record holding the value and the one refused


class CapacityExceeded(StoreError):
    """The write would take the store past its record or table limit."""


class UnknownTable(StoreError):
    pass


class UnknownRecord(StoreError):
    pass


class UnknownIndex(StoreError):
    pass


class StaleRecord(StoreError):
    """The record is not at the version the writer expected."""


class MissingReference(StoreError):
    """Records name records of another table that do not exist."""

    def __init__(self, reference: Reference, positions: list[int], values: list[Any]):
        super().__init__(
            f"{reference.table}.{reference.field} names no {reference.target}"
        )
        self.reference = reference
        self.positions = positions
        self.values = values


class StillReferenced(StoreError):
    """A record (or a table) is named by records of another table."""

    def __init__(self, reference: Reference) -> None:
        super().__init__(f"{reference.table}.{reference.field} still names it")
        self.reference = reference


class TooManyFields(StoreError):
    """An update would leave a record with more fields than a record may have."""


class TooManyIndexes(StoreError):
    pass


class JournalError(StoreError):
    """The journal (the append-only log) could not take a change; nothing changed."""


class CursorGone(StoreError):
    """A change-feed cursor the store cannot serve: older than the changes it
    retains, or (``known=False``) one this feed never gave (another feed's, a
    restarted memory store's, or one past the newest change: a store emptied
    or failed over). ``oldest`` is the oldest cursor still served."""

    def __init__(self, oldest: str, *, known: bool = True) -> None:
        what = "older than the retained changes" if known else "not this feed's"
        super().__init__(f"the cursor is {what} ({oldest})")
        self.oldest = oldest
        self.known = known


class FeedUnsupported(StoreError):
    """This store keeps no change feed (a Redis Cluster: a table group's
    scripts run on the node of its hash slot, and no one stream can be written
    by all of them atomically)."""


class BadCursor(StoreError):
    """Not a cursor of this store's change feed."""


class Unavailable(StoreError):
    """The store cannot be reached (down, loading, failing over); nothing is known
    to have changed. ``retry_after`` is a hint in seconds."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# -- what the store answers ---------------------------------------------------------


@dataclass(frozen=True)
class IndexInfo:
    field: str
    unique: bool
    entries: int
    kind: str = "hash"


Bound = tuple[Any, bool]  # a value, and whether the range includes it


class Walk(NamedTuple):
    """A stretch of a sorted index's order (``sorted_walk``): runs of records
    with equal values (``groups``, each in insertion order; the records
    without the field last), the position in the whole walk of the first
    record of the first run (``first``), and how many records the whole walk
    holds (``total``). When no two records of the stretch share a value (each
    run would hold one record) they may come as ``rows`` instead, in the walk's
    order, with ``groups`` empty."""

    groups: list[list[Record]]
    first: int
    total: int
    rows: list[Record] | None = None


@dataclass(frozen=True)
class IndexedSide:
    """A table read for a join at one instant through the hash index on its
    join column: the index's groups (a JSON key to the one id or the ids
    holding it), the records by id and their insertion positions."""

    groups: Mapping[Hashable, str | Collection[str]]
    records: dict[str, Record]
    seq: dict[str, int]


@dataclass(frozen=True)
class TableInfo:
    name: str
    count: int
    size: int  # estimated bytes of the records
    indexes: list[IndexInfo]


@dataclass(frozen=True)
class Change:
    """An update: ``fields`` merged into the record (``patch``: as an RFC 7396
    merge patch, where ``null`` removes; else top-level fields replaced), at
    ``updated_at``, only while the record is at one of ``expected`` versions
    (``None``: any version). ``secret``: ``MISSING`` leaves it, ``None`` removes
    it, a dict replaces it. ``replace``: ``fields`` are the record's whole new
    fields (a field not given is removed)."""

    fields: dict[str, Any]
    patch: bool
    updated_at: str
    expected: frozenset[str] | None = None
    secret: Any = MISSING
    replace: bool = False


MAX_FIELDS = 256


class ChangeEvent(NamedTuple):
    """One applied change of the change feed. ``op``: ``create``, ``update``,
    ``patch``, ``delete``, ``drop`` (a table dropped, or emptied), ``import``,
    ``create_index`` or ``drop_index``. ``record`` is the record as the change
    left it (``None`` for a delete or a drop; for an index change, the index:
    ``{"field", "unique"}``); ``at`` is when it was applied (Unix seconds).
    A named tuple: one is made for every write, and a tuple is made fastest."""

    cursor: str
    op: str
    table: str
    id: str | None
    record: Record | None
    at: float


# The cursor a list or a dump was read at, set by the store's first read of the
# request (a later read is newer: following from the first misses nothing).
SNAPSHOT_CURSOR: ContextVar[str | None] = ContextVar("snapshot_cursor", default=None)


class Scan:
    """A table read in batches, in insertion order. ``count`` is the number of
    records when the scan began; ``batches()`` yields them (what each backend
    promises about writes made meanwhile is in its own docstring)."""

    count: int

    def batches(self, size: int = 2048) -> AsyncIterator[list[Record]]:
        raise NotImplementedError


class StoreBackend(ABC):
    """The store interface (see the module docstring)."""

    kind: str
    rules: Rules

    # -- lifecycle --------------------------------------------------------------

    async def open(self) -> None:
        """Connect and make the built-in tables and indexes exist."""

    async def close(self) -> None:
        """Let go of connections and files."""

    async def state(self) -> str | None:
        """``None`` when the store answers, else why not (for ``/ready``)."""
        return None

    async def sync(self) -> None:
        """Wait until the writes made so far are as durable as configured."""

    # -- reads ------------------------------------------------------------------

    @abstractmethod
    async def read(self, table: str, record_id: str) -> Record | None:
        """One record, or ``None`` (no such record or no such table)."""

    @abstractmethod
    async def read_many(self, table: str, ids: Sequence[str]) -> list[Record]:
        """The records of those ids that exist, in insertion order."""

    @abstractmethod
    async def has_table(self, table: str) -> bool: ...

    @abstractmethod
    async def secret(self, table: str, record_id: str) -> Secret | None:
        """The write-only values kept beside a record (a password hash), if any."""

    @abstractmethod
    async def page(
        self, table: str, offset: int, limit: int
    ) -> tuple[list[Record], int]:
        """Records ``offset`` to ``offset + limit`` in insertion order, and the
        table's count. ``UnknownTable`` when there is no such table."""

    @abstractmethod
    async def scan(self, table: str) -> Scan:
        """Every record, in batches. ``UnknownTable`` when there is no such table."""

    @abstractmethod
    async def lookup(
        self,
        table: str,
        field: str,
        keys: Sequence[Any],
        *,
        offset: int = 0,
        limit: int | None = None,
    ) -> tuple[list[Record], int] | None:
        """The records whose ``field`` equals (as JSON) one of ``keys``, in
        insertion order (``offset`` and ``limit`` of them), and how many there
        are; ``None`` when no index on ``field`` can answer."""

    @abstractmethod
    async def lookup_size(
        self, table: str, field: str, keys: Sequence[Any]
    ) -> int | None:
        """How many records ``lookup`` would give; ``None`` without an index."""

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
        """Records in the order of a sorted index on ``field``: ``offset`` and
        ``limit`` are positions in that order (ascending, or ``descending``),
        widened to whole runs of equal values. Without ``rank`` the walk is
        the whole table (records without the field last); with it, the
        values of that sort rank between ``low`` and ``high``.
        ``table_order`` answers those records as one run in insertion order.
        ``None`` when no sorted index on ``field`` can answer cheaply: the
        caller scans instead."""
        return None

    async def join_side(self, table: str, field: str) -> IndexedSide | None:
        """The right side of a join on ``field`` read through a hash index on
        it, so that the join needs no pass over the table to group it; None
        when there is no such index (the join scans)."""
        return None

    @abstractmethod
    async def describe(self) -> list[TableInfo]:
        """Every table with its count, size and indexes: O(tables)."""

    @abstractmethod
    async def memory(self) -> int:
        """Estimated bytes of records and indexes."""

    # -- writes -----------------------------------------------------------------

    @abstractmethod
    async def check_insert(self, table: str, records: Sequence[Record]) -> None:
        """Raise what ``insert`` would raise (ids, unique values, references,
        limits), writing nothing: to refuse before costly work."""

    @abstractmethod
    async def insert(
        self,
        table: str,
        records: Sequence[Record],
        secrets: Sequence[Secret | None] | None = None,
    ) -> None:
        """Create records, all or none: ids new, unique indexes held, references
        named, limits kept; the table is created on its first record."""

    @abstractmethod
    async def update(self, table: str, record_id: str, change: Change) -> Record:
        """Merge ``change`` into the record, atomically; the new record.
        ``UnknownTable`` or ``UnknownRecord`` when there is none."""

    @abstractmethod
    async def delete(
        self, table: str, record_id: str, *, expected: frozenset[str] | None = None
    ) -> None:
        """Delete a record at one of the ``expected`` versions (any when
        ``None``); refused while another table's records name it.
        ``UnknownTable`` or ``UnknownRecord`` when there is none."""

    @abstractmethod
    async def drop(self, table: str) -> None:
        """Remove a table; a built-in table is emptied instead, and refused while
        another table's records name its records."""

    @abstractmethod
    async def create_index(
        self, table: str, field: str, *, unique: bool, kind: str = "hash"
    ) -> None:
        """Build an index over the table's records (refused, ``DuplicateKey``,
        when it is unique and the data holds duplicates). The build may run
        while writes go on; the index answers lookups once it is complete.
        ``kind`` is ``hash`` or ``sorted`` (a backend that cannot keep values
        in order keeps a sorted index as a hash index and says so in
        ``sorted_walk``)."""

    @abstractmethod
    async def drop_index(self, table: str, field: str) -> None: ...

    # -- the change feed ------------------------------------------------------------

    @abstractmethod
    async def changes(
        self,
        since: str | None,
        *,
        tables: frozenset[str] | None = None,
        limit: int = 1000,
    ) -> tuple[list[ChangeEvent], str]:
        """The applied changes after the cursor ``since`` (``None``: from the
        oldest retained), in commit order, of ``tables`` (all when ``None``), at
        most ``limit``; and the cursor to read on from (past the changes looked
        at, matching or not). ``CursorGone`` when ``since`` is older than the
        retention, ``BadCursor`` when it is not a cursor of this feed."""

    @abstractmethod
    async def wait_changes(self, since: str, timeout: float) -> None:
        """Return once a change after ``since`` exists, or after ``timeout``
        seconds (at once if one exists already)."""

    @abstractmethod
    async def cursor(self) -> str:
        """The cursor of the newest change: a follower from now starts there."""

    @abstractmethod
    async def check_load(
        self,
        batches: Sequence[tuple[str, Sequence[Record]]],
        *,
        replace: bool,
    ) -> None:
        """Raise what ``load`` would raise, writing nothing."""

    @abstractmethod
    async def load(
        self,
        batches: Sequence[tuple[str, Sequence[Record], Sequence[Secret | None] | None]],
        *,
        replace: bool,
    ) -> None:
        """Write several tables at once: each batch upserted into its table (or
        replacing its records with ``replace``); all or nothing where the
        backend can make it so (see its docstring)."""
