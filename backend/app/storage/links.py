"""How the Redis store talks to Redis: the same few calls over a standalone
server (one multiplexed connection, ``wire.py``) or a Cluster (redis-py's
cluster client, which routes each command to the node of its key's slot).

Replies are Redis's own, except that redis-py's cluster client reads a few
(``HGETALL`` as a dict, ``ZRANGE ... WITHSCORES`` as pairs, ``PING`` as
``True``); ``pairs`` and ``scored`` read both forms.

A call over a Cluster ends within the timeout, whatever redis-py's client does
meanwhile. That client tries a command again after a broken connection or a
``CLUSTERDOWN``, reading the slot map again first: by default 10 times, with a
0.25 s pause after each ``CLUSTERDOWN`` (about 3 s before the answer), and each
try may wait the whole socket timeout for a node out of reach. Here it tries
once more, and the call is cut off at the timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, Awaitable, Mapping, Protocol, Sequence, TypeVar

from redis import exceptions as redis_errors
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app.storage.wire import Command, Wire

T = TypeVar("T")
# how many times redis-py's cluster client tries a command again after a
# broken connection or CLUSTERDOWN (re-reading the slot map first): once finds
# a replica promoted since the last command
_CLUSTER_RETRIES = 1
# redis-py's words when it cannot read the slot map (a Cluster out of reach):
# not an error of the command, whatever the exception's class says
_NO_SLOT_MAP = (
    "Redis Cluster cannot be connected",
    "All slots are not covered",
    "startup_nodes could not agree",
)


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

    async def health(self) -> str | None:
        """``None`` when Redis can serve every key now, else why not."""

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

    async def health(self) -> str | None:
        await self.wire.call("PING")
        return None

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
            retry=Retry(NoBackoff(), _CLUSTER_RETRIES),
        )
        self.timeout = timeout
        self.sources = dict(sources)
        self.scripts = {n: self.client.register_script(s) for n, s in sources.items()}

    async def _bounded(self, call: Awaitable[T]) -> T:
        """``call``'s reply, or ``TimeoutError`` once the timeout has passed
        (redis-py closes a connection whose reply was still awaited); a slot
        map that cannot be read is ``ClusterDownError``."""
        try:
            async with asyncio.timeout(self.timeout):
                return await call
        except TimeoutError:
            raise redis_errors.TimeoutError(
                f"the Cluster did not answer within {self.timeout:g} s"
            ) from None
        except redis_errors.RedisClusterException as exc:
            if str(exc).startswith(_NO_SLOT_MAP):  # no node answers, say
                raise redis_errors.ClusterDownError(str(exc)) from None
            raise

    async def call(self, *args: Any) -> Any:
        return await self._bounded(self.client.execute_command(*args))

    async def calls(self, commands: Sequence[Command]) -> list[Any]:
        return await self._bounded(self._calls(commands))

    async def _calls(self, commands: Sequence[Command]) -> list[Any]:
        async with self.client.pipeline() as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return list(await pipe.execute())

    def start(self, commands: Sequence[Command]) -> Awaitable[list[Any]]:
        task = asyncio.ensure_future(self.calls(commands))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    async def script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._bounded(self.scripts[name](keys=list(keys), args=list(args)))

    async def script_then_wait(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[Any],
        replicas: int,
        timeout_ms: int,
    ) -> tuple[Any, int]:
        return await self._bounded(
            self._script_then_wait(name, keys, args, replicas, timeout_ms)
        )

    async def _script_then_wait(
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

    async def health(self) -> str | None:
        """Every master of the slot map answers ``CLUSTER INFO`` and says
        ``cluster_state:ok`` (one round trip to each master, side by side).
        When one does not, the map is read again once (a replica may have
        been promoted since) and the masters asked again."""
        return await self._bounded(self._health())

    async def _health(self) -> str | None:
        try:
            await self.client.initialize()
            problem = await self._masters_ok()
            if problem is not None:
                await self.client.nodes_manager.initialize()
                problem = await self._masters_ok()
        except redis_errors.RedisClusterException as exc:  # no node answers
            return str(exc) or "no Cluster node can be reached"
        return problem

    async def _masters_ok(self) -> str | None:
        masters = self.client.get_primaries()
        if not masters:
            return "the Cluster has no master"
        replies = await asyncio.gather(
            *(_cluster_state(node) for node in masters), return_exceptions=True
        )
        for node, reply in zip(masters, replies):
            if isinstance(reply, BaseException):
                if isinstance(reply, (asyncio.CancelledError, KeyboardInterrupt)):
                    raise reply
                reason = str(reply).strip() or type(reply).__name__
                return f"the Cluster master {node.name} cannot be reached: {reason}"
            if reply != "ok":
                return f"the Cluster master {node.name} says cluster_state:{reply}"
        return None

    async def close(self) -> None:
        await self.client.aclose()


async def _cluster_state(node: ClusterNode) -> str:
    """``cluster_state`` as ``node`` sees it (``ok`` or ``fail``)."""
    reply = await node.execute_command("CLUSTER INFO")
    if isinstance(reply, Mapping):
        state = reply.get("cluster_state", "")
    else:  # the raw text, ``field:value`` lines
        text = reply.decode() if isinstance(reply, bytes) else str(reply)
        found = [ln for ln in text.splitlines() if ln.startswith("cluster_state:")]
        state = found[0].partition(":")[2] if found else ""
    return (state.decode() if isinstance(state, bytes) else str(state)).strip()
