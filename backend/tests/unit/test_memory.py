"""app.storage.memory: the store, its all-or-nothing writes, indexes and snapshots."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any, Callable, Iterator

import orjson
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from app.storage.index import HashIndex
from app.storage.memory import (
    record_size,
    CapacityExceeded,
    DuplicateKey,
    JournalError,
    Record,
    StaleRecord,
    Store,
    StoreError,
    Table,
    UnknownIndex,
    UnknownRecord,
    UnknownTable,
)

from tests.unit.helpers import store_state


def rec(record_id: str, **fields: Any) -> Record:
    return {"id": record_id, **fields}


def rebuilt_groups(table: Table, index: HashIndex) -> dict[Any, str | set[str]]:
    fresh = HashIndex(index.field, unique=index.unique)
    for record_id, record in table.records.items():
        fresh.add(record_id, fresh.key_of(record))
    return fresh.groups


def users_store() -> Store:
    """A store with a ``users`` table, a unique ``email`` index and two users."""
    store = Store(max_records=10)
    store.insert(
        "users",
        [rec("u1", email="a@x.io", team="red"), rec("u2", email="b@x.io", team="red")],
    )
    store.create_index("users", "email", unique=True)
    store.create_index("users", "team")
    return store


@pytest.fixture
def users() -> Store:
    return users_store()


# -- reads -----------------------------------------------------------------


def test_reads_of_missing_tables_and_records() -> None:
    store = Store(max_records=5)
    assert store.table("t") is None
    assert store.get("t", "a") is None
    with pytest.raises(UnknownTable):
        store.require("t")
    with pytest.raises(UnknownTable):
        store.snapshot("t")
    store.insert("t", [rec("a")])
    assert store.get("t", "b") is None
    assert store.get("t", "a") == {"id": "a"}
    assert store.require("t") is store.table("t")


# -- insert ----------------------------------------------------------------


def test_insert_creates_the_table_and_keeps_insertion_order() -> None:
    store = Store(max_records=10)
    store.insert("t", [rec("b", n=1), rec("a", n=2)])
    store.insert("t", [rec("c", n=3)])
    assert list(store.require("t").records) == ["b", "a", "c"]
    assert store.snapshot("t") == [rec("b", n=1), rec("a", n=2), rec("c", n=3)]
    assert store.total == 3


def test_insert_stores_the_given_record_objects() -> None:
    store = Store(max_records=10)
    record = rec("a", n=1)
    store.insert("t", [record])
    assert store.get("t", "a") is record


def test_insert_refuses_an_id_twice_in_one_batch_and_writes_nothing() -> None:
    store = Store(max_records=10)
    with pytest.raises(DuplicateKey) as caught:
        store.insert("t", [rec("a"), rec("b"), rec("a")])
    assert (caught.value.table, caught.value.field, caught.value.value) == (
        "t",
        "id",
        "a",
    )
    assert store.table("t") is None
    assert store.total == 0


def test_insert_refuses_a_taken_id_and_writes_nothing(users: Store) -> None:
    before = store_state(users)
    with pytest.raises(DuplicateKey) as caught:
        users.insert("users", [rec("u3", email="c@x.io"), rec("u1", email="d@x.io")])
    assert caught.value.field == "id"
    assert caught.value.value == "u1"
    assert store_state(users) == before
    assert users.get("users", "u3") is None


def test_insert_refuses_a_taken_unique_value_and_writes_nothing(users: Store) -> None:
    before = store_state(users)
    with pytest.raises(DuplicateKey) as caught:
        users.insert("users", [rec("u3", email="c@x.io"), rec("u4", email="a@x.io")])
    assert (caught.value.field, caught.value.value) == ("email", "a@x.io")
    assert "users.email" in str(caught.value)
    assert store_state(users) == before


def test_insert_refuses_a_unique_value_twice_in_one_batch(users: Store) -> None:
    before = store_state(users)
    with pytest.raises(DuplicateKey) as caught:
        users.insert("users", [rec("u3", email="c@x.io"), rec("u4", email="c@x.io")])
    assert (caught.value.field, caught.value.value) == ("email", "c@x.io")
    assert store_state(users) == before


def test_a_unique_index_compares_as_json() -> None:
    store = Store(max_records=10)
    store.create_table("t")
    store.create_index("t", "n", unique=True)
    store.insert("t", [rec("a", n=1), rec("b", n="1"), rec("c", n=True)])
    with pytest.raises(DuplicateKey):
        store.insert("t", [rec("d", n=1.0)])
    assert list(store.require("t").records) == ["a", "b", "c"]


def test_a_unique_index_allows_many_nulls_and_missing_values(users: Store) -> None:
    users.insert(
        "users",
        [rec("n1", email=None), rec("n2", email=None), rec("m1"), rec("m2")],
    )
    assert users.total == 6
    assert users.require("users").indexes["email"].size(None) == 2


def test_a_full_store_refuses_the_whole_batch() -> None:
    store = Store(max_records=3)
    store.insert("t", [rec("a")])
    before = store_state(store)
    with pytest.raises(CapacityExceeded):
        store.insert("t", [rec("b"), rec("c"), rec("d")])
    with pytest.raises(CapacityExceeded):
        store.insert("other", [rec("b"), rec("c"), rec("d")])
    assert store_state(store) == before
    assert store.table("other") is None
    store.insert("t", [rec("b"), rec("c")])
    assert store.total == 3
    with pytest.raises(CapacityExceeded):
        store.insert("t", [rec("e")])


def test_capacity_counts_records_across_tables_and_frees_on_removal() -> None:
    store = Store(max_records=2)
    store.insert("a", [rec("1")])
    store.insert("b", [rec("1")])
    with pytest.raises(CapacityExceeded):
        store.insert("c", [rec("1")])
    store.delete("a", "1")
    store.insert("c", [rec("1")])
    store.clear("b")
    store.insert("c", [rec("2")])
    store.drop("c")
    assert store.total == 0
    store.insert("a", [rec("x"), rec("y")])
    assert store.total == 2


def test_insert_with_secrets_keeps_them_beside_the_records() -> None:
    store = Store(max_records=10)
    store.insert(
        "users",
        [rec("a"), rec("b"), rec("c")],
        secrets=[{"password": "h1"}, None, {"password": "h3"}],
    )
    table = store.require("users")
    assert table.secrets == {"a": {"password": "h1"}, "c": {"password": "h3"}}
    assert all("password" not in r for r in table.records.values())


# -- upsert ----------------------------------------------------------------


def test_upsert_replaces_in_place_and_appends_new_records() -> None:
    store = Store(max_records=10)
    store.insert("t", [rec("a", n=1), rec("b", n=2)])
    store.upsert("t", [rec("c", n=3), rec("a", n=10)])
    assert store.snapshot("t") == [rec("a", n=10), rec("b", n=2), rec("c", n=3)]
    assert store.total == 3


def test_upsert_may_swap_unique_values_within_a_batch(users: Store) -> None:
    users.upsert("users", [rec("u1", email="b@x.io"), rec("u2", email="a@x.io")])
    email = users.require("users").indexes["email"]
    assert email.holder("a@x.io") == "u2"
    assert email.holder("b@x.io") == "u1"
    assert users.get("users", "u1") == rec("u1", email="b@x.io")


def test_upsert_refuses_a_value_held_outside_the_batch(users: Store) -> None:
    before = store_state(users)
    with pytest.raises(DuplicateKey) as caught:
        users.upsert("users", [rec("u1", email="b@x.io")])
    assert caught.value.field == "email"
    with pytest.raises(DuplicateKey):
        users.upsert("users", [rec("u3", email="c@x.io"), rec("u9", email="a@x.io")])
    assert store_state(users) == before


def test_upsert_refuses_one_value_twice_in_a_batch(users: Store) -> None:
    before = store_state(users)
    with pytest.raises(DuplicateKey):
        users.upsert("users", [rec("u1", email="z@x.io"), rec("u2", email="z@x.io")])
    with pytest.raises(DuplicateKey):
        users.upsert("users", [rec("u1", email="z@x.io"), rec("u1", email="y@x.io")])
    assert store_state(users) == before


def test_upsert_counts_only_new_records_against_capacity() -> None:
    store = Store(max_records=2)
    store.insert("t", [rec("a"), rec("b")])
    store.upsert("t", [rec("a", n=1), rec("b", n=2)])
    before = store_state(store)
    with pytest.raises(CapacityExceeded):
        store.upsert("t", [rec("a", n=3), rec("c")])
    assert store_state(store) == before


# -- replace ---------------------------------------------------------------


def test_replace_stores_a_new_version_and_returns_the_old(users: Store) -> None:
    old = users.get("users", "u1")
    new = rec("u1", email="new@x.io", team="blue")
    assert users.replace("users", new) is old
    assert users.get("users", "u1") is new
    table = users.require("users")
    assert table.indexes["email"].holder("new@x.io") == "u1"
    assert table.indexes["email"].holder("a@x.io") is None
    assert list(table.indexes["team"].ids("blue")) == ["u1"]
    assert list(table.indexes["team"].ids("red")) == ["u2"]
    assert list(table.records) == ["u1", "u2"]
    assert users.total == 2


def test_replace_with_the_current_version_succeeds(users: Store) -> None:
    current = users.get("users", "u1")
    assert current is not None
    users.replace("users", {**current, "team": "blue"}, expected=current)
    assert users.get("users", "u1") == rec("u1", email="a@x.io", team="blue")


def test_replace_with_a_stale_version_is_refused(users: Store) -> None:
    stale = users.get("users", "u1")
    assert stale is not None
    users.replace("users", {**stale, "team": "blue"})
    before = store_state(users)
    with pytest.raises(StaleRecord):
        users.replace("users", {**stale, "team": "green"}, expected=stale)
    assert store_state(users) == before


def test_replace_compares_versions_by_identity_not_by_value(users: Store) -> None:
    current = users.get("users", "u1")
    assert current is not None
    with pytest.raises(StaleRecord):
        users.replace("users", {**current, "team": "x"}, expected=dict(current))


def test_replace_of_a_missing_record_or_table(users: Store) -> None:
    before = store_state(users)
    with pytest.raises(UnknownRecord):
        users.replace("users", rec("nobody", email="n@x.io"))
    with pytest.raises(UnknownRecord):
        users.replace("users", rec("nobody"), expected=rec("nobody"))
    with pytest.raises(UnknownTable):
        users.replace("nothing", rec("u1"))
    assert store_state(users) == before


def test_replace_refuses_a_taken_unique_value(users: Store) -> None:
    before = store_state(users)
    with pytest.raises(DuplicateKey) as caught:
        users.replace("users", rec("u1", email="b@x.io", team="red"))
    assert (caught.value.field, caught.value.value) == ("email", "b@x.io")
    assert store_state(users) == before


def test_replace_between_equal_json_values_keeps_the_index_right() -> None:
    store = Store(max_records=10)
    store.insert("t", [rec("a", n=1), rec("b", n=True)])
    store.create_index("t", "n", unique=True)
    store.replace("t", rec("a", n=1.0))
    index = store.require("t").indexes["n"]
    assert index.holder(1) == "a"
    store.replace("t", rec("a", n=2))
    assert index.holder(1) is None
    assert index.holder(2) == "a"
    assert index.groups == rebuilt_groups(store.require("t"), index)


def test_replace_keeps_removes_or_sets_the_secret() -> None:
    store = Store(max_records=10)
    store.insert("users", [rec("a")], secrets=[{"password": "h1"}])
    table = store.require("users")
    store.replace("users", rec("a", n=1))
    assert table.secrets == {"a": {"password": "h1"}}
    store.replace("users", rec("a", n=2), secret={"password": "h2"})
    assert table.secrets == {"a": {"password": "h2"}}
    store.replace("users", rec("a", n=3), secret=None)
    assert table.secrets == {}


# -- delete, drop, clear ---------------------------------------------------


def test_delete_removes_the_record_its_index_entries_and_secret() -> None:
    store = Store(max_records=10)
    store.insert(
        "t",
        [rec("a", g=1), rec("b", g=1), rec("c", g=2)],
        secrets=[{"k": "s"}, None, None],
    )
    store.create_index("t", "g")
    old = store.delete("t", "a")
    assert old == rec("a", g=1)
    table = store.require("t")
    assert list(table.records) == ["b", "c"]
    assert table.indexes["g"].groups == {1: "b", 2: "c"}
    assert table.secrets == {}
    assert store.total == 2
    assert table.in_order(["c", "b"]) == ["b", "c"]


def test_delete_of_a_missing_record_or_table_changes_nothing(users: Store) -> None:
    before = store_state(users)
    with pytest.raises(UnknownRecord):
        users.delete("users", "nobody")
    with pytest.raises(UnknownTable):
        users.delete("nothing", "u1")
    assert store_state(users) == before


def test_drop_removes_the_table_with_records_and_indexes(users: Store) -> None:
    users.insert("other", [rec("a")])
    users.drop("users")
    assert users.table("users") is None
    assert users.total == 1
    with pytest.raises(UnknownTable):
        users.drop("users")
    users.insert("users", [rec("u1", email="a@x.io")])
    assert users.require("users").indexes == {}


def test_clear_empties_a_table_but_keeps_its_indexes(users: Store) -> None:
    users.require("users").secrets["u1"] = {"password": "h"}
    users.clear("users")
    table = users.require("users")
    assert table.records == {}
    assert table.secrets == {}
    assert users.total == 0
    assert set(table.indexes) == {"email", "team"}
    assert all(i.groups == {} for i in table.indexes.values())
    users.insert("users", [rec("u9", email="a@x.io", team="red")])
    assert table.indexes["email"].holder("a@x.io") == "u9"
    assert table.in_order(["u9"]) == ["u9"]
    with pytest.raises(UnknownTable):
        users.clear("nothing")


# -- indexes ---------------------------------------------------------------


def test_create_index_indexes_the_records_already_there() -> None:
    store = Store(max_records=10)
    store.insert(
        "t",
        [rec("a", g="x"), rec("b", g="x"), rec("c"), rec("d", g=None)],
    )
    index = store.create_index("t", "g")
    assert store.require("t").indexes["g"] is index
    assert index.groups == {"x": {"a", "b"}, None: "d"}
    store.insert("t", [rec("e", g="x")])
    assert index.size("x") == 3


def test_a_unique_index_is_not_built_over_duplicates() -> None:
    store = Store(max_records=10)
    store.insert("t", [rec("a", e="x"), rec("b", e="y"), rec("c", e="x")])
    before = store_state(store)
    with pytest.raises(DuplicateKey) as caught:
        store.create_index("t", "e", unique=True)
    assert (caught.value.field, caught.value.value) == ("e", "x")
    assert store_state(store) == before
    assert store.require("t").seq is None
    store.insert("t", [rec("d", e="x")])


def test_an_index_exists_once_and_only_on_a_table(users: Store) -> None:
    with pytest.raises(DuplicateKey):
        users.create_index("users", "team", unique=True)
    assert users.require("users").indexes["team"].unique is False
    with pytest.raises(UnknownTable):
        users.create_index("nothing", "f")


def test_drop_index(users: Store) -> None:
    users.drop_index("users", "team")
    assert set(users.require("users").indexes) == {"email"}
    with pytest.raises(UnknownIndex):
        users.drop_index("users", "team")
    with pytest.raises(UnknownTable):
        users.drop_index("nothing", "team")
    users.drop_index("users", "email")
    assert users.require("users").seq is None
    users.insert("users", [rec("u3", email="a@x.io")])


def test_in_order_gives_insertion_order_with_and_without_an_index() -> None:
    store = Store(max_records=20)
    store.insert("t", [rec(i) for i in "edcba"])
    table = store.require("t")
    assert table.in_order(["a", "e", "c"]) == ["e", "c", "a"]
    assert table.in_order(["b"]) == ["b"]
    assert table.in_order([]) == []
    store.create_index("t", "f")
    assert table.in_order(["a", "e", "c"]) == ["e", "c", "a"]
    store.delete("t", "d")
    store.insert("t", [rec("d"), rec("z")])
    store.upsert("t", [rec("e", f=1)])
    assert table.in_order(["z", "d", "e", "a"]) == ["e", "a", "d", "z"]
    assert table.in_order(list(reversed(table.records))) == list(table.records)
    store.drop_index("t", "f")
    assert table.in_order(["z", "e", "d"]) == ["e", "d", "z"]


# -- snapshots, journal, sizes ---------------------------------------------


def test_a_snapshot_keeps_the_values_it_was_taken_with(users: Store) -> None:
    snapshot = users.snapshot("users")
    everything = users.snapshot_all()
    users.replace("users", rec("u1", email="new@x.io", team="blue"))
    users.upsert("users", [rec("u2", email="b@x.io", team="green")])
    users.delete("users", "u2")
    users.insert("users", [rec("u3", email="c@x.io")])
    expected = [
        rec("u1", email="a@x.io", team="red"),
        rec("u2", email="b@x.io", team="red"),
    ]
    assert snapshot == expected
    assert everything == {"users": expected}
    assert users.snapshot("users") == [
        rec("u1", email="new@x.io", team="blue"),
        rec("u3", email="c@x.io"),
    ]


def test_snapshot_all_covers_every_table() -> None:
    store = Store(max_records=10)
    store.insert("a", [rec("1")])
    store.insert("b", [rec("2"), rec("3")])
    store.create_table("c")
    assert store.snapshot_all() == {
        "a": [rec("1")],
        "b": [rec("2"), rec("3")],
        "c": [],
    }


def replay(ops: list[dict[str, Any]], *, max_records: int = 100) -> Store:
    """A fresh store with the journal entries applied, as startup would."""
    store = Store(max_records=max_records)
    for op in ops:
        store.apply(op)
    return store


def test_the_journal_receives_every_write_in_order_and_replays() -> None:
    store = Store(max_records=10)
    ops: list[dict[str, Any]] = []
    store.journal = ops.append
    states: list[bytes] = []
    writes: list[Callable[[], object]] = [
        lambda: store.insert("t", [rec("a", e="x")]),
        lambda: store.create_table("empty"),
        lambda: store.create_index("t", "e", unique=True),
        lambda: store.replace("t", rec("a", e="y")),
        lambda: store.upsert("t", [rec("b", e="z")], secrets=[{"password": "h"}]),
        lambda: store.replace("t", rec("b", e="w"), secret=None),
        lambda: store.replace("t", rec("b", e="v"), secret={"password": "h2"}),
        lambda: store.delete("t", "a"),
        lambda: store.drop_index("t", "e"),
        lambda: store.clear("t"),
        lambda: store.insert("t", [rec("c")]),
        lambda: store.drop("empty"),
    ]
    for write in writes:
        write()
        states.append(store_state(store))
    assert [op["op"] for op in ops] == [
        "put",
        "create_table",
        "create_index",
        "replace",
        "put",
        "replace",
        "replace",
        "delete",
        "drop_index",
        "clear",
        "put",
        "drop",
    ]
    assert all(op["table"] in ("t", "empty") for op in ops)
    for count, state in enumerate(states, start=1):
        assert store_state(replay(ops[:count])) == state


def test_journal_entries_hold_the_records_written() -> None:
    store = Store(max_records=10)
    ops: list[dict[str, Any]] = []
    store.journal = ops.append
    a, b = rec("a", n=1), rec("b", n=2)
    store.insert("t", [a, b], secrets=[None, {"password": "h"}])
    store.replace("t", rec("a", n=3))
    assert ops[0]["records"] == [a, b]
    assert ops[0]["secrets"] == [None, {"password": "h"}]
    assert ops[1]["record"] == rec("a", n=3)
    assert "secret" not in ops[1]


def test_a_write_the_journal_refuses_is_not_applied(users: Store) -> None:
    def refuse(op: dict[str, Any]) -> None:
        raise JournalError("disk full")

    users.journal = refuse
    before = store_state(users)
    writes: list[Callable[[], object]] = [
        lambda: users.create_table("new"),
        lambda: users.insert("new", [rec("a")]),
        lambda: users.insert("users", [rec("u3", email="c@x.io")]),
        lambda: users.upsert("users", [rec("u1", email="z@x.io")]),
        lambda: users.replace("users", rec("u1", email="z@x.io")),
        lambda: users.delete("users", "u1"),
        lambda: users.clear("users"),
        lambda: users.drop("users"),
        lambda: users.create_index("users", "name"),
        lambda: users.drop_index("users", "team"),
        lambda: users.load([("users", [rec("u9")], None)], replace=True),
    ]
    for write in writes:
        with pytest.raises(JournalError):
            write()
        assert store_state(users) == before
    assert users.table("new") is None


def test_refused_writes_reach_no_journal(users: Store) -> None:
    ops: list[dict[str, Any]] = []
    users.journal = ops.append
    refusals: list[Callable[[], object]] = [
        lambda: users.insert("users", [rec("u1")]),
        lambda: users.insert("users", [rec("u3", email="a@x.io")]),
        lambda: users.insert("new", [rec("a"), rec("a")]),
        lambda: users.insert("users", [rec(str(i)) for i in range(20)]),
        lambda: users.upsert("users", [rec("u1", email="b@x.io")]),
        lambda: users.replace("users", rec("u1", email="b@x.io")),
        lambda: users.replace("users", rec("u1"), expected=rec("u1")),
        lambda: users.delete("users", "nobody"),
        lambda: users.create_index("users", "team"),
        lambda: users.create_index("users", "team2", unique=True),
        lambda: users.drop_index("users", "nothing"),
        lambda: users.drop("nothing"),
        lambda: users.clear("nothing"),
    ]
    users.insert("users", [rec("u3", team2=1), rec("u4", team2=1)])
    ops.clear()
    for refuse in refusals:
        with pytest.raises(StoreError):
            refuse()
    assert ops == []


def test_apply_refuses_an_unknown_journal_entry() -> None:
    store = Store(max_records=10)
    with pytest.raises(ValueError):
        store.apply({"op": "rename", "table": "t"})
    assert store.tables == {}


def test_apply_of_a_replace_for_a_missing_record_adds_it() -> None:
    """A log replayed over a snapshot may replace what the snapshot never held."""
    store = Store(max_records=10)
    store.apply(
        {"op": "replace", "table": "t", "record": rec("a", n=1), "secret": {"k": "s"}}
    )
    store.apply({"op": "replace", "table": "t", "record": rec("a", n=2)})
    assert store.snapshot("t") == [rec("a", n=2)]
    assert store.require("t").secrets == {"a": {"k": "s"}}
    assert store.total == 1


def test_sync_waits_for_durability_only_with_a_journal() -> None:
    store = Store(max_records=10)
    calls: list[str] = []

    async def durable() -> None:
        calls.append("synced")

    asyncio.run(store.sync())
    store.durable = durable
    asyncio.run(store.sync())
    assert calls == []
    store.journal = lambda op: None
    asyncio.run(store.sync())
    assert calls == ["synced"]


# -- load: several tables at once ------------------------------------------


def test_load_merges_into_existing_and_new_tables(users: Store) -> None:
    ops: list[dict[str, Any]] = []
    users.journal = ops.append
    users.load(
        [
            ("users", [rec("u2", email="b2@x.io"), rec("u3", email="c@x.io")], None),
            ("notes", [rec("n1"), rec("n2")], [None, {"k": "s"}]),
        ],
        replace=False,
    )
    assert list(users.require("users").records) == ["u1", "u2", "u3"]
    assert users.get("users", "u2") == rec("u2", email="b2@x.io")
    assert users.require("users").indexes["email"].holder("b@x.io") is None
    assert users.snapshot("notes") == [rec("n1"), rec("n2")]
    assert users.require("notes").secrets == {"n2": {"k": "s"}}
    assert users.total == 5
    assert [op["op"] for op in ops] == ["load"]
    fresh = users_store()
    fresh.apply(ops[0])
    assert store_state(fresh) == store_state(users)


def test_load_replacing_swaps_the_records_and_keeps_the_indexes(users: Store) -> None:
    users.insert("notes", [rec("n1")])
    users.load(
        [("users", [rec("u9", email="a@x.io"), rec("u8", email="b@x.io")], None)],
        replace=True,
    )
    table = users.require("users")
    assert list(table.records) == ["u9", "u8"]
    assert table.indexes["email"].holder("a@x.io") == "u9"
    assert set(table.indexes) == {"email", "team"}
    assert users.snapshot("notes") == [rec("n1")]
    assert users.total == 3


@pytest.mark.parametrize("replace", [False, True])
def test_a_refused_load_changes_nothing_and_journals_nothing(
    users: Store, replace: bool
) -> None:
    ops: list[dict[str, Any]] = []
    users.journal = ops.append
    before = store_state(users)
    refusals: list[tuple[type[StoreError], list[Any]]] = [
        (
            DuplicateKey,
            [("notes", [rec("a")], None), ("users", [rec("x"), rec("x")], None)],
        ),
        (
            DuplicateKey,
            [("users", [rec("x", email="q@x.io"), rec("y", email="q@x.io")], None)],
        ),
        (CapacityExceeded, [("notes", [rec(str(i)) for i in range(11)], None)]),
    ]
    if not replace:
        refusals.append((DuplicateKey, [("users", [rec("u3", email="a@x.io")], None)]))
    for error, batches in refusals:
        with pytest.raises(error):
            users.load(batches, replace=replace)
        assert store_state(users) == before
        assert users.table("notes") is None
    assert ops == []


def test_a_replacing_load_may_free_room_it_then_uses() -> None:
    """All or nothing: what counts is the store after the load, not the order of tables."""
    store = Store(max_records=10)
    store.insert("a", [rec(str(i)) for i in range(5)])
    store.load(
        [("b", [rec(f"b{i}") for i in range(8)], None), ("a", [rec("x")], None)],
        replace=True,
    )
    assert store.total == 9
    assert [len(store.require(n).records) for n in ("a", "b")] == [1, 8]


def test_create_table_is_idempotent_and_journalled_once() -> None:
    store = Store(max_records=10)
    ops: list[dict[str, Any]] = []
    store.journal = ops.append
    first = store.create_table("t")
    assert store.create_table("t") is first
    assert ops == [{"op": "create_table", "table": "t"}]


def test_memory_estimate_grows_with_the_data() -> None:
    store = Store(max_records=1000)
    empty = store.memory_estimate()
    assert empty == 0
    store.insert("t", [rec("a", text="x" * 100)])
    one = store.memory_estimate()
    assert one > empty
    store.insert("t", [rec(str(i), text="y" * 100) for i in range(100)])
    many = store.memory_estimate()
    assert many > one + 100 * 100
    store.insert("t", [rec("deep", items=[["z" * 1000] * 10, {"k": "w" * 1000}])])
    assert store.memory_estimate() > many + 11 * 1000
    many = store.memory_estimate()
    store.create_index("t", "text")
    assert store.memory_estimate() > many
    store.drop("t")
    assert store.memory_estimate() == 0


# -- a reference model -----------------------------------------------------

IDS = st.sampled_from(["a", "b", "c", "d", "e", "f", "g"])
VALUES = st.sampled_from([None, 1, 1.0, 2, "1", "x", True, False])
RECORDS = st.fixed_dictionaries(
    {"id": IDS}, optional={"u": VALUES, "g": VALUES, "v": st.integers(0, 3)}
)
BATCHES = st.lists(RECORDS, min_size=1, max_size=3)
CAPACITY = 5


def _scalar_key(value: Any) -> tuple[str, Any]:
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", float(value))
    return ("str", value)


def _unique_holds(records: dict[str, Record]) -> bool:
    seen: set[tuple[str, Any]] = set()
    for record in records.values():
        if record.get("u") is None:
            continue
        key = _scalar_key(record["u"])
        if key in seen:
            return False
        seen.add(key)
    return True


class StoreMachine(RuleBasedStateMachine):
    """The store against a dict of dicts, one table with a unique index ``u``."""

    def __init__(self) -> None:
        super().__init__()
        self.store = Store(max_records=CAPACITY)
        self.ops: list[dict[str, Any]] = []
        self.model: dict[str, Record] = {}
        self.old_versions: dict[str, list[Record]] = {}
        self.snapshots: list[tuple[list[Record], bytes]] = []

    @initialize()
    def make_table(self) -> None:
        self.store.journal = self.ops.append
        self.store.create_table("t")
        self.store.create_index("t", "u", unique=True)
        self.store.create_index("t", "g")

    @property
    def table(self) -> Table:
        return self.store.require("t")

    def _write(
        self,
        action: Callable[[], object],
        expected: dict[str, Record],
        refusals: set[type[StoreError]],
    ) -> None:
        """Run ``action``; it must fail with one of ``refusals``, or succeed if none."""
        before, journalled = store_state(self.store), len(self.ops)
        if refusals:
            with pytest.raises(StoreError) as caught:
                action()
            assert type(caught.value) in refusals
            assert store_state(self.store) == before
            assert len(self.ops) == journalled
            return
        for record_id, record in self.model.items():
            if expected.get(record_id) is not record:
                self.old_versions.setdefault(record_id, []).append(record)
        action()
        self.model = expected
        assert len(self.ops) > journalled

    def _put(self, batch: list[Record], *, upsert: bool) -> None:
        refusals: set[type[StoreError]] = set()
        ids = [r["id"] for r in batch]
        if len(set(ids)) < len(ids) or (
            not upsert and any(i in self.model for i in ids)
        ):
            refusals.add(DuplicateKey)
        if len(self.model) + len(set(ids) - set(self.model)) > CAPACITY:
            refusals.add(CapacityExceeded)
        expected = dict(self.model)
        expected.update((r["id"], r) for r in batch)
        if not _unique_holds(expected):
            refusals.add(DuplicateKey)
        if upsert:
            self._write(lambda: self.store.upsert("t", batch), expected, refusals)
        else:
            self._write(lambda: self.store.insert("t", batch), expected, refusals)

    @rule(batch=BATCHES)
    def insert(self, batch: list[Record]) -> None:
        self._put(batch, upsert=False)

    @rule(batch=BATCHES)
    def upsert(self, batch: list[Record]) -> None:
        self._put(batch, upsert=True)

    @rule(record=RECORDS, check=st.sampled_from(["none", "current", "stale"]))
    def replace(self, record: Record, check: str) -> None:
        record_id = record["id"]
        refusals: set[type[StoreError]] = set()
        expected_version: Record | None = None
        if record_id not in self.model:
            refusals.add(UnknownRecord)
            if check != "none":
                expected_version = {"id": record_id}
        elif check == "current":
            expected_version = self.model[record_id]
        elif check == "stale" and self.old_versions.get(record_id):
            expected_version = self.old_versions[record_id][-1]
            refusals.add(StaleRecord)
        expected = {**self.model, record_id: record}
        if not refusals and not _unique_holds(expected):
            refusals.add(DuplicateKey)
        self._write(
            lambda: self.store.replace("t", record, expected=expected_version),
            expected,
            refusals,
        )

    @rule(record_id=IDS)
    def delete(self, record_id: str) -> None:
        expected = {k: v for k, v in self.model.items() if k != record_id}
        refusals: set[type[StoreError]] = set()
        if record_id not in self.model:
            refusals.add(UnknownRecord)
        self._write(lambda: self.store.delete("t", record_id), expected, refusals)

    @rule()
    def clear(self) -> None:
        self._write(lambda: self.store.clear("t"), {}, set())

    @rule()
    def toggle_group_index(self) -> None:
        if "g" in self.table.indexes:
            self.store.drop_index("t", "g")
        else:
            self.store.create_index("t", "g")

    @precondition(lambda self: "g" not in self.table.indexes)
    @rule(batch=BATCHES, gone=IDS, after=st.integers(0, 2))
    def build_group_index_while_writing(
        self, batch: list[Record], gone: str, after: int
    ) -> None:
        """An index built in steps while writes go on ends as a fresh one."""
        build = self.store.start_index("t", "g")
        steps = build.steps()
        for _ in range(after):
            next(steps, None)
        self._put(batch, upsert=True)
        self.delete(gone)
        for _ in steps:
            pass
        self.store.finish_index(build)
        assert "g" in self.table.indexes and not self.table.builds

    @precondition(lambda self: len(self.snapshots) < 3)
    @rule()
    def take_snapshot(self) -> None:
        snapshot = self.store.snapshot("t")
        self.snapshots.append((snapshot, orjson.dumps(snapshot)))

    @invariant()
    def contents_and_order_match_the_model(self) -> None:
        assert orjson.dumps(self.store.snapshot("t")) == orjson.dumps(
            list(self.model.values())
        )
        assert self.store.total == len(self.model)

    @invariant()
    def indexes_equal_fresh_ones(self) -> None:
        for index in self.table.indexes.values():
            assert index.groups == rebuilt_groups(self.table, index)
            assert index.entries() == sum(
                1 for r in self.model.values() if index.field in r
            )

    @invariant()
    def in_order_follows_insertion_order(self) -> None:
        ids = list(self.model)
        assert self.table.in_order(list(reversed(ids))) == ids
        assert self.table.in_order(ids[::2][::-1]) == ids[::2]
        if self.table.seq is not None:
            assert set(self.table.seq) == set(ids)

    @invariant()
    def the_size_estimate_follows_every_write(self) -> None:
        assert self.table.size == sum(map(record_size, self.model.values()))

    @invariant()
    def snapshots_never_change(self) -> None:
        for snapshot, frozen in self.snapshots:
            assert orjson.dumps(snapshot) == frozen

    @invariant()
    def the_journal_replays_to_the_same_store(self) -> None:
        assert store_state(replay(self.ops, max_records=CAPACITY)) == store_state(
            self.store
        )


StoreMachine.TestCase.settings = settings(
    max_examples=75, stateful_step_count=25, deadline=None
)
test_store_matches_a_reference_model = StoreMachine.TestCase


# -- threads ---------------------------------------------------------------


@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Switch threads as often as possible, so that races show."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def _run_threads(count: int, work: Callable[[int], None]) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(number: int) -> None:
        try:
            barrier.wait()
            work(number)
        except BaseException as exc:  # handed to the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


@pytest.mark.usefixtures("busy_switching")
def test_threads_insert_and_increment_without_losing_anything() -> None:
    threads, rounds = 8, 150
    store = Store(max_records=100_000)
    store.insert("counters", [rec("c", n=0)])
    store.create_table("items")
    store.create_index("items", "by")
    stale = [0] * threads

    def work(number: int) -> None:
        for i in range(rounds):
            store.insert("items", [rec(f"{number}-{i}", by=number)])
            while True:
                old = store.get("counters", "c")
                assert old is not None
                time.sleep(0)  # let another thread in between the read and the write
                try:
                    store.replace("counters", {**old, "n": old["n"] + 1}, expected=old)
                    break
                except StaleRecord:
                    stale[number] += 1

    _run_threads(threads, work)
    counter = store.get("counters", "c")
    assert counter == rec("c", n=threads * rounds)
    items = store.require("items")
    assert len(items.records) == threads * rounds
    assert store.total == threads * rounds + 1
    assert items.indexes["by"].groups == rebuilt_groups(items, items.indexes["by"])
    for number in range(threads):
        ids = [f"{number}-{i}" for i in range(rounds)]
        assert items.in_order(reversed(ids)) == ids


@pytest.mark.usefixtures("busy_switching")
def test_threads_racing_for_one_unique_value_leave_exactly_one_winner() -> None:
    threads = 8
    store = Store(max_records=100)
    store.create_table("users")
    store.create_index("users", "email", unique=True)
    winners: list[int] = []

    def work(number: int) -> None:
        for attempt in range(20):
            try:
                store.insert("users", [rec(f"{number}-{attempt}", email="same@x.io")])
                winners.append(number)
            except DuplicateKey:
                pass

    _run_threads(threads, work)
    assert len(winners) == 1
    assert store.total == 1
    assert store.require("users").indexes["email"].holder("same@x.io") == (
        f"{winners[0]}-0"
    )
