"""The Redis backend with real servers: several workers on one port sharing one
Redis, concurrent clients, and faults (Redis killed under load, a Cluster
master failing over). Every loop is bounded; only 127.0.0.1 is used."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Server
from tests.e2e.test_concurrency import in_threads
from tests.redis_servers import (
    CannotStart,
    RedisServer,
    cluster,
    free_port,
    must_run,
    unique_prefix,
)

pytestmark = pytest.mark.e2e

Factory = Callable[..., Server]
T = TypeVar("T")
THREADS = 16
DEADLINE_S = 30.0
API = "/api/v1"


def started(make: Callable[[], T]) -> T:
    """A Redis server, or a skip saying why it cannot start here (never in CI)."""
    try:
        return make()
    except CannotStart as exc:
        if must_run():
            raise
        pytest.skip(str(exc))


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = started(lambda: RedisServer(free_port(), tmp_path / "redis").start())
    yield server
    server.stop()


def redis_env(server: Any, **more: Any) -> dict[str, Any]:
    return {
        "MEMDB_STORE": "redis",
        "MEMDB_REDIS_URL": server.url,
        "MEMDB_REDIS_PREFIX": unique_prefix(),
        "MEMDB_REDIS_TIMEOUT": "1",
        **more,
    }


# -- four workers, one Redis ----------------------------------------------------


@pytest.fixture
def workers(server_factory: Factory, redis_server: RedisServer) -> Server:
    return server_factory(**redis_env(redis_server, MEMDB_WORKERS="4"))


def test_concurrent_creates_across_workers_give_exact_counts(workers: Server) -> None:
    per_thread = 25

    def create(client: httpx.Client, n: int) -> list[str]:
        ids = []
        for i in range(per_thread):
            response = client.post(
                f"{API}/data/widgets", json={"data": {"thread": n, "seq": i}}
            )
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        return ids

    made = [i for ids in in_threads(workers, create) for i in ids]
    assert len(set(made)) == THREADS * per_thread
    with workers.client() as client:
        page = client.get(f"{API}/data/widgets", params={"limit": "0"}).json()
        assert page["total"] == THREADS * per_thread
        tables = {t["name"]: t["count"] for t in client.get(f"{API}/tables").json()}
        assert tables["widgets"] == THREADS * per_thread
        stats = client.get(f"{API}/stats").json()
        assert stats["tables"]["widgets"]["count"] == THREADS * per_thread
        time.sleep(1.5)  # the workers' counters are shared about once a second
        text = client.get("/metrics").text
    posts = [
        line
        for line in text.splitlines()
        if line.startswith(
            'memdb_http_requests_total{method="POST",route="/api/v1/data/{table}",status="201"}'
        )
    ]
    assert posts and float(posts[0].rsplit(" ", 1)[1]) == THREADS * per_thread


def test_if_match_increments_across_workers_lose_no_update(workers: Server) -> None:
    with workers.client() as client:
        response = client.post(
            f"{API}/data/counters", json={"data": {"id": "c", "n": 0}}
        )
        assert response.status_code == 201
    per_thread = 10

    def increment(client: httpx.Client, _: int) -> int:
        done = retries = 0
        while done < per_thread and retries < 2000:
            current = client.get(f"{API}/data/counters/c")
            etag, n = current.headers["etag"], current.json()["n"]
            answer = client.patch(
                f"{API}/data/counters/c",
                json={"data": {"n": n + 1}},
                headers={"If-Match": etag},
            )
            if answer.status_code == 200:
                done += 1
            else:
                assert answer.status_code == 412, answer.text
                retries += 1
        return done

    assert sum(in_threads(workers, increment)) == THREADS * per_thread
    with workers.client() as client:
        assert client.get(f"{API}/data/counters/c").json()["n"] == THREADS * per_thread


def test_one_email_created_at_once_from_every_worker_gives_one_user(
    workers: Server,
) -> None:
    def create(client: httpx.Client, n: int) -> int:
        response = client.post(
            f"{API}/data/users",
            json={"data": {"email": "race@example.com", "full_name": f"R{n}"}},
        )
        return response.status_code

    statuses = Counter(in_threads(workers, create))
    assert statuses == Counter({201: 1, 409: THREADS - 1})


def test_a_dump_during_writes_keeps_its_promise(workers: Server) -> None:
    """A scan reads every record that exists throughout exactly once, at a
    version it had; records made during it may or may not be read; none twice."""
    with workers.client() as client:
        stable = [{"id": f"s{i:04d}", "v": 0} for i in range(3000)]
        for start in range(0, 3000, 1000):
            response = client.post(
                f"{API}/data/mixed", json={"data": stable[start : start + 1000]}
            )
            assert response.status_code == 201
    stop = threading.Event()
    made: list[str] = []

    def write() -> None:
        with workers.client() as client:
            n = 0
            while not stop.is_set() and n < 3000:
                client.post(f"{API}/data/mixed", json={"data": {"id": f"n{n:04d}"}})
                client.patch(
                    f"{API}/data/mixed/s{n % 3000:04d}", json={"data": {"v": n}}
                )
                made.append(f"n{n:04d}")
                n += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        time.sleep(0.2)
        with workers.client() as client:
            dumped = client.get(f"{API}/dump/mixed").json()
            joined = client.get(f"{API}/join/mixed/mixed/id").json()
    finally:
        stop.set()
        writer.join(timeout=DEADLINE_S)
    for answer in (dumped["items"], [row["left"] for row in joined["items"]]):
        ids = [r["id"] for r in answer]
        assert len(ids) == len(set(ids))  # none twice
        assert {f"s{i:04d}" for i in range(3000)} <= set(ids)  # every stable one
        assert set(ids) <= {f"s{i:04d}" for i in range(3000)} | set(made)
    assert dumped["count"] == len(dumped["items"])


def test_workers_are_refused_over_the_memory_store(server_factory: Factory) -> None:
    server = server_factory(wait=False, MEMDB_WORKERS="2")
    assert server.wait_exit() == 2
    (refused,) = [e for e in server.events() if e["event"] == "service.cannot_start"]
    assert "MEMDB_STORE=redis" in refused["message"]


def test_the_log_is_refused_with_redis(
    server_factory: Factory, redis_server: RedisServer
) -> None:
    server = server_factory(
        wait=False, **redis_env(redis_server, MEMDB_PERSISTENCE="aof")
    )
    assert server.wait_exit() == 2
    (refused,) = [e for e in server.events() if e["event"] == "service.cannot_start"]
    assert "durability is Redis's own" in refused["message"]


# -- faults -----------------------------------------------------------------------


def _write_until(
    server: Server, stop: threading.Event, acked: list[str], statuses: Counter[int]
) -> None:
    with httpx.Client(base_url=server.url, timeout=5.0) as client:
        n = 0
        while not stop.is_set() and n < 20_000:
            record_id = f"w{n:05d}"
            try:
                response = client.post(
                    f"{API}/data/log", json={"data": {"id": record_id}}
                )
            except httpx.HTTPError:
                statuses[0] += 1
                time.sleep(0.02)
                n += 1
                continue
            statuses[response.status_code] += 1
            if response.status_code == 201:
                acked.append(record_id)
            elif response.status_code == 503:
                assert response.json()["error"]["code"] == "store_unavailable"
                assert response.headers["retry-after"]
                time.sleep(0.02)
            n += 1


class _Follower(threading.Thread):
    """A Server-Sent Events follower from now, keeping the lines it is sent
    (keep-alives and events' ids and data left out) until the stream ends."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.lines: list[str] = []

    def run(self) -> None:
        headers = {"Accept": "text/event-stream"}
        with httpx.Client(base_url=self.server.url, timeout=DEADLINE_S) as client:
            with client.stream("GET", f"{API}/changes", headers=headers) as stream:
                for line in stream.iter_lines():
                    if line.startswith(("event:", "data:")):
                        self.lines.append(line)


def test_redis_killed_and_restarted_under_write_load_loses_no_acknowledged_write(
    server_factory: Factory, tmp_path: Path
) -> None:
    """With ``appendfsync always``, a SIGKILLed Redis keeps every write the
    service acknowledged; while it is down the service answers 503, never 500,
    and it recovers by itself."""
    redis = started(
        lambda: RedisServer(
            free_port(),
            tmp_path / "durable",
            extra=["--appendonly", "yes", "--appendfsync", "always"],
        ).start()
    )
    try:
        server = server_factory(**redis_env(redis))
        stop = threading.Event()
        acked: list[str] = []
        statuses: Counter[int] = Counter()
        writer = threading.Thread(
            target=_write_until, args=(server, stop, acked, statuses)
        )
        writer.start()
        follower = _Follower(server)
        follower.start()
        time.sleep(1.0)
        redis.kill()
        time.sleep(1.5)
        follower.join(timeout=DEADLINE_S)
        # a follower when the store went: told where to resume, and let go
        assert follower.lines[-2:-1] == ["event: resume"], follower.lines[-4:]
        assert "cannot be reached" in follower.lines[-1]
        with server.client() as client:
            down = client.get(f"{API}/data/log/w00000")
            assert down.status_code == 503
            assert down.json()["error"]["code"] == "store_unavailable"
            for changes in (
                client.get(f"{API}/changes", params={"since": "now"}),
                client.get(f"{API}/changes", params={"since": "1-0", "wait": "1"}),
                client.get(f"{API}/changes", headers={"Accept": "text/event-stream"}),
            ):
                assert changes.status_code == 503, changes.text
                assert changes.json()["error"]["code"] == "store_unavailable"
            assert client.get("/health").status_code == 200
            ready = client.get("/ready")
            assert ready.status_code == 503
        redis.start()
        time.sleep(2.0)
        stop.set()
        writer.join(timeout=DEADLINE_S)
        assert statuses[500] == 0, statuses
        assert statuses[503] > 0, statuses  # it was seen down
        assert statuses[201] > 0
        with server.client() as client:
            assert client.get("/ready").status_code == 200
            dumped = {r["id"] for r in client.get(f"{API}/dump/log").json()["items"]}
        assert set(acked) <= dumped  # no acknowledged write lost
        assert not [e for e in server.events() if e.get("event") == "request.failed"]
    finally:
        redis.stop()


def test_the_service_waits_for_a_redis_that_is_not_there_yet(
    server_factory: Factory, tmp_path: Path
) -> None:
    port = free_port()
    server = server_factory(
        wait=False,
        MEMDB_STORE="redis",
        MEMDB_REDIS_URL=f"redis://127.0.0.1:{port}/0",
        MEMDB_REDIS_TIMEOUT="0.5",
    )
    deadline = time.monotonic() + 15
    with httpx.Client(base_url=server.url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert "cannot be reached" in ready.json()["error"]["message"]
        redis = started(lambda: RedisServer(port, tmp_path / "late").start())
        try:
            while (
                time.monotonic() < deadline and client.get("/ready").status_code != 200
            ):
                time.sleep(0.2)
            assert client.get("/ready").status_code == 200
            created = client.post(f"{API}/data/late", json={"data": {"a": 1}})
            assert created.status_code == 201
        finally:
            redis.stop()


def test_a_cluster_master_killed_fails_over_and_the_service_answers_again(
    server_factory: Factory, tmp_path: Path
) -> None:
    nodes = started(lambda: cluster(tmp_path / "ha", masters=3, replicas=1))
    try:
        server = server_factory(
            **redis_env(nodes, MEMDB_REDIS_CLUSTER="true", MEMDB_REDIS_TIMEOUT="1")
        )
        with server.client() as client:
            tables = [f"t{i}" for i in range(12)]  # spread over every master
            for table in tables:
                assert (
                    client.post(
                        f"{API}/data/{table}", json={"data": {"id": "x"}}
                    ).status_code
                    == 201
                )
            victim = nodes.masters()[0]
            victim.kill()
            statuses: Counter[int] = Counter()
            deadline = time.monotonic() + 30
            answered = False
            while time.monotonic() < deadline:
                answers = [
                    client.get(f"{API}/data/{table}/x").status_code for table in tables
                ]
                statuses.update(answers)
                if all(status == 200 for status in answers):
                    answered = True
                    break
                time.sleep(0.3)
            assert answered, statuses
            assert statuses[500] == 0, statuses
            assert set(statuses) <= {200, 503}, statuses
            assert (
                client.post(f"{API}/data/t0", json={"data": {"id": "y"}}).status_code
                == 201
            )
    finally:
        nodes.stop()


def _ready_until(
    client: httpx.Client, status: int, within: float
) -> tuple[httpx.Response, float]:
    """Ask ``/ready`` until it answers ``status``: that answer and how long it took."""
    began = time.monotonic()
    while True:
        ready = client.get("/ready")
        waited = time.monotonic() - began
        if ready.status_code == status or waited > within:
            return ready, waited
        time.sleep(0.1)


def test_a_cluster_master_down_without_a_replica_makes_ready_say_503(
    server_factory: Factory, tmp_path: Path
) -> None:
    """One master of a Cluster without replicas is killed: ``/ready`` says 503
    with the reason at once (not only once the Cluster marks the node failed,
    and not 200 because the node it pings is alive), ``/metrics`` is still
    scraped, every 503 comes within ``MEMDB_REDIS_TIMEOUT`` (redis-py's retries
    included), and all is 200 again once the master is back."""
    nodes = started(lambda: cluster(tmp_path / "bare", masters=3))
    timeout = 1.0
    try:
        server = server_factory(
            **redis_env(
                nodes, MEMDB_REDIS_CLUSTER="true", MEMDB_REDIS_TIMEOUT=f"{timeout:g}"
            )
        )
        with server.client() as client:
            tables = [f"t{i}" for i in range(12)]  # spread over every master
            for table in tables:
                made = client.post(f"{API}/data/{table}", json={"data": {"id": "x"}})
                assert made.status_code == 201, made.text
            assert client.get("/ready").status_code == 200
            victim = nodes.masters()[1]
            victim.kill()

            down, waited = _ready_until(client, 503, within=5.0)
            assert down.status_code == 503, down.text
            assert waited < 5.0
            error = down.json()["error"]
            assert error["code"] == "store_unavailable"
            assert f":{victim.port}" in error["message"], error["message"]
            assert down.headers["retry-after"]

            # past cluster-node-timeout (2 s here) the Cluster says CLUSTERDOWN
            # to every command: each one is still answered in time
            statuses: Counter[int] = Counter()
            slowest = 0.0
            deadline = time.monotonic() + 4.0
            while time.monotonic() < deadline:
                for table in tables[:4]:
                    began = time.monotonic()
                    answer = client.get(f"{API}/data/{table}/x")
                    slowest = max(slowest, time.monotonic() - began)
                    statuses[answer.status_code] += 1
                scraped = client.get("/metrics")
                assert scraped.status_code == 200, scraped.text
                assert client.get("/health").status_code == 200
                assert client.get("/ready").status_code == 503
                time.sleep(0.2)
            assert statuses[503] > 0 and set(statuses) <= {200, 503}, statuses
            assert slowest < timeout + 0.8, slowest
            assert "memdb_store_up 0.0" in scraped.text
            assert "memdb_http_requests_total{" in scraped.text
            assert "memdb_records{" not in scraped.text

            victim.start()  # its nodes file brings it back into the Cluster
            up, waited = _ready_until(client, 200, within=20.0)
            assert up.status_code == 200, up.text
            assert up.json() == {"status": "ready", "store": "redis"}
            scraped = client.get("/metrics")
            assert "memdb_store_up 1.0" in scraped.text
            # (the victim kept no data: the tables it held may be gone)
            assert "\nmemdb_tables " in scraped.text
            made = client.post(f"{API}/data/t0", json={"data": {"id": "y"}})
            assert made.status_code == 201, made.text
        assert not [e for e in server.events() if e.get("event") == "request.failed"]
    finally:
        nodes.stop()


def _request_counts(text: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "memdb_http_requests_total":
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_request_counters_never_go_down_across_two_workers(
    server_factory: Factory, redis_server: RedisServer
) -> None:
    """Scrapes answered by either worker under a light load: no counter is
    ever smaller than in the scrape before (Prometheus would see a reset)."""
    server = server_factory(**redis_env(redis_server, MEMDB_WORKERS="2"))
    stop = threading.Event()

    def load() -> None:
        with server.client() as client:
            n = 0
            while not stop.is_set() and n < 5_000:
                client.post(f"{API}/data/load", json={"data": {"n": n}})
                client.get(f"{API}/data/load/none")
                n += 1
                time.sleep(0.005)

    loader = threading.Thread(target=load)
    loader.start()
    previous: dict[tuple[tuple[str, str], ...], float] = {}
    workers: set[str] = set()
    drops: list[str] = []
    try:
        for _ in range(60):
            # a new connection each time: either worker may take it
            with server.client() as client:
                scraped = client.get("/metrics")
            assert scraped.status_code == 200
            workers.add(scraped.headers["x-request-id"][:20])  # the worker's prefix
            counts = _request_counts(scraped.text)
            drops += [
                f"{dict(k)}: {v} -> {counts.get(k, 0.0)}"
                for k, v in previous.items()
                if counts.get(k, 0.0) < v
            ]
            previous = counts
            time.sleep(0.05)
    finally:
        stop.set()
        loader.join(timeout=DEADLINE_S)
    assert not drops, drops
    assert len(workers) == 2, workers  # both workers answered scrapes
    assert sum(previous.values()) > 60
