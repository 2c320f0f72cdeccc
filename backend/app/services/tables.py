"""Tables and dumps: the list of tables, indexes, whole-table and whole-store reads."""

from __future__ import annotations

from typing import Any

from app.core.errors import Conflict, NotFound, ValidationFailed, field_error
from app.schemas.builtin import BUILTIN, Schemas
from app.services.errors import store_errors
from app.services.validation import check_table_name
from app.services.work import Limits, Work
from app.storage.base import DuplicateKey, Scan, StoreBackend, UnknownTable


class TableService:
    def __init__(
        self,
        store: StoreBackend,
        limits: Limits | None = None,
        schemas: Schemas = BUILTIN,
    ) -> None:
        self.store = store
        self.limits = limits or Limits(budget=20_000_000, max_heavy=4)
        self.schemas = schemas

    def table_schema(self, name: str) -> dict[str, Any] | None:
        model = self.schemas.models.get(name)
        return model.model_json_schema() if model is not None else None

    async def list_tables(self) -> list[dict[str, Any]]:
        with store_errors():
            tables = await self.store.describe()
        return [
            {
                "name": table.name,
                "count": table.count,
                "schema": self.table_schema(table.name),
                "indexes": [
                    {
                        "field": index.field,
                        "unique": index.unique,
                        "kind": index.kind,
                        "builtin": self.schemas.rules.builtin_index(
                            table.name, index.field
                        ),
                    }
                    for index in table.indexes
                ],
            }
            for table in tables
        ]

    async def create_index(
        self, table: str, field: str, *, unique: bool, kind: str = "hash"
    ) -> dict[str, Any]:
        """An index (``kind``: hash or sorted) on ``field``; 409 when it exists
        or, unique, meets duplicates."""
        check_table_name(table)
        if field.split(".")[0] in self.schemas.hidden:
            raise ValidationFailed(
                f"{field.split('.')[0]} is write-only and cannot be indexed",
                details=[field_error(["field"], "write-only field", "field_name")],
            )
        with store_errors(table=table, loc=[]):
            if not await self.store.has_table(table):
                raise NotFound(f"no table named {table!r}")
            try:
                await self.store.create_index(table, field, unique=unique, kind=kind)
            except DuplicateKey as exc:
                if exc.field == "index":
                    raise Conflict(f"{table}.{field} is already indexed") from None
                raise Conflict(
                    f"{table}.{field} holds duplicate values; a unique index cannot be built",
                    details=[field_error(["field"], "duplicate values", "unique")],
                ) from None
        return {"field": field, "unique": unique, "kind": kind, "builtin": False}

    async def drop_index(self, table: str, field: str) -> None:
        check_table_name(table)
        if self.schemas.rules.builtin_index(table, field):
            raise Conflict(f"{table}.{field} is a built-in index and cannot be dropped")
        with store_errors(table=table):
            if not await self.store.has_table(table):
                raise NotFound(f"no table named {table!r}")
            await self.store.drop_index(table, field)

    async def dump_table(self, table: str) -> tuple[Scan, Work]:
        """Every record of one table (read as the store scans it) and the meter
        that paces writing them out (close it when done)."""
        check_table_name(table)
        with store_errors(table=table):
            scan = await self.store.scan(table)
        return scan, self.limits.work(bounded=False)

    async def dump_all(self) -> tuple[list[tuple[str, Scan]], Work]:
        """Every table, in the json-server ``db.json`` shape."""
        scans = []
        with store_errors():
            for table in await self.store.describe():
                try:
                    scans.append((table.name, await self.store.scan(table.name)))
                except UnknownTable:  # dropped meanwhile
                    continue
        return scans, self.limits.work(bounded=False)
