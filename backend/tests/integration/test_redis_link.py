"""How the Redis store reaches Redis: the multiplexed connection of a standalone
server (``storage/wire.py``) against real servers (plain, with a password, on a
Unix socket, over TLS) and against fake ones that stall, close or answer
nonsense; and ``MEMDB_REDIS_WAIT_REPLICAS``, whose ``WAIT`` must follow the
write on its connection to mean anything."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, TypeVar

import hiredis
import pytest
from redis import exceptions as redis_errors

from app.storage.wire import Address, Wire
from tests.conftest import USER
from tests.redis_servers import (
    HOST,
    CannotStart,
    RedisServer,
    cluster,
    free_port,
    must_run,
    standalone,
)

T = TypeVar("T")
# each test starts the servers it needs: run once, not once per backend
pytestmark = pytest.mark.memory_only


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def started(start: Callable[[], T]) -> T:
    """A server for this test, or a skip saying why it cannot start (never in CI)."""
    try:
        return start()
    except CannotStart as exc:
        if must_run():
            raise
        pytest.skip(str(exc))


@pytest.fixture
def server(standalone_up: RedisServer) -> RedisServer:
    return standalone_up


def key() -> str:
    return f"wire:{uuid.uuid4().hex}"


# -- a real server --------------------------------------------------------------


def test_commands_and_pipelines_get_their_replies(server: RedisServer) -> None:
    async def go() -> None:
        wire = Wire(server.url, timeout=2)
        k = key()
        assert await wire.call("SET", k, "1") == b"OK"
        assert await wire.calls([("INCR", k), ("INCRBY", k, 5), ("GET", k)]) == [
            2,
            7,
            b"7",
        ]
        assert await wire.call("GET", key()) is None
        await wire.close()

    run(go())


def test_concurrent_callers_each_get_their_own_reply(server: RedisServer) -> None:
    """Hundreds of commands in flight on one connection, each reply to its caller."""

    async def go() -> None:
        wire = Wire(server.url, timeout=5)
        prefix = key()

        async def one(i: int) -> tuple[bytes, bytes]:
            await wire.call("SET", f"{prefix}:{i}", f"v{i}")
            got = await wire.call("GET", f"{prefix}:{i}")
            pair = await wire.calls([("ECHO", f"a{i}"), ("ECHO", f"b{i}")])
            assert pair == [f"a{i}".encode(), f"b{i}".encode()]
            return got, f"v{i}".encode()

        for got, wanted in await asyncio.gather(*(one(i) for i in range(500))):
            assert got == wanted
        await wire.close()

    run(go())


def test_an_error_reply_raises_and_the_connection_goes_on(server: RedisServer) -> None:
    async def go() -> None:
        wire = Wire(server.url, timeout=2)
        k = key()
        await wire.call("SET", k, "text")
        with pytest.raises(redis_errors.ResponseError, match="not an integer"):
            await wire.call("INCR", k)
        with pytest.raises(redis_errors.ResponseError, match="not an integer"):
            await wire.calls([("GET", k), ("INCR", k), ("ECHO", "after")])
        with pytest.raises(redis_errors.NoScriptError):
            await wire.call("EVALSHA", "0" * 40, 0)
        assert await wire.call("ECHO", "still") == b"still"
        await wire.close()

    run(go())


def test_a_closed_wire_opens_again_on_the_next_call(server: RedisServer) -> None:
    async def go() -> None:
        wire = Wire(server.url, timeout=2)
        assert await wire.call("PING") == b"PONG"
        await wire.close()
        assert await wire.call("PING") == b"PONG"
        await wire.close()

    run(go())


def test_a_server_out_of_reach_is_a_connection_error() -> None:
    port = free_port()

    async def go() -> None:
        wire = Wire(f"redis://{HOST}:{port}/0", timeout=1)
        with pytest.raises(redis_errors.ConnectionError, match=f"{HOST}:{port}"):
            await wire.call("PING")

    run(go())


def test_login_and_database_from_the_url(tmp_path: Path) -> None:
    secured = started(lambda: standalone(tmp_path, password="s3cret-pw"))
    try:

        async def go() -> None:
            good = Wire(f"redis://:s3cret-pw@{HOST}:{secured.port}/3", timeout=2)
            await good.call("SET", "in-three", "yes")
            await good.close()
            bad = Wire(f"redis://:wrong-pw@{HOST}:{secured.port}/0", timeout=2)
            with pytest.raises(redis_errors.AuthenticationError) as refused:
                await bad.call("PING")
            assert "wrong-pw" not in str(refused.value)
            assert "refused the login" in str(refused.value)
            user = Wire(f"redis://default:s3cret-pw@{HOST}:{secured.port}/0", timeout=2)
            assert await user.call("GET", "in-three") is None  # database 0
            await user.close()

        run(go())
        assert secured.cli("-n", "3", "GET", "in-three") == "yes"
    finally:
        secured.stop()


def test_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "redis.sock"
    local = started(
        lambda: standalone(
            tmp_path, "--unixsocket", str(path), "--unixsocketperm", "700"
        )
    )
    try:

        async def go() -> None:
            wire = Wire(f"unix://{path}?db=2", timeout=2)
            await wire.call("SET", "over-the-socket", "1")
            await wire.close()

        run(go())
        assert local.cli("-n", "2", "GET", "over-the-socket") == "1"
    finally:
        local.stop()


def test_tls(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert(HOST, "localhost")
    ca_path, cert_path, key_path = (tmp_path / n for n in ("ca.pem", "c.pem", "k.pem"))
    ca.cert_pem.write_to_path(str(ca_path))
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    tls_port = free_port()
    secure = started(
        lambda: standalone(
            tmp_path,
            *("--tls-port", str(tls_port), "--tls-cert-file", str(cert_path)),
            *("--tls-key-file", str(key_path), "--tls-ca-cert-file", str(ca_path)),
            *("--tls-auth-clients", "no"),
        )
    )
    try:

        async def go() -> None:
            trusted = Wire(
                f"rediss://{HOST}:{tls_port}/0?ssl_ca_certs={ca_path}", timeout=2
            )
            assert await trusted.call("PING") == b"PONG"
            await trusted.close()
            unknown_ca = Wire(f"rediss://{HOST}:{tls_port}/0", timeout=2)
            with pytest.raises(redis_errors.ConnectionError, match="cannot reach"):
                await unknown_ca.call("PING")
            unchecked = Wire(
                f"rediss://{HOST}:{tls_port}/0?ssl_cert_reqs=none", timeout=2
            )
            assert await unchecked.call("PING") == b"PONG"
            await unchecked.close()

        run(go())
    finally:
        secure.stop()


def test_addresses_never_show_the_password() -> None:
    address = Address.of("redis://user:hunter2@db.example:6380/4")
    assert (address.host, address.port, address.db) == ("db.example", 6380, 4)
    assert (address.username, address.password) == ("user", "hunter2")
    assert "hunter2" not in str(address)
    assert str(Address.of("unix:///run/redis.sock")) == "unix:///run/redis.sock"
    with pytest.raises(ValueError, match="ssl_cert_reqs"):
        Address.of("rediss://h:1/0?ssl_cert_reqs=sometimes")


# -- fake servers ---------------------------------------------------------------

Handler = Callable[[list[Any], asyncio.StreamWriter], Awaitable[None]]


async def fake_server(handle: Handler) -> tuple[asyncio.AbstractServer, str]:
    """A server that reads RESP commands and lets ``handle`` answer each."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader()
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                while (command := parser.gets()) is not False:
                    await handle(command, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    found = await asyncio.start_server(serve, HOST, 0)
    port = found.sockets[0].getsockname()[1]
    return found, f"redis://{HOST}:{port}/0"


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def test_a_silent_server_times_out_every_waiting_command_then_reconnects() -> None:
    behaviour = {"silent": True}

    async def handle(command: list[Any], writer: asyncio.StreamWriter) -> None:
        if not behaviour["silent"]:
            writer.write(bulk(command[-1]))

    async def go() -> None:
        fake, url = await fake_server(handle)
        wire = Wire(url, timeout=0.3)
        began = time.monotonic()
        outcomes = await asyncio.gather(
            *(wire.call("ECHO", f"x{i}") for i in range(20)), return_exceptions=True
        )
        waited = time.monotonic() - began
        assert all(isinstance(o, redis_errors.TimeoutError) for o in outcomes)
        assert "did not answer within 0.3 s" in str(outcomes[0])
        assert 0.25 <= waited < 3.0
        behaviour["silent"] = False
        assert await wire.call("ECHO", "back") == b"back"
        await wire.close()
        fake.close()

    run(go())


def test_a_connection_that_closes_fails_its_commands_then_reconnects() -> None:
    seen = {"commands": 0}

    async def handle(command: list[Any], writer: asyncio.StreamWriter) -> None:
        seen["commands"] += 1
        if seen["commands"] == 1:
            writer.close()  # the server goes away with the command unanswered
            return
        writer.write(bulk(command[-1]))

    async def go() -> None:
        fake, url = await fake_server(handle)
        wire = Wire(url, timeout=2)
        with pytest.raises(redis_errors.ConnectionError, match="closed"):
            await wire.call("ECHO", "lost")
        assert await wire.call("ECHO", "again") == b"again"
        await wire.close()
        fake.close()

    run(go())


def test_nonsense_from_the_server_breaks_the_connection() -> None:
    async def handle(command: list[Any], writer: asyncio.StreamWriter) -> None:
        writer.write(b"?what\r\n")

    async def go() -> None:
        fake, url = await fake_server(handle)
        wire = Wire(url, timeout=2)
        with pytest.raises(redis_errors.ConnectionError, match="bad reply"):
            await wire.call("PING")
        fake.close()

    run(go())


def test_a_reply_nobody_asked_for_breaks_the_connection() -> None:
    async def handle(command: list[Any], writer: asyncio.StreamWriter) -> None:
        writer.write(bulk(command[-1]) * 2)

    async def go() -> None:
        fake, url = await fake_server(handle)
        wire = Wire(url, timeout=2)
        # the first reply answers; the second has no caller and ends the connection
        outcome = await asyncio.gather(
            wire.call("ECHO", "one"), asyncio.sleep(0.1), return_exceptions=True
        )
        assert outcome[0] == b"one"
        assert await wire.call("ECHO", "two") == b"two"  # on a new connection
        fake.close()

    run(go())


def test_a_caller_that_gives_up_does_not_shift_the_replies() -> None:
    async def handle(command: list[Any], writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.05)
        writer.write(bulk(command[-1]))

    async def go() -> None:
        fake, url = await fake_server(handle)
        wire = Wire(url, timeout=2)
        first = asyncio.ensure_future(wire.call("ECHO", "first"))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(wire.call("ECHO", "second"))
        first.cancel()
        assert await second == b"second"
        assert await wire.call("ECHO", "third") == b"third"
        await wire.close()
        fake.close()

    run(go())


# -- MEMDB_REDIS_WAIT_REPLICAS -----------------------------------------------------


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    """A master and one replica in sync with it."""
    master = started(lambda: standalone(tmp_path / "master"))
    replica: RedisServer | None = None
    try:
        replica = started(
            lambda: standalone(
                tmp_path / "replica", "--replicaof", HOST, str(master.port)
            )
        )
        deadline = time.monotonic() + 20
        while "master_link_status:up" not in replica.cli("info", "replication"):
            assert time.monotonic() < deadline, "the replica never synced"
            time.sleep(0.05)
        yield master, replica
    finally:
        if replica is not None:
            resume(replica)
            replica.stop()
        master.stop()


def pause(server: RedisServer) -> None:
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)


def resume(server: RedisServer) -> None:
    if server.process is not None and server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)


def test_writes_wait_for_the_replica_and_say_so_when_it_lags(
    replicated: tuple[RedisServer, RedisServer], client_factory: Any
) -> None:
    master, replica = replicated
    client = client_factory(
        store="redis",
        redis_url=master.url,
        redis_prefix=f"w{uuid.uuid4().hex[:8]}",
        redis_wait_replicas=1,
        # WAIT gets half of it: room for a replica on a loaded machine
        redis_timeout=2.0,
    )
    made = client.post("/api/v1/data/notes", json={"data": {"n": 1}})
    assert made.status_code == 201
    note = made.json()["id"]
    assert (
        client.put(f"/api/v1/data/notes/{note}", json={"data": {"n": 2}}).status_code
        == 200
    )
    assert (
        client.post("/api/v1/tables/notes/indexes", json={"field": "n"}).status_code
        == 201
    )
    assert client.post("/api/v1/data/users", json={"data": USER}).status_code == 201

    pause(replica)  # connected, but it acknowledges nothing any more
    try:
        began = time.monotonic()
        lagging = client.post("/api/v1/data/notes", json={"data": {"n": 3}})
        assert lagging.status_code == 503
        body = lagging.json()["error"]
        assert body["code"] == "store_unavailable"
        assert "only 0 of 1 replicas" in body["message"]
        assert time.monotonic() - began < 5
        changed = client.put(f"/api/v1/data/notes/{note}", json={"data": {"n": 4}})
        assert changed.status_code == 503
        assert client.delete(f"/api/v1/data/notes/{note}").status_code == 503
        # a refused write waits for nothing and is refused as usual
        assert client.delete("/api/v1/data/notes/no-such").status_code == 404
        # the delete was made, only not confirmed; a read does not wait
        assert client.get(f"/api/v1/data/notes/{note}").status_code == 404
    finally:
        resume(replica)
    # the 503 said "made but not confirmed": the writes are there, and replicated
    listed = client.get("/api/v1/data/notes").json()
    assert [r["n"] for r in listed["items"]] == [3]
    assert client.post("/api/v1/data/notes", json={"data": {"n": 5}}).status_code == 201


def test_a_cluster_write_waits_on_the_connection_it_was_made_on(
    tmp_path: Path, client_factory: Any
) -> None:
    nodes = started(lambda: cluster(tmp_path, masters=3, replicas=1))
    try:
        client = client_factory(
            store="redis",
            redis_url=nodes.url,
            redis_cluster=True,
            redis_prefix=f"w{uuid.uuid4().hex[:8]}",
            redis_wait_replicas=1,
            # WAIT gets half of it: room for a replica on a loaded machine
            redis_timeout=2.0,
        )
        made = client.post("/api/v1/data/notes", json={"data": {"n": 1}})
        assert made.status_code == 201, made.text
        note = made.json()["id"]
        assert (
            client.patch(
                f"/api/v1/data/notes/{note}", json={"data": {"n": 2}}
            ).status_code
            == 200
        )
        for replica in [n for n in nodes.nodes if n not in nodes.masters()]:
            pause(replica)
        try:
            lagging = client.post("/api/v1/data/notes", json={"data": {"n": 3}})
            assert lagging.status_code == 503
            assert "replicas" in lagging.json()["error"]["message"]
        finally:
            for node in nodes.nodes:
                resume(node)
        assert (
            client.post("/api/v1/data/notes", json={"data": {"n": 4}}).status_code
            == 201
        )
    finally:
        nodes.stop()


# -- scans: two steps a batch, one when records leave meanwhile ----------------------


def _notes(count: int, start: int = 0) -> list[dict[str, Any]]:
    stamp = "2026-01-01T00:00:00+00:00"
    return [
        {"id": f"n{i:04d}", "n": i, "created_at": stamp, "updated_at": stamp}
        for i in range(start, start + count)
    ]


def _store(server: RedisServer) -> Any:
    from app.schemas.builtin import BUILTIN_RULES
    from app.storage.redis import RedisStore

    return RedisStore(
        url=server.url, prefix=f"s{uuid.uuid4().hex[:8]}", rules=BUILTIN_RULES
    )


def test_a_scan_reads_each_record_once_while_records_leave_and_come_back(
    server: RedisServer,
) -> None:
    """Deletes between batches send the scan through its one-step path; a
    record deleted and made again under its id (a new sequence) is read once."""

    async def go() -> list[str]:
        store = _store(server)
        await store.open()
        await store.insert("notes", _notes(100))
        scan = await store.scan("notes")
        seen: list[str] = []
        async for batch in scan.batches(16):
            seen += [r["id"] for r in batch]
            if len(seen) == 16:
                await store.delete("notes", "n0090")  # not read yet: gone
                await store.delete("notes", "n0050")  # made again: read once
                await store.insert("notes", _notes(1, start=50))
                await store.delete("notes", "n0003")  # read already
            if len(seen) == 48:
                await store.delete("notes", "n0070")
        await store.drop("notes")
        await store.close()
        return seen

    seen = run(go())
    assert len(seen) == len(set(seen)), "a record was read twice"
    assert "n0090" not in seen and "n0070" not in seen
    wanted = {f"n{i:04d}" for i in range(100)} - {"n0090", "n0070"}
    assert set(seen) == wanted
    assert seen[-1] == "n0050"  # at its new place in insertion order


@pytest.mark.parametrize("how", ["drop", "drop and make again", "delete then drop"])
def test_a_scan_of_a_table_dropped_meanwhile_ends(
    server: RedisServer, how: str
) -> None:
    async def go() -> list[str]:
        store = _store(server)
        await store.open()
        await store.insert("notes", _notes(100))
        scan = await store.scan("notes")
        seen: list[str] = []
        async for batch in scan.batches(16):
            seen += [r["id"] for r in batch]
            if len(seen) == 16 and how == "delete then drop":
                await store.delete("notes", "n0099")
            elif len(seen) == 16 or (len(seen) == 32 and how == "delete then drop"):
                await store.drop("notes")
                if how == "drop and make again":
                    await store.insert("notes", _notes(5, start=500))
        await store.close()
        return seen

    seen = run(go())
    assert seen[:16] == [f"n{i:04d}" for i in range(16)]
    assert len(seen) == len(set(seen)) < 100
    assert not {f"n{i:04d}" for i in range(500, 505)} & set(seen)


def test_a_redis_at_its_maxmemory_refuses_writes_with_507(
    tmp_path: Path, client_factory: Any
) -> None:
    """``maxmemory`` with ``noeviction`` is the hard bound README suggests:
    reaching it is 507 ``insufficient_storage`` saying so (it was a 500), and
    reads and deletes go on."""
    full = started(
        lambda: RedisServer(
            free_port(),
            tmp_path / "full",
            extra=["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"],
        ).start()
    )
    try:
        client = client_factory(
            store="redis", redis_url=full.url, redis_prefix=f"f{uuid.uuid4().hex[:8]}"
        )
        assert (
            client.post("/api/v1/data/fill", json={"data": {"id": "r0"}}).status_code
            == 201
        )
        refused = None
        for n in range(1, 400):
            body = {"data": {"id": f"r{n}", "b": "x" * 30_000}}
            answer = client.post("/api/v1/data/fill", json=body)
            if answer.status_code != 201:
                refused = answer
                break
        assert refused is not None, "Redis never filled up"
        assert refused.status_code == 507, refused.text
        error = refused.json()["error"]
        assert error["code"] == "insufficient_storage"
        assert "maxmemory" in error["message"]
        assert client.get("/api/v1/data/fill/r0").status_code == 200
        assert client.delete("/api/v1/data/fill/r1").status_code == 204
    finally:
        full.stop()
