"""Statistics of the store: counts, index sizes, memory; O(tables)."""

from __future__ import annotations

from typing import Any

from app.core.metrics import rss_bytes
from app.services.errors import store_errors
from app.storage.base import StoreBackend, TableInfo


class StatsService:
    def __init__(self, store: StoreBackend) -> None:
        self.store = store

    async def tables(self) -> list[TableInfo]:
        with store_errors():
            return await self.store.describe()

    async def memory(self) -> int:
        with store_errors():
            return await self.store.memory()

    async def store_stats(self) -> dict[str, Any]:
        """Records and index entries per table, the total, and memory figures."""
        described = await self.tables()
        tables = {
            t.name: {
                "count": t.count,
                "indexes": {i.field: i.entries for i in t.indexes},
            }
            for t in described
        }
        return {
            "records": sum(t.count for t in described),
            "tables": tables,
            "memory": {
                "estimate_bytes": await self.memory(),
                "rss_bytes": rss_bytes(),
            },
        }
