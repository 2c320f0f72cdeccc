"""app.core.protocol: uvicorn's httptools protocol writing each answer in one
system call: the same bytes in the same order, in fewer writes."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from app.core.protocol import JOIN_BYTES, HttpProtocol, OneWrite

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
