"""app.core.logging: the line writer, its batching, the access log and the timestamp."""

from __future__ import annotations

import asyncio
import io
import json
import re
import threading
from datetime import datetime, timezone
from typing import Any, Iterator

import pytest
import structlog

from app.core import clock
from app.core import logging as applog
from app.core.logging import OUTPUT, AccessLog, LineWriter, configure_logging

STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


class Stream(io.StringIO):
    """A stdout that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def lines(self) -> list[str]:
        return self.getvalue().splitlines()


@pytest.fixture
def writer() -> Iterator[tuple[LineWriter, Stream]]:
    line_writer = LineWriter()
    stream = Stream()
    line_writer.stream = stream
    yield line_writer, stream


@pytest.fixture
def output(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stream]:
    """The process-wide writer on a fresh stream, put back as it was afterwards."""
    stream = Stream()
    was_batched, was_stream = OUTPUT.batched, OUTPUT.stream
    monkeypatch.setattr("sys.stdout", stream)
    configure_logging(batched=True)
    yield stream
    configure_logging(batched=was_batched)
    OUTPUT.stream = was_stream


# -- LineWriter ------------------------------------------------------------


def test_unbatched_lines_are_written_at_once(
    writer: tuple[LineWriter, Stream],
) -> None:
    line_writer, stream = writer
    line_writer.msg("one")
    assert stream.lines() == ["one"]
    line_writer.info("two")
    assert stream.lines() == ["one", "two"]
    assert stream.writes == 2


def test_batched_lines_of_one_loop_turn_leave_in_one_write(
    writer: tuple[LineWriter, Stream],
) -> None:
    line_writer, stream = writer
    line_writer.batched = True

    async def scenario() -> tuple[list[str], list[str]]:
        for n in range(5):
            line_writer.info(f"line {n}")
        during = stream.lines()
        await asyncio.sleep(0)  # the turn is over: the flush ran
        return during, stream.lines()

    during, after = asyncio.run(scenario())
    assert during == []
    assert after == [f"line {n}" for n in range(5)]
    assert stream.writes == 1


def test_warnings_and_errors_go_at_once_after_the_pending_lines(
    writer: tuple[LineWriter, Stream],
) -> None:
    line_writer, stream = writer
    line_writer.batched = True

    async def scenario() -> list[str]:
        line_writer.info("first")
        line_writer.error("second")
        seen = stream.lines()
        line_writer.info("third")
        await asyncio.sleep(0)
        return seen

    assert asyncio.run(scenario()) == ["first", "second"]
    assert stream.lines() == ["first", "second", "third"]


def test_batched_lines_outside_an_event_loop_are_written_at_once(
    writer: tuple[LineWriter, Stream],
) -> None:
    line_writer, stream = writer
    line_writer.batched = True
    line_writer.info("main thread, no loop")
    worker = threading.Thread(target=line_writer.info, args=("worker thread",))
    worker.start()
    worker.join()
    assert stream.lines() == ["main thread, no loop", "worker thread"]


def test_flush_with_nothing_pending_writes_nothing(
    writer: tuple[LineWriter, Stream],
) -> None:
    line_writer, stream = writer
    line_writer.flush()
    assert stream.writes == 0


# -- AccessLog ---------------------------------------------------------------


def _access_lines(stream: Stream) -> list[dict[str, Any]]:
    return [
        event
        for event in map(json.loads, stream.lines())
        if event["event"] == "http.request"
    ]


def test_access_events_of_one_loop_turn_are_made_when_the_turn_is_over(
    output: Stream,
) -> None:
    access = AccessLog(structlog.get_logger("memdb.http"))

    async def scenario() -> list[str]:
        access("GET", "/a", 200, 0.5, "r1")
        access("POST", "/b", 201, 1.25, "r2")
        seen = output.lines()
        await asyncio.sleep(0)
        return seen

    assert asyncio.run(scenario()) == []
    lines = _access_lines(output)
    assert [
        {k: e[k] for k in ("method", "route", "status", "duration_ms", "request_id")}
        for e in lines
    ] == [
        {
            "method": "GET",
            "route": "/a",
            "status": 200,
            "duration_ms": 0.5,
            "request_id": "r1",
        },
        {
            "method": "POST",
            "route": "/b",
            "status": 201,
            "duration_ms": 1.25,
            "request_id": "r2",
        },
    ]
    assert all(e["level"] == "info" and STAMP.fullmatch(e["timestamp"]) for e in lines)
    assert output.writes == 1


def test_access_events_outside_a_loop_are_written_at_once(output: Stream) -> None:
    access = AccessLog(structlog.get_logger("memdb.http"))
    access("DELETE", "/c", 204, 0.1, "r3")
    assert [e["request_id"] for e in _access_lines(output)] == ["r3"]


def test_flush_makes_the_pending_access_events(output: Stream) -> None:
    access = AccessLog(structlog.get_logger("memdb.http"))

    async def scenario() -> None:
        access("GET", "/d", 304, 0.2, "r4")
        access.flush()  # the lifespan's shutdown does this
        assert [e["request_id"] for e in _access_lines(output)] == ["r4"]

    asyncio.run(scenario())
    assert len(_access_lines(output)) == 1


def test_the_level_filters_access_events(output: Stream) -> None:
    configure_logging(level="warning")
    OUTPUT.stream = output  # configure_logging takes the stdout of the moment
    access = AccessLog(structlog.get_logger("memdb.http").bind())
    access("GET", "/e", 200, 0.1, "r5")
    access.flush()

    async def scenario() -> None:  # batched: the lines made directly
        access("GET", "/e", 200, 0.1, "r5")
        await asyncio.sleep(0)

    asyncio.run(scenario())
    structlog.get_logger("memdb.http").warning("still.written")
    assert [json.loads(line)["event"] for line in output.lines()] == ["still.written"]


# -- configure_logging -------------------------------------------------------


def test_configure_keeps_the_batching_unless_told(output: Stream) -> None:
    configure_logging(level="info")
    assert OUTPUT.batched is True
    configure_logging(level="info", batched=False)
    assert OUTPUT.batched is False


def test_configure_writes_to_the_stdout_of_the_moment(
    output: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    later = Stream()
    structlog.get_logger("t").warning("before")
    monkeypatch.setattr("sys.stdout", later)
    configure_logging()
    structlog.get_logger("t").warning("after")
    assert [json.loads(line)["event"] for line in output.lines()] == ["before"]
    assert [json.loads(line)["event"] for line in later.lines()] == ["after"]


def test_standard_library_records_use_the_same_writer(output: Stream) -> None:
    import logging

    logging.getLogger("uvicorn.error").warning("from the standard library")
    (event,) = map(json.loads, output.lines())
    assert event["event"] == "from the standard library"
    assert event["level"] == "warning"
    assert event["logger"] == "uvicorn.error"


# -- the timestamp ---------------------------------------------------------


def test_the_timestamp_is_rfc3339_utc_with_microseconds_and_now() -> None:
    stamp = applog._Timestamp()
    before = datetime.now(timezone.utc)
    first = stamp(None, "info", {})["timestamp"]
    second = stamp(None, "info", {})["timestamp"]
    after = datetime.now(timezone.utc)
    for value in (first, second):
        assert STAMP.fullmatch(value), value
        moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=timezone.utc
        )
        assert before.replace(microsecond=0) <= moment <= after
    assert first <= second


def test_the_timestamp_formats_each_second_anew(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stamp = applog._Timestamp()
    moments = iter([1_700_000_000.25, 1_700_000_000.5, 1_700_000_001.75])
    monkeypatch.setattr(clock.time, "time", lambda: next(moments))
    values = [stamp(None, "info", {})["timestamp"] for _ in range(3)]
    assert values == [
        "2023-11-14T22:13:20.250000Z",
        "2023-11-14T22:13:20.500000Z",
        "2023-11-14T22:13:21.750000Z",
    ]


def test_batched_access_lines_are_the_lines_structlog_renders(output: Stream) -> None:
    """The lines of a loop turn are made directly; the keys, their order and
    the values are those of the structlog event written outside a loop."""
    access = AccessLog(structlog.get_logger("memdb.http"))
    access("PUT", "/f/{id}", 412, 0.75, "r6")  # outside a loop: structlog's line

    async def scenario() -> None:
        access("PUT", "/f/{id}", 412, 0.75, "r6")
        await asyncio.sleep(0)

    asyncio.run(scenario())
    direct, made = output.lines()
    assert (
        list(json.loads(made))
        == list(json.loads(direct))
        == [
            "method",
            "route",
            "status",
            "duration_ms",
            "request_id",
            "event",
            "level",
            "timestamp",
        ]
    )
    assert {**json.loads(made), "timestamp": ""} == {
        **json.loads(direct),
        "timestamp": "",
    }
    assert STAMP.fullmatch(json.loads(made)["timestamp"])


def test_bound_context_variables_reach_batched_access_lines(output: Stream) -> None:
    access = AccessLog(structlog.get_logger("memdb.http"))

    async def scenario() -> None:
        structlog.contextvars.bind_contextvars(tenant="t1")
        try:
            access("GET", "/g", 200, 0.1, "r7")
            await asyncio.sleep(0)
        finally:
            structlog.contextvars.clear_contextvars()

    asyncio.run(scenario())
    assert [e.get("tenant") for e in _access_lines(output)] == ["t1"]


def test_console_lines_keep_structlog_rendering(output: Stream) -> None:
    configure_logging(level="info", fmt="console")
    OUTPUT.stream = output  # configure_logging takes the stdout of the moment
    access = AccessLog(structlog.get_logger("memdb.http"))

    async def scenario() -> None:
        access("GET", "/h", 200, 0.1, "r8")
        await asyncio.sleep(0)

    asyncio.run(scenario())
    (line,) = output.lines()
    assert "http.request" in line and "request_id=r8" in line
    assert not line.startswith("{")
