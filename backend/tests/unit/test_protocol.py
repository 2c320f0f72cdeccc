"""app.core.protocol: uvicorn's httptools protocol writing each answer in one
system call: the same bytes in the same order, in fewer writes; and its bounds
on slow clients, the sweep driven by hand."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import uvicorn
from uvicorn.server import ServerState

from app.core.protocol import (
    JOIN_BYTES,
    SWEEP_S,
    SWEEPERS,
    HttpProtocol,
    OneWrite,
    ServerConfig,
    Sweeper,
)

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class Wire:
    """A transport that records each write (one write is one system call)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )


def run(steps: Any) -> Wire:
    wire = Wire()

    async def main() -> None:
        transport = OneWrite(wire, asyncio.get_running_loop())  # type: ignore[arg-type]
        await steps(transport)

    asyncio.run(main())
    return wire


def test_the_head_goes_with_the_body_in_one_write() -> None:
    async def steps(t: OneWrite) -> None:
        t.write(HEAD)
        t.write(b"{}")
        await asyncio.sleep(0)

    assert run(steps).writes == [HEAD + b"{}"]


def test_a_head_alone_goes_at_the_end_of_the_loop_turn() -> None:
    async def steps(t: OneWrite) -> None:
        t.write(HEAD)
        assert t.transport.writes == []  # type: ignore[attr-defined]
        await asyncio.sleep(0)
        assert t.transport.writes == [HEAD]  # type: ignore[attr-defined]
        t.write(b"late")  # a stream's next piece is written as it comes

    assert run(steps).writes == [HEAD, b"late"]


def test_a_long_body_is_written_after_the_head_not_copied() -> None:
    body = b"x" * (JOIN_BYTES + 1)

    async def steps(t: OneWrite) -> None:
        t.write(HEAD)
        t.write(body)

    assert run(steps).writes == [HEAD, body]


def test_other_writes_pass_at_once_and_close_sends_what_is_held() -> None:
    async def steps(t: OneWrite) -> None:
        t.write(b"0\r\n\r\n")
        t.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        t.write(HEAD)  # the interim answer, then the answer: in order
        t.write(b"{}")
        t.write(HEAD)
        t.close()
        assert t.is_closing()

    wire = run(steps)
    assert wire.writes == [
        b"0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
        HEAD,
    ]
    assert wire.closed


def test_reading_is_paused_and_resumed_on_the_transport() -> None:
    async def steps(t: OneWrite) -> None:
        t.pause_reading()
        assert not t.transport.reading  # type: ignore[attr-defined]
        t.resume_reading()
        assert t.get_extra_info("peername") == ("127.0.0.1", 50000)

    run(steps)


async def small(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b'{"ok":true}'
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def serve(request: bytes) -> list[bytes]:
    """uvicorn's protocol on a recorded wire: the writes one request makes."""
    wire = Wire()

    async def main() -> None:
        config = uvicorn.Config(small, http=HttpProtocol, log_config=None)
        config.load()
        protocol = HttpProtocol(config, ServerState(), {}, asyncio.get_running_loop())
        protocol.connection_made(wire)  # type: ignore[arg-type]
        protocol.data_received(request)
        for _ in range(20):
            await asyncio.sleep(0)
        protocol.connection_lost(None)

    asyncio.run(main())
    return wire.writes


def test_uvicorn_answers_a_get_in_one_write() -> None:
    writes = serve(b"GET /x HTTP/1.1\r\nhost: t\r\n\r\n")
    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes[0].endswith(b'\r\n\r\n{"ok":true}')


def test_uvicorn_answers_a_head_with_its_head_alone() -> None:
    writes = serve(b"HEAD /x HTTP/1.1\r\nhost: t\r\n\r\n")
    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes[0].endswith(b"content-length: 11\r\n\r\n")


# -- the bounds on slow clients ------------------------------------------------


async def reader(scope: Any, receive: Any, send: Any) -> None:
    """Reads the whole body, then answers; records what ``receive`` gave."""
    if scope["type"] != "http":
        return
    while True:
        message = await receive()
        READ.append(message["type"])
        if message["type"] == "http.disconnect" or not message["more_body"]:
            break
    if READ[-1] == "http.disconnect":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"ok"})


READ: list[str] = []


class Connection:
    """One connection of a server with 1 s bounds, looked at by hand: ``look(t)``
    is the sweep at time ``t``."""

    def __init__(self, app: Any = reader) -> None:
        self.wire = Wire()
        config = ServerConfig(
            app, http=HttpProtocol, log_config=None, header_timeout=1, body_timeout=1
        )
        config.load()
        state = ServerState()
        self.protocol = HttpProtocol(config, state, {}, asyncio.get_running_loop())
        self.protocol.connection_made(self.wire)  # type: ignore[arg-type]
        self.sweeper = SWEEPERS[state]

    def send(self, data: bytes) -> None:
        self.protocol.data_received(data)

    def look(self, now: float) -> bool:
        """The sweep at ``now``: whether the connection is still open."""
        self.protocol.look(now, self.sweeper)
        if self.wire.closed:
            self.protocol.connection_lost(None)
        return not self.wire.closed

    def answer(self) -> tuple[int, dict[str, Any]]:
        head, _, body = b"".join(self.wire.writes).partition(b"\r\n\r\n")
        assert b"connection: close" in head
        return int(head.split()[1]), orjson.loads(body)


async def turns(count: int = 20) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def on_loop(test: Any) -> None:
    asyncio.run(test())


def test_the_sweep_runs_at_most_every_half_second_and_at_a_quarter_timeout() -> None:
    async def test() -> None:
        loop = asyncio.get_running_loop()
        assert Sweeper(loop, set(), 10, 20).every == SWEEP_S == 0.5
        assert Sweeper(loop, set(), 1, 20).every == 0.25
        assert Sweeper(loop, set(), 10, 0.4).every == 0.1

    on_loop(test)


def test_a_head_must_arrive_within_its_timeout_of_its_first_byte() -> None:
    async def test() -> None:
        c = Connection()
        c.send(b"GET /x HTTP/1.1\r\nX-Request-Id: mine\r\n")
        assert c.look(10.0)
        c.send(b"Host: t\r\n")  # more of the head does not restart the clock
        assert c.look(10.9)
        assert not c.look(11.0)
        status, body = c.answer()
        assert status == 408
        assert body["error"]["code"] == "request_timeout"
        assert body["error"]["request_id"] == "mine"

    on_loop(test)


def test_a_connection_that_sends_nothing_is_closed_without_an_answer() -> None:
    async def test() -> None:
        c = Connection()
        assert c.look(0.0) and c.look(0.99)
        assert not c.look(1.0)
        assert c.wire.writes == []

    on_loop(test)


def test_a_body_may_pause_no_longer_than_its_timeout() -> None:
    async def test() -> None:
        READ.clear()
        c = Connection()
        c.send(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab")
        await turns()
        assert c.look(0.0)
        c.send(b"cd")  # a piece restarts the clock
        await turns()
        assert c.look(1.0) and c.look(1.75)
        assert not c.look(2.0)
        await turns()
        status, body = c.answer()
        assert status == 408 and body["error"]["code"] == "request_timeout"
        assert READ[-1] == "http.disconnect"  # the request task saw it and ended

    on_loop(test)


def test_a_body_read_in_time_is_answered() -> None:
    async def test() -> None:
        READ.clear()
        c = Connection()
        c.send(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nab")
        await turns()
        assert c.look(0.0)
        c.send(b"cd")
        await turns()
        assert c.wire.writes[-1].endswith(b"\r\n\r\nok")
        # answered: uvicorn's keep-alive timer runs, the sweep waits for nothing
        assert c.look(5.0) and c.look(50.0)
        c.protocol.connection_lost(None)

    on_loop(test)


async def waits_without_reading(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await asyncio.sleep(3600)


def test_no_clock_runs_while_the_app_has_not_asked_for_the_body() -> None:
    """A client waiting for ``100 Continue`` waits for the app, not the reverse."""

    async def test() -> None:
        c = Connection(waits_without_reading)
        c.send(
            b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        await turns()
        assert c.look(0.0) and c.look(5.0)
        c.protocol.connection_lost(None)

    on_loop(test)


def test_line_ends_after_an_answer_do_not_hold_the_connection() -> None:
    """They stop uvicorn's keep-alive timer; the header timeout closes it."""

    async def test() -> None:
        c = Connection(small)
        c.send(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
        await turns()
        c.send(b"\r\n")
        assert c.protocol.timeout_keep_alive_task is None
        written = len(c.wire.writes)
        assert c.look(0.0) and c.look(0.5)
        assert not c.look(1.0)
        assert len(c.wire.writes) == written  # nothing more written

    on_loop(test)
