"""Repeated values stored once (app.storage.shared): what is shared, what is
given up, and the bound on what the pools hold."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.storage.memory import MemoryStore
from app.storage.shared import JUDGE, LONGEST, PROBE, Shared


def fresh(text: str) -> str:
    """An equal string that is a new object (as each parsed record has)."""
    return "".join(list(text))


def test_equal_strings_become_one_object_and_records_stay_equal() -> None:
    shared = Shared()
    first = {"id": "1", "status": fresh("active"), "n": 1}
    second = {"id": "2", "status": fresh("active"), "n": 1}
    assert first["status"] is not second["status"]
    expected = copy.deepcopy(second)
    shared.share(first, 0)
    shared.share(second, 1)
    assert second == expected
    assert second["status"] is first["status"]


def test_ids_long_strings_and_other_values_are_left_alone() -> None:
    shared = Shared()
    long = "x" * (LONGEST + 1)
    nested = {"inner": "active"}
    one = {"id": fresh("a1"), "long": fresh(long), "list": ["active"], "obj": nested}
    two = {"id": fresh("a1"), "long": fresh(long), "list": ["active"], "obj": nested}
    shared.share(one, 0)
    shared.share(two, 1)
    assert two["id"] is not one["id"]
    assert two["long"] is not one["long"]
    assert two["list"] is not one["list"]
    assert shared.entries == 0
    assert set(shared.pools) == set()


def test_a_field_whose_values_do_not_repeat_is_given_up() -> None:
    shared = Shared()
    for n in range(JUDGE + 10):
        shared.share({"id": str(n), "name": f"name {n}", "kind": fresh("k")}, n)
    assert "name" in shared.skip and "name" not in shared.pools
    assert len(shared.pools["kind"].values) == 1
    assert shared.entries == 1  # the given-up field's values were let go
    later = {"id": "x", "name": "name 3", "kind": fresh("k")}
    shared.share(later, JUDGE + 10)
    assert shared.entries == 1  # a given-up field is not looked at again


def test_a_field_that_repeats_is_kept_past_the_probe() -> None:
    shared = Shared()
    # each value written twice: as many repeats as values, the field is kept
    for n in range(4 * PROBE):
        shared.share({"id": str(n), "group": f"g{n // 2}"}, n)
    assert "group" not in shared.skip
    assert len(shared.pools["group"].values) == 2 * PROBE


def test_what_the_pools_hold_is_bounded_by_the_records() -> None:
    """The worst case: one record patched again and again with new values,
    each written twice so that the field is never given up. The pools never
    hold more than max(PROBE, records) values, whatever the number of writes."""
    shared = Shared()
    most = 0
    for n in range(20 * PROBE):
        shared.share({"id": "only", "field": f"value {n // 2}"}, 1)
        most = max(most, shared.entries)
    assert "field" not in shared.skip
    assert most <= PROBE
    assert sum(len(p.values) for p in shared.pools.values()) == shared.entries


values = st.one_of(
    st.sampled_from(["a", "b", "active", "x" * (LONGEST + 1)]),
    st.integers(-3, 3),
    st.none(),
    st.lists(st.sampled_from(["a", "b"]), max_size=2),
)
records = st.lists(
    st.dictionaries(st.sampled_from(["id", "f", "g", "h"]), values, max_size=4),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(records)
def test_sharing_changes_no_record(rows: list[dict[str, Any]]) -> None:
    """Against the reference (the records as given): every record is equal
    after sharing, the pools hold only values the records had, and their
    count stays within the bound."""
    shared = Shared()
    given_rows = [
        {k: fresh(v) if isinstance(v, str) else v for k, v in r.items()} for r in rows
    ]
    expected = copy.deepcopy(given_rows)
    for n, row in enumerate(given_rows):
        shared.share(row, n)
        assert shared.entries <= max(PROBE, n)
    assert given_rows == expected
    held = {v for pool in shared.pools.values() for v in pool.values}
    assert held <= {v for r in expected for v in r.values() if isinstance(v, str)}


def test_the_memory_store_shares_in_bulk_writes_only() -> None:
    """A batch (an import, a load, a replay of a snapshot) shares; a single
    write (POST, PUT, PATCH) is stored as it came, at no cost."""

    async def go() -> None:
        store = MemoryStore(max_records=100)
        await store.open()
        await store.insert(
            "notes",
            [
                {"id": "1", "status": fresh("open")},
                {"id": "2", "status": fresh("open")},
            ],
        )
        one, two = await store.read_many("notes", ["1", "2"])
        assert one["status"] is two["status"] and one["status"] == "open"
        await store.insert("notes", [{"id": "3", "status": fresh("open")}])
        engine = store.engine
        engine.replace("notes", {"id": "2", "status": fresh("open"), "n": 1})
        records = engine.tables["notes"].records
        assert records["3"]["status"] is not one["status"]
        assert records["2"]["status"] is not one["status"]
        await store.load(
            [
                (
                    "notes",
                    [
                        {"id": "4", "status": fresh("open")},
                        {"id": "5", "status": fresh("open")},
                    ],
                    None,
                )
            ],
            replace=False,
        )
        assert records["4"]["status"] is one["status"] is records["5"]["status"]
        engine.clear("notes")
        assert engine.tables["notes"].shared.entries == 0

    asyncio.run(go())
