"""Statistics of the store: counts, index sizes, memory."""

from __future__ import annotations

from typing import Any

from app.core.metrics import rss_bytes
from app.storage.memory import Store


class StatsService:
    def __init__(self, store: Store) -> None:
        self.store = store

    def store_stats(self) -> dict[str, Any]:
        """Records and index entries per table, the total, and memory figures."""
        with self.store.lock:
            tables = {
                name: {
                    "count": len(t.records),
                    "indexes": {i.field: i.entries() for i in t.indexes.values()},
                }
                for name, t in self.store.tables.items()
            }
        return {
            "records": sum(t["count"] for t in tables.values()),
            "tables": tables,
            "memory": {
                "estimate_bytes": self.store.memory_estimate(),
                "rss_bytes": rss_bytes(),
            },
        }
