"""The cycle collector's keeper (``core/loop.py``): the oldest generation is
counted only when it may have grown, and collected and frozen past the bound."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from app.core import loop as looping
from app.core.loop import FREEZE_AFTER, GcMonitor


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``gc.get_objects(generation=2)`` of a given size, its calls counted;
    ``gc.collect`` and ``gc.freeze`` noted instead of run."""
    state: dict[str, Any] = {"size": 0, "counts": 0, "collected": 0}

    def get_objects(generation: int | None = None) -> list[None]:
        assert generation == 2
        state["counts"] += 1
        return [None] * state["size"]

    monkeypatch.setattr(looping.gc, "get_objects", get_objects)
    monkeypatch.setattr(
        looping.gc, "collect", lambda generation=2: state.update(collected=1) or 0
    )
    monkeypatch.setattr(looping.gc, "freeze", lambda: None)
    return state


def armed() -> GcMonitor:
    """A monitor tending the heap, as after the store loaded."""
    monitor = GcMonitor()
    monitor.active = True
    monitor._thresholds = (700, 10, 1 << 30)
    return monitor


def promote(monitor: GcMonitor, times: int) -> None:
    """``times`` collections of the middle generation, as the callbacks see them."""
    for _ in range(times):
        monitor("start", {"generation": 1})
        monitor("stop", {"generation": 1, "collected": 0, "uncollectable": 0})


def test_the_oldest_generation_is_counted_once_per_promotion(
    counted: dict[str, Any],
) -> None:
    monitor = armed()
    monitor.step()
    assert counted["counts"] == 0  # nothing promoted yet
    promote(monitor, 3)  # 3 x 7,000 objects may have reached it
    for _ in range(20):  # a second of ticks with no new promotion
        monitor.step()
    assert counted["counts"] == 1
    promote(monitor, 1)
    monitor.step()
    monitor.step()
    assert counted["counts"] == 2 and counted["collected"] == 0


def test_past_the_bound_it_is_collected_frozen_and_counted_afresh(
    counted: dict[str, Any],
) -> None:
    monitor = armed()
    counted["size"] = FREEZE_AFTER + 1
    promote(monitor, 3)
    monitor.step()
    assert counted["collected"] == 1 and monitor.freezes == 1
    assert counted["counts"] == 1
    counted["size"] = 0
    promote(monitor, 3)  # as many promotions as at the last look: looked at
    monitor.step()
    assert counted["counts"] == 2


def test_the_collector_is_left_as_it_was_found() -> None:
    found = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    monitor = GcMonitor()
    try:
        monitor.install()
        # full collections are the monitor's, never the interpreter's
        assert gc.get_threshold() == (700, 10, looping._NEVER)
        assert monitor in gc.callbacks
        monitor.remove()
        assert gc.get_threshold() == (700, 10, 10)
        assert monitor not in gc.callbacks
    finally:
        monitor.remove()
        gc.set_threshold(*found)
