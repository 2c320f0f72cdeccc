"""The benchmark data: the same records, made the same way, for every server.

Every generator is deterministic, so the servers, the in-process join floor and
the plain-dict memory reference all hold exactly the same records. Records of
the large tables carry their own ``created_at``/``updated_at`` (an import keeps
them), so the reference holds what the service holds, field for field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import orjson

Record = dict[str, Any]

STAMP = "2024-01-01T00:00:00.000000Z"
SMALL_TABLE = "items"
POST_TABLE = "posts"
BIG_TABLE = "big"
# The small table again, with a sorted index on ``value`` (the sorted-page rows).
SORTED_TABLE = "ranked"
# One in this many records of the big table share a ``group``: an equality
# filter on it finds about this many records.
GROUP_SIZE = 10
# Bodies of the write scenarios (the service wraps them in {"data": ...}).
POST_BODY: Record = {"name": "new item", "group": "g1", "value": 42, "active": True}
PUT_BODY: Record = {"name": "renamed", "group": "g2", "value": 7, "active": False}


def small_items(count: int) -> list[Record]:
    """The small table every server holds: ids "1".."count"."""
    return [
        {
            "id": str(n),
            "name": f"item {n}",
            "group": f"g{n % 10}",
            "value": (n * 7919) % 1000,
            "active": n % 2 == 0,
        }
        for n in range(1, count + 1)
    ]


def big_record(n: int, count: int) -> Record:
    return {
        "id": f"b{n:07d}",
        "name": f"record {n}",
        "group": f"g{n % max(1, count // GROUP_SIZE)}",
        "value": n,
        "active": n % 3 == 0,
        "created_at": STAMP,
        "updated_at": STAMP,
    }


def big_records(count: int) -> Iterator[Record]:
    for n in range(count):
        yield big_record(n, count)


def user_record(n: int) -> Record:
    return {
        "id": f"u{n:06d}",
        "email": f"user{n}@example.com",
        "full_name": f"User {n}",
        "age": 18 + n % 60,
        "created_at": STAMP,
        "updated_at": STAMP,
    }


def order_record(n: int, users: int) -> Record:
    return {
        "id": f"o{n:07d}",
        "product_name": f"Product {n % 500}",
        "quantity": 1 + n % 5,
        "total_price": float(1 + n % 997) / 4,
        "user_id": f"u{(n * 7) % users:06d}",
        "created_at": STAMP,
        "updated_at": STAMP,
    }


def users(count: int) -> Iterator[Record]:
    for n in range(count):
        yield user_record(n)


def orders(count: int, users: int) -> Iterator[Record]:
    for n in range(count):
        yield order_record(n, users)


def batches(records: Iterator[Record], max_bytes: int) -> Iterator[list[bytes]]:
    """Records as JSON, grouped so that each group's JSON array stays under
    ``max_bytes`` (an import body must fit the service's body limit)."""
    group: list[bytes] = []
    size = 2
    for record in records:
        encoded = orjson.dumps(record)
        if group and size + len(encoded) + 1 > max_bytes:
            yield group
            group, size = [], 2
        group.append(encoded)
        size += len(encoded) + 1
    if group:
        yield group


def import_body(table: str, group: list[bytes]) -> bytes:
    """``{"<table>": [records...]}`` from already encoded records."""
    return b'{"' + table.encode() + b'":[' + b",".join(group) + b"]}"


def write_db_json(path: Path, tables: dict[str, list[Record]]) -> Path:
    """A json-server ``db.json``."""
    path.write_bytes(orjson.dumps(tables, option=orjson.OPT_INDENT_2))
    return path
