"""The change feed of the Redis store against a real standalone Redis: one
event per applied change, as the memory store's feed gives them, in commit
order; the retention and its oldest cursor; cursors refused; followers woken
by one reader; the cursor a page, a lookup or a scan was read at. And a
Cluster, which keeps no feed."""

from __future__ import annotations

import asyncio
import time
import contextvars
import uuid
from typing import Any, Awaitable, Callable, TypeVar

import pytest

from app.schemas.builtin import BUILTIN_RULES
from app.storage.base import (
    SNAPSHOT_CURSOR,
    BadCursor,
    Change,
    ChangeEvent,
    CursorGone,
    DuplicateKey,
    FeedUnsupported,
    StaleRecord,
    StoreBackend,
    record_version,
)
from app.storage.memory import MemoryStore
from app.storage.redis import RedisStore, _position
from tests.redis_servers import CannotStart, RedisCluster, RedisServer, must_run

T = TypeVar("T")
STAMP = "2026-01-01T00:00:00+00:00"
LATER = "2026-01-02T00:00:00+00:00"


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


@pytest.fixture
def server(standalone_up: RedisServer) -> RedisServer:
    return standalone_up


def store_on(server: RedisServer, *, retain: int = 10_000, prefix: str = "") -> Any:
    return RedisStore(
        url=server.url,
        prefix=prefix or f"c{uuid.uuid4().hex[:10]}",
        rules=BUILTIN_RULES,
        changes_retain=retain,
    )


def note(i: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"n{i:04d}",
        "n": i,
        **fields,
        "created_at": STAMP,
        "updated_at": STAMP,
    }


def user(name: str) -> dict[str, Any]:
    return {
        "id": f"u-{name}",
        "email": f"{name}@example.com",
        "full_name": name.title(),
        "created_at": STAMP,
        "updated_at": STAMP,
    }


def seen(events: list[ChangeEvent]) -> list[tuple[Any, ...]]:
    return [(e.op, e.table, e.id, e.record) for e in events]


async def every_change(store: StoreBackend, since: str | None) -> list[ChangeEvent]:
    """The changes after ``since``, read on in small steps."""
    found: list[ChangeEvent] = []
    while True:
        events, since = await store.changes(since, limit=3)
        if not events:
            return found
        found += events


async def scenario(store: StoreBackend) -> None:
    """One of each change, and writes that are refused (no event)."""
    await store.insert("notes", [note(1), note(2)])
    await store.insert("users", [user("ann")], [{"password_hash": "secret"}])
    with pytest.raises(DuplicateKey):
        await store.insert("notes", [note(1)])
    await store.update("notes", "n0001", Change({"a": {"b": 1}}, True, LATER))
    await store.update("notes", "n0001", Change({"a": {"c": 2}}, True, LATER))
    await store.update("notes", "n0002", Change({"n": 20}, False, LATER))
    await store.update(
        "notes", "n0002", Change({"only": True}, False, LATER, replace=True)
    )
    with pytest.raises(StaleRecord):
        await store.update(
            "notes", "n0002", Change({"x": 1}, True, LATER, frozenset({"0" * 16}))
        )
    await store.create_index("notes", "n", unique=False)
    await store.insert("dupes", [note(1), note(2, n=1)])
    with pytest.raises(DuplicateKey):  # a unique index over duplicates: none
        await store.create_index("dupes", "n", unique=True)
    await store.drop_index("notes", "n")
    await store.delete("notes", "n0001")
    await store.load([("notes", [note(3), note(2)], None)], replace=False)
    await store.load(
        [("notes", [note(4)], None), ("fresh", [note(5)], None)], replace=True
    )
    await store.drop("dupes")
    await store.drop("users")  # a built-in table: emptied


WANTED = [
    ("create", "notes", "n0001", note(1)),
    ("create", "notes", "n0002", note(2)),
    ("create", "users", "u-ann", user("ann")),
    ("patch", "notes", "n0001", {**note(1, a={"b": 1}), "updated_at": LATER}),
    ("patch", "notes", "n0001", {**note(1, a={"b": 1, "c": 2}), "updated_at": LATER}),
    ("update", "notes", "n0002", {**note(20), "id": "n0002", "updated_at": LATER}),
    (
        "update",
        "notes",
        "n0002",
        {"id": "n0002", "only": True, "created_at": STAMP, "updated_at": LATER},
    ),
    ("create_index", "notes", None, {"field": "n", "unique": False, "kind": "hash"}),
    ("create", "dupes", "n0001", note(1)),
    ("create", "dupes", "n0002", note(2, n=1)),
    ("drop_index", "notes", None, {"field": "n"}),
    ("delete", "notes", "n0001", None),
    ("import", "notes", "n0003", note(3)),
    ("import", "notes", "n0002", note(2)),
    ("drop", "notes", None, None),
    ("import", "notes", "n0004", note(4)),
    ("import", "fresh", "n0005", note(5)),
    ("drop", "dupes", None, None),
    ("drop", "users", None, None),
]


def test_each_change_is_one_event_as_the_memory_store_gives_it(
    server: RedisServer,
) -> None:
    async def on_redis() -> tuple[list[ChangeEvent], str]:
        store = store_on(server)
        await store.open()
        start = await store.cursor()
        await scenario(store)
        found = await every_change(store, start)
        newest = await store.cursor()
        await store.close()
        return found, newest

    async def on_memory() -> list[ChangeEvent]:
        store = MemoryStore(max_records=1000, rules=BUILTIN_RULES)
        await store.open()
        store.follow(10_000)
        await scenario(store)
        return await every_change(store, None)

    found, newest = run(on_redis())
    assert seen(found) == WANTED
    assert seen(found) == seen(run(on_memory()))
    assert found[-1].cursor == newest
    assert all("password_hash" not in str(e.record) for e in found)
    cursors = [tuple(map(int, e.cursor.split("-"))) for e in found]
    assert cursors == sorted(set(cursors))
    assert all(abs(e.at - found[0].at) < 60 for e in found)


def test_a_fresh_store_says_where_it_begins(server: RedisServer) -> None:
    async def go() -> None:
        store = store_on(server)
        # nothing written yet, not even the built-in tables
        assert await store.cursor() == "0-0"
        assert await store.changes(None) == ([], "0-0")
        assert await store.changes("0-0") == ([], "0-0")
        await store.open()  # the built-in indexes are changes too
        events, after = await store.changes(None)
        assert [e.op for e in events] == ["create_index"] * len(events) != []
        assert after == await store.cursor() == events[-1].cursor
        await store.open()  # a second worker opening: nothing more
        assert await store.cursor() == after
        await store.close()

    run(go())


def test_only_the_tables_asked_for_within_the_limit(server: RedisServer) -> None:
    async def go() -> None:
        store = store_on(server)
        start = await store.cursor()
        for i in range(6):
            await store.insert("a" if i % 2 else "b", [note(i)])
        events, after = await store.changes(start, tables=frozenset({"a"}), limit=2)
        assert [e.id for e in events] == ["n0001", "n0003"]
        assert after == events[-1].cursor  # the entry after it is not looked at
        events, after = await store.changes(after, tables=frozenset({"a"}))
        assert [e.id for e in events] == ["n0005"]
        assert after == await store.cursor()
        events, last = await store.changes(start, tables=frozenset())
        assert events == [] and last == after  # looked at, none matched
        assert await store.changes(after, limit=0) == ([], after)
        await store.close()

    run(go())


def test_concurrent_writers_are_followed_in_commit_order(server: RedisServer) -> None:
    """Writers on two connections bump a counter by compare-and-set: the feed
    gives each value once, in the order they were written."""

    async def go() -> list[ChangeEvent]:
        first = store_on(server)
        second = store_on(server, prefix=first.prefix)
        start = await first.cursor()
        await first.insert("counters", [note(0, v=0), note(1, v=0)])

        async def bump(store: RedisStore, record_id: str, times: int) -> None:
            done = 0
            while done < times:
                record = await store.read("counters", record_id)
                assert record is not None
                change = Change(
                    {"v": record["v"] + 1},
                    True,
                    LATER,
                    frozenset({record_version(record)}),
                )
                try:
                    await store.update("counters", record_id, change)
                except StaleRecord:
                    continue
                done += 1

        await asyncio.gather(
            *(
                bump(store, f"n000{i % 2}", 25)
                for store in (first, second)
                for i in range(4)
            )
        )
        found = await every_change(first, start)
        await first.close()
        await second.close()
        return found

    found = run(go())
    assert len(found) == 2 + 200
    for record_id in ("n0000", "n0001"):
        values = [e.record["v"] for e in found if e.id == record_id and e.record]
        assert values == list(range(101))


def test_the_feed_keeps_the_last_changes_and_names_the_oldest_cursor(
    server: RedisServer,
) -> None:
    async def go() -> None:
        store = store_on(server, retain=3)
        cursors = []
        for i in range(3):
            await store.insert("notes", [note(i)])
            cursors.append(await store.cursor())
        # not trimmed yet: every change is served, from "0-0"
        events, _ = await store.changes(None)
        assert [e.cursor for e in events] == cursors
        assert len((await store.changes("0-0"))[0]) == 3
        await store.insert("notes", [note(3)])
        cursors.append(await store.cursor())
        # as the memory feed: the last 3, the oldest cursor the one before
        events, _ = await store.changes(None)
        assert [e.cursor for e in events] == cursors[1:]
        with pytest.raises(CursorGone) as gone:
            await store.changes("0-0")
        assert gone.value.oldest == cursors[0] and gone.value.known
        for i in range(4, 6):
            await store.insert("notes", [note(i)])
            cursors.append(await store.cursor())
        with pytest.raises(CursorGone) as gone:
            await store.changes(cursors[1])
        assert gone.value.oldest == cursors[2]
        # resuming from the oldest cursor loses nothing retained
        events, _ = await store.changes(gone.value.oldest)
        assert [e.cursor for e in events] == cursors[3:]
        assert (await store.changes(None))[0] == events
        # one write of more changes than are kept
        await store.insert("notes", [note(i) for i in range(10, 15)])
        with pytest.raises(CursorGone) as gone:
            await store.changes(cursors[-1])
        events, _ = await store.changes(gone.value.oldest)
        assert [e.id for e in events] == ["n0012", "n0013", "n0014"]
        assert await store.changes(events[-1].cursor) == ([], events[-1].cursor)
        await store.close()

    run(go())


def test_a_larger_retention_later_still_knows_what_was_trimmed(
    server: RedisServer,
) -> None:
    async def go() -> None:
        small = store_on(server, retain=2)
        for i in range(5):
            await small.insert("notes", [note(i)])
        events, _ = await small.changes(None)
        larger = store_on(server, retain=100, prefix=small.prefix)
        assert (await larger.changes(None))[0] == events
        with pytest.raises(CursorGone):
            await larger.changes("0-0")
        await small.close()
        await larger.close()

    run(go())


@pytest.mark.parametrize(
    "cursor",
    ["", "0", "abc", "1-", "-1", "1-2-3", "1.5-0", "\uff11-0", "1" * 21 + "-0"]
    + [f"{1 << 64}-0", f"0-{1 << 64}"],
)
def test_what_is_not_a_cursor(server: RedisServer, cursor: str) -> None:
    async def go() -> None:
        store = store_on(server)
        with pytest.raises(BadCursor):
            await store.changes(cursor)
        with pytest.raises(BadCursor):
            await store.wait_changes(cursor, 0.1)
        await store.close()

    run(go())


def test_a_cursor_ahead_of_the_feed_is_gone(server: RedisServer) -> None:
    """A cursor past the newest entry was not given by this stream (a flushed
    or failed-over Redis): the follower must reload, as with a trimmed one."""

    async def go() -> None:
        store = store_on(server)
        with pytest.raises(CursorGone) as gone:
            await store.changes("1-0")  # nothing written yet
        assert gone.value.oldest == "0-0" and not gone.value.known
        await store.insert("notes", [note(1)])
        ms, seq = map(int, (await store.cursor()).split("-"))
        for ahead in (f"{ms}-{seq + 1}", f"{ms + 1}-0"):
            with pytest.raises(CursorGone) as gone:
                await store.changes(ahead)
            assert not gone.value.known
            started = time.monotonic()
            await store.wait_changes(ahead, 5)  # returns: the read says gone
            assert time.monotonic() - started < 2
        # a cursor written otherwise means the same entry
        assert await store.changes(f"0{ms}-0{seq}") == ([], f"{ms}-{seq}")
        for bad in ("x", "1-", "-1", "1-2-3"):
            with pytest.raises(BadCursor):
                await store.changes(bad)
        await store.close()

    run(go())


def test_a_cursor_of_a_flushed_stream_is_gone(server: RedisServer) -> None:
    """After the data is lost (FLUSHALL, a failover to a replica that had not
    caught up), new entries take new ids past the old cursors: an old cursor
    names no entry of the new stream and is gone, not silently followed."""

    async def go() -> None:
        store = store_on(server)
        # the loss and the next write mostly within one millisecond: a stream
        # begun afresh starts past the clock, so it never gives again an id
        # the lost stream gave in that millisecond
        for n in range(0, 60, 3):
            await store.insert("notes", [note(n + 1), note(n + 2)])
            old = await store.cursor()
            await store.link.call("DEL", store._changes_key)  # the stream is lost
            seconds, micros = await store.link.call("TIME")
            await store.insert("notes", [note(n + 3)])
            with pytest.raises(CursorGone) as gone:
                await store.changes(old)
            assert not gone.value.known
            fresh = await store.cursor()
            assert fresh != old
            assert _position(fresh)[0] > int(seconds) * 1000 + int(micros) // 1000
            assert await store.changes(fresh) == ([], fresh)
        await store.close()

    run(go())


def test_followers_wake_on_a_change_made_anywhere(server: RedisServer) -> None:
    async def go() -> None:
        store = store_on(server)
        other = store_on(server, prefix=store.prefix)  # another worker
        loop = asyncio.get_running_loop()
        await store.insert("notes", [note(0)])
        before = await store.cursor()
        await store.insert("notes", [note(1)])
        # a change after the cursor exists: at once
        began = loop.time()
        await store.wait_changes(before, 5)
        assert loop.time() - began < 0.5
        now = await store.cursor()
        # none comes: after the timeout
        began = loop.time()
        await store.wait_changes(now, 0.3)
        assert 0.25 < loop.time() - began < 1.5

        woken: list[float] = []

        async def follow() -> None:
            await store.wait_changes(now, 10)
            woken.append(loop.time())

        followers = [asyncio.ensure_future(follow()) for _ in range(200)]
        await asyncio.sleep(0.2)
        assert not woken
        began = loop.time()
        await other.insert("notes", [note(2)])
        await asyncio.wait_for(asyncio.gather(*followers), 5)
        assert len(woken) == 200 and max(woken) - began < 0.5
        # one reader for every follower of this loop, stopped by close
        assert len(store._readers) == 1
        reader = next(iter(store._readers.values()))
        await store.close()
        assert reader._task.done() and not store._readers
        await other.close()

    run(go())


def test_a_follower_ahead_of_the_reader_waits_for_the_next_change(
    server: RedisServer,
) -> None:
    async def go() -> None:
        store = store_on(server)
        other = store_on(server, prefix=store.prefix)
        await store.insert("notes", [note(0)])
        await store.wait_changes("0-0", 1)  # the reader has started
        await other.insert("notes", [note(1)])
        latest = await other.cursor()  # the reader may not have seen it yet
        waiting = asyncio.ensure_future(store.wait_changes(latest, 10))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await other.insert("notes", [note(2)])
        await asyncio.wait_for(waiting, 5)
        await store.close()
        await other.close()

    run(go())


async def in_context(read: Callable[[], Awaitable[T]]) -> tuple[T, str | None]:
    """``read`` in a context of its own, and the cursor it noted there."""

    async def inner() -> tuple[T, str | None]:
        return await read(), SNAPSHOT_CURSOR.get()

    return await asyncio.create_task(inner(), context=contextvars.Context())


def test_lists_and_scans_say_the_cursor_they_were_read_at(
    server: RedisServer,
) -> None:
    async def go() -> None:
        store = store_on(server)
        await store.open()
        await store.insert("notes", [note(i) for i in range(5)])
        await store.create_index("notes", "n", unique=False)
        newest = await store.cursor()
        _, cursor = await in_context(lambda: store.page("notes", 0, 2))
        assert cursor == newest
        _, cursor = await in_context(lambda: store.lookup("notes", "n", [1]))
        assert cursor == newest
        _, cursor = await in_context(lambda: store.lookup("notes", "id", [1]))
        assert cursor == newest
        scan, cursor = await in_context(lambda: store.scan("notes"))
        assert cursor == newest
        await store.insert("notes", [note(9)])
        # a read the store makes for itself notes nothing
        _, cursor = await in_context(lambda: store.read_many("notes", ["n0001"]))
        assert cursor is None
        # what the scan reads after its cursor, the feed gives after it too
        records = [r async for batch in scan.batches(2) for r in batch]
        assert len(records) == 6
        events, _ = await store.changes(newest)
        assert [e.id for e in events] == ["n0009"]
        await store.close()

    run(go())


def test_a_page_then_the_feed_misses_nothing_and_repeats_nothing(
    server: RedisServer,
) -> None:
    """Writers run while a follower reads a table then follows it from the
    page's cursor: the replayed changes come after what the page holds, and
    end at the table as it is."""

    async def go() -> None:
        store = store_on(server)
        writer = store_on(server, prefix=store.prefix)
        await store.insert("notes", [note(i, v=0) for i in range(20)])
        stop = asyncio.Event()

        async def write() -> None:
            v = 0
            while not stop.is_set():
                v += 1
                i = v % 25
                if i == 20:
                    await writer.insert("notes", [note(100 + v, v=v)])
                elif i == 21:
                    await writer.delete("notes", f"n{100 + v - 1:04d}")
                else:
                    change = Change({"v": v}, True, LATER)
                    await writer.update("notes", f"n{i % 20:04d}", change)

        writing = [asyncio.ensure_future(write())]
        await asyncio.sleep(0.05)
        (records, _), cursor = await in_context(lambda: store.page("notes", 0, 1000))
        assert cursor is not None
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*writing)
        state = {r["id"]: r for r in records}
        assert any(r["v"] for r in records), "the page was read while writes went on"
        replayed = await every_change(store, cursor)
        assert len(replayed) > 10
        for event in replayed:
            if event.op == "delete":
                del state[str(event.id)]
            else:
                assert event.record is not None
                old = state.get(str(event.id))
                assert old is None or old["v"] < event.record["v"], "seen twice"
                state[str(event.id)] = event.record
        final, _ = await store.page("notes", 0, 1000)
        assert state == {r["id"]: r for r in final}
        await store.close()
        await writer.close()

    run(go())


def test_a_cluster_keeps_no_feed(
    redis_cluster: RedisCluster | CannotStart,
) -> None:
    if isinstance(redis_cluster, CannotStart):
        if must_run():
            raise redis_cluster
        pytest.skip(str(redis_cluster))

    async def go() -> None:
        store = RedisStore(
            url=redis_cluster.url,
            cluster=True,
            prefix=f"c{uuid.uuid4().hex[:10]}",
            rules=BUILTIN_RULES,
        )
        await store.open()
        await store.insert("notes", [note(1)])
        await store.update("notes", "n0001", Change({"a": 1}, True, LATER))
        await store.delete("notes", "n0001")
        _, cursor = await in_context(lambda: store.page("notes", 0, 10))
        assert cursor is None
        await store.drop("notes")
        for call in (
            store.changes(None),
            store.cursor(),
            store.wait_changes("0-0", 0.1),
        ):
            with pytest.raises(FeedUnsupported):
                await call
        key = f"{store.prefix}:changes"
        assert not await store.link.call("EXISTS", key)
        await store.close()

    run(go())
