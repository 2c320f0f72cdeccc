"""Tables and dumps: the list of tables, whole-table and whole-store snapshots."""

from __future__ import annotations

from typing import Any

from app.core.errors import (
    Conflict,
    NotFound,
    StoreFull,
    ValidationFailed,
    field_error,
)
from app.schemas.builtin import BUILTIN_INDEXES, BUILTIN_SCHEMAS
from app.services.validation import check_table_name
from app.services.work import Limits, Work
from app.storage.memory import DuplicateKey, Record, Store, UnknownIndex, UnknownTable

_BUILTIN_INDEX_NAMES = {(t, f) for t, f, _ in BUILTIN_INDEXES}
# Indexes one table may have: each one costs memory and time on every write.
MAX_INDEXES = 32


def table_schema(name: str) -> dict[str, Any] | None:
    model = BUILTIN_SCHEMAS.get(name)
    return model.model_json_schema() if model is not None else None


class TableService:
    def __init__(self, store: Store, limits: Limits | None = None) -> None:
        self.store = store
        self.limits = limits or Limits(budget=20_000_000, max_heavy=4)

    def list_tables(self) -> list[dict[str, Any]]:
        with self.store.lock:
            tables = [
                (
                    name,
                    len(t.records),
                    [(i.field, i.unique) for i in t.indexes.values()],
                )
                for name, t in self.store.tables.items()
            ]
        return [
            {
                "name": name,
                "count": count,
                "schema": table_schema(name),
                "indexes": [
                    {
                        "field": f,
                        "unique": u,
                        "builtin": (name, f) in _BUILTIN_INDEX_NAMES,
                    }
                    for f, u in indexes
                ],
            }
            for name, count, indexes in tables
        ]

    async def create_index(
        self, table: str, field: str, *, unique: bool
    ) -> dict[str, Any]:
        """A hash index on ``field``; 409 when it exists or, unique, meets duplicates."""
        check_table_name(table)
        if field.split(".")[0] == "password":
            raise ValidationFailed(
                "password is write-only and cannot be indexed",
                details=[
                    field_error(["body", "field"], "write-only field", "field_name")
                ],
            )
        with self.store.lock:
            current = self.store.table(table)
            if current is None:
                raise NotFound(f"no table named {table!r}")
            if field in current.indexes or field in current.builds:
                raise Conflict(f"{table}.{field} is already indexed")
            if len(current.indexes) >= MAX_INDEXES:
                raise StoreFull(
                    f"{table} has {MAX_INDEXES} indexes, the most a table may have"
                )
            build = self.store.start_index(table, field, unique=unique)
        # built in slices while writes go on; the writes made meanwhile are
        # applied to it at the end, under the lock
        try:
            with self.limits.work(bounded=False) as work:
                for done in build.steps():
                    work.spend(done)
                    await work.pause()
            self.store.finish_index(build)
        except DuplicateKey:
            raise Conflict(
                f"{table}.{field} holds duplicate values; a unique index cannot be built",
                details=[field_error(["body", "field"], "duplicate values", "unique")],
            ) from None
        except UnknownTable:
            raise NotFound(f"the table {table!r} was dropped meanwhile") from None
        finally:
            self.store.abort_index(build)
        await self.store.sync()
        return {"field": field, "unique": unique, "builtin": False}

    async def drop_index(self, table: str, field: str) -> None:
        check_table_name(table)
        if (table, field) in _BUILTIN_INDEX_NAMES:
            raise Conflict(f"{table}.{field} is a built-in index and cannot be dropped")
        with self.store.lock:
            if self.store.table(table) is None:
                raise NotFound(f"no table named {table!r}")
            try:
                self.store.drop_index(table, field)
            except UnknownIndex:
                raise NotFound(f"{table}.{field} is not indexed") from None
        await self.store.sync()

    def dump_table(self, table: str) -> tuple[list[Record], Work]:
        """Every record of one table, as they are at one instant, and the meter
        that paces writing them out (close it when done)."""
        check_table_name(table)
        with self.store.lock:
            if self.store.table(table) is None:
                raise NotFound(f"no table named {table!r}")
            rows = self.store.snapshot(table)
        return rows, self.limits.work(bounded=False)

    def dump_all(self) -> tuple[dict[str, list[Record]], Work]:
        """Every table at one instant, in the json-server ``db.json`` shape."""
        return self.store.snapshot_all(), self.limits.work(bounded=False)
