"""The change feed against a real server: Server-Sent Events over HTTP, order
and completeness under concurrent writers with reconnects, a clean end on
SIGTERM, and what idle and stalled followers cost."""

from __future__ import annotations

import random
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import orjson
import pytest

from tests.e2e.conftest import Server
from tests.redis_servers import CannotStart, must_run, standalone, unique_prefix

pytestmark = pytest.mark.e2e

SSE = {"Accept": "text/event-stream"}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The events of an SSE stream: ``{"event", "id", "data"}`` each."""
    fields: dict[str, Any] = {}
    for line in lines:
        if line == "":
            if "data" in fields:
                fields["data"] = orjson.loads(fields["data"])
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


def head(server: Server) -> str:
    with server.client() as client:
        answer = client.get("/api/v1/changes", params={"since": "now"})
    return answer.headers["x-changes-cursor"]


def commit_order(server: Server, since: str) -> list[str]:
    """The store's own order of every change after ``since``."""
    cursors: list[str] = []
    with server.client() as client:
        while True:
            answer = client.get(
                "/api/v1/changes", params={"since": since, "limit": 10_000}
            )
            assert answer.status_code == 200
            lines = answer.text.splitlines()
            cursors += [orjson.loads(line)["cursor"] for line in lines]
            since = answer.headers["x-changes-cursor"]
            if not lines:
                return cursors


def follow_while_writing(server: Server, writers: int = 16) -> dict[str, Any]:
    """``writers`` threads create, patch and delete while one follower reads
    the stream, hanging up at random points and resuming with Last-Event-ID as
    a browser's EventSource does. What the follower got, the store's own
    order, the follower's reconnects and the workers (request-id prefixes)
    that answered the writes."""
    start = head(server)
    done = threading.Event()
    final: list[str] = [""]
    got: list[str] = []
    reconnects = 0
    workers: set[str] = set()
    rng = random.Random(7)

    def follow() -> None:
        nonlocal reconnects
        last = start
        # a quiet stream times out after a second: the follower then checks
        # whether it has everything, and reconnects if not
        timeout = httpx.Timeout(10, read=1)
        with httpx.Client(base_url=server.url, timeout=timeout) as client:
            while not (done.is_set() and last == final[0]):
                quota = rng.randint(1, 120)
                headers = {**SSE, "Last-Event-ID": last}
                try:
                    with client.stream(
                        "GET", "/api/v1/changes", headers=headers
                    ) as answer:
                        assert answer.status_code == 200
                        for event in sse_events(answer.iter_lines()):
                            assert event["id"] == event["data"]["cursor"]
                            got.append(event["id"])
                            last = event["id"]
                            quota -= 1
                            if quota == 0:
                                reconnects += 1
                                break
                except httpx.ReadTimeout:
                    pass

    def write(n: int) -> None:
        # a connection a request: the kernel hands each to whichever worker
        # accepts first, so that several workers write
        with server.client(headers={"Connection": "close"}) as client:
            for k in range(40):
                rid = f"w{n}-{k}"
                made = client.post("/api/v1/data/load", json={"data": {"id": rid}})
                assert made.status_code == 201
                workers.add(made.headers["x-request-id"][:20])
                if k % 3 == 0:
                    client.patch(f"/api/v1/data/load/{rid}", json={"data": {"k": k}})
                if k % 5 == 0:
                    client.delete(f"/api/v1/data/load/{rid}")

    follower = threading.Thread(target=follow)
    follower.start()
    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    order = commit_order(server, start)
    final[0] = order[-1]
    done.set()
    follower.join(timeout=60)
    assert not follower.is_alive()
    return {"got": got, "order": order, "reconnects": reconnects, "workers": workers}


def test_a_follower_with_reconnects_gets_every_change_once_in_commit_order(
    server_factory: Callable[..., Server],
) -> None:
    result = follow_while_writing(server_factory())
    assert len(result["order"]) == 16 * (40 + 14 + 8)
    assert result["got"] == result["order"]  # no gap, none twice, commit order
    assert result["reconnects"] >= 5


def test_four_workers_on_redis_give_one_order_to_every_follower(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    """Writes answered by four worker processes, followed through any of them:
    one order, every change once."""
    try:
        redis = standalone(tmp_path / "redis")
    except CannotStart as exc:
        if must_run():
            raise
        pytest.skip(f"redis-server cannot start: {exc}")
    try:
        server = server_factory(
            MEMDB_STORE="redis",
            MEMDB_REDIS_URL=redis.url,
            MEMDB_REDIS_PREFIX=unique_prefix(),
            MEMDB_WORKERS="4",
        )
        result = follow_while_writing(server)
        assert len(result["order"]) == 16 * (40 + 14 + 8)
        assert result["got"] == result["order"]
        assert result["reconnects"] >= 5
        assert len(result["workers"]) >= 2, result["workers"]
    finally:
        redis.stop()


def test_sigterm_ends_every_stream_with_a_resume_event(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory()
    ends: list[dict[str, Any]] = []
    opened = threading.Barrier(4)

    def follow() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            with client.stream(
                "GET", "/api/v1/changes?since=now", headers=SSE
            ) as answer:
                opened.wait()
                for event in sse_events(answer.iter_lines()):
                    if event.get("event") == "resume":
                        ends.append(event["data"])

    followers = [threading.Thread(target=follow) for _ in range(3)]
    for follower in followers:
        follower.start()
    opened.wait(timeout=10)
    time.sleep(0.2)
    began = time.monotonic()
    assert server.terminate() == 0
    took = time.monotonic() - began
    for follower in followers:
        follower.join(timeout=10)
    assert [e["reason"] for e in ends] == ["the service is stopping"] * 3
    assert took < 5, took  # the streams did not hold the graceful shutdown open


def _open_followers(url: str, count: int, *, read: bool) -> list[socket.socket]:
    host, port = url.removeprefix("http://").split(":")
    request = (
        f"GET /api/v1/changes?since=now HTTP/1.1\r\nHost: {host}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()
    opened = []
    for _ in range(count):
        sock = socket.socket()
        if not read:  # a client that never reads: a small window
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        sock.sendall(request)
        opened.append(sock)
    return opened


def _followers_now(server: Server) -> int:
    with server.client() as client:
        text = client.get("/metrics").text
    for line in text.splitlines():
        if line.startswith("memdb_change_followers "):
            return int(float(line.split()[1]))
    raise AssertionError("no memdb_change_followers in /metrics")


def _wait_followers(
    server: Server, done: Callable[[int], bool], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not done(now := _followers_now(server)):
        assert time.monotonic() < deadline, now
        time.sleep(0.05)


def test_a_thousand_idle_followers_cost_little(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory(MEMDB_MAX_SUBSCRIBERS="1000")
    pid = server.process.pid
    before = rss_kib(pid)
    sockets = _open_followers(server.url, 1000, read=True)
    try:
        _wait_followers(server, lambda n: n >= 1000, 30)
        grown = rss_kib(pid) - before
        # one more is refused, with the envelope
        with server.client() as client:
            refused = client.get("/api/v1/changes?since=now", headers=SSE)
            assert refused.status_code == 503
            # and a write reaches every follower
            client.post("/api/v1/data/notes", json={"data": {"id": "hello"}})
        for sock in sockets[::100]:
            sock.settimeout(5)
            seen = b""
            while b'"hello"' not in seen:
                seen += sock.recv(65536)
        print(f"1,000 idle followers: RSS +{grown / 1024:.1f} MiB")
        assert grown < 64 * 1024, grown  # about 64 KiB a follower at most
    finally:
        for sock in sockets:
            sock.close()


def test_stalled_followers_are_let_go_and_memory_stays_bounded(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory(MEMDB_CHANGES_SEND_TIMEOUT_S="1")
    pid = server.process.pid
    stalled = _open_followers(server.url, 10, read=False)
    try:
        _wait_followers(server, lambda n: n >= 10, 10)
        before = rss_kib(pid)
        big = {"id": "", "text": "x" * 20_000}
        peak = before
        with server.client() as client:
            for n in range(400):
                made = client.post(
                    "/api/v1/data/big", json={"data": {**big, "id": f"b{n}"}}
                )
                assert made.status_code == 201
                if n % 50 == 0:
                    peak = max(peak, rss_kib(pid))
            _wait_followers(server, lambda n: n == 0, 15)
        peak = max(peak, rss_kib(pid))
        # 400 records of 20 KB are 8 MB stored; ten stalled followers would
        # have buffered 80 MB more had they been given a buffer of their own
        print(
            f"10 stalled followers under writes: RSS +{(peak - before) / 1024:.1f} MiB"
        )
        assert peak - before < 40 * 1024
        # let go without a word: no error line for a client that stopped reading
        time.sleep(1.5)  # past the second the last message is given
        errors = [e for e in server.events() if e.get("level") == "error"]
        assert errors == [], errors
    finally:
        for sock in stalled:
            sock.close()
