"""The seed generator writes a file the service loads as it is."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson

from app.services.imports import ImportService
from app.services.records import RecordService

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import generate_seed  # noqa: E402


def test_the_generated_seed_imports_whole(
    tmp_path: Path, records: RecordService
) -> None:
    path = tmp_path / "seed.json"
    assert (
        generate_seed.main(
            [str(path), "--users", "20", "--orders", "50", "--notes", "7"]
        )
        == 0
    )
    data = orjson.loads(path.read_bytes())
    assert {k: len(v) for k, v in data.items()} == {
        "users": 20,
        "orders": 50,
        "notes": 7,
    }
    imports = ImportService(records.store, records)
    counts = asyncio.run(imports.run(data))
    assert counts == {"users": 20, "orders": 50, "notes": 7}
    users = {u["id"] for u in data["users"]}
    assert all(o["user_id"] in users for o in data["orders"])
    note = asyncio.run(records.store.read("notes", "3"))
    assert note is not None  # numeric ids become strings


def test_the_same_seed_number_gives_the_same_file() -> None:
    assert generate_seed.generate(5, 9, 3, seed=4) == generate_seed.generate(
        5, 9, 3, seed=4
    )
    assert generate_seed.generate(5, 9, 3, seed=4) != generate_seed.generate(
        5, 9, 3, seed=5
    )
