"""How the Redis store talks to Redis: the same few calls over a standalone
server (one multiplexed connection, ``wire.py``) or a Cluster (redis-py's
cluster client, which routes each command to the node of its key's slot).

Replies are Redis's own, except that redis-py's cluster client reads a few
(``HGETALL`` as a dict, ``ZRANGE ... WITHSCORES`` as pairs, ``PING`` as
``True``); ``pairs`` and ``scored`` read both forms.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, Awaitable, Mapping, Protocol, Sequence

from redis import exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster

from app.storage.wire import Command, Wire


class Link(Protocol):
    async def call(self, *args: Any) -> Any:
        """One command's reply."""

    async def calls(self, commands: Sequence[Command]) -> list[Any]:
        """Several commands' replies (one round trip to each server concerned)."""

    def start(self, commands: Sequence[Command]) -> Awaitable[list[Any]]:
        """``calls``, already on its way: the caller awaits the replies later."""

    async def script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one of the store's scripts."""

    async def script_then_wait(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[Any],
        replicas: int,
        timeout_ms: int,
    ) -> tuple[Any, int]:
        """Run a script, then ``WAIT`` on the same connection: its reply and
        how many replicas have the write."""

    async def prepare(self) -> None:
        """Have Redis know the scripts before the first request runs one."""

    async def close(self) -> None: ...


def pairs(reply: Any) -> dict[Any, Any]:
    """An ``HGETALL`` reply as a dict."""
    if isinstance(reply, Mapping):
        return dict(reply)
    return dict(zip(reply[0::2], reply[1::2]))


def scored(reply: Any) -> list[Any]:
    """A ``ZRANGE ... WITHSCORES`` reply as ``[member, score, ...]`` (redis-py's
    cluster client reads it as pairs)."""
    if reply and isinstance(reply[0], (list, tuple)):
        return [part for pair in reply for part in pair]
    return list(reply)


def _sha(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()


class WireLink:
    """A standalone Redis, through one multiplexed connection."""

    def __init__(self, url: str, *, timeout: float, sources: Mapping[str, str]) -> None:
        self.wire = Wire(url, timeout=timeout)
        self.sources = dict(sources)
        self.shas = {name: _sha(source) for name, source in sources.items()}

    async def call(self, *args: Any) -> Any:
        return await self.wire.call(*args)

    async def calls(self, commands: Sequence[Command]) -> list[Any]:
        return await self.wire.calls(commands)

    def start(self, commands: Sequence[Command]) -> Awaitable[list[Any]]:
        return self.wire.start(commands)

    def _eval(
        self, name: str, keys: Sequence[str], args: Sequence[Any], *, cached: bool
    ) -> Command:
        how = ("EVALSHA", self.shas[name]) if cached else ("EVAL", self.sources[name])
        return (*how, len(keys), *keys, *args)

    async def script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await self.wire.call(*self._eval(name, keys, args, cached=True))
        except redis_errors.NoScriptError:  # a restarted or flushed Redis
            return await self.wire.call(*self._eval(name, keys, args, cached=False))

    async def script_then_wait(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[Any],
        replicas: int,
        timeout_ms: int,
    ) -> tuple[Any, int]:
        wait = ("WAIT", replicas, timeout_ms)
        try:
            found, acked = await self.wire.calls(
                [self._eval(name, keys, args, cached=True), wait]
            )
        except redis_errors.NoScriptError:
            found, acked = await self.wire.calls(
                [self._eval(name, keys, args, cached=False), wait]
            )
        return found, int(acked)

    async def prepare(self) -> None:
        await self.wire.calls([("SCRIPT", "LOAD", s) for s in self.sources.values()])

    async def close(self) -> None:
        await self.wire.close()


class ClusterLink:
    """A Redis or Valkey Cluster, through redis-py's cluster client."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        pool_size: int,
        sources: Mapping[str, str],
    ) -> None:
        self.client = RedisCluster.from_url(
            url,
            max_connections=pool_size,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        self.sources = dict(sources)
        self.scripts = {n: self.client.register_script(s) for n, s in sources.items()}

    async def call(self, *args: Any) -> Any:
        return await self.client.execute_command(*args)

    async def calls(self, commands: Sequence[Command]) -> list[Any]:
        async with self.client.pipeline() as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute())

    def start(self, commands: Sequence[Command]) -> Awaitable[list[Any]]:
        task = asyncio.ensure_future(self.calls(commands))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    async def script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self.scripts[name](keys=list(keys), args=list(args))

    async def script_then_wait(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[Any],
        replicas: int,
        timeout_ms: int,
    ) -> tuple[Any, int]:
        """On one connection of the node that holds the keys' slot (``WAIT``
        counts the replicas that have that connection's writes)."""
        await self.client.initialize()
        node = self.client.get_node_from_key(keys[0])
        if node is None:
            raise redis_errors.ClusterDownError("no node serves the slot")
        connection = node.acquire_connection()
        try:
            await connection.send_packed_command(
                connection.pack_commands(
                    [
                        ("EVAL", self.sources[name], len(keys), *keys, *args),
                        ("WAIT", replicas, timeout_ms),
                    ]
                )
            )
            found = await connection.read_response()
            acked = await connection.read_response()
        except redis_errors.AskError:  # MOVED or ASK: the slot is elsewhere now
            await connection.disconnect()
            await self.client.nodes_manager.initialize()
            raise redis_errors.ClusterDownError("the slot moved; try again") from None
        except BaseException:
            await connection.disconnect()  # replies may be left on it
            raise
        finally:
            node.release(connection)
        return found, int(acked)

    async def prepare(self) -> None:
        """Nothing: each node learns a script the first time it runs it."""

    async def close(self) -> None:
        await self.client.aclose()
