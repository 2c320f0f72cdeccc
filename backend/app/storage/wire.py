"""One multiplexed connection to a standalone Redis or Valkey, per event loop.

Every command a worker sends goes down one connection: the commands that
concurrent requests issue in the same turn of the event loop leave in one
write, and the replies come back in the order the commands went, so each reply
resolves the oldest waiting command. A request's command costs a few
microseconds of the worker's time this way (hiredis packs and parses); through
a pooled client it costs about ten times that, which is most of what a GET over
Redis costs (ADR 0011). It also keeps a write and the ``WAIT`` that follows it
on one connection, which ``WAIT`` needs to mean anything.

A command not answered within the timeout breaks the connection: every command
waiting on it fails with ``ConnectionError`` (the store answers 503), and the
next command opens a new connection. So does a connection that closes.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from dataclasses import dataclass
from typing import Any, Sequence

import hiredis
from redis import exceptions as redis_errors
from redis.asyncio.connection import SSLConnection, parse_url

Command = Sequence[Any]

_CERT_REQS = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


@dataclass(frozen=True)
class Address:
    """Where a Redis URL points, and how to log in there."""

    host: str = "localhost"
    port: int = 6379
    path: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None

    @classmethod
    def of(cls, url: str) -> Address:
        """``redis://``, ``rediss://`` (TLS; ``ssl_cert_reqs``, ``ssl_ca_certs``,
        ``ssl_certfile``, ``ssl_keyfile``, ``ssl_check_hostname`` in the query)
        or ``unix://``, as redis-py reads them."""
        options: dict[str, Any] = dict(parse_url(url))
        tls = None
        if options.get("connection_class") is SSLConnection:
            tls = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
            wanted = str(options.get("ssl_cert_reqs") or "required").lower()
            if wanted not in _CERT_REQS:
                raise ValueError(f"ssl_cert_reqs is one of {sorted(_CERT_REQS)}")
            check = options.get("ssl_check_hostname")
            tls.check_hostname = wanted != "none" and check is not False
            tls.verify_mode = _CERT_REQS[wanted]
            if options.get("ssl_certfile"):
                tls.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
        return cls(
            host=str(options.get("host") or "localhost"),
            port=int(options.get("port") or 6379),
            path=str(options.get("path") or ""),
            db=int(options.get("db") or 0),
            username=options.get("username") or None,
            password=options.get("password") or None,
            tls=tls,
        )

    def __str__(self) -> str:  # never the password
        return f"unix://{self.path}" if self.path else f"{self.host}:{self.port}"


def reply_error(reply: hiredis.ReplyError) -> redis_errors.RedisError:
    """The redis-py error for an error reply (the store reads them the same
    way from either client)."""
    text = str(reply)
    if text.startswith("NOSCRIPT"):
        return redis_errors.NoScriptError(text)
    if text.startswith("LOADING"):
        return redis_errors.BusyLoadingError(text)
    if text.startswith("READONLY"):
        return redis_errors.ReadOnlyError(text)
    if text.startswith("MASTERDOWN"):
        return redis_errors.MasterDownError(text)
    return redis_errors.ResponseError(text)


class _Connection(asyncio.Protocol):
    """The protocol of one connection: commands out, replies matched in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.reader = hiredis.Reader()
        self.waiting: collections.deque[tuple[asyncio.Future[Any], float]] = (
            collections.deque()
        )
        self.out: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.broken: BaseException | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.flushing = False

    # -- the transport's calls ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(redis_errors.ConnectionError(f"bad reply from Redis: {exc}"))
                return
            if reply is False:
                return
            if not self.waiting:  # a reply nobody asked for: the stream is lost
                self.fail(redis_errors.ConnectionError("an unexpected reply"))
                return
            future, _ = self.waiting.popleft()
            if not future.done():  # its caller may have given up (cancelled)
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(redis_errors.ConnectionError("the connection to Redis closed"))

    # -- the wire's calls ---------------------------------------------------------

    def send(self, commands: Sequence[Command]) -> list[asyncio.Future[Any]]:
        if self.broken is not None:
            raise self.broken
        deadline = self.loop.time() + self.timeout
        futures = []
        for command in commands:
            self.out.append(hiredis.pack_command(tuple(command)))
            future = self.loop.create_future()
            self.waiting.append((future, deadline))
            futures.append(future)
        if not self.flushing:
            self.flushing = True
            self.loop.call_soon(self.flush)
        if self.timer is None:
            self.timer = self.loop.call_at(deadline, self.check)
        return futures

    def flush(self) -> None:
        self.flushing = False
        out, self.out = self.out, []
        if out and self.broken is None and self.transport is not None:
            self.transport.writelines(out)

    def check(self) -> None:
        """The oldest command waits past its deadline: the connection is lost."""
        self.timer = None
        if not self.waiting:
            return
        deadline = self.waiting[0][1]
        if deadline <= self.loop.time():
            self.fail(
                redis_errors.TimeoutError(
                    f"Redis did not answer within {self.timeout:g} s"
                )
            )
            return
        self.timer = self.loop.call_at(deadline, self.check)

    def fail(self, exc: BaseException) -> None:
        """Every waiting command fails; the connection is not used again."""
        if self.broken is None:
            self.broken = exc
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: a caller gone is not an error
        if self.transport is not None:
            self.transport.abort()

    @property
    def usable(self) -> bool:
        return self.broken is None and self.transport is not None


def _read_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def _replies(sent: Sequence[asyncio.Future[Any]]) -> list[Any]:
    replies = await asyncio.gather(*sent)
    for reply in replies:
        if isinstance(reply, hiredis.ReplyError):
            raise reply_error(reply)
    return replies


class Wire:
    """Commands to one Redis, multiplexed on one connection (module docstring).
    Belongs to the event loop it is first used on."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.address = Address.of(url)
        self.timeout = timeout
        self._connection: _Connection | None = None
        self._opening: asyncio.Task[_Connection] | None = None

    async def call(self, *args: Any) -> Any:
        """One command's reply; an error reply raises."""
        connection = await self._ready()
        reply = await connection.send((args,))[0]
        if isinstance(reply, hiredis.ReplyError):
            raise reply_error(reply)
        return reply

    async def calls(self, commands: Sequence[Command]) -> list[Any]:
        """The replies of commands sent together, in order; the first error
        reply raises (after every reply has arrived)."""
        connection = await self._ready()
        return await _replies(connection.send(commands))

    def start(self, commands: Sequence[Command]) -> asyncio.Future[list[Any]]:
        """``calls``, with the commands on their way before this returns (not
        at the end of this turn of the loop), so that Redis works on them
        while the caller goes on."""
        connection = self._connection
        if connection is None or not connection.usable:
            future = asyncio.ensure_future(self.calls(commands))
        else:
            sent = connection.send(commands)
            connection.flush()
            future = asyncio.ensure_future(_replies(sent))
        future.add_done_callback(_read_outcome)
        return future

    async def close(self) -> None:
        if self._opening is not None:
            self._opening.cancel()
            self._opening = None
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.fail(redis_errors.ConnectionError("the store closed"))

    async def _ready(self) -> _Connection:
        connection = self._connection
        if connection is not None and connection.usable:
            return connection
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
            # its error is read by its callers; with none left, read here
            self._opening.add_done_callback(_read_outcome)
        opening = self._opening
        try:
            # shielded: a caller that gives up does not abort the others' wait
            return await asyncio.shield(opening)
        finally:
            if opening.done() and self._opening is opening:
                self._opening = None

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        address = self.address

        def made() -> _Connection:
            return _Connection(loop, self.timeout)

        try:
            if address.path:
                opened = loop.create_unix_connection(made, address.path)
            else:
                opened = loop.create_connection(
                    made, address.host, address.port, ssl=address.tls
                )
            _, connection = await asyncio.wait_for(opened, self.timeout)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            reason = str(exc) or type(exc).__name__
            raise redis_errors.ConnectionError(
                f"cannot reach Redis at {address}: {reason}"
            ) from None
        hello: list[Command] = []
        if address.password is not None:
            login = (address.username, address.password)
            hello.append(("AUTH", *(x for x in login if x is not None)))
        if address.db:
            hello.append(("SELECT", address.db))
        if hello:
            replies = await asyncio.gather(*connection.send(hello))
            for reply in replies:
                if isinstance(reply, hiredis.ReplyError):
                    connection.fail(redis_errors.ConnectionError("login refused"))
                    raise redis_errors.AuthenticationError(
                        f"Redis at {address} refused the login: {reply}"
                    )
        self._connection = connection
        return connection
