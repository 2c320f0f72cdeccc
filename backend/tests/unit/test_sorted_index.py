"""Sorted indexes: ``SortedIndex`` keeps its entries in the sort order, and a
query answered through one equals the same query answered by a scan."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.errors import QueryTooCostly
from app.services import query as query_module
from app.services.query import QueryService, range_bounds
from app.services.work import SLICE, Limits
from app.storage import memory
from app.storage.index import HashIndex, SortedIndex, make_index
from app.storage.keys import MISSING, json_key, sort_value
from app.storage.memory import MemoryStore
from tests.unit.jsonvalues import json_values


def sorted_index(values: dict[str, Any]) -> SortedIndex:
    index = SortedIndex("v")
    for record_id, value in values.items():
        index.add(record_id, MISSING if value is MISSING else json_key(value))
    return index


def test_make_index_gives_the_kind_asked_for() -> None:
    assert type(make_index("a")) is HashIndex
    assert make_index("a").kind == "hash"
    made = make_index("a", unique=True, kind="sorted")
    assert isinstance(made, SortedIndex) and made.kind == "sorted" and made.unique


def test_entries_follow_the_sort_order_and_missing_values_are_apart() -> None:
    values = {
        "a": 3,
        "b": "x",
        "c": None,
        "d": True,
        "e": [1.0],
        "f": {"k": 1},
        "g": 1,
        "h": MISSING,
        "i": 1.0,
    }
    index = sorted_index(values)
    assert [entry[2] for entry in index.ordered] == [
        "c",  # null
        "g",  # 1 and 1.0 are one value: their ids break the tie
        "i",
        "a",
        "b",  # strings
        "d",  # booleans
        "e",  # arrays, then objects
        "f",
    ]
    assert index.absent == {"h"}
    assert index.entries() == 8
    assert index.ordered[1][:2] == sort_value(1)
    assert sort_value([1.0]) == sort_value([1])


def test_remove_and_clear_keep_the_order_in_step() -> None:
    index = sorted_index({"a": 2, "b": 1, "c": MISSING})
    index.remove("a", json_key(2))
    index.remove("a", json_key(2))  # twice: nothing more happens
    index.remove("c", MISSING)
    assert list(index.ordered) == [(1, 1, "b")]
    assert index.absent == set()
    index.add("b", json_key(1))  # already there: no second entry
    assert len(index.ordered) == 1
    index.clear()
    assert list(index.ordered) == [] and index.entries() == 0


def test_span_finds_a_range_of_one_rank_with_open_and_closed_ends() -> None:
    index = sorted_index({str(n): n for n in range(10)} | {"s": "a", "t": "b"})
    number = sort_value(0)[0]
    assert index.span(None, None, number) == (0, 10)
    assert index.span((3, True), (6, False), number) == (3, 6)
    assert index.span((3, False), (6, True), number) == (4, 7)
    assert index.span((7, True), (2, True), number) == (7, 7)  # empty, not negative
    text = sort_value("a")[0]
    assert index.span(("a", False), None, text) == (11, 12)


def test_group_bounds_cover_every_entry_of_one_value() -> None:
    index = sorted_index({"a": 1, "b": 2, "c": 2.0, "d": 2, "e": 3})
    assert (index.group_start(2), index.group_stop(2)) == (1, 4)
    assert (index.group_start(0), index.group_stop(0)) == (0, 1)


def test_range_bounds_keep_the_tightest_bound_of_one_kind() -> None:
    service = QueryService(MemoryStore(max_records=100))

    def bounds(*params: tuple[str, str]) -> Any:
        return range_bounds(service.parse(params).filters)

    number = sort_value(0)[0]
    assert bounds() == (None, None, None)
    assert bounds(("v__gt", "1"), ("v__gte", "1"), ("v__lt", "5")) == (
        number,
        (1, False),
        (5, False),
    )
    assert bounds(("v__gte", "2"), ("v__gt", "1"), ("v__lte", "4"), ("v__lt", "4")) == (
        number,
        (2, True),
        (4, False),
    )
    assert bounds(("v__gt", "1"), ("v__lt", '"a"')) is None  # two kinds
    assert bounds(("v__gt", "true")) is None  # no range holds a boolean


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def filled(records: list[dict[str, Any]], kind: str | None) -> MemoryStore:
    store = MemoryStore(max_records=max(10_000, len(records)))
    await store.insert("t", [dict(r) for r in records])
    if kind is not None:
        await store.create_index("t", "v", unique=False, kind=kind)
    return store


async def answer(store: MemoryStore, params: list[tuple[str, str]]) -> Any:
    service = QueryService(store)
    page = await service.list_records("t", service.parse(params))
    return page.total, [r["id"] for r in page.items]


def records_of(values: list[Any]) -> list[dict[str, Any]]:
    out = []
    for n, value in enumerate(values):
        record: dict[str, Any] = {"id": f"r{n}", "n": n % 3}
        if value is not MISSING:
            record["v"] = value
        out.append(record)
    return out


VALUES = st.one_of(st.just(MISSING), json_values())
# generated tables of nested values: large and slow to draw on a busy machine
SLOW_DATA = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.large_base_example,
]
RANGE_VALUES = st.sampled_from(["-1", "0", "1", "1.5", "2", '"a"', '"1"', '""'])
QUERIES = st.tuples(
    st.sampled_from(["v", "-v", "v,n", "-v,-n", "v,-n", "n,v", None]),
    st.lists(
        st.tuples(st.sampled_from(["gt", "gte", "lt", "lte", "eq"]), RANGE_VALUES),
        max_size=2,
    ),
    st.booleans(),
    st.integers(min_value=0, max_value=12),
    st.integers(min_value=1, max_value=8),
)


def params_of(query: tuple[Any, ...]) -> list[tuple[str, str]]:
    sort, ranges, other_filter, offset, limit = query
    params = [(f"v__{op}", value) for op, value in ranges]
    if sort is not None:
        params.append(("sort", sort))
    if other_filter:
        params.append(("n__lt", "2"))
    params += [("offset", str(offset)), ("limit", str(limit))]
    return params


def same_answers(records: list[dict[str, Any]], queries: list[tuple[Any, ...]]) -> None:
    """Each query answers the same with a sorted index as with none."""

    async def check() -> None:
        plain = await filled(records, None)
        indexed = await filled(records, "sorted")
        for query in queries:
            params = params_of(query)
            assert await answer(indexed, params) == await answer(plain, params), params

    run(check())


@settings(max_examples=300, deadline=None, suppress_health_check=SLOW_DATA)
@given(st.lists(VALUES, max_size=24), st.lists(QUERIES, min_size=1, max_size=6))
def test_a_sorted_index_answers_what_a_scan_answers(
    values: list[Any], queries: list[tuple[Any, ...]]
) -> None:
    same_answers(records_of(values), queries)


WRITES = st.lists(
    st.tuples(
        st.sampled_from(["put", "delete", "patch"]),
        st.integers(min_value=0, max_value=14),
        VALUES,
    ),
    max_size=20,
)


@settings(max_examples=200, deadline=None, suppress_health_check=SLOW_DATA)
@given(
    st.lists(VALUES, max_size=12),
    WRITES,
    st.booleans(),
    st.lists(QUERIES, min_size=1, max_size=4),
)
def test_the_index_stays_in_step_with_writes_and_with_a_build_under_writes(
    values: list[Any],
    writes: list[tuple[str, int, Any]],
    index_first: bool,
    queries: list[tuple[Any, ...]],
) -> None:
    """Writes after the index exists (or before it is built) leave it answering
    exactly what a scan of the same table answers."""
    records = records_of(values)

    async def check() -> None:
        plain = await filled(records, None)
        indexed = await filled(records, "sorted" if index_first else None)
        for store in (plain, indexed):
            engine = store.engine
            for op, n, value in writes:
                record_id = f"r{n}"
                exists = engine.get("t", record_id) is not None
                if op == "delete":
                    if exists:
                        engine.delete("t", record_id)
                    continue
                record: dict[str, Any] = {"id": record_id, "n": n % 3}
                if value is not MISSING:
                    record["v"] = value
                if op == "patch" and exists:
                    engine.replace("t", record)
                else:
                    engine.upsert("t", [record])
        if not index_first:
            await indexed.create_index("t", "v", unique=False, kind="sorted")
        for query in queries:
            params = params_of(query)
            assert await answer(indexed, params) == await answer(plain, params), params

    run(check())


def test_a_sorted_query_walks_the_index_and_reads_only_its_page() -> None:
    records = [{"id": str(n), "v": n % 50, "n": n} for n in range(1000)]

    async def check() -> None:
        store = await filled(records, "sorted")
        walks: list[Any] = []
        real = store.sorted_walk

        async def spy(*args: Any, **kwargs: Any) -> Any:
            walk = await real(*args, **kwargs)
            walks.append(walk)
            return walk

        store.sorted_walk = spy  # type: ignore[method-assign]
        total, ids = await answer(
            store, [("sort", "-v,-n"), ("offset", "25"), ("limit", "5")]
        )
        assert total == 1000
        # v=49 holds the first 20 places; the page is in the run of v=48
        assert ids == ["748", "698", "648", "598", "548"]
        (walk,) = walks
        assert walk is not None
        assert [len(run) for run in walk.groups] == [20]  # no more is read
        assert walk.first == 20
        plain = await filled(records, None)
        assert (total, ids) == await answer(
            plain, [("sort", "-v,-n"), ("offset", "25"), ("limit", "5")]
        )
        walks.clear()
        assert await answer(store, [("v__gte", "10"), ("v__lt", "12")]) == (
            40,
            [str(n) for n in range(1000) if n % 50 in (10, 11)][:100],
        )
        assert walks[0] is not None and walks[0].total == 40

    run(check())


def test_a_run_too_long_to_order_under_the_lock_is_scanned_instead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sorted index on a field of few values: one run past ``MAX_WALK``
    records is not put in order under the store's lock; the query scans (in
    slices, within its budget) and answers the same."""
    monkeypatch.setattr(memory, "MAX_WALK", 100)
    records = [{"id": str(n), "v": n % 2, "n": n} for n in range(500)]

    async def check() -> None:
        store = await filled(records, "sorted")
        assert await store.sorted_walk("t", "v", offset=0, limit=10) is None
        plain = await filled(records, None)
        for params in ([("sort", "v")], [("v__gte", "1")], [("sort", "-v,n")]):
            assert await answer(store, params) == await answer(plain, params)

    run(check())


def test_a_page_deep_into_one_long_run_is_answered_through_the_index(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run of equal values (or of records without the field) longer than an
    unindexed sort may reach into is ordered by the other keys at any depth:
    the walk bounds it (``MAX_WALK``), not the unindexed sort's window."""
    monkeypatch.setattr(query_module, "INLINE_SORT", 50)
    monkeypatch.setattr(query_module, "SORT_WINDOW", 100)
    tied = [{"id": f"t{n:03d}", "v": 1, "n": (n * 7) % 600} for n in range(600)]
    absent = [{"id": f"a{n:03d}", "n": (n * 7) % 600} for n in range(600)]

    async def check() -> None:
        for records in (tied, absent):
            by_n = [r["id"] for r in sorted(records, key=lambda r: r["n"])]
            store = await filled(records, "sorted")
            for sort, offset, expected in (
                ("v,n", 550, by_n[550:560]),
                ("-v,-n", 590, by_n[::-1][590:600]),
                ("v,-n", 95, by_n[::-1][95:105]),
            ):
                params = [("sort", sort), ("offset", str(offset)), ("limit", "10")]
                assert await answer(store, params) == (600, expected)
            plain = await filled(records, None)  # no index: the window holds
            with pytest.raises(QueryTooCostly):
                await answer(plain, [("sort", "v,n"), ("offset", "550")])

    run(check())


def test_the_longest_run_a_walk_orders_is_paged_at_its_deepest_in_slices() -> None:
    """The worst page of a run: ``MAX_WALK`` records tied on the indexed field,
    the last page of their order by another key. It is answered, counted in
    the query's budget (a smaller budget refuses it) and sorted in slices that
    give the event loop back."""
    count = memory.MAX_WALK
    records = [
        {"id": f"t{n:05d}", "v": 1, "n": (n * 7919) % count} for n in range(count)
    ]
    by_n = [r["id"] for r in sorted(records, key=lambda r: r["n"])]
    params = [("sort", "v,n"), ("offset", str(count - 10)), ("limit", "10")]

    async def check() -> None:
        store = await filled(records, "sorted")
        service = QueryService(store)
        with service.limits.work() as work:
            walk = await store.sorted_walk("t", "v", offset=count - 10, limit=10)
            assert walk is not None
            page = await query_module.walked_page(walk, service.parse(params), work)
            assert [r["id"] for r in page.items] == by_n[-10:]
            # past one slice of work it gave the loop back (and took a heavy place)
            assert work.heavy and work.spent > 2 * SLICE
        small = QueryService(store, Limits(budget=count, max_heavy=4))
        with pytest.raises(QueryTooCostly):
            await small.list_records("t", small.parse(params))

    run(check())


def test_a_hash_index_or_no_index_gives_no_walk() -> None:
    async def check() -> None:
        store = await filled([{"id": "a", "v": 1}], "hash")
        assert await store.sorted_walk("t", "v") is None
        assert await store.sorted_walk("t", "n") is None

    run(check())


def test_a_stretch_without_ties_comes_as_rows_and_one_with_a_tie_at_its_edge_does_not() -> (
    None
):
    """No two values of the stretch and its neighbours alike: the walk gives the
    records in the index's order (``rows``); a tie inside the stretch or across
    its edge takes the general way (``groups``: whole runs, insertion order)."""

    async def check() -> None:
        unique = await filled([{"id": f"r{n}", "v": n} for n in range(6)], "sorted")
        walk = await unique.sorted_walk("t", "v", offset=1, limit=2)
        assert walk is not None and walk.groups == []
        assert [r["id"] for r in walk.rows] == ["r1", "r2"] and walk.first == 1
        walk = await unique.sorted_walk("t", "v", descending=True, offset=1, limit=2)
        assert [r["id"] for r in walk.rows] == ["r4", "r3"] and walk.first == 1
        # v: 0, 1, 2, 2 (ids inserted in the order r3, r0, r1, r2): the page's
        # last place ties with the record after it
        edge = await filled(
            [{"id": "r3", "v": 2}, {"id": "r0", "v": 0}, {"id": "r1", "v": 1}]
            + [{"id": "r2", "v": 2}],
            "sorted",
        )
        walk = await edge.sorted_walk("t", "v", offset=1, limit=2)
        assert walk is not None and walk.rows is None
        assert [[r["id"] for r in run] for run in walk.groups] == [["r1"], ["r3", "r2"]]
        assert await answer(edge, [("sort", "v"), ("offset", "1"), ("limit", "2")]) == (
            4,
            ["r1", "r3"],
        )

    run(check())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.just(MISSING), st.integers(0, 5)), max_size=30),
    st.lists(QUERIES, min_size=1, max_size=6),
)
def test_pages_over_few_values_with_ties_at_every_edge_answer_what_a_scan_answers(
    values: list[Any], queries: list[tuple[Any, ...]]
) -> None:
    same_answers(records_of(values), queries)
