"""Real threads, each with its own HTTP client, against one real server.

Every loop is bounded by a count and by ``DEADLINE_S``; only 127.0.0.1 is used.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import httpx
import pytest

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e

THREADS = 16
DEADLINE_S = 20.0
T = TypeVar("T")


def in_threads(
    server: Server, work: Callable[[httpx.Client, int], T], threads: int = THREADS
) -> list[T]:
    """Run ``work(client, n)`` in ``threads`` threads at once; each its own client."""
    start = threading.Barrier(threads, timeout=DEADLINE_S)

    def run(n: int) -> T:
        with server.client() as client:
            start.wait()
            return work(client, n)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(run, n) for n in range(threads)]
        return [f.result(timeout=DEADLINE_S * 2) for f in futures]


def test_concurrent_creates_give_exact_count_and_distinct_ids(server: Server) -> None:
    per_thread = 25

    def create(client: httpx.Client, n: int) -> list[str]:
        ids = []
        for i in range(per_thread):
            response = client.post(
                "/api/v1/data/widgets", json={"data": {"thread": n, "seq": i}}
            )
            assert response.status_code == 201, response.text
            body = response.json()
            assert (body["thread"], body["seq"]) == (n, i)
            ids.append(body["id"])
        return ids

    by_thread = in_threads(server, create)
    created = [record_id for ids in by_thread for record_id in ids]
    total = THREADS * per_thread
    assert len(created) == total
    assert len(set(created)) == total

    with server.client() as client:
        dump = client.get("/api/v1/dump/widgets")
    assert dump.status_code == 200
    body = dump.json()
    assert body["table"] == "widgets"
    assert body["count"] == total
    assert len(body["items"]) == total
    assert {r["id"] for r in body["items"]} == set(created)
    assert Counter((r["thread"], r["seq"]) for r in body["items"]) == Counter(
        {(n, i): 1 for n in range(THREADS) for i in range(per_thread)}
    )
    # Insertion order: each thread's records appear in the order it made them.
    order = [r["id"] for r in body["items"]]
    for ids in by_thread:
        positions = [order.index(record_id) for record_id in ids]
        assert positions == sorted(positions)


@dataclass
class Increments:
    written: list[int] = field(default_factory=list)
    conflicts: int = 0


def test_if_match_increments_lose_no_update(server: Server) -> None:
    per_thread = 10
    max_attempts = 400
    url = "/api/v1/data/counters/hits"
    with server.client() as client:
        created = client.post(
            "/api/v1/data/counters", json={"data": {"id": "hits", "value": 0}}
        )
    assert created.status_code == 201, created.text

    def increment(client: httpx.Client, n: int) -> Increments:
        done = Increments()
        deadline = time.monotonic() + DEADLINE_S
        attempts = 0
        while len(done.written) < per_thread:
            attempts += 1
            assert attempts <= max_attempts and time.monotonic() < deadline
            current = client.get(url)
            assert current.status_code == 200, current.text
            value = current.json()["value"]
            response = client.put(
                url,
                json={"data": {"value": value + 1}},
                headers={"If-Match": current.headers["etag"]},
            )
            if response.status_code == 412:
                assert response.json()["error"]["code"] == "precondition_failed"
                done.conflicts += 1
                continue
            assert response.status_code == 200, response.text
            assert response.json()["value"] == value + 1
            done.written.append(value + 1)
        return done

    results = in_threads(server, increment)
    successes = sum(len(r.written) for r in results)
    assert successes == THREADS * per_thread
    # Every successful write read the value the one before it wrote: 1, 2, ..., n.
    written = sorted(v for r in results for v in r.written)
    assert written == list(range(1, successes + 1))
    # The threads did race: some writes were refused, and retried.
    assert sum(r.conflicts for r in results) > 0
    with server.client() as client:
        final = client.get(url)
    assert final.status_code == 200
    assert final.json()["value"] == successes


def test_concurrent_duplicate_email_gives_one_201_and_409s(server: Server) -> None:
    def create(client: httpx.Client, n: int) -> httpx.Response:
        # Half the threads write the address in another case: the same email.
        email = "Race.Winner@Example.com" if n % 2 else "race.winner@example.com"
        return client.post(
            "/api/v1/data/users",
            json={
                "data": {
                    "email": email,
                    "full_name": f"Racer {n}",
                    "password": f"password-{n}",
                }
            },
        )

    responses = in_threads(server, create)
    statuses = Counter(r.status_code for r in responses)
    assert statuses == Counter({201: 1, 409: THREADS - 1})
    (winner,) = [r.json() for r in responses if r.status_code == 201]
    assert winner["email"] == "race.winner@example.com"
    for response in responses:
        assert "password" not in response.text
        if response.status_code == 409:
            error = response.json()["error"]
            assert error["code"] == "conflict"
            assert error["request_id"] == response.headers["x-request-id"]
    with server.client() as client:
        dump = client.get("/api/v1/dump/users")
    assert dump.status_code == 200
    assert dump.json()["count"] == 1
    assert dump.json()["items"] == [winner]


def check_join(body: dict[str, Any]) -> set[tuple[str, str]]:
    """An inner join answer is whole: each row pairs an order with its own user,
    and a user appears in one version only (one snapshot)."""
    assert body["on"] == {"left": "id", "right": "user_id"}
    assert body["count"] == len(body["items"])
    seen: dict[str, dict[str, Any]] = {}
    pairs = set()
    for row in body["items"]:
        left, right = row["left"], row["right"]
        assert left is not None and right is not None
        assert right["user_id"] == left["id"]
        assert seen.setdefault(left["id"], left) == left
        pairs.add((left["id"], right["id"]))
    assert len(pairs) == body["count"]
    return pairs


def check_dump(body: dict[str, Any]) -> tuple[int, int]:
    """A whole-store dump is one instant: every order's user is in it."""
    users = {u["id"] for u in body["users"]}
    assert len(users) == len(body["users"])
    for order in body["orders"]:
        assert order["user_id"] in users
    return len(users), len(body["orders"])


def test_join_during_writes_is_consistent(server: Server) -> None:
    writers, readers = 8, 8
    users_per_writer, orders_per_user = 4, 3
    remaining = [writers]
    lock = threading.Lock()
    finished = threading.Event()

    def write(client: httpx.Client, n: int) -> set[tuple[str, str]]:
        pairs = set()
        try:
            for u in range(users_per_writer):
                user = client.post(
                    "/api/v1/data/users",
                    json={
                        "data": {
                            "email": f"writer{n}.user{u}@example.com",
                            "full_name": f"Writer {n} user {u}",
                        }
                    },
                )
                assert user.status_code == 201, user.text
                user_id = user.json()["id"]
                for o in range(orders_per_user):
                    order = client.post(
                        "/api/v1/data/orders",
                        json={
                            "data": {
                                "product_name": f"item {o}",
                                "quantity": o + 1,
                                "total_price": 1.5 * (o + 1),
                                "user_id": user_id,
                            }
                        },
                    )
                    assert order.status_code == 201, order.text
                    pairs.add((user_id, order.json()["id"]))
                    renamed = client.put(
                        f"/api/v1/data/users/{user_id}",
                        json={"data": {"full_name": f"Writer {n} user {u} v{o}"}},
                    )
                    assert renamed.status_code == 200, renamed.text
        finally:
            with lock:
                remaining[0] -= 1
                if remaining[0] == 0:
                    finished.set()
        return pairs

    def read(client: httpx.Client) -> int:
        checked = 0
        deadline = time.monotonic() + DEADLINE_S
        last_count = 0
        while checked < 500 and time.monotonic() < deadline:
            last_round = finished.is_set()
            before = client.get("/api/v1/dump")
            joined = client.get("/api/v1/join/users/orders/user_id")
            after = client.get("/api/v1/dump")
            for response in (before, joined, after):
                assert response.status_code == 200, response.text
            _, orders_before = check_dump(before.json())
            _, orders_after = check_dump(after.json())
            check_join(joined.json())
            count = joined.json()["count"]
            # Every order is joined to its user: the join sees every order that
            # existed before it began and none that did not exist after it.
            assert orders_before <= count <= orders_after
            assert count >= last_count
            last_count = count
            checked += 1
            if last_round:
                break
        return checked

    def work(client: httpx.Client, n: int) -> set[tuple[str, str]] | int:
        if n < writers:
            return write(client, n)
        return read(client)

    results = in_threads(server, work, threads=writers + readers)

    expected: set[tuple[str, str]] = set()
    for result in results[:writers]:
        assert isinstance(result, set)
        expected |= result
    reads = results[writers:]
    assert all(isinstance(r, int) and r >= 1 for r in reads)
    assert len(expected) == writers * users_per_writer * orders_per_user

    with server.client() as client:
        final = client.get("/api/v1/join/users/orders/user_id")
        dump = client.get("/api/v1/dump")
    assert final.status_code == 200
    assert check_join(final.json()) == expected
    assert check_dump(dump.json()) == (writers * users_per_writer, len(expected))
