"""In-process references, each run in a fresh subprocess that prints one JSON line.

``join``: the join floor. The same users and orders as the service holds
(parsed from the same JSON), then, timed: a plain Python hash join and one
``orjson.dumps`` of the whole answer in the service's shape.

``memory``: the same records as the service holds, kept as plain dicts in a
dict by id; the RSS growth per record.

    python -m benchmarks.references join --users 100000 --orders 1000000
    python -m benchmarks.references memory --records 1000000
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from typing import Any, Iterator, Sequence

import orjson

from benchmarks import data
from benchmarks.harness import rss_of

_BATCH_BYTES = 900_000


def _parsed(records: Iterator[data.Record]) -> Iterator[data.Record]:
    """The records as orjson parses them from the JSON the service receives."""
    for group in data.batches(records, _BATCH_BYTES):
        yield from orjson.loads(b"[" + b",".join(group) + b"]")


def hash_join(
    users: list[data.Record], orders: list[data.Record]
) -> list[dict[str, Any]]:
    """Each user with each of its orders, in user order, then order order."""
    by_user: dict[str, list[data.Record]] = {}
    for order in orders:
        by_user.setdefault(order["user_id"], []).append(order)
    return [
        {"left": user, "right": order}
        for user in users
        for order in by_user.get(user["id"], ())
    ]


def join_floor(users: int, orders: int) -> dict[str, Any]:
    left = list(_parsed(data.users(users)))
    right = list(_parsed(data.orders(orders, users)))
    gc.collect()
    started = time.perf_counter()
    rows = hash_join(left, right)
    body = orjson.dumps(
        {
            "left": "users",
            "right": "orders",
            "on": {"left": "id", "right": "user_id"},
            "how": "inner",
            "count": len(rows),
            "items": rows,
        }
    )
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": len(rows), "bytes": len(body)}


def dict_memory(records: int) -> dict[str, Any]:
    gc.collect()
    before = rss_of(os.getpid())
    table: dict[str, data.Record] = {}
    for record in _parsed(data.big_records(records)):
        table[record["id"]] = record
    gc.collect()
    after = rss_of(os.getpid())
    return {
        "records": len(table),
        "rss_before": before,
        "rss_after": after,
        "bytes_per_record": (after - before) / max(1, len(table)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.references")
    commands = parser.add_subparsers(dest="command", required=True)
    join = commands.add_parser("join")
    join.add_argument("--users", type=int, required=True)
    join.add_argument("--orders", type=int, required=True)
    memory = commands.add_parser("memory")
    memory.add_argument("--records", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "join":
        result = join_floor(args.users, args.orders)
    else:
        result = dict_memory(args.records)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
