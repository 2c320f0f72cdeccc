"""Durability with real processes and real files: ``MEMDB_PERSISTENCE=aof``.

Each test starts ``python -m app`` on a data directory, stops it (SIGTERM),
kills it (SIGKILL, or an injected crash during a compaction), damages its files
or takes its disk away, starts it again and compares what the API shows. Every
loop is bounded by a count and by time; only 127.0.0.1 is used.
"""

from __future__ import annotations

import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from app.storage.aof import frame
from tests.e2e.conftest import Server, server_environment, wait_until_ready

pytestmark = pytest.mark.e2e

Factory = Callable[..., Server]
Op = tuple[Any, ...]

CRASH_STEPS = [
    "after-rotate",
    "before-snapshot-fsync",
    "before-snapshot-rename",
    "after-snapshot-rename",
]
TINY_REWRITE = "2000"  # bytes: compaction after a few dozen writes


def aof_env(data: Path, fsync: str = "always", **extra: str) -> dict[str, str]:
    return {
        "MEMDB_PERSISTENCE": "aof",
        "MEMDB_DATA_DIR": str(data),
        "MEMDB_FSYNC": fsync,
        **extra,
    }


def dump(server: Server) -> dict[str, list[dict[str, Any]]]:
    with server.client() as client:
        response = client.get("/api/v1/dump")
    assert response.status_code == 200, response.text
    body: dict[str, list[dict[str, Any]]] = response.json()
    return body


def ids_of(server: Server, table: str) -> set[str]:
    return {record["id"] for record in dump(server).get(table, [])}


def events_named(server: Server, name: str) -> list[dict[str, Any]]:
    return [e for e in server.events() if e.get("event") == name]


def wait_for_event(server: Server, name: str, timeout: float = 8.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = events_named(server, name)
        if found:
            return found[-1]
        time.sleep(0.05)
    raise AssertionError(f"no {name} event within {timeout} s:\n{server.logs()}")


def file_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m app.cli ARGS`` as a user would run it (stdin answers ``n``)."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env={**server_environment(), "COLUMNS": "400"},
        input="n\n",
        capture_output=True,
        text=True,
        timeout=60,
    )


def flat(text: str) -> str:
    """Whitespace folded, so that a line wrapped by the console still matches."""
    return " ".join(text.split())


def post_records(server: Server, table: str, ids: list[str]) -> None:
    with server.client() as client:
        for record_id in ids:
            response = client.post(
                f"/api/v1/data/{table}",
                json={"data": {"id": record_id, "pad": "p" * 40}},
            )
            assert response.status_code == 201, response.text


# -- 1. a clean restart reloads exactly the same data ------------------------------

TABLES = ["alpha", "beta"]
RECORD_IDS = ["r0", "r1", "r2", "r3"]
FIELDS = ["a", "b", "c"]
USER_IDS = ["u0", "u1", "u2"]
EMAILS = ["ann@example.com", "bob@example.com", "cy@example.com"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(FIELDS), inner, max_size=2),
    ),
    max_leaves=4,
)
bodies = st.dictionaries(st.sampled_from(FIELDS), values, max_size=3)
maybe_id = st.one_of(st.none(), st.sampled_from(RECORD_IDS))
table_names = st.sampled_from(TABLES)

operations: st.SearchStrategy[Op] = st.one_of(
    st.tuples(st.just("create"), table_names, maybe_id, bodies),
    st.tuples(
        st.just("bulk"),
        table_names,
        st.lists(st.tuples(maybe_id, bodies), min_size=1, max_size=4),
    ),
    st.tuples(st.just("put"), table_names, st.sampled_from(RECORD_IDS), bodies),
    st.tuples(
        st.just("patch"),
        table_names,
        st.sampled_from(RECORD_IDS),
        st.dictionaries(st.sampled_from(FIELDS), st.one_of(st.none(), scalars)),
    ),
    st.tuples(st.just("delete"), table_names, st.sampled_from(RECORD_IDS)),
    st.tuples(st.just("drop"), table_names),
    st.tuples(
        st.just("import"),
        st.sampled_from(["merge", "replace"]),
        st.dictionaries(
            table_names,
            st.lists(st.tuples(st.sampled_from(RECORD_IDS), bodies), max_size=3),
            min_size=1,
            max_size=2,
        ),
    ),
    st.tuples(st.just("index"), table_names, st.sampled_from(FIELDS), st.booleans()),
    st.tuples(st.just("unindex"), table_names, st.sampled_from(FIELDS)),
    st.tuples(
        st.just("user"),
        st.sampled_from(USER_IDS),
        st.sampled_from(EMAILS),
        st.integers(0, 150),
    ),
    st.tuples(
        st.just("user_update"),
        st.sampled_from(USER_IDS),
        st.one_of(st.none(), st.sampled_from(EMAILS)),
        st.booleans(),
    ),
    st.tuples(
        st.just("order"),
        st.sampled_from(["o0", "o1", "o2"]),
        st.sampled_from(USER_IDS),
        st.integers(1, 5),
    ),
    st.tuples(st.just("delete_user"), st.sampled_from(USER_IDS)),
    st.tuples(st.just("drop_orders")),
)


def run_op(client: httpx.Client, op: Op) -> httpx.Response:
    kind = op[0]
    if kind == "create":
        _, table, record_id, body = op
        data = {**body, **({"id": record_id} if record_id else {})}
        return client.post(f"/api/v1/data/{table}", json={"data": data})
    if kind == "bulk":
        _, table, items = op
        batch = [{**b, **({"id": i} if i else {})} for i, b in items]
        return client.post(f"/api/v1/data/{table}", json={"data": batch})
    if kind == "put":
        _, table, record_id, body = op
        return client.put(f"/api/v1/data/{table}/{record_id}", json={"data": body})
    if kind == "patch":
        _, table, record_id, body = op
        return client.patch(f"/api/v1/data/{table}/{record_id}", json={"data": body})
    if kind == "delete":
        return client.delete(f"/api/v1/data/{op[1]}/{op[2]}")
    if kind == "drop":
        return client.delete(f"/api/v1/data/{op[1]}")
    if kind == "import":
        _, mode, tables = op
        document = {
            name: [{**body, "id": record_id} for record_id, body in rows]
            for name, rows in tables.items()
        }
        return client.post(f"/api/v1/import?mode={mode}", json=document)
    if kind == "index":
        _, table, name, unique = op
        return client.post(
            f"/api/v1/tables/{table}/indexes", json={"field": name, "unique": unique}
        )
    if kind == "unindex":
        return client.delete(f"/api/v1/tables/{op[1]}/indexes/{op[2]}")
    if kind == "user":
        _, user_id, email, age = op
        user = {
            "id": user_id,
            "email": email,
            "full_name": f"User {user_id}",
            "age": age,
            "password": f"password-{user_id}",
        }
        return client.post("/api/v1/data/users", json={"data": user})
    if kind == "user_update":
        _, user_id, email, new_password = op
        change: dict[str, Any] = {"full_name": f"Renamed {user_id}"}
        if email is not None:
            change["email"] = email
        if new_password:
            change["password"] = f"changed-{user_id}"
        return client.put(f"/api/v1/data/users/{user_id}", json={"data": change})
    if kind == "order":
        _, order_id, user_id, quantity = op
        order = {
            "id": order_id,
            "user_id": user_id,
            "product_name": "widget",
            "quantity": quantity,
            "total_price": quantity * 2.5,
        }
        return client.post("/api/v1/data/orders", json={"data": order})
    if kind == "delete_user":
        return client.delete(f"/api/v1/data/users/{op[1]}")
    if kind == "drop_orders":
        return client.delete("/api/v1/data/orders")
    raise AssertionError(f"unknown op {op!r}")


@dataclass
class Digest:
    dump: bytes
    tables: Any
    etags: dict[str, str]


def digest(server: Server) -> Digest:
    """The dump byte for byte, the tables with their indexes, every record's ETag."""
    with server.client() as client:
        dumped = client.get("/api/v1/dump")
        tables = client.get("/api/v1/tables")
        assert dumped.status_code == tables.status_code == 200
        etags: dict[str, str] = {}
        for table, records in dumped.json().items():
            for record in records:
                response = client.get(f"/api/v1/data/{table}/{record['id']}")
                assert response.status_code == 200, response.text
                etags[f"{table}/{record['id']}"] = response.headers["etag"]
    return Digest(dumped.content, tables.json(), etags)


@pytest.mark.parametrize("compaction", [False, True], ids=["log", "compacted"])
@settings(
    max_examples=4,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(operations, min_size=10, max_size=30))
def test_a_clean_restart_reloads_exactly_the_same_data(
    server_factory: Factory, tmp_path: Path, compaction: bool, ops: list[Op]
) -> None:
    data = Path(tempfile.mkdtemp(dir=tmp_path)) / "data"
    extra = {"MEMDB_AOF_REWRITE_MIN_BYTES": TINY_REWRITE} if compaction else {}
    env = aof_env(data, fsync="everysec", **extra)
    server = server_factory(**env)
    with server.client() as client:
        if compaction:
            # enough bytes for the background task to compact
            pad = [{"id": f"p{i}", "pad": "x" * 60} for i in range(30)]
            assert client.post("/api/v1/data/pad", json={"data": pad}).is_success
        half = len(ops) // 2
        failures: list[str] = []  # checked last, so that the reload is checked too
        for position, op in enumerate(ops):
            if compaction and position == half:
                wait_for_event(server, "aof.compacted")
                assert list(data.glob("snapshot.*.db"))
            response = run_op(client, op)
            if response.status_code >= 500:
                failures.append(f"{op!r}: {response.status_code} {response.text}")
    before = digest(server)
    assert server.terminate() == 0

    again = server_factory(**env)
    assert digest(again) == before
    if compaction:
        assert list(data.glob("snapshot.*.db"))
    assert again.terminate() == 0
    assert failures == []


def wait_ready_or_exit(server: Server, timeout: float = 10.0) -> str:
    """``"ready"`` or ``"exited"``; fails when the server is neither in time."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.url, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                server.wait_exit()
                return "exited"
            try:
                if client.get("/ready").status_code == 200:
                    return "ready"
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    raise AssertionError(
        f"neither ready nor exited after {timeout} s:\n{story(server)}"
    )


def story(server: Server) -> str:
    """The server's log without the readiness polls."""
    return "\n".join(line for line in server.log_lines() if '"/ready"' not in line)


def test_a_write_that_fails_inside_the_store_does_not_break_the_restart(
    server_factory: Factory, tmp_path: Path
) -> None:
    """An integral float past 64 bits inside a value of an indexed field: whatever
    the answer, the log must not hold a change that memory does not."""
    env = aof_env(tmp_path / "data")
    server = server_factory(**env)
    with server.client() as client:
        created = client.post("/api/v1/data/wide", json={"data": {"id": "a", "v": 1}})
        assert created.status_code == 201
        indexed = client.post("/api/v1/tables/wide/indexes", json={"field": "v"})
        assert indexed.status_code == 201
        wide = client.post("/api/v1/data/wide", json={"data": {"id": "b", "v": [1e20]}})
        before = client.get("/api/v1/dump").content
    assert server.terminate() == 0

    server = server_factory(wait=False, **env)
    assert wait_ready_or_exit(server) == "ready", story(server)
    with server.client() as client:
        assert client.get("/api/v1/dump").content == before
        assert (client.get("/api/v1/data/wide/b").status_code == 200) == (
            wide.status_code == 201
        )
    assert wide.status_code == 201, wide.text  # valid JSON, a valid record


def test_a_logged_change_that_cannot_be_replayed_stops_the_service(
    server_factory: Factory, tmp_path: Path
) -> None:
    """A well-framed entry that cannot be applied: refuse to start with a message,
    like a damaged record, rather than stay not ready for ever."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "appendonly.0.aof").write_bytes(
        frame({"op": "put", "table": "t", "records": [{"id": "a"}]})
        + frame({"op": "delete", "table": "t", "id": "never-created"})
    )
    server = server_factory(wait=False, **aof_env(data))
    assert wait_ready_or_exit(server) == "exited"
    assert server.process.returncode == 1
    refused = events_named(server, "service.cannot_start")
    assert len(refused) == 1 and "appendonly.0.aof" in refused[0]["message"]


def test_a_second_service_on_the_same_directory_is_refused(
    server_factory: Factory, tmp_path: Path
) -> None:
    """Two services appending to one log would interleave their changes, and a
    compaction of either would drop the other's acknowledged writes: the
    directory is locked for as long as a service has it open."""
    data = tmp_path / "data"
    first = server_factory(**aof_env(data))
    post_records(first, "kept", ["k0"])
    second = server_factory(wait=False, **aof_env(data))
    assert wait_ready_or_exit(second) == "exited"
    assert second.process.returncode == 1
    (refused,) = events_named(second, "service.cannot_start")
    assert "in use by another memdb service" in refused["message"]
    repair = cli("repair", str(data), "--yes")  # nor does repair cut under it
    assert repair.returncode == 1
    assert "in use by a running memdb service" in repair.stderr
    post_records(first, "kept", ["k1"])  # the first goes on
    assert first.terminate() == 0
    third = server_factory(**aof_env(data))  # free again once it stopped
    with third.client() as client:
        kept = client.get("/api/v1/dump").json()["kept"]
        assert [r["id"] for r in kept] == ["k0", "k1"]


# -- 2. SIGKILL under write load ---------------------------------------------------


@dataclass
class Outcome:
    """What the clients saw: acknowledged ids (with the time of the answer),
    ids answered with an error, and ids whose fate is unknown (in flight)."""

    acked: dict[str, float] = field(default_factory=dict)
    refused: set[str] = field(default_factory=set)
    duplicates: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def hammer(
    server: Server, prefix: str, *, threads: int = 8, kill_after: float
) -> tuple[Outcome, float]:
    """Writers POST unique ids as fast as they can; SIGKILL the server after
    ``kill_after`` seconds. Every tenth request is one the server must refuse
    (422), every seventh re-sends a taken id with other data (409)."""
    outcome = Outcome()
    start = threading.Barrier(threads + 1, timeout=20)
    deadline = time.monotonic() + 20

    def writer(n: int) -> None:
        with server.client() as client:
            start.wait()
            first: str | None = None
            for i in range(20_000):
                if time.monotonic() > deadline:
                    return
                record_id = f"{prefix}-{n}-{i}"
                data: dict[str, Any] = {"id": record_id, "n": n, "i": i}
                if i % 10 == 9:
                    data["created_at"] = "2020-01-01T00:00:00Z"  # refused: 422
                elif i % 7 == 6 and first is not None:
                    record_id = first
                    data = {"id": first, "n": n, "i": i, "duplicate": True}
                try:
                    response = client.post("/api/v1/data/crash", json={"data": data})
                except httpx.TransportError:
                    with outcome.lock:
                        outcome.unknown.add(record_id)
                    return
                with outcome.lock:
                    if response.status_code == 201:
                        outcome.acked[record_id] = time.monotonic()
                        first = first or record_id
                    elif response.status_code == 409 and record_id == first:
                        outcome.duplicates.add(record_id)
                    elif response.status_code == 422:
                        outcome.refused.add(record_id)
                    else:
                        outcome.unexpected.append(
                            f"{record_id}: {response.status_code} {response.text}"
                        )

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    time.sleep(kill_after)
    killed_at = time.monotonic()
    assert server.kill() == -9
    for worker in workers:
        worker.join(timeout=30)
    assert not any(worker.is_alive() for worker in workers)
    return outcome, killed_at


def check_after_crash(
    server: Server, outcome: Outcome, prefix: str
) -> tuple[set[str], set[str]]:
    """The ids of this round now present, and the acknowledged ones missing."""
    assert outcome.unexpected == []
    records = {
        r["id"]: r for r in dump(server).get("crash", []) if r["id"].startswith(prefix)
    }
    present = set(records)
    # nothing is there that was refused or never sent
    assert not present & outcome.refused
    assert present <= set(outcome.acked) | outcome.unknown
    for record_id, record in records.items():
        _, n, i = record_id.rsplit("-", 2)
        assert (record["n"], record["i"]) == (int(n), int(i))
        assert "duplicate" not in record
    return present, set(outcome.acked) - present


def test_sigkill_under_always_loses_no_acknowledged_write(
    server_factory: Factory, tmp_path: Path
) -> None:
    env = aof_env(tmp_path / "data", fsync="always")
    server = server_factory(**env)
    total_acked = 0
    for round_ in range(3):
        prefix = f"k{round_}"
        outcome, _ = hammer(server, prefix, kill_after=random.uniform(0.3, 1.5))
        assert len(outcome.acked) >= 20, "the load did not get going"
        assert outcome.refused and outcome.duplicates
        server = server_factory(**env)
        _, missing = check_after_crash(server, outcome, prefix)
        assert missing == set()
        total_acked += len(outcome.acked)
    assert len(ids_of(server, "crash")) >= total_acked


def test_sigkill_under_everysec_loses_at_most_about_a_second(
    server_factory: Factory, tmp_path: Path
) -> None:
    env = aof_env(tmp_path / "data", fsync="everysec")
    server = server_factory(**env)
    for round_ in range(2):
        prefix = f"e{round_}"
        outcome, killed_at = hammer(server, prefix, kill_after=random.uniform(0.3, 1.5))
        assert len(outcome.acked) >= 20, "the load did not get going"
        server = server_factory(**env)
        _, missing = check_after_crash(server, outcome, prefix)
        late = {i for i, at in outcome.acked.items() if at >= killed_at - 2.0}
        assert missing <= late


# -- 3. torn and damaged logs ------------------------------------------------------


def record_offsets(path: Path) -> list[int]:
    offsets, position = [], 0
    for line in path.read_bytes().splitlines(keepends=True):
        offsets.append(position)
        position += len(line)
    return offsets


def ten_records(server_factory: Factory, data: Path) -> Path:
    """A data directory whose log holds r0..r9 of ``logged``, one record a line."""
    server = server_factory(**aof_env(data))
    post_records(server, "logged", [f"r{i}" for i in range(10)])
    assert server.terminate() == 0
    log = data / "appendonly.0.aof"
    assert len(record_offsets(log)) == 10
    return log


def test_a_torn_last_record_is_dropped_with_a_warning(
    server_factory: Factory, tmp_path: Path
) -> None:
    log = ten_records(server_factory, tmp_path / "data")
    size = log.stat().st_size
    last = record_offsets(log)[-1]
    cuts = sorted({last + 1, last + 8, last + 9, (last + size) // 2, size - 1})
    copies: list[tuple[int, Path, Server]] = []
    for cut in cuts:
        data = tmp_path / f"cut-{cut}"
        shutil.copytree(tmp_path / "data", data)
        with (data / "appendonly.0.aof").open("r+b") as handle:
            handle.truncate(cut)
        copies.append((cut, data, server_factory(wait=False, **aof_env(data))))
    for cut, data, server in copies:
        wait_until_ready(server)
        assert ids_of(server, "logged") == {f"r{i}" for i in range(9)}, cut
        torn = wait_for_event(server, "aof.torn_tail")
        assert torn["level"] == "warning"
        assert torn["file"] == "appendonly.0.aof"
        assert (torn["offset"], torn["dropped_bytes"]) == (last, cut - last)
        assert (data / "appendonly.0.aof").stat().st_size == last
        kept = (data / f"appendonly.0.aof.{last}.corrupt").read_bytes()
        assert kept == (tmp_path / "data" / "appendonly.0.aof").read_bytes()[last:cut]
    # the next write starts on a clean line and survives a restart
    cut, data, server = copies[0]
    post_records(server, "logged", ["after"])
    assert server.terminate() == 0
    server = server_factory(**aof_env(data))
    assert ids_of(server, "logged") == {f"r{i}" for i in range(9)} | {"after"}
    assert events_named(server, "aof.torn_tail") == []


def test_a_flipped_byte_in_the_last_complete_record_refuses_the_start(
    server_factory: Factory, tmp_path: Path
) -> None:
    """The last record has its line end: it was written whole, and under
    ``always`` acknowledged; a bad checksum there is damage, not a torn write."""
    data = tmp_path / "data"
    log = ten_records(server_factory, data)
    last = record_offsets(log)[-1]
    content = bytearray(log.read_bytes())
    content[last + 20] ^= 0x01
    log.write_bytes(bytes(content))

    server = server_factory(wait=False, **aof_env(data))
    assert server.wait_exit() == 1
    (refused,) = events_named(server, "service.cannot_start")
    assert f"offset {last}" in refused["message"]
    assert "repair" in refused["message"]
    assert log.read_bytes() == bytes(content)
    assert not list(data.glob("*.corrupt"))

    assert cli("repair", str(data), "--yes").returncode == 0
    assert (data / f"appendonly.0.aof.{last}.corrupt").read_bytes() == bytes(
        content[last:]
    )
    server = server_factory(**aof_env(data))
    assert ids_of(server, "logged") == {f"r{i}" for i in range(9)}


def test_a_damaged_middle_record_refuses_to_start_until_repaired(
    server_factory: Factory, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    log = ten_records(server_factory, data)
    offset = record_offsets(log)[5]
    content = bytearray(log.read_bytes())
    content[offset + 30] ^= 0x01
    log.write_bytes(bytes(content))

    server = server_factory(wait=False, **aof_env(data))
    assert server.wait_exit() == 1
    refused = events_named(server, "service.cannot_start")
    assert len(refused) == 1
    assert "appendonly.0.aof" in refused[0]["message"]
    assert f"offset {offset}" in refused[0]["message"]
    assert log.read_bytes() == bytes(content)  # the server cut nothing

    checked = cli("check", str(data))
    assert checked.returncode == 1
    report = flat(checked.stderr + checked.stdout)
    assert "appendonly.0.aof" in report and f"offset {offset}" in report
    # what repair would cut off: from the bad record to the end of the log
    assert f".corrupt file of {len(content) - offset} bytes" in report, report
    declined = cli("repair", str(data))  # no terminal to ask on: refused
    assert declined.returncode == 1
    said = (declined.stderr + declined.stdout).strip()
    assert len(said.splitlines()) == 1 and "--yes" in said, said
    assert "Traceback" not in said and "EOFError" not in said
    assert log.read_bytes() == bytes(content)

    repaired = cli("repair", str(data), "--yes")
    assert repaired.returncode == 0, repaired.stderr
    assert f"truncated to {offset} bytes" in flat(repaired.stderr + repaired.stdout)
    assert log.stat().st_size == offset
    aside = data / f"appendonly.0.aof.{offset}.corrupt"
    assert aside.read_bytes() == bytes(content)[offset:]
    assert cli("check", str(data)).returncode == 0

    server = server_factory(**aof_env(data))
    assert ids_of(server, "logged") == {f"r{i}" for i in range(5)}


UNREPLAYABLE = [
    {"op": "zap", "table": "t0"},
    {"op": "delete", "table": "t0", "id": "nope"},
    {"op": "put", "table": "t0", "records": "nope"},
]


def refusal_of(server: Server) -> str:
    """What the service said about the data directory when it refused to start."""
    (refused,) = events_named(server, "service.cannot_start")
    message = flat(refused["message"])
    prefix = "the data directory cannot be loaded: "
    assert message.startswith(prefix), message
    return message[len(prefix) :]


@pytest.mark.parametrize("bad", UNREPLAYABLE, ids=["op", "id", "records"])
def test_an_entry_that_cannot_be_replayed_is_found_by_check_and_cut_by_repair(
    server_factory: Factory, tmp_path: Path, bad: dict[str, Any]
) -> None:
    """Every checksum is right but the service cannot replay one entry: check
    names it as the service does, repair cuts the log there, and the service
    then starts with every record before it."""
    data = tmp_path / "data"
    log = ten_records(server_factory, data)
    offset = record_offsets(log)[5]
    content = log.read_bytes()
    damaged = content[:offset] + frame(bad) + content[offset:]
    log.write_bytes(damaged)

    server = server_factory(wait=False, **aof_env(data))
    assert server.wait_exit() == 1
    refusal = refusal_of(server)
    where = f"appendonly.0.aof: damaged record at byte offset {offset}"
    assert refusal.startswith(f"{where} (the entry cannot be replayed"), refusal
    assert "repair" in refusal
    assert log.read_bytes() == damaged

    checked = cli("check", str(data))
    assert checked.returncode == 1, checked.stderr
    report = flat(checked.stderr + checked.stdout)
    # the service's own words, and the bytes repair would cut off
    assert f"{refusal} of {len(damaged) - offset} bytes" in report, report
    assert log.read_bytes() == damaged

    repaired = cli("repair", str(data), "--yes")
    assert repaired.returncode == 0, repaired.stderr
    assert f"truncated to {offset} bytes" in flat(repaired.stderr + repaired.stdout)
    assert log.read_bytes() == content[:offset]
    aside = data / f"appendonly.0.aof.{offset}.corrupt"
    assert aside.read_bytes() == damaged[offset:]
    assert cli("check", str(data)).returncode == 0

    server = server_factory(**aof_env(data))
    assert ids_of(server, "logged") == {f"r{i}" for i in range(5)}


def test_an_incomplete_snapshot_is_not_offered_to_repair(
    server_factory: Factory, tmp_path: Path
) -> None:
    """A snapshot is the compacted state and cannot be cut: the service, check
    and repair all say so and what to do instead; moved aside, the service
    loads the log that remains."""
    data = tmp_path / "data"
    data.mkdir()
    snapshot = data / "snapshot.1.db"
    records = [{"id": f"r{i}", "pad": "p" * 40} for i in range(5)]
    snapshot.write_bytes(
        frame({"op": "snapshot", "version": 1, "generation": 1})
        + frame({"op": "create_table", "table": "logged"})
        + b"".join(
            frame({"op": "put", "table": "logged", "records": [r]}) for r in records
        )
        # its last records and its end record are missing
    )
    log = data / "appendonly.1.aof"
    log.write_bytes(frame({"op": "put", "table": "logged", "records": [{"id": "r9"}]}))
    before = {name: (data / name).read_bytes() for name in file_names(data)}

    server = server_factory(wait=False, **aof_env(data))
    assert server.wait_exit() == 1
    refusal = refusal_of(server)
    assert refusal.startswith("snapshot.1.db: the snapshot is incomplete"), refusal
    assert "move snapshot.1.db out of the directory" in refusal
    assert "backup" in refusal and "can cut the log there" not in refusal

    checked = cli("check", str(data))
    assert checked.returncode == 1
    assert refusal in flat(checked.stderr + checked.stdout)
    repaired = cli("repair", str(data), "--yes")
    assert repaired.returncode == 1
    said = flat(repaired.stderr + repaired.stdout)
    assert refusal in said and "a snapshot cannot be cut" in said
    after = {n: (data / n).read_bytes() for n in file_names(data) if n != "memdb.lock"}
    assert after == before

    snapshot.rename(data / "snapshot.1.db.damaged")
    assert cli("check", str(data)).returncode == 0
    server = server_factory(**aof_env(data))
    assert ids_of(server, "logged") == {"r9"}


# -- 4. a crash at each step of a compaction ------------------------------------------


def write_until_exit(server: Server, prefix: str, limit: int = 3000) -> set[str]:
    """POST records one after another until the server dies; the acknowledged ids."""
    acked: set[str] = set()
    deadline = time.monotonic() + 15
    with server.client() as client:
        for i in range(limit):
            if time.monotonic() > deadline or server.process.poll() is not None:
                break
            try:
                response = client.post(
                    "/api/v1/data/compacted",
                    json={"data": {"id": f"{prefix}{i}", "pad": "c" * 80}},
                )
            except httpx.TransportError:
                break
            assert response.status_code == 201, response.text
            acked.add(f"{prefix}{i}")
            if i > 40:
                time.sleep(0.01)  # past the threshold: let the compaction start
    return acked


@pytest.mark.parametrize("step", CRASH_STEPS)
def test_a_crash_during_compaction_loses_nothing(
    server_factory: Factory, tmp_path: Path, step: str
) -> None:
    data = tmp_path / "data"
    env = aof_env(data, MEMDB_AOF_REWRITE_MIN_BYTES=TINY_REWRITE)
    server = server_factory(**env, MEMDB_CRASH_AT=step)
    acked = write_until_exit(server, "a")
    assert server.wait_exit(timeout=15) == 137
    names = file_names(data)
    assert "appendonly.0.aof" in names and "appendonly.1.aof" in names
    assert ("snapshot.1.db" in names) == (step == "after-snapshot-rename")
    if step in ("before-snapshot-fsync", "before-snapshot-rename"):
        assert "snapshot.1.db.tmp" in names

    server = server_factory(**env)
    present = ids_of(server, "compacted")
    assert acked <= present
    assert len(present - acked) <= 1  # at most the write in flight
    assert not list(data.glob("*.tmp"))

    # it compacts again, and that too reloads
    more: list[str] = []
    deadline = time.monotonic() + 15
    while not events_named(server, "aof.compacted"):
        assert time.monotonic() < deadline and len(more) < 3000, "no compaction"
        batch = [f"b{len(more) + i}" for i in range(10)]
        post_records(server, "compacted", batch)
        more += batch
        time.sleep(0.05)
    assert events_named(server, "aof.compacted")[0]["generation"] == 2
    assert server.terminate() == 0
    assert "appendonly.0.aof" not in file_names(data)
    server = server_factory(**env)
    assert ids_of(server, "compacted") == present | set(more)


# -- 5. a full disk, a read-only disk -------------------------------------------------


def file_size_limit(limit: int) -> Callable[[], None]:
    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return limit_files


def assert_persistence_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "persistence_unavailable"
    assert error["message"]
    assert error["details"] == []
    assert error["request_id"] == response.headers["x-request-id"]


def test_a_full_disk_refuses_writes_cleanly_and_reads_go_on(
    server_factory: Factory, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    env = aof_env(data)
    server = server_factory(preexec_fn=file_size_limit(16_384), **env)
    acked: list[str] = []
    refused: httpx.Response | None = None
    with server.client() as client:
        for i in range(1000):
            response = client.post(
                "/api/v1/data/full", json={"data": {"id": f"f{i}", "pad": "d" * 150}}
            )
            if response.status_code != 201:
                refused = response
                break
            acked.append(f"f{i}")
        assert refused is not None, "the disk never filled"
        assert_persistence_unavailable(refused)
        assert 20 < len(acked) < 200
        before = client.get("/api/v1/dump").content

        # reads work; the refused write is nowhere; later writes are refused too
        assert client.get(f"/api/v1/data/full/f{len(acked)}").status_code == 404
        assert client.get(f"/api/v1/data/full/{acked[0]}").status_code == 200
        listed = client.get("/api/v1/data/full", params={"limit": 1000})
        assert listed.status_code == 200
        assert [r["id"] for r in listed.json()["items"]] == acked
        # a write at least as large as the refused one is refused too (a small
        # one may still fit in the room the partial line left)
        assert_persistence_unavailable(
            client.post(
                "/api/v1/data/full", json={"data": {"id": "later", "pad": "d" * 300}}
            )
        )
        assert_persistence_unavailable(
            client.patch(
                f"/api/v1/data/full/{acked[1]}", json={"data": {"pad": "e" * 300}}
            )
        )
        assert client.get("/api/v1/data/full/later").status_code == 404
        assert client.get("/api/v1/dump").content == before
        assert client.get("/ready").status_code == 200
    assert server.terminate() == 0
    assert events_named(server, "aof.write_refused")

    server = server_factory(**env)
    assert [r["id"] for r in dump(server)["full"]] == acked
    assert events_named(server, "aof.torn_tail") == []
    assert cli("check", str(data)).returncode == 0
    post_records(server, "full", ["room-again"])


def test_a_read_only_data_directory_serves_reads_and_refuses_writes(
    server_factory: Factory, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    server = server_factory(**aof_env(data))
    post_records(server, "kept", ["k0", "k1"])
    assert server.terminate() == 0

    bind = subprocess.run(
        ["mount", "--bind", str(data), str(data)], capture_output=True, text=True
    )
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount the data directory: {bind.stderr.strip()}")
    server = None
    try:
        remount = subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(data)],
            capture_output=True,
            text=True,
        )
        if remount.returncode != 0:
            pytest.skip(f"cannot make the mount read-only: {remount.stderr.strip()}")
        with pytest.raises(OSError):
            (data / "probe").write_bytes(b"")
        server = server_factory(**aof_env(data))
        with server.client() as client:
            assert client.get("/api/v1/data/kept/k0").status_code == 200
            assert [r["id"] for r in client.get("/api/v1/dump").json()["kept"]] == [
                "k0",
                "k1",
            ]
            assert_persistence_unavailable(
                client.post("/api/v1/data/kept", json={"data": {"id": "k2"}})
            )
            assert_persistence_unavailable(client.delete("/api/v1/data/kept/k0"))
            assert client.get("/api/v1/data/kept/k2").status_code == 404
            assert client.get("/api/v1/data/kept/k0").status_code == 200
        unavailable = events_named(server, "aof.unavailable")
        assert unavailable and unavailable[0]["level"] == "error"
        assert server.terminate() == 0
    finally:
        if server is not None:
            server.stop()
        subprocess.run(["umount", str(data)], check=True, timeout=30)
    assert file_names(data) == ["appendonly.0.aof", "memdb.lock"]


# -- 6. SIGTERM flushes ------------------------------------------------------------------


def test_sigterm_flushes_the_log_under_fsync_no(
    server_factory: Factory, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    env = aof_env(data, fsync="no")
    server = server_factory(**env)
    singles = [f"s{i}" for i in range(50)]
    post_records(server, "flushed", singles)
    with server.client() as client:
        batch = [{"id": f"b{i}"} for i in range(200)]
        assert client.post("/api/v1/data/flushed", json={"data": batch}).is_success
    assert server.terminate() == 0
    closed = events_named(server, "aof.closed")
    assert len(closed) == 1
    assert closed[0]["synced_bytes"] == (data / "appendonly.0.aof").stat().st_size

    server = server_factory(**env)
    assert [r["id"] for r in dump(server)["flushed"]] == singles + [
        f"b{i}" for i in range(200)
    ]


def test_a_clean_restart_without_writes_keeps_the_files_as_they_are(
    server_factory: Factory, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    env = aof_env(data)
    server = server_factory(**env)
    post_records(server, "quiet", ["q0"])
    assert server.terminate() == 0
    contents = {p.name: p.read_bytes() for p in data.iterdir()}
    server = server_factory(**env)
    assert ids_of(server, "quiet") == {"q0"}
    assert server.terminate() == 0
    assert {p.name: p.read_bytes() for p in data.iterdir()} == contents
