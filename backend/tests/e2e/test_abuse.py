"""The abuse suite: each attack on a real server while a second process times
``GET /health`` every 100 ms and samples the server's RSS.

An attack may be refused, but throughout it ``/health`` answers within 250 ms,
no answer is a 5xx (the one attack on the heavy cap may see its designed 503
``busy``), and the server's RSS grows by less than 256 MB. The reproductions
of the review come first, then attacks of the same kind. Each attack's figures
(worst ``/health`` latency, RSS growth, answers by status) are collected and,
when ``MEMDB_ABUSE_REPORT`` names a file, written there as JSON (``make abuse``
writes ``backend/scripts/abuse-result.json``).

The server runs with the defaults of ``make run`` (argon2 at full cost too).
Every loop is bounded; only 127.0.0.1 is used.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import orjson
import pytest

from tests.e2e.conftest import BACKEND, HOST, Server, server_environment, start_server

pytestmark = pytest.mark.e2e

HEALTH_BOUND_S = 0.25
RSS_BOUND = 256 * 1024 * 1024
API = "/api/v1"
JSON = {"Content-Type": "application/json"}
REPORT: dict[str, dict[str, Any]] = {}


@dataclass
class Attack:
    """What one attack saw: the status of every answer it got."""

    name: str
    statuses: Counter[int] = field(default_factory=Counter)
    allowed_5xx: frozenset[int] = frozenset()
    notes: dict[str, Any] = field(default_factory=dict)

    def saw(self, response: httpx.Response) -> httpx.Response:
        self.statuses[response.status_code] += 1
        return response


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    full_cost = {
        "MEMDB_ARGON2_TIME_COST": "3",
        "MEMDB_ARGON2_MEMORY_KIB": "65536",
        "MEMDB_ARGON2_PARALLELISM": "4",
    }
    started = start_server(tmp_path_factory.mktemp("abuse"), **full_cost)
    yield started
    started.stop()
    report = os.environ.get("MEMDB_ABUSE_REPORT")
    if report:
        Path(report).write_text(json.dumps(REPORT, indent=2) + "\n")


@contextmanager
def watched(
    server: Server, name: str, allowed_5xx: frozenset[int] = frozenset()
) -> Iterator[Attack]:
    """Run the block as one attack, watched by the probe; then check the bounds."""
    out = Path(server.log_path).with_name(f"probe-{name}.json")
    probe = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.e2e.abuse_probe",
            server.url,
            str(server.process.pid),
            str(out),
        ],
        cwd=BACKEND,
        env=server_environment(),
    )
    time.sleep(0.5)  # a few samples of the quiet server first
    attack = Attack(name, allowed_5xx=allowed_5xx)
    started = time.perf_counter()
    try:
        yield attack
    finally:
        attack.notes["attack_seconds"] = round(time.perf_counter() - started, 2)
        time.sleep(0.3)
        probe.send_signal(signal.SIGTERM)
        probe.wait(timeout=30)
    seen = json.loads(out.read_text())
    worst = max(seen["latencies"])
    growth = max(seen["rss"]) - seen["rss"][0]
    REPORT[name] = {
        "worst_health_ms": round(worst * 1000, 1),
        "health_probes": len(seen["latencies"]),
        "rss_growth_mb": round(growth / 2**20, 1),
        "statuses": {str(k): v for k, v in sorted(attack.statuses.items())},
        **attack.notes,
    }
    assert server.process.poll() is None, "the server died"
    assert seen["failures"] == 0, REPORT[name]
    assert worst < HEALTH_BOUND_S, REPORT[name]
    assert growth < RSS_BOUND, REPORT[name]
    errors = {s for s in attack.statuses if s >= 500} - set(allowed_5xx)
    assert not errors, REPORT[name]


def lasting(seconds: float = 2.0, most: int = 500) -> Iterator[int]:
    """Rounds of an attack until it has lasted ``seconds`` (at most ``most``)."""
    deadline = time.monotonic() + seconds
    for round_ in range(most):
        yield round_
        if time.monotonic() > deadline:
            return


def client(server: Server, timeout: float = 60.0) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=timeout)


def bulk(http: httpx.Client, table: str, items: list[dict[str, Any]]) -> None:
    for start in range(0, len(items), 1000):
        response = http.post(
            f"{API}/data/{table}", json={"data": items[start : start + 1000]}
        )
        assert response.status_code == 201, response.text[:300]


def in_threads(count: int, work: Callable[[int], None]) -> None:
    with ThreadPoolExecutor(max_workers=count) as pool:
        for future in [pool.submit(work, n) for n in range(count)]:
            future.result(timeout=120)


# -- the review's findings, reproduced --------------------------------------------


def test_1_like_backtracking(server: Server) -> None:
    with client(server) as http:
        for size in (400, 5000, 60_000):
            http.post(f"{API}/data/texts", json={"data": {"s": "a" * size}})
        patterns = ("%a%a%a%a%b", "%a" * 100 + "%b", "_%" * 120 + "b")
        with watched(server, "like_backtracking") as attack:
            for _, pattern in ((r, p) for r in lasting() for p in patterns):
                for op in ("like", "ilike"):
                    response = attack.saw(
                        http.get(f"{API}/data/texts", params={f"s__{op}": pattern})
                    )
                    assert response.status_code == 200
                    assert response.json()["total"] == 0
            too_long = attack.saw(
                http.get(f"{API}/data/texts", params={"s__like": "%" * 300})
            )
            assert too_long.status_code == 400


def test_2_join_amplification(server: Server) -> None:
    with client(server) as http:
        bulk(http, "jl", [{"k": 1}] * 5000)
        bulk(http, "jr", [{"k": 1}] * 5000)
        with watched(server, "join_amplification") as attack:

            def join(_: int) -> None:
                response = attack.saw(http.get(f"{API}/join/jl/jr/k"))
                assert response.status_code == 400
                error = response.json()["error"]
                assert error["code"] == "query_too_costly"
                assert error["details"][0]["rows"] == 25_000_000

            in_threads(3, join)
            for _, offset in (
                (r, o) for r in lasting() for o in (0, 12_500_000, 24_999_000)
            ):
                page = attack.saw(
                    http.get(
                        f"{API}/join/jl/jr/k",
                        params={"limit": "1000", "offset": str(offset)},
                    )
                )
                assert page.status_code == 200 and page.json()["count"] == 1000
            whole_page = attack.saw(
                http.get(f"{API}/join/jl/jr/k", params={"limit": "25000000"})
            )
            assert whole_page.status_code == 400  # the work budget ends it


def test_3_many_filters(server: Server) -> None:
    with client(server) as http:
        with watched(server, "many_filters") as attack:
            for _ in lasting():
                query = "&".join(["k__ne=2"] * 8000)
                response = attack.saw(http.get(f"{API}/data/jl?{query}"))
                assert response.status_code == 414
                query = "&".join(["k__ne=2"] * 32)
                response = attack.saw(http.get(f"{API}/data/jl?{query}&limit=5"))
                assert response.status_code == 200 and response.json()["total"] == 5000
                assert len(response.headers.get("link", "")) < 4096
                response = attack.saw(http.get(f"{API}/data/jl?{query}&k__ne=3"))
                assert response.status_code == 400


def test_4_nested_literal(server: Server) -> None:
    with client(server) as http:
        with watched(server, "nested_literal") as attack:
            for _, depth in ((r, d) for r in lasting() for d in (255, 500, 4000)):
                value = "[" * depth + "]" * depth
                for param in ("x", "x__in", "x__ne"):
                    status = attack.saw(
                        http.get(f"{API}/data/jl", params={param: value})
                    ).status_code
                    assert status in (400, 414)


def test_5_stats_on_large_values(server: Server) -> None:
    with client(server) as http:
        big = orjson.dumps({"data": {"arr": [7] * 250_000}})
        for _ in range(64):
            response = http.post(f"{API}/data/arrays", content=big, headers=JSON)
            assert response.status_code == 201
        with watched(server, "stats_on_large_values") as attack:
            started = time.perf_counter()
            scrapes = 0
            for _ in lasting():
                assert attack.saw(http.get(f"{API}/stats")).status_code == 200
                assert attack.saw(http.get("/metrics")).status_code == 200
                scrapes += 1
            per_pair = (time.perf_counter() - started) / scrapes
            attack.notes["stats_and_metrics_ms"] = round(per_pair * 1000, 2)


def test_6_tables_are_not_free(server: Server) -> None:
    with client(server) as http:
        # 507 is the designed answer past MEMDB_MAX_TABLES
        with watched(server, "free_tables", allowed_5xx=frozenset({507})) as attack:

            def empties(n: int) -> None:
                with client(server) as own:
                    for i in range(500):
                        response = attack.saw(
                            own.post(f"{API}/data/e{n}_{i}", json={"data": []})
                        )
                        assert response.status_code == 422

            in_threads(4, empties)
            tables = len(http.get(f"{API}/tables").json())
            made = 0
            for batch in range(6):
                payload = {f"t{batch}_{i}": [{"id": "x"}] for i in range(2000)}
                response = attack.saw(http.post(f"{API}/import", json=payload))
                assert response.status_code in (200, 507)
                made += 2000 if response.status_code == 200 else 0
            assert made + tables <= 10_000
            assert response.status_code == 507
            metrics = attack.saw(http.get("/metrics")).text
            attack.notes["metrics_lines"] = len(metrics.splitlines())
            assert len(metrics.splitlines()) < 500


def test_7_import_checks_before_it_hashes(server: Server) -> None:
    user = {"full_name": "A", "password": "securepass123"}
    with client(server) as http:
        http.post(
            f"{API}/data/users", json={"data": {**user, "email": "taken@example.com"}}
        )
        with watched(server, "import_hashing") as attack:
            users = [
                {**user, "id": f"n{i}", "email": f"n{i}@example.com"} for i in range(99)
            ]
            users.append({**user, "id": "dup", "email": "taken@example.com"})
            started = time.perf_counter()
            assert (
                attack.saw(
                    http.post(f"{API}/import", json={"users": users})
                ).status_code
                == 409
            )
            attack.notes["duplicate_409_ms"] = round(
                (time.perf_counter() - started) * 1000, 1
            )
            many = [
                {**user, "id": f"m{i}", "email": f"m{i}@example.com"}
                for i in range(5000)
            ]
            response = attack.saw(http.post(f"{API}/import", json={"users": many}))
            assert response.status_code == 422
            assert "MEMDB_MAX_PASSWORDS" in response.json()["error"]["message"]
            response = attack.saw(
                http.post(f"{API}/data/users", json={"data": many[:1000]})
            )
            assert response.status_code == 422
    # checked before any hash: 99 full-cost hashes would take seconds
    assert REPORT["import_hashing"]["duplicate_409_ms"] < 2000


def test_8_one_mailbox_two_spellings(server: Server) -> None:
    with client(server) as http:
        with watched(server, "email_spellings") as attack:
            pairs = [
                ("cafe\u0301@example.com", "caf\u00e9@example.com"),
                ("u@bücher.de", "u@xn--bcher-kva.de"),
            ]
            for first, second in pairs:
                created = attack.saw(
                    http.post(
                        f"{API}/data/users",
                        json={"data": {"email": first, "full_name": "A"}},
                    )
                )
                assert created.status_code == 201
                again = attack.saw(
                    http.post(
                        f"{API}/data/users",
                        json={"data": {"email": second, "full_name": "B"}},
                    )
                )
                assert again.status_code == 409


def test_9_clients_that_hang_up_mid_body(server: Server) -> None:
    def counts(http: httpx.Client) -> tuple[int, int]:
        stats = http.get(f"{API}/stats").json()["requests"]
        return sum(r["errors_5xx"] for r in stats), sum(r["aborted"] for r in stats)

    with client(server) as http:
        errors_before, aborted_before = counts(http)
        with watched(server, "aborted_bodies") as attack:
            for i in range(100):
                with socket.create_connection(
                    (HOST, int(server.url.rsplit(":", 1)[1]))
                ) as sock:
                    path = f"{API}/data/notes" if i % 2 else f"{API}/data/notes/n1"
                    method = "POST" if i % 2 else "PUT"
                    sock.sendall(
                        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        f'Content-Length: 1000\r\n\r\n{{"data": {{'.encode()
                    )
            time.sleep(0.5)
            errors, aborted = counts(http)
            attack.notes["aborted_counted"] = aborted - aborted_before
            assert errors == errors_before and aborted - aborted_before == 100
    lines = [e for e in server.access_lines() if e["status"] == 499]
    assert len(lines) >= 100


# -- attacks of the same kind --------------------------------------------------


def _wide(server: Server) -> None:
    with client(server) as http:
        if http.get(f"{API}/data/wide", params={"limit": "0"}).status_code == 200:
            return
        rows = [
            {
                "n": i,
                "s": f"name {i:06d} " + "x" * 40,
                "tags": ["a", "b", f"t{i % 100}"],
                "deep": {"a": {"b": {"c": i % 7}}},
            }
            for i in range(100_000)
        ]
        bulk(http, "wide", rows)


def test_10_expensive_queries(server: Server) -> None:
    _wide(server)
    deep_path = ".".join(["a"] * 32)
    queries: list[dict[str, str] | list[tuple[str, str]]] = [
        {"sort": "-s", "offset": "9980", "limit": "20"},
        {"sort": "-s,n,tags", "offset": "20000"},
        {"q": "zzz"},
        {"s__ilike": "%9%9%9%9%"},
        {"tags__contains": "t5", "sort": "deep.a.b.c,-n"},
        {"n__in": ",".join(str(i) for i in range(900))},
        {"fields": ",".join([deep_path] * 64)},
        {"deep.a.b.c__gte": "3", "s__endswith": "x", "limit": "1000"},
        [("n__ne", str(-i)) for i in range(32)],
    ]
    with client(server) as http:
        with watched(server, "expensive_queries") as attack:

            def run(n: int) -> None:
                with client(server) as own:
                    for params in queries[n::4]:
                        status = attack.saw(
                            own.get(f"{API}/data/wide", params=params)
                        ).status_code
                        assert status in (200, 400, 503), (params, status)

            in_threads(4, run)
            attack.allowed_5xx = frozenset(
                {503}
            )  # four heavy scans at once may meet the cap
            assert (
                attack.saw(
                    http.get(
                        f"{API}/data/wide", params={"sort": "n", "offset": "20000"}
                    )
                ).status_code
                == 400
            )


def test_11_large_dumps_and_slow_readers(server: Server) -> None:
    _wide(server)
    port = int(server.url.rsplit(":", 1)[1])
    with watched(server, "dumps_and_slow_readers") as attack:

        def dump(n: int) -> None:
            with client(server) as own:
                accept = "application/x-ndjson" if n % 2 else "application/json"
                with own.stream(
                    "GET", f"{API}/dump/wide", headers={"Accept": accept}
                ) as response:
                    attack.statuses[response.status_code] += 1
                    size = sum(len(chunk) for chunk in response.iter_bytes())
                    assert response.status_code in (200, 503)
                    if response.status_code == 200:
                        assert size > 5_000_000

        in_threads(3, dump)
        # readers that ask for a large dump and never read it
        stalled = []
        for _ in range(3):
            sock = socket.create_connection((HOST, port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(f"GET {API}/dump/wide HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            stalled.append(sock)
        # slowloris: connections that send their headers a few bytes at a time
        slow = [socket.create_connection((HOST, port)) for _ in range(300)]
        for step in range(5):
            for sock in slow:
                sock.sendall(b"GET /health HTTP/1.1\r\nX-a: " if step == 0 else b"b")
            time.sleep(0.2)
        with client(server) as http:
            assert (
                attack.saw(
                    http.get(f"{API}/data/wide", params={"limit": "1"})
                ).status_code
                == 200
            )
        for sock in [*slow, *stalled]:
            sock.close()
        attack.allowed_5xx = frozenset({503})


def test_12_one_mebibyte_bulk_posts(server: Server) -> None:
    body = orjson.dumps(
        {
            "data": [
                {"title": "t" * 300, "tags": ["a", "b"], "meta": {"s": "m" * 500}}
                for _ in range(1000)
            ]
        }
    )
    assert len(body) < 1024 * 1024
    with watched(server, "bulk_posts") as attack:

        def post(_: int) -> None:
            with client(server) as own:
                for _ in range(10):
                    response = attack.saw(
                        own.post(f"{API}/data/bulk", content=body, headers=JSON)
                    )
                    assert response.status_code in (201, 503)

        in_threads(2, post)
        attack.allowed_5xx = frozenset({503})
    with client(server) as http:
        lag = http.get(f"{API}/stats").json()["event_loop"]
        REPORT["bulk_posts"]["max_loop_lag_ms"] = lag["max_lag_ms"]


def test_13_the_heavy_cap(server: Server) -> None:
    _wide(server)
    with watched(server, "heavy_cap", allowed_5xx=frozenset({503})) as attack:
        retry_after: set[str] = set()

        def scan(_: int) -> None:
            with client(server) as own:
                response = attack.saw(
                    own.get(f"{API}/data/wide", params={"q": "name", "limit": "1"})
                )
                assert response.status_code in (200, 503)
                if response.status_code == 503:
                    assert response.json()["error"]["code"] == "busy"
                    retry_after.add(response.headers["retry-after"])

        in_threads(12, scan)
        assert attack.statuses[200] >= 4
        assert retry_after <= {"1"}


# -- slow clients (slowloris) ---------------------------------------------------


@dataclass
class SlowClient:
    """A raw connection that sends ``first`` and then ``then`` every ``every``
    seconds, reading whatever the server answers, until the server closes it."""

    name: str
    port: int
    first: bytes
    then: bytes = b""
    every: float = 2.0
    received: bytes = b""
    closed_after: float | None = None

    def __post_init__(self) -> None:
        self.sock = socket.create_connection((HOST, self.port))
        self.opened = time.monotonic()
        self.next_at = self.opened + self.every
        if self.first:
            self.sock.sendall(self.first)

    def step(self, now: float) -> None:
        """Read what came; send the next piece when it is time."""
        if self.closed_after is not None:
            return
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if readable:
                data = self.sock.recv(65536)
                self.received += data
                if not data:
                    self.closed_after = now - self.opened
            elif self.then and now >= self.next_at:
                self.sock.sendall(self.then)
                self.next_at += self.every
        except OSError:  # reset: closed as well
            self.closed_after = now - self.opened

    def answer(self) -> tuple[int, dict[str, Any]]:
        head, _, body = self.received.partition(b"\r\n\r\n")
        return int(head.split()[1]), orjson.loads(body)


def test_14_slow_clients_are_let_go(
    server_factory: Callable[..., Server],
) -> None:
    """The review's slowloris connections (headers a line every 2 s, a head cut
    off, a body of a byte every 2 s), a connection that sends nothing and one
    that sends only line ends after an answer: each is closed once its timeout
    (1 s here) has passed, with a 408 envelope when a request had begun, while
    other clients are served."""
    slow_server = server_factory(MEMDB_HEADER_TIMEOUT_S="1", MEMDB_BODY_TIMEOUT_S="1")
    port = int(slow_server.url.rsplit(":", 1)[1])
    with watched(slow_server, "slow_clients") as attack, client(slow_server) as http:
        clients = [
            SlowClient(
                "header_lines",
                port,
                b"GET /health HTTP/1.1\r\nX-Request-Id: slow-1\r\nHost: x\r\n",
                b"X-a: b\r\n",
            ),
            SlowClient("cut_head", port, b"GET /hea"),
            SlowClient(
                "slow_body",
                port,
                f"POST {API}/data/notes HTTP/1.1\r\nHost: x\r\n"
                "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{".encode(),
                b" ",
            ),
            SlowClient("silent", port, b""),
        ]
        after_answer = SlowClient(
            "line_ends", port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        time.sleep(0.2)
        after_answer.step(time.monotonic())
        assert after_answer.received.startswith(b"HTTP/1.1 200 ")
        after_answer.sock.sendall(b"\r\n")  # stops uvicorn's keep-alive timer
        after_answer.opened = time.monotonic()
        after_answer.received = b""
        clients.append(after_answer)
        deadline = time.monotonic() + 8.0
        served = 0
        while time.monotonic() < deadline and any(
            c.closed_after is None for c in clients
        ):
            for slow in clients:
                slow.step(time.monotonic())
            created = attack.saw(
                http.post(f"{API}/data/notes", json={"data": {"n": served}})
            )
            assert created.status_code == 201
            served += 1
            time.sleep(0.05)
        attack.notes["served_meanwhile"] = served
        attack.notes["closed_after_s"] = {
            c.name: None if c.closed_after is None else round(c.closed_after, 2)
            for c in clients
        }
        for slow in clients:
            slow.sock.close()
    for slow in clients:
        assert slow.closed_after is not None, (slow.name, attack.notes)
        assert 0.9 <= slow.closed_after <= 3.0, (slow.name, attack.notes)
    by_name = {c.name: c for c in clients}
    for name, message in [
        ("header_lines", "headers"),
        ("cut_head", "headers"),
        ("slow_body", "body"),
    ]:
        status, body = by_name[name].answer()
        assert status == 408, name
        assert body["error"]["code"] == "request_timeout", body
        assert message in body["error"]["message"]
        assert set(body["error"]) == {"code", "message", "details", "request_id"}
    assert by_name["header_lines"].answer()[1]["error"]["request_id"] == "slow-1"
    # nothing is answered where no request had begun
    assert by_name["silent"].received == b""
    assert by_name["line_ends"].received == b""
    assert served >= 5
    # the request whose body stopped saw a disconnect: logged as aborted (499)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        aborted = [
            e
            for e in slow_server.access_lines()
            if e["status"] == 499 and e.get("method") == "POST"
        ]
        timeouts = [
            e for e in slow_server.events() if e.get("event") == "request.timeout"
        ]
        if aborted and len(timeouts) == 5:
            break
        time.sleep(0.1)
    assert aborted, slow_server.logs()[-2000:]
    assert sorted(e["waited_for"] for e in timeouts) == ["body"] + ["head"] * 4
