"""uvicorn's httptools protocol, writing each answer in one system call.

uvicorn writes an answer's status line and headers as soon as the app sends
``http.response.start``, and its body with the next message: two writes, so
two ``send`` calls and two TCP segments on a connection with ``TCP_NODELAY``
(about 7 us of CPU each over loopback, a tenth of a GET by id). Here the
transport the protocol writes through holds the head until the body's first
write and writes both at once; a head with no body written in the same turn
of the event loop (``HEAD``, a stream that is still working) goes out at the
end of that turn, alone. The bytes on the wire, and their order, are the same.

It also bounds slow clients (slowloris), as nginx's ``client_header_timeout``
and ``client_body_timeout`` do: a request's head (request line and headers)
must arrive whole within ``header_timeout`` seconds of its first byte, and a
body must not pause for more than ``body_timeout`` seconds between two pieces.
Past either, the connection is closed, after a 408 ``request_timeout`` when a
request had begun and nothing of its answer was written; a request task
waiting on the body sees a disconnect. A connection that sends nothing (or
only line ends after an answer) is closed after ``header_timeout`` without a
word. No timer is set per request: one sweep every half second (a quarter of
the shorter timeout if less) looks at each connection of the server and
compares what it waits for with the last look, so a timeout is met within one
sweep after it passes and a request without a body runs no code of this.
Idle keep-alive connections are closed by uvicorn's own
``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import structlog
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from app.core.handlers import error_body
from app.core.middleware import sanitise_request_id

log = structlog.get_logger("memdb.http")

HEAD = b"HTTP/1.1 "
# a body longer than this is written after the head rather than copied to it
JOIN_BYTES = 64 * 1024
# the bounds on slow clients (MEMDB_HEADER_TIMEOUT_S, MEMDB_BODY_TIMEOUT_S)
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 20.0
# the longest time between two looks at the connections
SWEEP_S = 0.5


class OneWrite:
    """A transport that joins an answer's head to the first write after it."""

    __slots__ = ("transport", "loop", "held")

    def __init__(
        self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.transport = transport
        self.loop = loop
        self.held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self.held
        if data[:9] == HEAD:  # an interim answer's head is held with the next
            if held is None:
                self.loop.call_soon(self.flush)
                self.held = data
            else:
                self.held = held + data
        elif held is None:
            self.transport.write(data)
        else:
            self.held = None
            if len(data) <= JOIN_BYTES:
                self.transport.write(held + data)
                return
            self.transport.write(held)
            self.transport.write(data)

    def flush(self) -> None:
        held = self.held
        if held is not None:
            self.held = None
            self.transport.write(held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    # the calls uvicorn makes for every request, passed on without a lookup
    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class ServerConfig(uvicorn.Config):
    """uvicorn's settings and the service's bounds on slow clients, in seconds.

    A plain attribute of the config, so that it goes with it to the worker
    processes (``MEMDB_WORKERS``)."""

    def __init__(
        self,
        app: Any,
        *,
        header_timeout: float = HEADER_TIMEOUT_S,
        body_timeout: float = BODY_TIMEOUT_S,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout


class Sweeper:
    """The one timer of a server's slow-client bounds: every ``every`` seconds,
    while connections are open, each one is looked at (``HttpProtocol.look``)."""

    __slots__ = (
        "loop",
        "connections",
        "header_timeout",
        "body_timeout",
        "every",
        "handle",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        connections: set[Any],
        header_timeout: float,
        body_timeout: float,
    ) -> None:
        self.loop = loop
        self.connections = connections
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        # a stalled connection is closed within a quarter of its timeout (at
        # most SWEEP_S) after the timeout
        self.every = min(SWEEP_S, header_timeout / 4, body_timeout / 4)
        self.handle: asyncio.TimerHandle | None = None

    def wake(self) -> None:
        if self.handle is None:
            self.handle = self.loop.call_later(self.every, self.sweep)

    def sweep(self) -> None:
        self.handle = None
        now = self.loop.time()
        for connection in list(self.connections):
            if isinstance(connection, HttpProtocol):
                connection.look(now, self)
        if self.connections:
            self.wake()


# one sweeper for each server (its state: its connections)
SWEEPERS: weakref.WeakKeyDictionary[ServerState, Sweeper] = weakref.WeakKeyDictionary()


def sweeper_of(
    server_state: ServerState, config: uvicorn.Config, loop: asyncio.AbstractEventLoop
) -> Sweeper:
    sweeper = SWEEPERS.get(server_state)
    if sweeper is None:
        header = getattr(config, "header_timeout", HEADER_TIMEOUT_S)
        body = getattr(config, "body_timeout", BODY_TIMEOUT_S)
        sweeper = Sweeper(loop, server_state.connections, header, body)
        SWEEPERS[server_state] = sweeper
    return sweeper


def timeout_answer(request_id: str, message: str) -> bytes:
    """408 ``request_timeout`` in the contract's envelope, closing the connection."""
    body = error_body(code="request_timeout", message=message, request_id=request_id)
    return b"".join(
        [
            STATUS_LINE[408],
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"x-request-id: " + request_id.encode() + b"\r\n",
            b"x-content-type-options: nosniff\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class HttpProtocol(HttpToolsProtocol):
    """httptools' protocol over a :class:`OneWrite` transport, with the bounds
    on slow clients."""

    # what the connection waited for at the last look that it still waits for
    # (see ``look``), since when, and the pieces of a body received
    stalled: object = None
    stalled_pieces = 0
    stalled_since = 0.0
    pieces = 0

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(OneWrite(transport, self.loop))  # type: ignore[arg-type]
        sweeper_of(self.server_state, self.config, self.loop).wake()

    def on_body(self, body: bytes) -> None:
        self.pieces += 1
        super().on_body(body)

    def waiting(self, sweeper: Sweeper) -> tuple[object, float]:
        """What the connection waits for from its client, and for how long it
        may wait: ``(None, 0)`` when it waits for nothing (an answer is being
        made or written, uvicorn's keep-alive timer runs, the app has not read
        the body yet). The object changes when the wait is a new one."""
        scope = self.scope
        cycle = self.cycle
        if scope is None:  # a new connection: its first request's head
            return self, sweeper.header_timeout
        if "method" not in scope:  # a request's head, from its first byte
            return scope, sweeper.header_timeout
        if cycle is None or cycle.response_complete:
            if self.timeout_keep_alive_task is not None or self.pipeline:
                return None, 0.0
            # bytes came after the last answer (line ends, the rest of a body
            # answered early) and stopped uvicorn's keep-alive timer
            return scope, sweeper.header_timeout
        if (
            cycle.more_body
            and not cycle.waiting_for_100_continue
            and not self.flow.read_paused
        ):
            return cycle, sweeper.body_timeout
        return None, 0.0

    def look(self, now: float, sweeper: Sweeper) -> None:
        """One look of the sweep: a wait that has lasted its timeout ends."""
        if self.transport.is_closing():
            return
        waited, timeout = self.waiting(sweeper)
        if waited is None:
            self.stalled = None
        elif waited is not self.stalled or self.pieces != self.stalled_pieces:
            self.stalled = waited
            self.stalled_pieces = self.pieces
            self.stalled_since = now
        elif now - self.stalled_since >= timeout:
            self.time_out(waited)

    def time_out(self, waited: object) -> None:
        """Answer 408 when nothing of an answer was written on this connection
        for the request, then close it; a request task sees a disconnect."""
        scope = self.scope
        cycle = self.cycle
        answer: bytes | None = None
        request_id: str | None = None
        if waited is self.cycle:
            what = "body"
            request_id = scope.get("state", {}).get("request_id")
            if not cycle.response_started:
                answer = timeout_answer(
                    request_id or sanitise_request_id(None),
                    "the request's body stopped arriving; send it without pauses",
                )
        else:
            what = "head"
            begun = waited is scope and "method" not in scope
            if begun and (cycle is None or cycle.response_complete):
                client_id = dict(self.headers or ()).get(b"x-request-id", b"")
                answer = timeout_answer(
                    sanitise_request_id(client_id.decode("latin-1")),
                    "the request's headers did not arrive in time",
                )
        log.info(
            "request.timeout",
            waited_for=what,
            answered=answer is not None,
            request_id=request_id,
        )
        if answer is not None:
            self.transport.write(answer)
        self.transport.close()
