"""app.services.joins: the hash join against a nested loop, the key rule, the service."""

from __future__ import annotations

import asyncio

from collections import Counter
from typing import Any, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.errors import NotFound, ValidationFailed
from app.services.joins import (
    How,
    Join,
    JoinResult,
    JoinService,
    Pair,
    hash_join,
    join_column,
)
from app.storage.keys import MISSING, resolve, split_path
from app.storage.memory import MemoryStore, Record, Store

from tests.unit.jsonvalues import json_equal

KINDS: list[How] = ["inner", "left", "right", "full"]
Pairs = list[tuple[int | None, int | None]]


# -- a nested-loop reference -----------------------------------------------


def _column(record: Record, column: str) -> Any:
    value = resolve(record, split_path(column))
    return None if value is MISSING else value


def _against_id(value: Any, column: str, other: str) -> Any:
    """Against the ``id`` column, an integer (or integral float) is its digits."""
    if other == "id" and column != "id" and type(value) in (int, float):
        if value == int(value):
            return str(int(value))
    return value


def nested_loop_join(
    left: Sequence[Record], right: Sequence[Record], lcol: str, rcol: str, how: How
) -> Pairs:
    """Positions of the joined rows, in the documented order, the slow way."""
    pairs: Pairs = []
    matched_right: set[int] = set()
    for i, lrow in enumerate(left):
        lvalue = _against_id(_column(lrow, lcol), lcol, rcol)
        hits = [
            j
            for j, rrow in enumerate(right)
            if lvalue is not None
            and (rvalue := _against_id(_column(rrow, rcol), rcol, lcol)) is not None
            and json_equal(lvalue, rvalue)
        ]
        pairs.extend((i, j) for j in hits)
        matched_right.update(hits)
        if not hits and how in ("left", "full"):
            pairs.append((i, None))
    if how in ("right", "full"):
        pairs.extend((None, j) for j in range(len(right)) if j not in matched_right)
    return pairs


def positions(
    rows: list[tuple[Record | None, Record | None]],
    left: Sequence[Record],
    right: Sequence[Record],
) -> Pairs:
    lpos = {id(r): i for i, r in enumerate(left)}
    rpos = {id(r): j for j, r in enumerate(right)}
    return [
        (
            None if lrow is None else lpos[id(lrow)],
            None if rrow is None else rpos[id(rrow)],
        )
        for lrow, rrow in rows
    ]


# -- generated tables ------------------------------------------------------

# Join values collide across types on purpose: 1 and 1.0 and true, 1 and "1",
# ids as values (and integers as digit ids), null, and lists and objects
# compared by value.
VALUES = st.sampled_from(
    [
        None,
        True,
        False,
        0,
        1,
        1.0,
        2,
        2.5,
        "1",
        "a",
        "",
        "L0",
        "L1",
        "R0",
        "R1",
        ["a"],
        [1],
        {"k": "a"},
    ]
)


def _rows(prefix: str, size: int) -> st.SearchStrategy[list[Record]]:
    row = st.fixed_dictionaries({}, optional={"k": VALUES, "other": VALUES})
    return st.lists(row, min_size=size, max_size=size).map(
        lambda fields: [{"id": f"{prefix}{i}", **f} for i, f in enumerate(fields)]
    )


@st.composite
def tables(draw: st.DrawFn, *, left_builds: bool) -> tuple[list[Record], list[Record]]:
    """Two tables; with ``left_builds`` the left one is strictly smaller. Ids
    are ``L0``... and ``R0``..., or digits (``0``...) that the integers among
    the values match."""
    small = draw(st.integers(0, 6))
    large = draw(st.integers(small + 1 if left_builds else small, 9))
    left_size, right_size = (small, large) if left_builds else (large, small)
    digits = draw(st.booleans())
    return (
        draw(_rows("" if digits else "L", left_size)),
        draw(_rows("" if digits else "R", right_size)),
    )


def check_join(
    left: list[Record],
    right: list[Record],
    *,
    lcol: str,
    rcol: str,
    how: How,
    by_id: bool,
) -> None:
    right_map = {r["id"]: r for r in right} if by_id else None
    rows = hash_join(
        left, right, left_on=lcol, right_on=rcol, how=how, right_by_id=right_map
    )
    got = positions(rows, left, right)
    expected = nested_loop_join(left, right, lcol, rcol, how)
    assert Counter(got) == Counter(expected)
    assert got == expected


@pytest.mark.parametrize("how", KINDS)
@pytest.mark.parametrize(
    "left_builds", [False, True], ids=["right-builds", "left-builds"]
)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_hash_join_equals_a_nested_loop(
    how: How, left_builds: bool, data: st.DataObject
) -> None:
    left, right = data.draw(tables(left_builds=left_builds))
    lcol = data.draw(st.sampled_from(["k", "other", "id", "k.k"]))
    rcol = data.draw(st.sampled_from(["k", "other", "id"]))
    check_join(left, right, lcol=lcol, rcol=rcol, how=how, by_id=False)


@pytest.mark.parametrize("how", KINDS)
@pytest.mark.parametrize(
    "left_builds", [False, True], ids=["right-builds", "left-builds"]
)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_hash_join_on_the_right_sides_id_map_equals_a_nested_loop(
    how: How, left_builds: bool, data: st.DataObject
) -> None:
    left, right = data.draw(tables(left_builds=left_builds))
    probe = data.draw(st.sampled_from(["k", "other", "id"]))
    check_join(left, right, lcol=probe, rcol="id", how=how, by_id=True)


def _pairs(
    rows: list[tuple[Record | None, Record | None]],
) -> list[tuple[str | None, str | None]]:
    return [
        (None if lr is None else lr["id"], None if rr is None else rr["id"])
        for lr, rr in rows
    ]


LEFT: list[Record] = [
    {"id": "l1", "k": 1},
    {"id": "l2", "k": "1"},
    {"id": "l3", "k": True},
    {"id": "l4", "k": None},
    {"id": "l5"},
    {"id": "l6", "k": 1.0},
]
RIGHT: list[Record] = [
    {"id": "r1", "k": 1.0},
    {"id": "r2", "k": 1},
    {"id": "r3", "k": None},
    {"id": "r4", "k": True},
    {"id": "r5", "k": "x"},
    {"id": "r6"},
]


@pytest.mark.parametrize(
    ("left", "right"), [(LEFT, RIGHT), (LEFT, RIGHT + [{"id": "r7"}])]
)
def test_the_documented_order_of_a_full_join(
    left: list[Record], right: list[Record]
) -> None:
    rows = hash_join(left, right, left_on="k", right_on="k", how="full")
    extra = [(None, "r7")] if len(right) > len(RIGHT) else []
    assert _pairs(rows) == [
        ("l1", "r1"),
        ("l1", "r2"),
        ("l2", None),
        ("l3", "r4"),
        ("l4", None),
        ("l5", None),
        ("l6", "r1"),
        ("l6", "r2"),
        (None, "r3"),
        (None, "r5"),
        (None, "r6"),
        *extra,
    ]


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        (
            "inner",
            [("l1", "r1"), ("l1", "r2"), ("l3", "r4"), ("l6", "r1"), ("l6", "r2")],
        ),
        (
            "left",
            [
                ("l1", "r1"),
                ("l1", "r2"),
                ("l2", None),
                ("l3", "r4"),
                ("l4", None),
                ("l5", None),
                ("l6", "r1"),
                ("l6", "r2"),
            ],
        ),
        (
            "right",
            [
                ("l1", "r1"),
                ("l1", "r2"),
                ("l3", "r4"),
                ("l6", "r1"),
                ("l6", "r2"),
                (None, "r3"),
                (None, "r5"),
                (None, "r6"),
            ],
        ),
    ],
)
def test_each_kind_of_join_on_mixed_values(
    how: How, expected: list[tuple[str | None, str | None]]
) -> None:
    assert (
        _pairs(hash_join(LEFT, RIGHT, left_on="k", right_on="k", how=how)) == expected
    )
    longer_right = RIGHT + [{"id": "r9", "k": "zz"}]
    extra = [(None, "r9")] if how == "right" else []
    assert (
        _pairs(hash_join(LEFT, longer_right, left_on="k", right_on="k", how=how))
        == expected + extra
    )


def test_an_id_matches_an_integer_with_its_digits() -> None:
    left: list[Record] = [{"id": "1"}, {"id": "2"}, {"id": "3"}, {"id": "4"}]
    right: list[Record] = [
        {"id": "a", "ref": 1},
        {"id": "b", "ref": "2"},
        {"id": "c", "ref": True},
        {"id": "d", "ref": 3.0},
        {"id": "e", "ref": 4.5},
        {"id": "f", "ref": [1]},
        {"id": "g", "ref": {"id": 1}},
        {"id": "h", "ref": 1},
    ]
    rows = hash_join(left, right, left_on="id", right_on="ref")
    assert _pairs(rows) == [("1", "a"), ("1", "h"), ("2", "b"), ("3", "d")]
    rows = hash_join(left, right, left_on="id", right_on="ref", how="full")
    assert _pairs(rows) == [
        ("1", "a"),
        ("1", "h"),
        ("2", "b"),
        ("3", "d"),
        ("4", None),
        (None, "c"),
        (None, "e"),
        (None, "f"),
        (None, "g"),
    ]
    for by_id in (None, {r["id"]: r for r in left}):
        rows = hash_join(right, left, left_on="ref", right_on="id", right_by_id=by_id)
        assert _pairs(rows) == [("a", "1"), ("b", "2"), ("d", "3"), ("h", "1")]
        rows = hash_join(
            right, left, left_on="ref", right_on="id", right_by_id=by_id, how="right"
        )
        assert _pairs(rows) == [
            ("a", "1"),
            ("b", "2"),
            ("d", "3"),
            ("h", "1"),
            (None, "4"),
        ]


def test_a_column_other_than_the_id_matches_by_json_equality() -> None:
    left: list[Record] = [{"id": "l1", "k": 1}, {"id": "l2", "k": "1"}]
    right: list[Record] = [{"id": "1", "k": "1"}, {"id": "2", "k": 1.0}]
    rows = hash_join(left, right, left_on="k", right_on="k")
    assert _pairs(rows) == [("l1", "2"), ("l2", "1")]
    # a dotted path against the id follows the id rule
    nested: list[Record] = [{"id": "n", "ref": {"id": 2}}]
    rows = hash_join(nested, right, left_on="ref.id", right_on="id")
    assert _pairs(rows) == [("n", "2")]


def test_an_empty_side() -> None:
    rows: list[Record] = [{"id": "a", "k": 1}]
    assert hash_join([], rows, left_on="k", right_on="k", how="full") == [
        (None, rows[0])
    ]
    assert hash_join(rows, [], left_on="k", right_on="k", how="full") == [
        (rows[0], None)
    ]
    assert hash_join(rows, [], left_on="k", right_on="k", how="inner") == []


# -- the join column -------------------------------------------------------


def test_join_column_of_built_in_tables_follows_the_schema() -> None:
    assert join_column("users", False, "user_id") == "id"
    assert join_column("orders", False, "user_id") == "user_id"
    assert join_column("users", False, "email") == "email"
    assert join_column("orders", True, "note") == "id"
    assert join_column("users", False, "id") == "id"


def test_join_column_of_schemaless_tables_follows_the_data() -> None:
    assert join_column("things", True, "owner") == "owner"
    assert join_column("things", False, "maker") == "id"


def test_a_scan_notes_whether_any_record_has_the_join_path(store: Store) -> None:
    store.insert(
        "things",
        [
            {"id": "a", "address": 5},
            {"id": "b", "owner": None, "address": {"city": "Oslo"}},
        ],
    )
    service = JoinService(MemoryStore.around(store))
    assert joined(service, "things", "things", "owner").left_on == "owner"
    assert joined(service, "things", "things", "maker").left_on == "id"
    assert joined(service, "things", "things", "address.city").left_on == "address.city"
    assert joined(service, "things", "things", "address.zip").left_on == "id"


# -- the service -----------------------------------------------------------


@pytest.fixture
def shop(store: Store) -> Store:
    """Three users (u3 without orders) and four orders, inserted out of user order."""
    store.insert(
        "users",
        [
            {"id": "u1", "email": "a@example.com", "full_name": "A"},
            {"id": "u2", "email": "b@example.com", "full_name": "B"},
            {"id": "u3", "email": "c@example.com", "full_name": "C"},
        ],
    )
    store.insert(
        "orders",
        [
            {
                "id": "o1",
                "product_name": "p",
                "quantity": 1,
                "total_price": 1,
                "user_id": "u2",
            },
            {
                "id": "o2",
                "product_name": "p",
                "quantity": 1,
                "total_price": 1,
                "user_id": "u1",
            },
            {
                "id": "o3",
                "product_name": "p",
                "quantity": 1,
                "total_price": 1,
                "user_id": "u2",
            },
            {
                "id": "o4",
                "product_name": "p",
                "quantity": 1,
                "total_price": 1,
                "user_id": "u1",
            },
        ],
    )
    return store


class Joined:
    """A join's result with its rows read (``rows``)."""

    def __init__(self, result: JoinResult, rows: list[Pair]) -> None:
        self.result = result
        self.rows = rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self.result, name)


def joined(service: JoinService, *args: Any, **kwargs: Any) -> Joined:
    async def run() -> Joined:
        result = await service.join(*args, **kwargs)
        with result.work:
            return Joined(result, await result.rows())

    return asyncio.run(run())


def test_users_join_orders_on_user_id(shop: Store) -> None:
    result = joined(JoinService(MemoryStore.around(shop)), "users", "orders", "user_id")
    assert (result.left, result.right, result.how) == ("users", "orders", "inner")
    assert (result.left_on, result.right_on) == ("id", "user_id")
    assert _pairs(result.rows) == [
        ("u1", "o2"),
        ("u1", "o4"),
        ("u2", "o1"),
        ("u2", "o3"),
    ]
    for lrow, rrow in result.rows:
        assert lrow is not None and rrow is not None
        assert lrow is shop.get("users", lrow["id"])
        assert rrow is shop.get("orders", rrow["id"])


def test_orders_join_users_on_user_id(shop: Store) -> None:
    result = joined(
        JoinService(MemoryStore.around(shop)), "orders", "users", "user_id", how="full"
    )
    assert (result.left_on, result.right_on) == ("user_id", "id")
    assert _pairs(result.rows) == [
        ("o1", "u2"),
        ("o2", "u1"),
        ("o3", "u2"),
        ("o4", "u1"),
        (None, "u3"),
    ]


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("inner", [("u1", "o2"), ("u1", "o4"), ("u2", "o1"), ("u2", "o3")]),
        (
            "left",
            [("u1", "o2"), ("u1", "o4"), ("u2", "o1"), ("u2", "o3"), ("u3", None)],
        ),
        ("right", [("u1", "o2"), ("u1", "o4"), ("u2", "o1"), ("u2", "o3")]),
        (
            "full",
            [("u1", "o2"), ("u1", "o4"), ("u2", "o1"), ("u2", "o3"), ("u3", None)],
        ),
    ],
)
def test_every_kind_on_the_store(
    shop: Store, how: How, expected: list[tuple[str | None, str | None]]
) -> None:
    assert _pairs(
        joined(
            JoinService(MemoryStore.around(shop)), "users", "orders", "user_id", how=how
        ).rows
    ) == (expected)


def test_a_self_join(store: Store) -> None:
    store.insert(
        "staff",
        [
            {"id": "boss", "manager": None, "team": "a"},
            {"id": "ann", "manager": "boss", "team": "a"},
            {"id": "bob", "manager": "ann", "team": "b"},
        ],
    )
    service = JoinService(MemoryStore.around(store))
    by_manager = joined(
        service,
        "staff",
        "staff",
        "manager",
        left_on="manager",
        right_on="id",
        how="left",
    )
    assert (by_manager.left_on, by_manager.right_on) == ("manager", "id")
    assert _pairs(by_manager.rows) == [("boss", None), ("ann", "boss"), ("bob", "ann")]
    same_team = joined(service, "staff", "staff", "team")
    assert (same_team.left_on, same_team.right_on) == ("team", "team")
    assert _pairs(same_team.rows) == [
        ("boss", "boss"),
        ("boss", "ann"),
        ("ann", "boss"),
        ("ann", "ann"),
        ("bob", "bob"),
    ]


def test_left_on_and_right_on_name_the_columns(store: Store) -> None:
    store.insert("a", [{"id": "1", "x": "k1"}, {"id": "2", "x": "k2"}])
    store.insert("b", [{"id": "9", "y": "k2"}, {"id": "8", "x": "k1"}])
    service = JoinService(MemoryStore.around(store))
    result = joined(service, "a", "b", "ignored", left_on="x", right_on="y")
    assert (result.left_on, result.right_on) == ("x", "y")
    assert _pairs(result.rows) == [("2", "9")]
    default = joined(service, "a", "b", "x")
    assert (default.left_on, default.right_on) == ("x", "x")
    assert _pairs(default.rows) == [("1", "8")]
    only_left = joined(service, "a", "b", "x", right_on="id")
    assert _pairs(only_left.rows) == []


def test_a_join_of_a_missing_table_is_not_found(shop: Store) -> None:
    service = JoinService(MemoryStore.around(shop))
    for left, right in (("users", "nothing"), ("nothing", "orders"), ("x", "x")):
        with pytest.raises(NotFound) as caught:
            joined(service, left, right, "user_id")
        assert caught.value.code == "not_found"
        assert caught.value.status_code == 404
    with pytest.raises(ValidationFailed):
        joined(service, "users", "bad-name", "user_id")


def test_a_join_result_does_not_see_later_writes(shop: Store) -> None:
    service = JoinService(MemoryStore.around(shop))
    before = joined(service, "users", "orders", "user_id", how="left").rows

    async def plan_write_then_read() -> list[Pair]:
        result = await service.join("users", "orders", "user_id", how="left")
        shop.replace("users", {"id": "u1", "email": "z@example.com", "full_name": "Z"})
        shop.delete("orders", "o1")
        shop.clear("orders")
        with result.work:
            return await result.rows()

    assert asyncio.run(plan_write_then_read()) == before


@pytest.mark.parametrize("how", ["inner", "left"])
@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_a_join_through_the_right_sides_index_equals_a_nested_loop(
    how: How, data: st.DataObject
) -> None:
    """The right side read through the hash index on its column (no grouping
    pass): the same rows in the same order, the ``id`` digits rule included."""
    left, right = data.draw(tables(left_builds=data.draw(st.booleans())))
    lcol = data.draw(st.sampled_from(["k", "other", "id", "k.k"]))
    rcol = data.draw(st.sampled_from(["k", "other"]))

    async def through_index() -> list[tuple[Record | None, Record | None]]:
        memory = MemoryStore(max_records=100)
        await memory.insert("r", [dict(r) for r in right] or [{"id": "x"}])
        if not right:
            await memory.delete("r", "x")
        await memory.create_index("r", rcol, unique=False)
        side = await memory.join_side("r", rcol)
        assert side is not None
        join = Join(left, [], left_on=lcol, right_on=rcol, how=how, indexed=side)
        for _ in join.plan():
            pass
        rows = [pair for batch in join.batches() for pair in batch]
        assert join.total == len(rows)
        return rows

    rows = asyncio.run(through_index())
    by_id = {r["id"]: j for j, r in enumerate(right)}
    got = [
        (
            None if lrow is None else left.index(lrow),
            None if rrow is None else by_id[rrow["id"]],
        )
        for lrow, rrow in rows
    ]
    assert got == nested_loop_join(left, right, lcol, rcol, how)


def test_a_join_side_needs_a_hash_index_on_the_column() -> None:
    async def check() -> None:
        memory = MemoryStore(max_records=100)
        await memory.insert("r", [{"id": "a", "k": 1}])
        assert await memory.join_side("r", "k") is None
        await memory.create_index("r", "k", unique=False)
        side = await memory.join_side("r", "k")
        assert side is not None and side.groups == {1: "a"}
        await memory.insert("r", [{"id": "b", "k": 1.0}])
        assert side.groups == {1: "a"}  # read at one instant: later writes unseen
        again = await memory.join_side("r", "k")
        assert again is not None and sorted(again.groups[1]) == ["a", "b"]

    asyncio.run(check())
