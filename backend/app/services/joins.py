"""Hash joins: O(|left| + |right| + |result|), the hash table on the smaller side."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable, Hashable, Iterable, Literal, Sequence

from app.core.errors import NotFound, ValidationFailed, field_error
from app.schemas.builtin import BUILTIN_SCHEMAS
from app.services.validation import FIELD_NAME, check_table_name
from app.storage.keys import MISSING, json_key, resolve, split_path
from app.storage.memory import Record, Store

How = Literal["inner", "left", "right", "full"]
Pair = tuple[Record | None, Record | None]


@dataclass(frozen=True)
class JoinResult:
    left: str
    right: str
    left_on: str
    right_on: str
    how: How
    rows: list[Pair]


def _key_fn(column: str) -> Callable[[Record], Hashable]:
    """The join key of a record: ``None`` when the value is missing or null."""
    if column == "id":
        return lambda record: record["id"]
    parts = split_path(column)
    if len(parts) == 1:
        get = operator.methodcaller("get", column)

        def top_level(record: Record) -> Hashable:
            value = get(record)
            if type(value) is str:  # the common case: string ids
                return value
            return None if value is None else json_key(value)

        return top_level

    def key(record: Record) -> Hashable:
        value = resolve(record, parts)
        if value is MISSING or value is None:
            return None
        return json_key(value)

    return key


def hash_join(
    left: Sequence[Record],
    right: Sequence[Record],
    *,
    left_on: str,
    right_on: str,
    how: How = "inner",
    build_by_id: dict[str, Record] | None = None,
) -> list[Pair]:
    """Pair the rows of ``left`` and ``right`` whose columns are equal as JSON.

    Rows come in left order, each left row's matches in right order; rows of
    ``right`` that matched nothing (``right``/``full``) follow in right order.
    Missing and null values never match. ``right_by_id`` is the right table's
    ``build_by_id`` is the smaller side's own id map, used instead of building
    a hash table when that side joins on its id.
    """
    left_key, right_key = _key_fn(left_on), _key_fn(right_on)
    keep_left = how in ("left", "full")
    keep_right = how in ("right", "full")
    rows: list[Pair] = []
    matched_right: set[int] = set()

    if len(right) <= len(left):
        lookup = _lookup(right, right_key, right_on, build_by_id)
        for lrow in left:
            key = left_key(lrow)
            hits = lookup(key) if key is not None else ()
            if hits:
                for rrow in hits:
                    rows.append((lrow, rrow))
                    if keep_right:
                        matched_right.add(id(rrow))
            elif keep_left:
                rows.append((lrow, None))
    else:
        lookup = _lookup(left, left_key, left_on, build_by_id)
        buckets: dict[int, list[Record]] = {}
        for rrow in right:
            key = right_key(rrow)
            hits = lookup(key) if key is not None else ()
            if hits:
                for lrow in hits:
                    buckets.setdefault(id(lrow), []).append(rrow)
                if keep_right:
                    matched_right.add(id(rrow))
        for lrow in left:
            found = buckets.get(id(lrow))
            if found:
                rows.extend((lrow, rrow) for rrow in found)
            elif keep_left:
                rows.append((lrow, None))
    if keep_right:
        rows.extend((None, rrow) for rrow in right if id(rrow) not in matched_right)
    return rows


def _lookup(
    rows: Sequence[Record],
    key_fn: Callable[[Record], Hashable],
    column: str,
    by_id: dict[str, Record] | None,
) -> Callable[[Hashable], Sequence[Record]]:
    if column == "id" and by_id is not None:
        get = by_id.get

        def from_ids(key: Hashable) -> Sequence[Record]:
            found = get(key) if isinstance(key, str) else None
            return (found,) if found is not None else ()

        return from_ids
    table: dict[Hashable, list[Record]] = {}
    for row in rows:
        key = key_fn(row)
        if key is not None:
            table.setdefault(key, []).append(row)

    def from_table(key: Hashable) -> Sequence[Record]:
        return table.get(key, ())

    return from_table


def _valid_path(path: str) -> bool:
    return all(FIELD_NAME.fullmatch(part) for part in path.split("."))


def join_column(table: str, rows: Iterable[Record], key: str) -> str:
    """``key`` when the table has that field, else ``id`` (CONTRACT section 4)."""
    model = BUILTIN_SCHEMAS.get(table)
    if model is not None:
        return key if key.split(".")[0] in model.model_fields else "id"
    parts = split_path(key)
    return key if any(resolve(r, parts) is not MISSING for r in rows) else "id"


class JoinService:
    def __init__(self, store: Store) -> None:
        self.store = store

    def join(
        self,
        left: str,
        right: str,
        key: str,
        *,
        how: How = "inner",
        left_on: str | None = None,
        right_on: str | None = None,
    ) -> JoinResult:
        """Join two tables as they are at one instant (a snapshot under the lock)."""
        check_table_name(left)
        check_table_name(right)
        for name, column in (
            ("key", key),
            ("left_on", left_on),
            ("right_on", right_on),
        ):
            if column is not None and not _valid_path(column):
                where: list[str | int] = ["path" if name == "key" else "query", name]
                raise ValidationFailed(
                    f"{name} must be a field name or a dotted path",
                    details=[field_error(where, "not a field name", "field_name")],
                )
        with self.store.lock:
            for name in (left, right):
                if self.store.table(name) is None:
                    raise NotFound(f"no table named {name!r}")
            left_map = self.store.require(left).records
            right_map = self.store.require(right).records
            left_rows, right_rows = list(left_map.values()), list(right_map.values())
            lcol = left_on or join_column(left, left_rows, key)
            rcol = right_on or join_column(right, right_rows, key)
            # The smaller side is the build side; on its id, its own map is the
            # hash table (copied here at C speed, so it matches the snapshot).
            right_builds = len(right_rows) <= len(left_rows)
            build_col, build_map = (
                (rcol, right_map) if right_builds else (lcol, left_map)
            )
            by_id = dict(build_map) if build_col == "id" else None
        rows = hash_join(
            left_rows,
            right_rows,
            left_on=lcol,
            right_on=rcol,
            how=how,
            build_by_id=by_id,
        )
        return JoinResult(left, right, lcol, rcol, how, rows)
