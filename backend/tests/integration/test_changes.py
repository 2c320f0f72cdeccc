"""The change feed (``GET /api/v1/changes``) on every store backend: NDJSON
reads and long polls, cursors on lists and dumps, 410 and 400, filters, keys,
the follower cap, and the Server-Sent Events stream driven at the ASGI level."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, Callable

import orjson
import pytest
from fastapi.testclient import TestClient

from app.api.state import service_of

# the feed on the backends that keep one; a Cluster's refusal is tested below
pytestmark = pytest.mark.backends("memory", "redis")

KEYS = "admin-key-0123456789abcdef:rw,reader-key-0123456789abcd:ro"
RW = {"X-API-Key": "admin-key-0123456789abcdef"}
RO = {"X-API-Key": "reader-key-0123456789abcd"}


def feed(client: TestClient, **params: Any) -> tuple[list[dict[str, Any]], str]:
    answer = client.get("/api/v1/changes", params=params)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in answer.text.splitlines()]
    return lines, answer.headers["x-changes-cursor"]


def now(client: TestClient) -> str:
    return feed(client, since="now")[1]


def test_each_write_is_one_event_in_commit_order(client: TestClient) -> None:
    start = now(client)
    made = client.post("/api/v1/data/notes", json={"data": {"id": "n1", "a": 1}})
    assert made.status_code == 201
    client.patch("/api/v1/data/notes/n1", json={"data": {"b": 2}})
    client.put("/api/v1/data/notes/n1", json={"data": {"c": 3}})
    client.post("/api/v1/tables/notes/indexes", json={"field": "c"})
    client.delete("/api/v1/tables/notes/indexes/c")
    client.post(
        "/api/v1/import", json={"notes": [{"id": "n2"}], "tags": [{"id": "t1"}]}
    )
    client.delete("/api/v1/data/notes/n1")
    client.delete("/api/v1/data/tags")
    events, cursor = feed(client, since=start)
    assert [(e["op"], e["table"], e["id"]) for e in events] == [
        ("create", "notes", "n1"),
        ("patch", "notes", "n1"),
        ("update", "notes", "n1"),
        ("create_index", "notes", None),
        ("drop_index", "notes", None),
        ("import", "notes", "n2"),
        ("import", "tags", "t1"),
        ("delete", "notes", "n1"),
        ("drop", "tags", None),
    ]
    assert cursor == events[-1]["cursor"]
    first = events[0]
    assert first["record"] == made.json()
    assert f'"{first["version"]}"' == made.headers["etag"]
    assert events[2]["record"]["c"] == 3 and events[2]["record"]["b"] == 2
    assert events[3]["record"] == {"field": "c", "unique": False, "kind": "hash"}
    for gone in (events[7], events[8]):
        assert "record" not in gone and "version" not in gone
    assert all(e["at"].endswith("Z") for e in events)
    # the cursors are strictly increasing, in the order of the writes
    assert len({e["cursor"] for e in events}) == len(events)


def test_refused_writes_leave_no_event(client: TestClient) -> None:
    client.post("/api/v1/data/notes", json={"data": {"id": "n1"}})
    start = now(client)
    assert (
        client.post("/api/v1/data/notes", json={"data": {"id": "n1"}}).status_code
        == 409
    )
    assert client.post("/api/v1/data/notes", json={"data": [1]}).status_code == 422
    bad = client.patch(
        "/api/v1/data/notes/n1",
        json={"data": {"x": 1}},
        headers={"If-Match": '"0000000000000000"'},
    )
    assert bad.status_code == 412
    assert client.delete("/api/v1/data/notes/nope").status_code == 404
    assert feed(client, since=start) == ([], start)


def test_a_list_and_a_dump_carry_the_cursor_to_follow_from(client: TestClient) -> None:
    client.post("/api/v1/data/notes", json={"data": [{"id": "a"}, {"id": "b"}]})
    listed = client.get("/api/v1/data/notes")
    dumped = client.get("/api/v1/dump/notes")
    whole = client.get("/api/v1/dump")
    ndjson = client.get(
        "/api/v1/dump/notes", headers={"Accept": "application/x-ndjson"}
    )
    cursors = {
        r.headers.get("x-changes-cursor") for r in (listed, dumped, whole, ndjson)
    }
    assert cursors == {now(client)}
    client.post("/api/v1/data/notes", json={"data": {"id": "c"}})
    events, _ = feed(client, since=listed.headers["x-changes-cursor"])
    assert [e["id"] for e in events] == ["c"]


def test_load_then_follow_replays_to_the_final_state(client: TestClient) -> None:
    """A table dumped between writes, then the changes after the dump's cursor
    applied to it, is the table as a final dump has it."""
    for n in range(20):
        client.post("/api/v1/data/notes", json={"data": {"id": f"n{n}", "v": n}})
    dumped = client.get("/api/v1/dump/notes")
    state = {r["id"]: r for r in dumped.json()["items"]}
    for n in range(0, 20, 3):
        client.patch(f"/api/v1/data/notes/n{n}", json={"data": {"v": -n}})
    for n in range(1, 20, 4):
        client.delete(f"/api/v1/data/notes/n{n}")
    client.post("/api/v1/data/notes", json={"data": {"id": "late"}})
    events, _ = feed(client, since=dumped.headers["x-changes-cursor"], tables="notes")
    for event in events:
        if event["op"] == "delete":
            state.pop(event["id"])
        else:
            state[event["id"]] = event["record"]
    final = client.get("/api/v1/dump/notes").json()["items"]
    assert state == {r["id"]: r for r in final}


def test_tables_filter_and_limit(client: TestClient) -> None:
    start = now(client)
    for n in range(5):
        client.post("/api/v1/data/a", json={"data": {"id": f"a{n}"}})
        client.post("/api/v1/data/b", json={"data": {"id": f"b{n}"}})
    only_b, after = feed(client, since=start, tables="b", limit=2)
    assert [e["id"] for e in only_b] == ["b0", "b1"]
    rest, _ = feed(client, since=after, tables=" b ,c")
    assert [e["id"] for e in rest] == ["b2", "b3", "b4"]
    both, _ = feed(client, since=start, tables="a,b", limit=3)
    assert [e["id"] for e in both] == ["a0", "b0", "a1"]


def test_a_long_poll_waits_for_the_next_change(client: TestClient) -> None:
    start = now(client)

    def write_later() -> None:
        time.sleep(0.3)
        client.post("/api/v1/data/notes", json={"data": {"id": "late"}})

    writer = threading.Thread(target=write_later)
    began = time.monotonic()
    writer.start()
    events, _ = feed(client, since=start, wait=10)
    took = time.monotonic() - began
    writer.join()
    assert [e["id"] for e in events] == ["late"]
    assert 0.25 < took < 5
    # nothing comes: the poll ends at its wait with the cursor it had
    began = time.monotonic()
    assert feed(client, since=events[0]["cursor"], wait=0.3) == (
        [],
        events[0]["cursor"],
    )
    assert time.monotonic() - began >= 0.29


@pytest.mark.parametrize(
    "params",
    [
        {"since": "nonsense"},
        {"since": "1-2-3"},
        {"wait": "61"},
        {"wait": "-1"},
        {"limit": "0"},
        {"limit": "10001"},
        {"since": "1" * 65},
        {"tables": ",".join(f"t{n}" for n in range(65))},
    ],
)
def test_bad_parameters_are_refused(client: TestClient, params: dict[str, str]) -> None:
    answer = client.get("/api/v1/changes", params=params)
    assert answer.status_code in (400, 422), answer.text
    assert answer.json()["error"]["code"] in ("bad_request", "validation_failed")


@pytest.mark.parametrize("cursor", ["nonsense", "1-2-3", "1" * 65])
def test_a_bad_cursor_is_400_in_the_query_and_in_last_event_id(
    client: TestClient, cursor: str
) -> None:
    """A parameter of the request either way, not its body: the same 400."""
    for params, headers in (
        ({"since": cursor}, {}),
        ({}, {"Accept": "text/event-stream", "Last-Event-ID": cursor}),
    ):
        answer = client.get("/api/v1/changes", params=params, headers=headers)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "bad_request"


@pytest.mark.parametrize("tables", ["1bad", "notes,bad-name", "a b"])
def test_a_table_filter_that_names_no_table_is_400(
    client: TestClient, tables: str
) -> None:
    """A typo would otherwise follow nothing, silently."""
    for headers in ({}, {"Accept": "text/event-stream"}):
        answer = client.get(
            "/api/v1/changes", params={"tables": tables}, headers=headers
        )
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["code"] == "bad_request"
        assert error["details"][0]["loc"] == ["query", "tables"]


def test_a_cursor_this_feed_never_gave_is_gone(client: TestClient) -> None:
    """Ahead of the newest change (a store that was emptied and restarted), or
    of another feed: the client must reload."""
    client.post("/api/v1/data/notes", json={"data": {"id": "a"}})
    head, _, count = now(client).rpartition("-")
    for cursor in (f"{head}-{int(count) + 1000}", f"{int(head) + 10**12}-0"):
        answer = client.get("/api/v1/changes", params={"since": cursor})
        assert answer.status_code == 410, cursor
        error = answer.json()["error"]
        assert error["code"] == "gone"
        assert "not one this feed gave" in error["message"], error
        assert error["details"][0]["msg"] == "not a cursor of this feed"
        assert error["details"][0]["oldest"] == answer.headers["x-changes-oldest"]


def fallen_behind(
    client_factory: Callable[..., TestClient], retain: int, writes: int
) -> tuple[TestClient, str]:
    """A client of a feed that keeps ``retain`` changes, and a cursor from
    before ``writes`` writes to ``notes``."""
    client = client_factory(changes_retain=retain)
    start = now(client)
    for n in range(writes):
        client.post("/api/v1/data/notes", json={"data": {"id": f"n{n}"}})
    return client, start


def test_a_cursor_beyond_the_retention_is_410_with_the_oldest(
    client_factory: Callable[..., TestClient],
) -> None:
    client, start = fallen_behind(client_factory, 5, 12)
    gone = client.get("/api/v1/changes", params={"since": start})
    assert gone.status_code == 410
    error = gone.json()["error"]
    assert error["code"] == "gone"
    assert "older than the changes kept" in error["message"], error
    oldest = error["details"][0]["oldest"]
    assert gone.headers["x-changes-oldest"] == oldest
    events, _ = feed(client, since=oldest)
    assert [e["id"] for e in events] == [f"n{n}" for n in range(7, 12)]
    # without a cursor: from the oldest kept
    assert [e["id"] for e in feed(client)[0]] == [f"n{n}" for n in range(7, 12)]


def test_the_password_hash_never_reaches_the_feed(client: TestClient) -> None:
    start = now(client)
    made = client.post(
        "/api/v1/data/users",
        json={
            "data": {
                "email": "f@example.com",
                "full_name": "F",
                "password": "correct horse battery",
            }
        },
    )
    assert made.status_code == 201, made.text
    client.patch(
        f"/api/v1/data/users/{made.json()['id']}",
        json={"data": {"password": "another good passphrase"}},
    )
    answer = client.get("/api/v1/changes", params={"since": start})
    assert answer.status_code == 200
    assert len(answer.text.splitlines()) == 2
    for word in ("password", "argon2", "secret", "correct horse"):
        assert word not in answer.text


def test_read_only_keys_follow_and_the_key_may_be_in_the_query(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(api_keys=KEYS)
    assert client.get("/api/v1/changes").status_code == 401
    assert client.get("/api/v1/changes", headers=RO).status_code == 200
    key = RO["X-API-Key"]
    assert client.get("/api/v1/changes", params={"key": key}).status_code == 200
    assert client.get("/api/v1/changes", params={"key": "wrong"}).status_code == 401
    # only the change feed takes a key from the query
    assert client.get("/api/v1/data/notes", params={"key": key}).status_code == 401
    assert client.get("/api/v1/tables", headers=RO).status_code == 200


def test_followers_past_the_cap_get_503(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(max_subscribers=2)
    cursor = now(client)
    results: list[int] = []

    def poll() -> None:
        answer = client.get("/api/v1/changes", params={"since": cursor, "wait": 2})
        results.append(answer.status_code)

    pollers = [threading.Thread(target=poll) for _ in range(2)]
    for poller in pollers:
        poller.start()
    service = service_of(client.app)
    assert service is not None
    deadline = time.monotonic() + 5
    while service.changes.followers < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    refused = client.get("/api/v1/changes", params={"since": cursor, "wait": 2})
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "busy"
    assert refused.headers["retry-after"]
    # an answer without a wait is no follower: it is never refused
    assert client.get("/api/v1/changes", params={"since": cursor}).status_code == 200
    client.post("/api/v1/data/notes", json={"data": {"id": "x"}})
    for poller in pollers:
        poller.join()
    assert results == [200, 200]
    assert service.changes.followers == 0


# -- Server-Sent Events, at the ASGI level -------------------------------------------


class Stream:
    """One ``text/event-stream`` request run on the app's loop: the messages it
    sends, and a way to hang up."""

    def __init__(
        self,
        client: TestClient,
        query: str = "",
        *,
        accept: str = "text/event-stream",
        slow: float = 0.0,
        **headers: str,
    ) -> None:
        self.client = client
        self.sent: list[dict[str, Any]] = []
        self.query = query
        self.slow = slow  # seconds each write takes to reach the client
        self.headers = [(b"accept", accept.encode())] + [
            (k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()
        ]
        self.gone: asyncio.Event | None = None
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        self.gone = asyncio.Event()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/api/v1/changes",
            "raw_path": b"/api/v1/changes",
            "query_string": self.query.encode(),
            "root_path": "",
            "headers": [(b"host", b"testserver"), *self.headers],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        first = True

        async def receive() -> dict[str, Any]:
            nonlocal first
            if first:
                first = False
                return {"type": "http.request", "body": b"", "more_body": False}
            assert self.gone is not None
            await self.gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if self.slow and message["type"] == "http.response.body":
                await asyncio.sleep(self.slow)
            self.sent.append(message)

        await self.client.app(scope, receive, send)

    def start(self) -> Stream:
        assert self.client.portal is not None

        async def begin() -> None:
            self.task = asyncio.ensure_future(self._run())

        self.client.portal.call(begin)
        return self

    def text(self) -> str:
        return b"".join(m.get("body", b"") for m in list(self.sent)).decode()

    def events(self) -> list[dict[str, Any]]:
        out = []
        for block in self.text().split("\n\n"):
            fields = dict(
                line.split(": ", 1) for line in block.splitlines() if ": " in line
            )
            if "data" in fields and fields.get("event") is None:
                event = orjson.loads(fields["data"])
                assert fields["id"] == event["cursor"]
                out.append(event)
        return out

    def wait_for(self, check: Callable[[], bool], timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, self.text()
            time.sleep(0.01)

    def hang_up(self) -> None:
        assert self.client.portal is not None

        async def end() -> None:
            assert self.gone is not None and self.task is not None
            self.gone.set()
            await asyncio.wait_for(self.task, 5)

        self.client.portal.call(end)

    def done(self) -> bool:
        return self.task is not None and self.task.done()


def test_a_stream_sends_each_change_as_an_event_with_its_cursor_as_id(
    client: TestClient,
) -> None:
    stream = Stream(client, "since=now&tables=notes").start()
    stream.wait_for(lambda: "retry: " in stream.text())
    start = stream.sent[0]
    assert start["status"] == 200
    headers = dict(start["headers"])
    assert headers[b"content-type"].startswith(b"text/event-stream")
    cache = [v for k, v in start["headers"] if k == b"cache-control"]
    assert cache == [b"private, no-cache"]
    assert b"content-length" not in headers
    for n in range(3):
        client.post("/api/v1/data/notes", json={"data": {"id": f"n{n}"}})
        client.post("/api/v1/data/other", json={"data": {"id": f"o{n}"}})
    stream.wait_for(lambda: len(stream.events()) == 3)
    assert [e["id"] for e in stream.events()] == ["n0", "n1", "n2"]
    stream.hang_up()
    service = service_of(client.app)
    assert service is not None and service.changes.followers == 0


def test_a_media_type_asked_in_another_case_is_still_a_stream(
    client: TestClient,
) -> None:
    """Media types are case-insensitive (RFC 9110 section 8.3.1)."""
    stream = Stream(client, "since=now", accept="Text/Event-Stream").start()
    stream.wait_for(lambda: "retry: " in stream.text())
    headers = dict(stream.sent[0]["headers"])
    assert headers[b"content-type"].startswith(b"text/event-stream")
    stream.hang_up()


def test_a_stream_resumes_from_last_event_id(client: TestClient) -> None:
    start = now(client)
    for n in range(4):
        client.post("/api/v1/data/notes", json={"data": {"id": f"n{n}"}})
    events, _ = feed(client, since=start)
    stream = Stream(client, f"since={start}", last_event_id=events[1]["cursor"]).start()
    stream.wait_for(lambda: len(stream.events()) == 2)
    assert [e["id"] for e in stream.events()] == ["n2", "n3"]
    stream.hang_up()


def test_a_stream_keeps_a_quiet_connection_alive(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(changes_heartbeat_s=0.1)
    stream = Stream(client, "since=now").start()
    stream.wait_for(lambda: stream.text().count(": keep-alive") >= 2)
    stream.hang_up()


def test_a_follower_too_far_behind_is_told_to_resume_and_let_go(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(changes_max_lag=600)
    start = now(client)
    body = {"data": [{"id": f"n{n}"} for n in range(1000)]}
    for _ in range(2):
        assert client.post("/api/v1/data/notes", json=body).status_code in (201, 409)
        body = {"data": [{"id": f"m{n}"} for n in range(1000)]}
    stream = Stream(client, f"since={start}").start()
    stream.wait_for(stream.done)
    text = stream.text()
    assert "event: resume" in text
    resume = text.split("event: resume\n", 1)[1]
    data = orjson.loads(resume.split("data: ", 1)[1].split("\n", 1)[0])
    assert "behind" in data["reason"]
    events = stream.events()
    assert data["cursor"] == events[-1]["cursor"]
    assert 600 < len(events) < 2000
    # resuming from it goes on with the next change
    rest, _ = feed(client, since=data["cursor"], limit=1)
    assert rest[0]["cursor"] > events[-1]["cursor"] or len(rest[0]["cursor"]) > len(
        events[-1]["cursor"]
    )
    service = service_of(client.app)
    assert service is not None and service.changes.followers == 0


def test_a_gone_last_event_id_is_410_naming_the_header(
    client_factory: Callable[..., TestClient],
) -> None:
    client, start = fallen_behind(client_factory, 2, 5)
    stream = {"Accept": "text/event-stream"}
    answer = client.get("/api/v1/changes", headers={**stream, "Last-Event-ID": start})
    assert answer.status_code == 410
    assert answer.json()["error"]["details"][0]["loc"] == ["header", "last-event-id"]
    answer = client.get("/api/v1/changes", params={"since": start}, headers=stream)
    assert answer.json()["error"]["details"][0]["loc"] == ["query", "since"]


def test_an_empty_last_event_id_is_none(client: TestClient) -> None:
    """Some clients send it empty before their first event: followed from the
    ``since`` given, as without it."""
    start = now(client)
    client.post("/api/v1/data/notes", json={"data": {"id": "a"}})
    stream = Stream(client, f"since={start}", last_event_id="").start()
    stream.wait_for(lambda: len(stream.events()) == 1)
    assert [e["id"] for e in stream.events()] == ["a"]
    stream.hang_up()


def test_a_gone_cursor_is_410_before_the_stream_begins(
    client_factory: Callable[..., TestClient],
) -> None:
    client, start = fallen_behind(client_factory, 2, 5)
    answer = client.get(
        "/api/v1/changes",
        params={"since": start},
        headers={"Accept": "text/event-stream"},
    )
    assert answer.status_code == 410
    assert answer.json()["error"]["code"] == "gone"


def test_streams_end_with_a_resume_event_when_the_service_stops(
    client: TestClient,
) -> None:
    streams = [Stream(client, "since=now").start() for _ in range(3)]
    for stream in streams:
        stream.wait_for(lambda s=stream: "retry: " in s.text())
    service = service_of(client.app)
    assert service is not None
    assert client.portal is not None
    client.portal.call(lambda: _stop(service))
    for stream in streams:
        stream.wait_for(stream.done)
        assert "the service is stopping" in stream.text()
        assert stream.sent[-1].get("more_body", False) is False


async def _stop(service: Any) -> None:
    service.changes.stopping.set()


@pytest.mark.backends("cluster")
def test_a_cluster_refuses_the_feed_with_501_and_lists_carry_no_cursor(
    client: TestClient,
) -> None:
    client.post("/api/v1/data/notes", json={"data": {"id": "a"}})
    for params, headers in (
        ({}, {}),
        ({"since": "now"}, {}),
        ({"since": "1-1", "wait": "1"}, {}),
        ({}, {"Accept": "text/event-stream"}),
    ):
        answer = client.get("/api/v1/changes", params=params, headers=headers)
        assert answer.status_code == 501, answer.text
        error = answer.json()["error"]
        assert error["code"] == "not_implemented"
        assert "standalone Redis" in error["message"]
    listed = client.get("/api/v1/data/notes")
    assert listed.status_code == 200 and "x-changes-cursor" not in listed.headers
    service = service_of(client.app)
    assert service is not None and service.changes.followers == 0


def test_a_follower_that_falls_out_of_the_retention_is_told_to_reload(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(changes_retain=5)
    stream = Stream(client, "since=now", slow=0.3).start()
    stream.wait_for(lambda: "retry: " in stream.text())
    for n in range(3):  # the follower takes them, each write 0.3 s
        client.post("/api/v1/data/notes", json={"data": {"id": f"a{n}"}})
    time.sleep(0.1)
    for n in range(20):  # meanwhile more than the retention lands
        client.post("/api/v1/data/notes", json={"data": {"id": f"b{n}"}})
    stream.wait_for(stream.done, timeout=10)
    text = stream.text()
    assert "event: gone" in text, text
    gone = orjson.loads(text.split("event: gone\ndata: ", 1)[1].split("\n", 1)[0])
    assert (
        gone["oldest"]
        == client.get("/api/v1/changes", params={"since": "1-0"}).json()["error"][
            "details"
        ][0]["oldest"]
    )
    assert "reload" in gone["reason"]
    service = service_of(client.app)
    assert service is not None and service.changes.followers == 0


def test_a_filtered_quiet_stream_carries_its_cursor_in_the_keep_alive(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(changes_heartbeat_s=0.2)
    stream = Stream(client, "since=now&tables=a").start()
    stream.wait_for(lambda: "retry: " in stream.text())
    client.post("/api/v1/data/b", json={"data": {"id": "x"}})
    cursor = now(client)
    stream.wait_for(lambda: f"id: {cursor}" in stream.text())
    assert stream.events() == []  # no event of b
    assert f": keep-alive\nid: {cursor}\n\n" in stream.text()
    stream.hang_up()


def test_a_long_poll_gives_its_place_back_when_the_client_goes(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(max_subscribers=1)
    cursor = now(client)
    poll = Stream(client, f"since={cursor}&wait=30", accept="*/*").start()
    service = service_of(client.app)
    assert service is not None
    deadline = time.monotonic() + 5
    while service.changes.followers < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert (
        client.get("/api/v1/changes", params={"since": cursor, "wait": 1}).status_code
        == 503
    )
    began = time.monotonic()
    poll.hang_up()
    assert time.monotonic() - began < 2
    assert service.changes.followers == 0


def test_an_ndjson_read_holds_a_few_megabytes_and_says_where_the_rest_is(
    client: TestClient,
) -> None:
    start = now(client)
    fields = {f"f{k}": "x" * 60_000 for k in range(10)}  # 600 KB a record
    for n in range(10):
        made = client.post("/api/v1/data/big", json={"data": {"id": f"n{n}", **fields}})
        assert made.status_code == 201
    first = client.get("/api/v1/changes", params={"since": start})
    lines = first.text.splitlines()
    assert 1 <= len(lines) < 10
    assert len(first.content) <= 4 * 1024 * 1024 + 700_000
    assert first.headers["x-changes-cursor"] == json.loads(lines[-1])["cursor"]
    rest, _ = feed(client, since=first.headers["x-changes-cursor"])
    ids = [json.loads(line)["id"] for line in lines] + [e["id"] for e in rest]
    assert ids == [f"n{n}" for n in range(10)]


def test_cross_origin_clients_can_read_the_cursors(
    client_factory: Callable[..., TestClient],
) -> None:
    client = client_factory(cors_origins="http://app.example")
    answer = client.get("/api/v1/data/notes", headers={"Origin": "http://app.example"})
    exposed = answer.headers["access-control-expose-headers"].lower()
    assert "x-changes-cursor" in exposed and "x-changes-oldest" in exposed
