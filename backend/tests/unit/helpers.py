"""Helpers shared by the unit tests (plain functions, not fixtures)."""

from __future__ import annotations

from typing import Any

import orjson

from app.storage.index import HashIndex
from app.storage.memory import Store


def store_state(store: Store) -> bytes:
    """Everything observable about a store's data, byte for byte (1 is not 1.0)."""
    return orjson.dumps(
        {
            "total": store.total,
            "tables": {
                name: {
                    "records": list(t.records.values()),
                    "secrets": t.secrets,
                    "indexes": {
                        f: [i.unique, i.kind, _groups(i)] for f, i in t.indexes.items()
                    },
                }
                for name, t in store.tables.items()
            },
        },
        option=orjson.OPT_SORT_KEYS,
    )


def _groups(index: HashIndex) -> list[list[Any]]:
    return sorted([_key_text(k), sorted(index.ids(k))] for k in index.groups)


def _key_text(key: Any) -> str:
    """One text for keys equal as JSON: the group of 1 and 1.0 is keyed by
    whichever came first."""
    if type(key) is float and key.is_integer():
        return repr(int(key))
    return repr(key)
