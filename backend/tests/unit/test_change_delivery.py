"""How followers are served (``services/changes.py``): the shared beat that
paces their writes, and the pages of events joined once for all of them."""

from __future__ import annotations

import asyncio

import orjson

from app.services.changes import PIECE, Beat, Encoded
from app.storage.base import ChangeEvent


def event(n: int, table: str = "t", size: int = 10) -> ChangeEvent:
    record = {"id": str(n), "text": "x" * size}
    return ChangeEvent(f"1-{n}", "create", table, str(n), record, 1.5)


# -- the beat ----------------------------------------------------------------------


def test_after_a_quiet_spell_every_follower_of_the_turn_goes_at_once() -> None:
    async def run() -> list[float]:
        beat = Beat(0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        gone: list[float] = []

        async def follower() -> None:
            await beat()
            gone.append(loop.time() - started)

        await asyncio.gather(*(follower() for _ in range(5)))
        return gone

    assert max(asyncio.run(run())) < 0.1


def test_within_a_beat_followers_wait_for_the_next_one_together() -> None:
    async def run() -> tuple[float, list[float], int]:
        beat = Beat(0.2)
        loop = asyncio.get_running_loop()
        await beat()  # the first write of a busy spell goes at once
        first = loop.time()
        await asyncio.sleep(0)  # a later turn of the loop
        gone: list[float] = []

        async def follower() -> None:
            await beat()
            gone.append(loop.time() - first)

        tasks = [asyncio.create_task(follower()) for _ in range(5)]
        await asyncio.sleep(0.05)
        timers = len(loop._scheduled)  # type: ignore[attr-defined]
        await asyncio.gather(*tasks)
        return first, gone, timers

    _, gone, timers = asyncio.run(run())
    assert min(gone) >= 0.19 and max(gone) - min(gone) < 0.05
    assert timers == 1  # one timer for all of them


def test_a_follower_that_has_just_written_waits_for_the_next_beat() -> None:
    async def run() -> tuple[float, float]:
        beat = Beat(0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await beat()  # a quiet spell: at once, and the window is open
        await beat.next()  # the window does not let a second write through
        first = loop.time() - started
        await asyncio.sleep(0.3)  # a late follower: the next beat is due
        late = loop.time()
        await beat.next()
        return first, loop.time() - late

    first, late = asyncio.run(run())
    assert 0.19 <= first < 0.35 and late < 0.1


def test_a_follower_cancelled_at_the_beat_does_not_stop_the_others() -> None:
    async def run() -> list[str]:
        beat = Beat(0.1)
        await beat()
        await asyncio.sleep(0)
        gone: list[str] = []

        async def follower(name: str) -> None:
            await beat()
            gone.append(name)

        left = asyncio.create_task(follower("left"))
        stays = asyncio.create_task(follower("stays"))
        await asyncio.sleep(0.01)
        left.cancel()
        await asyncio.wait_for(stays, 2)
        assert left.cancelled()
        return gone

    assert asyncio.run(run()) == ["stays"]


# -- pages ---------------------------------------------------------------------------


def test_a_page_is_its_events_as_server_sent_events_joined_once() -> None:
    encoded = Encoded()
    events = [event(n) for n in range(1, 4)]
    pieces = encoded.page(events, None)
    assert pieces == [b"".join(encoded.frame(e) for e in events)]
    text = pieces[0].decode()
    assert text.startswith("id: 1-1\ndata: {") and text.count("\n\n") == 3
    first = orjson.loads(text.split("\n")[1].removeprefix("data: "))
    assert first["cursor"] == "1-1" and first["record"] == events[0].record
    # the same read by another follower: the same bytes, not made again
    assert encoded.page(list(events), None) is pieces


def test_pages_of_other_filters_or_bounds_are_other_pages() -> None:
    encoded = Encoded()
    a, b, c = event(1, "a"), event(2, "b"), event(3, "a")
    every = encoded.page([a, b, c], None)
    only_a = encoded.page([a, c], frozenset({"a"}))
    assert only_a != every and b"1-2" not in b"".join(only_a)
    assert encoded.page([a, b], None) != every
    assert encoded.page([a, c], frozenset({"a", "c"})) is not only_a


def test_a_large_page_leaves_in_pieces_and_is_not_kept() -> None:
    encoded = Encoded(max_bytes=1024 * 1024)
    events = [event(n, size=100_000) for n in range(1, 13)]
    pieces = list(encoded.page(events, None))
    assert len(pieces) > 1 and all(len(p) < PIECE + 120_000 for p in pieces)
    assert b"".join(pieces) == b"".join(encoded.frame(e) for e in events)
    assert not encoded.pages  # over a sixteenth of max_bytes: made each time


def test_a_large_page_is_made_as_it_is_sent() -> None:
    """The worst page: 500 records of 1 MiB. A follower holds a sixteenth of
    ``max_bytes`` and a piece of it at once, never the whole page."""
    encoded = Encoded()
    text = "x" * 1024 * 1024  # one string for every record: the test's own memory
    events = [
        ChangeEvent(f"1-{n}", "create", "t", str(n), {"id": str(n), "text": text}, 1.5)
        for n in range(1, 501)
    ]
    made: list[str] = []
    frame = encoded.frame

    def counted(e: ChangeEvent) -> bytes:
        made.append(e.cursor)
        return frame(e)

    encoded.frame = counted  # type: ignore[method-assign]
    pieces = iter(encoded.page(events, None))
    first = next(pieces)
    assert first.startswith(b"id: 1-1\n") and len(made) <= 3
    assert sum(1 for _ in pieces) == 499 and len(made) == 500
    assert not encoded.pages


def test_only_the_latest_pages_are_kept() -> None:
    encoded = Encoded()
    for n in range(1, 40):
        encoded.page([event(n)], None)
    assert len(encoded.pages) == Encoded.PAGES
    assert (None, "1-39", "1-39", 1) in encoded.pages
