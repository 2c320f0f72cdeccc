"""What one request may cost, and how heavy work shares the event loop.

Every query, sort, join and dump counts its work in *units* against a budget
(``MEMDB_QUERY_BUDGET``): one unit is one record looked at by one filter, one
sort key computed, one join row made, or a few dozen bytes of a value that an
operator has to read whole (a ``like`` pattern, ``contains`` on a list, ``q``).
The budget is checked as the work proceeds; past it the request ends with 400
``query_too_costly`` and nothing else is spent on it.

Work never runs in one long piece on the event loop: after each slice of
``SLICE`` units it gives the loop back (``await work.pause()``), so that other
requests are answered in between. A request that needs a second slice is
*heavy*: it takes one of ``MEMDB_MAX_HEAVY_REQUESTS`` places, and when none is
free it is refused with 503 ``busy`` and ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import Any, AsyncIterator, Sequence

from app.core.errors import Busy, QueryTooCostly, param_error

# Units of one slice of work between two turns of the event loop: about a
# millisecond or two of one core.
SLICE = 10_000


@dataclass
class WorkStats:
    """Counters for ``/metrics`` and ``/api/v1/stats``."""

    heavy_active: int = 0
    heavy_total: int = 0
    busy: int = 0
    budget_exceeded: int = 0


class HeavyGate:
    """At most ``limit`` heavy requests at once; the next one is refused."""

    def __init__(self, limit: int, stats: WorkStats | None = None) -> None:
        self.limit = limit
        self.stats = stats if stats is not None else WorkStats()

    def enter(self) -> None:
        stats = self.stats
        if stats.heavy_active >= self.limit:
            stats.busy += 1
            raise Busy(
                f"{self.limit} heavy requests are running; retry in a second",
            )
        stats.heavy_active += 1
        stats.heavy_total += 1

    def leave(self) -> None:
        self.stats.heavy_active -= 1


class Work:
    """One request's meter: the units spent, the budget, its heavy place.

    ``extra`` is where operators that read a whole value add what they read
    (``extra[0] += n``); ``spend()`` and ``pause()`` fold it in.
    """

    __slots__ = ("budget", "gate", "spent", "extra", "heavy", "_next_pause")

    def __init__(self, *, budget: int, gate: HeavyGate) -> None:
        self.budget = budget
        self.gate = gate
        self.spent = 0
        self.extra = [0]
        self.heavy = False
        self._next_pause = SLICE

    def spend(self, units: int) -> None:
        """Count ``units`` (and what operators added); over the budget, stop."""
        self.spent += units + self.extra[0]
        self.extra[0] = 0
        if self.spent > self.budget:
            self.gate.stats.budget_exceeded += 1
            raise QueryTooCostly(
                f"the request needs more than MEMDB_QUERY_BUDGET ({self.budget}) "
                "units of work; narrow it with a filter on an indexed field, "
                "a smaller page, or a limit",
                details=[param_error("", "over the work budget", "budget")],
            )

    def due(self) -> bool:
        """Whether a slice is used up (check cheaply inside a loop)."""
        return self.spent + self.extra[0] >= self._next_pause

    def slice_left(self) -> int:
        return max(0, self._next_pause - self.spent - self.extra[0])

    async def pause(self) -> None:
        """Give the event loop back when a slice is used up. The first time
        makes the request heavy (which may refuse it with 503 ``busy``)."""
        if self.spent + self.extra[0] < self._next_pause:
            return
        self.spend(0)
        self.become_heavy()
        self._next_pause = self.spent + SLICE
        await asyncio.sleep(0)

    def become_heavy(self) -> None:
        """Take a heavy place now (for work known to be long from the start)."""
        if not self.heavy:
            self.gate.enter()
            self.heavy = True

    def commit(self) -> None:
        """The answer has started: it is finished whatever it still costs (the
        work that made its size was counted before), so the budget no longer
        applies; its slices still give the loop back."""
        self.budget = sys.maxsize

    def close(self) -> None:
        """Give the heavy place back (safe to call more than once)."""
        if self.heavy:
            self.heavy = False
            self.gate.leave()

    def __enter__(self) -> Work:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Limits:
    """The budget and the heavy gate of a service, handed to the services."""

    def __init__(self, *, budget: int, max_heavy: int) -> None:
        self.budget = budget
        self.stats = WorkStats()
        self.gate = HeavyGate(max_heavy, self.stats)

    def work(self, *, bounded: bool = True) -> Work:
        """A meter for one request; ``bounded=False`` (a dump: everything is
        asked for) slices the work and counts it, but has no budget."""
        return Work(budget=self.budget if bounded else sys.maxsize, gate=self.gate)


async def paced(
    rows: Sequence[Any] | AsyncIterator[list[Any]], work: Work, size: int = 2048
) -> AsyncIterator[list[Any]]:
    """``rows`` (a list, or batches as a scan gives them) in batches, each
    counted, with a pause when a slice is used up."""
    if isinstance(rows, Sequence):
        for start in range(0, len(rows), size):
            batch = list(rows[start : start + size])
            work.spend(len(batch))
            yield batch
            await work.pause()
        return
    async for batch in rows:
        work.spend(len(batch))
        yield batch
        await work.pause()


async def paced_bytes(pieces: AsyncIterator[bytes], work: Work) -> AsyncIterator[bytes]:
    """Pieces of an answer, counted by size (a unit per 256 bytes written)."""
    async for piece in pieces:
        work.spend(len(piece) >> 8)
        yield piece
        await work.pause()
