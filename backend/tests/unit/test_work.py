"""app.services.work: the work budget, slices that give the loop back, the heavy cap."""

from __future__ import annotations

import asyncio

import pytest

from app.core.errors import Busy, QueryTooCostly
from app.services.work import SLICE, HeavyGate, Limits, Work, paced, paced_bytes


def test_spending_past_the_budget_ends_the_request_and_is_counted() -> None:
    limits = Limits(budget=1000, max_heavy=2)
    work = limits.work()
    work.spend(600)
    work.extra[0] += 400
    work.spend(0)  # exactly the budget is still allowed
    with pytest.raises(QueryTooCostly) as caught:
        work.spend(1)
    assert caught.value.status_code == 400
    assert caught.value.code == "query_too_costly"
    assert "MEMDB_QUERY_BUDGET" in caught.value.message
    assert limits.stats.budget_exceeded == 1


def test_an_unbounded_meter_never_refuses() -> None:
    work = Limits(budget=1000, max_heavy=2).work(bounded=False)
    work.spend(10**12)


def test_pause_gives_the_loop_back_once_a_slice_is_spent() -> None:
    limits = Limits(budget=10**9, max_heavy=1)
    turns: list[str] = []

    async def heavy() -> None:
        with limits.work() as work:
            work.spend(SLICE - 1)
            await work.pause()  # not yet: no turn given, not heavy
            turns.append("first slice")
            assert not work.heavy
            work.spend(1)
            await work.pause()
            assert work.heavy and limits.stats.heavy_active == 1
            turns.append("second slice")
        assert limits.stats.heavy_active == 0

    async def other() -> None:
        turns.append("other")

    async def main() -> None:
        await asyncio.gather(heavy(), other())

    asyncio.run(main())
    assert turns == ["first slice", "other", "second slice"]
    assert limits.stats.heavy_total == 1


def test_past_the_cap_a_heavy_request_is_told_to_come_back() -> None:
    gate = HeavyGate(2)
    first, second, third = (Work(budget=10**9, gate=gate) for _ in range(3))
    first.become_heavy()
    second.become_heavy()
    with pytest.raises(Busy) as caught:
        third.become_heavy()
    assert caught.value.status_code == 503
    assert caught.value.code == "busy"
    assert ("retry-after", "1") in caught.value.headers
    assert gate.stats.busy == 1 and gate.stats.heavy_active == 2
    first.close()
    first.close()  # closing twice gives one place back, not two
    assert gate.stats.heavy_active == 1
    third.become_heavy()
    assert gate.stats.heavy_active == 2


def test_paced_batches_count_every_row_and_pieces_their_bytes() -> None:
    limits = Limits(budget=10**9, max_heavy=1)

    async def read() -> tuple[list[list[int]], list[bytes], int, int]:
        work = limits.work()
        batches = [batch async for batch in paced(list(range(5000)), work, size=2048)]
        rows = work.spent

        async def pieces():  # type: ignore[no-untyped-def]
            for piece in (b"x" * 1024, b"y" * 512):
                yield piece

        written = [piece async for piece in paced_bytes(pieces(), work)]
        work.close()
        return batches, written, rows, work.spent

    batches, written, rows, spent = asyncio.run(read())
    assert [len(b) for b in batches] == [2048, 2048, 904]
    assert rows == 5000
    assert written == [b"x" * 1024, b"y" * 512]
    assert spent == 5000 + 4 + 2
