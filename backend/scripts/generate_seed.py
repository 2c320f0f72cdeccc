"""Write a db.json-shaped seed file of users, orders and a schemaless table.

    python scripts/generate_seed.py seed.json --users 1000 --orders 10000
    MEMDB_SEED_FILE=seed.json make run

Users have no password (the seed shape carries none); every order names a user.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any, Sequence

import orjson

PRODUCTS = ("Widget Pro", "Gadget", "Sprocket", "Flux Capacitor", "Gizmo", "Doohickey")
CITIES = ("Paris", "Lisbon", "Osaka", "Lagos", "Lima", "Oslo")


def generate(users: int, orders: int, notes: int, seed: int) -> dict[str, list[Any]]:
    rng = random.Random(seed)
    people = [
        {
            "id": f"u{i}",
            "email": f"user{i}@example.com",
            "full_name": f"User {i}",
            "age": rng.randint(18, 90),
        }
        for i in range(users)
    ]
    sales = [
        {
            "id": f"o{i}",
            "product_name": rng.choice(PRODUCTS),
            "quantity": rng.randint(1, 5),
            "total_price": round(rng.uniform(1, 500), 2),
            "user_id": f"u{rng.randrange(users)}",
        }
        for i in range(orders if users else 0)
    ]
    extra = [
        {
            "id": i,
            "title": f"Note {i}",
            "tags": rng.sample(["red", "green", "blue", "urgent"], 2),
            "address": {"city": rng.choice(CITIES)},
        }
        for i in range(notes)
    ]
    return {"users": people, "orders": sales, "notes": extra}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--notes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    data = generate(args.users, args.orders, args.notes, args.seed)
    args.file.write_bytes(orjson.dumps(data))
    counts = ", ".join(f"{name}: {len(rows)}" for name, rows in data.items())
    print(f"wrote {args.file} ({counts})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
