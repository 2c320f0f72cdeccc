"""Tables and dumps: the list of tables, whole-table and whole-store snapshots."""

from __future__ import annotations

from typing import Any

from app.core.errors import NotFound
from app.schemas.builtin import BUILTIN_INDEXES, BUILTIN_SCHEMAS
from app.services.validation import check_table_name
from app.storage.memory import Record, Store

_BUILTIN_INDEX_NAMES = {(t, f) for t, f, _ in BUILTIN_INDEXES}


def table_schema(name: str) -> dict[str, Any] | None:
    model = BUILTIN_SCHEMAS.get(name)
    return model.model_json_schema() if model is not None else None


class TableService:
    def __init__(self, store: Store) -> None:
        self.store = store

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

    def dump_table(self, table: str) -> list[Record]:
        """Every record of one table, as they are at one instant."""
        check_table_name(table)
        with self.store.lock:
            if self.store.table(table) is None:
                raise NotFound(f"no table named {table!r}")
            return self.store.snapshot(table)

    def dump_all(self) -> dict[str, list[Record]]:
        """Every table at one instant, in the json-server ``db.json`` shape."""
        return self.store.snapshot_all()
