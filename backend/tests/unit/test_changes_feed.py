"""The memory store's change feed (``storage/changes.py``) and its hooks."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.storage.base import SNAPSHOT_CURSOR, BadCursor, Change, CursorGone
from app.storage.changes import Feed, parse_cursor
from app.storage.memory import MemoryStore, Store


def ops(feed: Feed, since: str | None = None, **kw: Any) -> list[tuple[str, str]]:
    events, _ = feed.read(since, **kw)
    return [(e.cursor, e.op) for e in events]


def test_events_are_read_in_order_with_consecutive_cursors() -> None:
    feed = Feed(100, epoch_ms=7)
    feed.add("create", "t", "a", {"id": "a"})
    feed.add_many("import", "t", [("b", {"id": "b"}, 0), ("c", {"id": "c"}, 0)])
    feed.add("delete", "t", "a", None)
    assert ops(feed) == [
        ("7-1", "create"),
        ("7-2", "import"),
        ("7-3", "import"),
        ("7-4", "delete"),
    ]
    assert feed.cursor() == "7-4"
    assert ops(feed, "7-2") == [("7-3", "import"), ("7-4", "delete")]
    assert feed.read("7-4") == ([], "7-4")


def test_a_limit_stops_the_read_and_the_next_cursor_follows_on() -> None:
    feed = Feed(100, epoch_ms=1)
    for n in range(10):
        feed.add("create", "t", str(n), {"id": str(n)})
    events, after = feed.read(None, limit=3)
    assert [e.id for e in events] == ["0", "1", "2"] and after == "1-3"
    events, after = feed.read(after, limit=3)
    assert [e.id for e in events] == ["3", "4", "5"] and after == "1-6"


def test_a_table_filter_skips_other_tables_but_moves_the_cursor() -> None:
    feed = Feed(100, epoch_ms=1)
    feed.add("create", "a", "1", {"id": "1"})
    feed.add("create", "b", "2", {"id": "2"})
    feed.add("create", "b", "3", {"id": "3"})
    events, after = feed.read(None, tables=frozenset({"a"}))
    assert [e.id for e in events] == ["1"] and after == "1-3"
    events, after = feed.read(None, tables=frozenset({"b"}), limit=1)
    assert [e.id for e in events] == ["2"] and after == "1-2"
    assert feed.read(None, tables=frozenset({"c"}), scan=2) == ([], "1-2")


def test_a_cursor_beyond_the_retention_is_gone_with_the_oldest_kept() -> None:
    feed = Feed(3, epoch_ms=9)
    for n in range(10):
        feed.add("create", "t", str(n), {"id": str(n)})
    assert feed.oldest() == "9-7"
    with pytest.raises(CursorGone) as gone:
        feed.read("9-6")
    assert gone.value.oldest == "9-7"
    # resuming from the oldest cursor kept gets every change kept
    assert [e.id for e in feed.read("9-7")[0]] == ["7", "8", "9"]
    # without a cursor: from the oldest kept
    assert [e.id for e in feed.read(None)[0]] == ["7", "8", "9"]
    # the list behind the feed stays within twice the retention
    assert len(feed.events) <= 6


def test_the_records_kept_are_bounded_in_bytes_too() -> None:
    """A record rewritten again and again keeps at most ``retain_bytes`` of
    its old versions alive; the oldest go first, at least one stays."""
    feed = Feed(1000, retain_bytes=1000, epoch_ms=2)
    for n in range(20):
        feed.add("update", "t", "a", {"id": "a", "n": n}, 300)
    assert feed.bytes <= 1000 and feed.bytes == 300 * len(feed.events)
    kept = [e.record["n"] for e in feed.read(feed.oldest())[0] if e.record]
    assert kept and kept == list(range(20 - len(kept), 20))
    with pytest.raises(CursorGone):
        feed.read("2-1")
    feed.add("update", "t", "a", {"id": "a"}, 5000)  # larger than the bound
    assert [e.record for e in feed.read(feed.oldest())[0]] == [{"id": "a"}]


def test_a_gone_cursor_makes_a_wait_return_and_the_read_say_so() -> None:
    feed = Feed(2, epoch_ms=1)
    for n in range(6):
        feed.add("create", "t", str(n), None)

    async def run() -> None:
        started = time.monotonic()
        await feed.wait("1-1", 5)
        await feed.wait("x", 5)
        assert time.monotonic() - started < 0.5

    asyncio.run(run())
    with pytest.raises(CursorGone):
        feed.read("1-1")


def test_cursors_of_another_feed_are_gone_and_bad_ones_refused() -> None:
    feed = Feed(10, epoch_ms=5)
    feed.add("create", "t", "a", {"id": "a"})
    for cursor in ("4-1", "5-2"):  # an earlier process's; ahead of the newest
        with pytest.raises(CursorGone) as gone:
            feed.read(cursor)
        assert not gone.value.known and gone.value.oldest == "5-0"
    short = Feed(1, epoch_ms=5)
    for name in "abc":
        short.add("create", "t", name, {"id": name})
    with pytest.raises(CursorGone) as gone:
        short.read("5-0")  # one this feed gave, no longer kept
    assert gone.value.known and gone.value.oldest == "5-2"
    for bad in ("", "5", "5-", "-1", "a-1", "5-x", "5--1", "1" * 21 + "-1"):
        with pytest.raises(BadCursor):
            parse_cursor(bad)


def test_wait_returns_at_once_when_a_change_exists_and_at_the_timeout_else() -> None:
    feed = Feed(10, epoch_ms=1)

    async def run() -> None:
        feed.add("create", "t", "a", {"id": "a"})
        started = time.monotonic()
        await feed.wait("1-0", 5)
        assert time.monotonic() - started < 0.5
        started = time.monotonic()
        await feed.wait("1-1", 0.2)
        assert time.monotonic() - started >= 0.19

    asyncio.run(run())


@pytest.mark.parametrize("from_thread", [False, True])
def test_a_change_wakes_the_waiting_followers(from_thread: bool) -> None:
    feed = Feed(10, epoch_ms=1)

    async def run() -> list[float]:
        feed.bind(asyncio.get_running_loop())
        woke: list[float] = []

        async def follower() -> None:
            await feed.wait(feed.cursor(), 10)
            woke.append(time.monotonic())

        waiting = [asyncio.create_task(follower()) for _ in range(3)]
        await asyncio.sleep(0.05)
        written = time.monotonic()
        if from_thread:
            worker = threading.Thread(target=feed.add, args=("create", "t", "a", None))
            worker.start()
            worker.join()
        else:
            feed.add("create", "t", "a", None)
        await asyncio.wait_for(asyncio.gather(*waiting), 5)
        return [w - written for w in woke]

    delays = asyncio.run(run())
    assert len(delays) == 3 and max(delays) < 1.0


def test_a_cancelled_follower_leaves_the_others_waiting_and_nothing_behind() -> None:
    feed = Feed(10, epoch_ms=1)

    async def run() -> None:
        feed.bind(asyncio.get_running_loop())
        woke: list[str] = []

        async def follower(name: str, timeout: float) -> None:
            await feed.wait(feed.cursor(), timeout)
            woke.append(name)

        gone = asyncio.create_task(follower("gone", 10))
        stays = [asyncio.create_task(follower(f"f{n}", 10)) for n in range(2)]
        timed = asyncio.create_task(follower("timed", 0.05))
        await asyncio.sleep(0.1)
        assert woke == ["timed"]  # its timeout, not a change
        gone.cancel()
        await asyncio.sleep(0)
        assert len(feed._waiters) == 2  # the cancelled and the timed out left
        feed.add("create", "t", "a", None)
        await asyncio.wait_for(asyncio.gather(*stays), 5)
        assert sorted(woke) == ["f0", "f1", "timed"] and gone.cancelled()
        assert timed.done()
        assert not feed._waiters

    asyncio.run(run())


def test_many_timed_out_waits_on_a_quiet_feed_hold_nothing() -> None:
    feed = Feed(10, epoch_ms=1)

    async def run() -> None:
        for _ in range(200):
            await feed.wait(feed.cursor(), 0.001)
        assert not feed._waiters

    asyncio.run(run())


# -- the store's hooks --------------------------------------------------------------


def events_of(store: MemoryStore, since: str | None = None) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        events, _ = await store.changes(since)
        return [
            {"op": e.op, "table": e.table, "id": e.id, "record": e.record}
            for e in events
        ]

    return asyncio.run(read())


def test_every_write_of_the_memory_store_is_one_event_after_it_applied() -> None:
    store = MemoryStore(max_records=100)

    async def writes() -> None:
        store.follow(100)
        stamps = {"created_at": "c", "updated_at": "c"}
        await store.insert(
            "t", [{"id": "a", "n": 1, **stamps}, {"id": "b", "n": 2, **stamps}]
        )
        change = Change(fields={"n": 3}, patch=True, updated_at="x")
        await store.update("t", "a", change)
        change = Change(fields={"n": 4}, patch=False, updated_at="y")
        await store.update("t", "a", change)
        await store.delete("t", "b")
        await store.create_index("t", "n", unique=False)
        await store.drop_index("t", "n")
        await store.load([("u", [{"id": "c"}], None)], replace=True)
        await store.drop("u")

    engine = store.engine
    asyncio.run(writes())
    assert [(e["op"], e["table"], e["id"]) for e in events_of(store)] == [
        ("create", "t", "a"),
        ("create", "t", "b"),
        ("patch", "t", "a"),
        ("update", "t", "a"),
        ("delete", "t", "b"),
        ("create_index", "t", None),
        ("drop_index", "t", None),
        ("import", "u", "c"),
        ("drop", "u", None),
    ]
    recorded = events_of(store)
    assert recorded[3]["record"] is engine.tables["t"].records["a"]
    assert recorded[5]["record"] == {"field": "n", "unique": False, "kind": "hash"}
    assert recorded[4]["record"] is None


def test_a_refused_write_is_not_in_the_feed() -> None:
    store = MemoryStore(max_records=2)

    async def writes() -> None:
        store.follow(100)
        await store.insert("t", [{"id": "a"}])
        for bad in ([{"id": "a"}], [{"id": "b"}, {"id": "c"}]):
            with pytest.raises(Exception):
                await store.insert("t", bad)  # a taken id; past the limit

    asyncio.run(writes())
    assert [e["id"] for e in events_of(store)] == ["a"]


def test_a_replace_import_drops_the_table_then_imports_its_records() -> None:
    store = MemoryStore(max_records=100)

    async def writes() -> None:
        store.follow(100)
        await store.insert("t", [{"id": "a"}])
        await store.load([("t", [{"id": "b"}], None)], replace=True)

    asyncio.run(writes())
    assert [(e["op"], e["id"]) for e in events_of(store)] == [
        ("create", "a"),
        ("drop", None),
        ("import", "b"),
    ]


def test_reads_under_the_lock_note_the_cursor_they_were_taken_at() -> None:
    store = MemoryStore(max_records=100)

    async def reads() -> list[str | None]:
        store.follow(100)
        await store.insert("t", [{"id": "a"}, {"id": "b"}])
        seen = []
        for read in (
            lambda: store.page("t", 0, 10),
            lambda: store.scan("t"),
            lambda: store.lookup("t", "id", ["a"]),
        ):
            SNAPSHOT_CURSOR.set(None)
            await read()
            seen.append(SNAPSHOT_CURSOR.get())
        return seen

    cursors = asyncio.run(reads())
    assert len(set(cursors)) == 1 and cursors[0] is not None
    assert cursors[0].endswith("-2")


def test_a_store_without_a_feed_records_nothing_and_costs_nothing() -> None:
    engine = Store(max_records=10)
    engine.insert("t", [{"id": "a"}])
    assert engine.feed is None


# -- a reference model ----------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    retain=st.integers(1, 8),
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.sampled_from("ab"), st.integers(1, 3)),
            st.tuples(
                st.just("read"), st.integers(-2, 30), st.integers(1, 5), st.booleans()
            ),
        ),
        max_size=40,
    ),
)
def test_the_feed_agrees_with_a_list_of_every_change(
    retain: int, steps: list[tuple[Any, ...]]
) -> None:
    """Whatever the writes and the reads, a read gives exactly the changes of
    the model after its cursor (or 410 when the feed no longer has them all)."""
    feed = Feed(retain, epoch_ms=3)
    model: list[str] = []  # the table of change n is model[n - 1]
    for step in steps:
        if step[0] == "add":
            _, table, count = step
            feed.add_many("create", table, [(None, None, 0)] * count)
            model.extend([table] * count)
            continue
        _, at, limit, only_a = step
        since = None if at < 0 else f"3-{at}"
        tables = frozenset({"a"}) if only_a else None
        if at > len(model):
            with pytest.raises(CursorGone):
                feed.read(since, tables=tables, limit=limit)
            continue
        oldest = max(0, len(model) - retain)
        if since is not None and at < oldest:
            with pytest.raises(CursorGone):
                feed.read(since, tables=tables, limit=limit)
            continue
        start = oldest if since is None else at
        expected = [
            n
            for n in range(start + 1, len(model) + 1)
            if tables is None or model[n - 1] in tables
        ][:limit]
        events, after = feed.read(since, tables=tables, limit=limit)
        assert [parse_cursor(e.cursor)[1] for e in events] == expected
        assert [e.table for e in events] == [model[n - 1] for n in expected]
        # the next read goes on exactly where this one stopped
        nxt = parse_cursor(after)[1]
        assert start <= nxt <= len(model)
        if expected:
            assert nxt >= expected[-1]
        if len(expected) < limit:
            assert nxt == len(model)
