"""Hash joins: O(|left| + |right| + |result|), counted before any row is made.

A join is planned in two passes over a snapshot of both tables. The first
groups the right rows by their join value and reads each left row's value; it
knows then how many rows the answer has (``total``) without making one, so a
join that would make more than ``MEMDB_MAX_JOIN_ROWS`` rows is refused before
it costs anything more, unless the client asks for a page of it (``limit``).
The second pass makes the rows of the page asked for, in batches, skipping the
rows before ``offset`` by their counts. Both passes run in slices that give the
event loop back, within the request's work budget.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Collection,
    Hashable,
    Iterator,
    Literal,
)

from app.core.errors import BadRequest, QueryTooCostly, ValidationFailed, param_error
from app.schemas.builtin import BUILTIN, Schemas
from app.services.validation import FIELD_NAME, check_table_name
from app.services.work import Limits, Work
from app.storage.keys import MISSING, json_key, resolve, split_path
from app.services.errors import store_errors
from app.storage.base import IndexedSide, Record, Scan, StoreBackend

How = Literal["inner", "left", "right", "full"]
Pair = tuple[Record | None, Record | None]

# Rows of one step of the planning passes, and pairs of one batch of output.
STEP = 4096
BATCH = 2048


def as_id(value: Any) -> Any:
    """A value compared with an ``id``: an integer (not a bool), or a float
    with an integral value, is the id written with its digits (``1`` and
    ``1.0`` are ``"1"``: json-server files hold integer foreign keys to ids
    that the store keeps as strings); any other value as it is."""
    kind = type(value)
    if kind is int:
        return str(value)
    if kind is float and value.is_integer():
        return str(int(value))
    return value


def _digits(text: str) -> int | None:
    """The integer an id is the digits of (``"12"``: 12), as ``as_id`` writes
    it; None for any other text."""
    stripped = text[1:] if text[:1] == "-" else text
    if not stripped.isascii() or not stripped.isdigit():
        return None
    number = int(text)
    return number if str(number) == text else None


def _converter(against_id: bool) -> Callable[[Any], Hashable]:
    """A value (not a string, not null) as the key it matches by."""
    return (lambda value: json_key(as_id(value))) if against_id else json_key


def _key_fn(column: str, *, against_id: bool = False) -> Callable[[Record], Hashable]:
    """The join key of a record: ``None`` when the value is missing or null.
    ``against_id``: the other side is the ``id`` column, so an integer value
    is the string of its digits (``as_id``)."""
    if column == "id":
        return operator.itemgetter("id")
    parts = split_path(column)
    convert = _converter(against_id)
    if len(parts) == 1:
        get = operator.methodcaller("get", column)

        def top_level(record: Record) -> Hashable:
            value = get(record)
            if type(value) is str:  # the common case: string ids
                return value
            return None if value is None else convert(value)

        return top_level

    def key(record: Record) -> Hashable:
        value = resolve(record, parts)
        if value is MISSING or value is None:
            return None
        return convert(value)

    return key


def _keys_fn(
    column: str, *, against_id: bool = False
) -> Callable[[list[Record]], list[Hashable]]:
    """The join keys of a run of records, as ``_key_fn`` reads each one."""
    if column == "id" or len(split_path(column)) != 1:
        key = _key_fn(column, against_id=against_id)
        return lambda rows: list(map(key, rows))
    convert = _converter(against_id)

    def top_level(rows: list[Record]) -> list[Hashable]:
        values = [row.get(column) for row in rows]
        return [v if type(v) is str or v is None else convert(v) for v in values]

    return top_level


class Join:
    """A planned join of two snapshots: ``plan()`` counts, ``batches()`` makes rows.

    Rows come in left order, each left row's matches in right order; rows of
    ``right`` that matched nothing (``right``/``full``) follow in right order.
    Missing and null values never match. Values match by JSON equality, but
    when one side joins on ``id`` an integer on the other side matches the id
    with its digits (``as_id``). ``right_by_id`` is the right table's own id
    map, used as its hash table when the right side joins on its id.
    ``indexed``: the right side read through the hash index on its column
    (``StoreBackend.join_side``), which stands for the grouping pass (for an
    inner or a left join).
    """

    def __init__(
        self,
        left: list[Record],
        right: list[Record],
        *,
        left_on: str,
        right_on: str,
        how: How = "inner",
        right_by_id: dict[str, Record] | None = None,
        indexed: IndexedSide | None = None,
    ) -> None:
        self.left = left
        self.right = right
        self.indexed = indexed
        self.left_on = left_on
        self.right_on = right_on
        self.keep_left = how in ("left", "full")
        self.keep_right = how in ("right", "full")
        self.by_id = right_by_id if right_on == "id" else None
        self.groups: dict[Hashable, list[Record]] = {}
        self.left_keys: list[Hashable] = []
        self.unmatched: list[Record] = []
        self.total = 0

    def _right_key(self) -> Callable[[Record], Hashable]:
        return _key_fn(self.right_on, against_id=self.left_on == "id")

    def _matches(self, key: Hashable) -> list[Record] | tuple[Record, ...]:
        if key is None:
            return ()
        if self.indexed is not None:
            side = self.indexed
            ids = self._indexed_ids(key)
            if len(ids) > 1:
                ids.sort(key=side.seq.__getitem__)
            return tuple(map(side.records.__getitem__, ids))
        if self.by_id is not None:
            found = self.by_id.get(key) if isinstance(key, str) else None
            return (found,) if found is not None else ()
        return self.groups.get(key, ())

    def _indexed_groups(self, key: Hashable) -> list[str | Collection[str]]:
        """The index's groups under ``key`` (one id, or several); when the left
        side joins on ``id``, also the group of the integer with the id's
        digits (``as_id``)."""
        assert self.indexed is not None
        groups = self.indexed.groups
        found = [groups.get(key)]
        if self.left_on == "id" and type(key) is str:
            number = _digits(key)
            if number is not None:
                found.append(groups.get(number))
        return [group for group in found if group is not None]

    def _indexed_ids(self, key: Hashable) -> list[str]:
        ids: list[str] = []
        for group in self._indexed_groups(key):
            ids += [group] if type(group) is str else group
        return ids

    def _size(self, key: Hashable) -> int:
        if key is None or self.indexed is None:
            return len(self._matches(key))
        return sum(
            1 if type(group) is str else len(group)
            for group in self._indexed_groups(key)
        )

    def _count(self, keys: list[Hashable]) -> int:
        """The rows the left rows of ``keys`` make: their matches, and one for
        each that matches nothing when left rows are kept."""
        if self.indexed is None:
            sizes = list(map(self._size, keys))
        else:
            get = self.indexed.groups.get
            found = [None if key is None else get(key) for key in keys]
            sizes = [
                0 if group is None else 1 if type(group) is str else len(group)
                for group in found
            ]
            if self.left_on == "id":  # the ids that are digits match integers too
                for position, key in enumerate(keys):
                    if type(key) is str and (key.isdigit() or key[:1] == "-"):
                        sizes[position] = self._size(key)
        return sum(sizes) + (sizes.count(0) if self.keep_left else 0)

    def plan(self) -> Iterator[int]:
        """Group the right side, read the left keys, count the rows: yields the
        rows handled after each step, so that a caller can pause between."""
        if self.indexed is not None:
            assert not self.keep_right, "an indexed side serves inner and left joins"
        elif self.right_on == "id" and self.by_id is None:
            by_id: dict[str, Record] = {}
            for start in range(0, len(self.right), STEP):
                by_id.update((r["id"], r) for r in self.right[start : start + STEP])
                yield min(STEP, len(self.right) - start)
            self.by_id = by_id
        if self.by_id is None and self.indexed is None:
            right_key = self._right_key()
            groups = self.groups
            for start in range(0, len(self.right), STEP):
                for row in self.right[start : start + STEP]:
                    key = right_key(row)
                    if key is not None:
                        bucket = groups.get(key)
                        if bucket is None:
                            groups[key] = [row]
                        else:
                            bucket.append(row)
                yield min(STEP, len(self.right) - start)
        left_keys = _keys_fn(self.left_on, against_id=self.right_on == "id")
        total = 0
        for start in range(0, len(self.left), STEP):
            chunk = self.left[start : start + STEP]
            keys = left_keys(chunk)
            self.left_keys += keys
            total += self._count(keys)
            yield len(chunk)
        if self.keep_right:
            seen = set(self.left_keys)
            seen.discard(None)
            right_key = self._right_key()
            for start in range(0, len(self.right), STEP):
                chunk = self.right[start : start + STEP]
                self.unmatched += [r for r in chunk if right_key(r) not in seen]
                yield len(chunk)
            total += len(self.unmatched)
        self.total = total

    def batches(
        self, offset: int = 0, limit: int | None = None
    ) -> Iterator[list[Pair]]:
        """The rows ``offset`` to ``offset + limit`` (all without a limit), in
        batches of about ``BATCH``."""
        wanted = self.total - offset if limit is None else limit
        if wanted <= 0:
            return
        skip = offset
        batch: list[Pair] = []
        for lrow, key in zip(self.left, self.left_keys):
            hits = self._matches(key)
            count = len(hits) if hits else int(self.keep_left)
            if skip >= count:
                skip -= count
                continue
            if hits:
                take = hits[skip : skip + wanted]
                batch += [(lrow, rrow) for rrow in take]
                wanted -= len(take)
            else:
                batch.append((lrow, None))
                wanted -= 1
            skip = 0
            if wanted <= 0:
                break
            if len(batch) >= BATCH:
                yield batch
                batch = []
        if wanted > 0 and self.keep_right:
            tail = self.unmatched[skip : skip + wanted]
            for start in range(0, len(tail), BATCH):
                batch += [(None, rrow) for rrow in tail[start : start + BATCH]]
                yield batch
                batch = []
        if batch:
            yield batch


def hash_join(
    left: list[Record],
    right: list[Record],
    *,
    left_on: str,
    right_on: str,
    how: How = "inner",
    right_by_id: dict[str, Record] | None = None,
) -> list[Pair]:
    """Every row of the join at once (for callers that want a plain list)."""
    join = Join(
        left,
        right,
        left_on=left_on,
        right_on=right_on,
        how=how,
        right_by_id=right_by_id,
    )
    for _ in join.plan():
        pass
    return [pair for batch in join.batches() for pair in batch]


def _valid_path(path: str) -> bool:
    parts = path.split(".")
    return len(parts) <= 32 and all(FIELD_NAME.fullmatch(part) for part in parts)


def join_column(table: str, has_key: bool, key: str, schemas: Schemas = BUILTIN) -> str:
    """``key`` when the table has that field (``has_key``: a record of it has
    the path), else ``id`` (CONTRACT section 4)."""
    model = schemas.models.get(table)
    if model is not None:
        return key if key.split(".")[0] in model.model_fields else "id"
    return key if has_key else "id"


@dataclass
class JoinResult:
    left: str
    right: str
    left_on: str
    right_on: str
    how: How
    total: int
    offset: int
    limit: int | None
    batches: AsyncIterator[list[Pair]]
    work: Work = field(repr=False)

    async def rows(self) -> list[Pair]:
        """Every row of the page, collected (for small answers and tests)."""
        out: list[Pair] = []
        async for batch in self.batches:
            out += batch
        return out


class JoinService:
    def __init__(
        self,
        store: StoreBackend,
        limits: Limits | None = None,
        *,
        max_rows: int = 1_000_000,
        schemas: Schemas = BUILTIN,
    ) -> None:
        self.store = store
        self.limits = limits or Limits(budget=20_000_000, max_heavy=4)
        self.max_rows = max_rows
        self.schemas = schemas

    async def join(
        self,
        left: str,
        right: str,
        key: str,
        *,
        how: How = "inner",
        left_on: str | None = None,
        right_on: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> JoinResult:
        """Plan a join of two tables as the store's scans read them (on the
        memory store, a snapshot of each), and count its rows; the rows come
        from ``batches``. The caller closes ``result.work`` once it has read
        them."""
        check_table_name(left)
        check_table_name(right)
        if not _valid_path(key):  # a part of the path, as a table name is
            raise ValidationFailed(
                "key must be a field name or a dotted path",
                details=[param_error("key", "not a field name", "field_name")],
            )
        for name, column in (("left_on", left_on), ("right_on", right_on)):
            if column is not None and not _valid_path(column):  # a bad parameter
                raise BadRequest(
                    f"bad query parameter {name!r}: not a field name or a "
                    "dotted path",
                    details=[param_error(name, "not a field name", "field_name")],
                )
        work = self.limits.work()
        try:
            with store_errors():
                left_rows, left_has = await _read_all(
                    await self.store.scan(left), work, key
                )
                indexed = await self._indexed_side(right, key, how, right_on)
                if indexed is not None:
                    right_rows, right_has = [], True
                elif right == left:
                    right_rows, right_has = left_rows, left_has
                else:
                    right_rows, right_has = await _read_all(
                        await self.store.scan(right), work, key
                    )
        except BaseException:
            work.close()
            raise
        lcol = left_on or join_column(left, left_has, key, self.schemas)
        rcol = right_on or join_column(right, right_has, key, self.schemas)
        join = Join(
            left_rows,
            right_rows,
            left_on=lcol,
            right_on=rcol,
            how=how,
            indexed=indexed,
        )
        try:
            for done in join.plan():
                work.spend(done)
                await work.pause()
        except BaseException:
            work.close()
            raise
        rows = max(
            0, join.total - offset if limit is None else min(limit, join.total - offset)
        )
        # the rows of the page, and the left rows walked to skip to it
        needed = rows + (len(left_rows) if offset else 0)
        if limit is None and join.total > self.max_rows:
            work.close()
            raise QueryTooCostly(
                f"the join would make {join.total} rows, more than "
                f"MEMDB_MAX_JOIN_ROWS ({self.max_rows}); read it in pages with "
                "limit and offset",
                details=[
                    param_error("limit", "required for this join", "rows")
                    | {"rows": join.total, "max_rows": self.max_rows}
                ],
            )
        if limit is not None and work.spent + needed > work.budget:
            work.close()
            raise QueryTooCostly(
                f"a page of {rows} rows of this join needs more than "
                f"MEMDB_QUERY_BUDGET ({work.budget}) units of work; ask for fewer",
                details=[param_error("limit", "too many rows", "budget")],
            )
        return JoinResult(
            left=left,
            right=right,
            left_on=lcol,
            right_on=rcol,
            how=how,
            total=join.total,
            offset=offset,
            limit=limit,
            batches=_paced(join.batches(offset, limit), work),
            work=work,
        )

    async def _indexed_side(
        self, right: str, key: str, how: How, right_on: str | None
    ) -> IndexedSide | None:
        """The right side read through the hash index on its join column, for
        an inner or a left join whose right column is a field (not ``id``):
        the index stands for the pass that groups the right side, so the rows
        start at once (CONTRACT section 4: joins use indexes)."""
        if how not in ("inner", "left"):
            return None
        column = right_on or key
        if column == "id" or (
            right_on is None and join_column(right, True, key, self.schemas) != key
        ):
            return None
        side = await self.store.join_side(right, column)
        if side is None or (right_on is None and not side.groups):
            return None  # no index; or no record has the field: the join is on id
        return side


async def _read_all(scan: Scan, work: Work, key: str) -> tuple[list[Record], bool]:
    """Every record of a scan, read in batches with a pause between them, and
    whether any of them has the path ``key``."""
    rows: list[Record] = []
    parts = split_path(key)
    has = False
    async for batch in scan.batches():
        rows += batch
        if not has:
            has = any(resolve(r, parts) is not MISSING for r in batch)
        work.spend(len(batch) >> 4)
        await work.pause()
    return rows, has


async def _paced(
    batches: Iterator[list[Pair]], work: Work
) -> AsyncIterator[list[Pair]]:
    """The batches of a join, each one counted and followed by a pause."""
    for batch in batches:
        work.spend(len(batch))
        yield batch
        await work.pause()
