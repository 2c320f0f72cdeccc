"""How late the event loop runs: the lag a request waits before it is served.

A timer asks to wake every ``INTERVAL`` seconds; the time it wakes late is the
loop's lag, the delay every other request met in that moment. The latest lag
and the largest over the last ``WINDOW`` samples are kept for ``/metrics``
(``memdb_event_loop_lag_seconds``) and ``/api/v1/stats``. The cycle
collector's pauses, one cause of lag on a large heap, are timed beside it.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque
from typing import Any

INTERVAL = 0.05
WINDOW = 200  # 10 seconds of samples


# The oldest generation is collected by ``GcMonitor.step()`` (once it holds
# this many objects), never by the interpreter on its own: an automatic full
# collection walks every object promoted since the last one, and on a heap that
# keeps growing (a store taking writes) its pause grows without bound.
FREEZE_AFTER = 20_000
_NEVER = 1 << 30


class GcMonitor:
    """Times each run of the cycle collector (``gc.callbacks``) and keeps its
    full collections small: the records loaded at start are frozen (the
    collector never walks them again), and ``step()``, called on every tick of the loop monitor
    once the store is loaded,
    collects the oldest generation once it has grown by ``FREEZE_AFTER``
    objects (a pause of a few tens of milliseconds at most) and freezes what
    survived, so that nothing is frozen before the collector had its look."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.longest = 0.0
        self.recent: deque[float] = deque(maxlen=64)
        self.freezes = 0
        self.active = False
        self._started = 0.0
        self._promotions = 0
        self._looked = -1  # the promotions when the oldest generation was counted
        self._thresholds: tuple[int, int, int] | None = None

    def loaded(self) -> None:
        """The store is loaded: freeze it, and start tending the heap."""
        gc.freeze()
        self.active = True

    def step(self) -> None:
        if not self.active:
            return
        # each collection of the middle generation promotes at most this many
        # objects: count the oldest one only when it may have grown enough
        young, middle, _ = self._thresholds or gc.get_threshold()
        if self._promotions * young * middle < FREEZE_AFTER:
            return
        # only a collection of the middle generation adds to the oldest: with
        # none since the last look, the count (a list of every object in it,
        # a cost under write load) would say the same
        if self._promotions == self._looked:
            return
        self._looked = self._promotions
        if len(gc.get_objects(generation=2)) > FREEZE_AFTER:
            gc.collect(2)
            gc.freeze()
            self.freezes += 1
            self._promotions = 0
            self._looked = -1

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        self.collections[info["generation"]] += 1
        if info["generation"] == 1:
            self._promotions += 1
        self.longest = max(self.longest, pause)
        self.recent.append(pause)

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)
        if self._thresholds is None:
            self._thresholds = gc.get_threshold()
            young, middle, _ = self._thresholds
            gc.set_threshold(young, middle, _NEVER)

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            self._thresholds = None

    def summary(self) -> dict[str, Any]:
        return {
            "collections": list(self.collections),
            "max_pause_ms": round(self.longest * 1000, 3),
            "recent_max_pause_ms": round(max(self.recent, default=0.0) * 1000, 3),
            "frozen_objects": gc.get_freeze_count(),
            "freezes": self.freezes,
        }


class LoopMonitor:
    def __init__(self, gc_monitor: GcMonitor | None = None) -> None:
        self.latest = 0.0
        self.samples: deque[float] = deque(maxlen=WINDOW)
        self.gc = gc_monitor
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
            self._task = None

    async def _run(self) -> None:
        # the loop's own clock may tick in whole milliseconds (uvloop's does)
        clock = time.perf_counter
        while True:
            started = clock()
            await asyncio.sleep(INTERVAL)
            self.record(max(0.0, clock() - started - INTERVAL))
            if self.gc is not None:
                self.gc.step()

    def record(self, lag: float) -> None:
        self.latest = lag
        self.samples.append(lag)

    def worst(self) -> float:
        """The largest lag of the last ``WINDOW`` samples."""
        return max(self.samples, default=0.0)
