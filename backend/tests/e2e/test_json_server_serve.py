"""``memdb serve db.json`` as a user starts it: the command line, the file kept
whole through ``kill -9`` under a write burst, ``--watch``, a file that cannot
be served. json-server 0.17 (when node and it are installed for the benchmarks)
takes the same burst, for comparison."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.conftest import (
    BACKEND,
    HOST,
    Server,
    free_port,
    server_environment,
    start_memdb_serve,
    wait_http,
)

from benchmarks.servers import JSON_SERVER_017 as JSON_SERVER_017_NAME
from benchmarks.tools import find_json_server
from tests.integration.test_import_objects import README_1X

pytestmark = pytest.mark.e2e


def serve(tmp_path: Path, file: Path, *args: str, wait: bool = True) -> Server:
    return start_memdb_serve(tmp_path, file, *args, wait=wait)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "db.json"
    path.write_text(
        json.dumps(
            {
                "posts": [{"id": 1, "title": "json-server", "views": 10}],
                "comments": [{"id": 1, "body": "some comment", "postId": 1}],
                "profile": {"name": "typicode"},
            },
            indent=2,
        )
    )
    return path


def test_serve_answers_as_json_server(tmp_path: Path, db: Path) -> None:
    served = serve(tmp_path, db)
    try:
        with httpx.Client(base_url=served.url) as client:
            assert client.get("/posts/1").json() == {
                "id": 1,
                "title": "json-server",
                "views": 10,
            }
            assert client.get("/profile").json() == {"name": "typicode"}
            assert "/comments" in client.get("/").text
            made = client.post("/posts", json={"title": "new"})
            assert made.status_code == 201
            assert client.get("/api/v1/data/posts").json()["total"] == 2
            assert client.get("/health").status_code == 200
    finally:
        assert served.terminate() == 0
    # a clean stop leaves every write in the file
    assert [p["title"] for p in json.loads(db.read_text())["posts"]] == [
        "json-server",
        "new",
    ]


@dataclass
class Burst:
    acked: set[str] = field(default_factory=set)
    unknown: set[str] = field(default_factory=set)
    bad_reads: list[str] = field(default_factory=list)
    reads: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def burst(url: str, file: Path, prefix: str, kill: Any, *, threads: int = 8) -> Burst:
    """Writers POST records with unique titles while a reader parses the file
    again and again; ``kill()`` after a random moment."""
    seen = Burst()
    stop = threading.Event()

    def writer(n: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            for i in range(100_000):
                if stop.is_set():
                    return
                title = f"{prefix}-{n}-{i}"
                try:
                    response = client.post("/posts", json={"title": title, "n": n})
                except httpx.TransportError:
                    with seen.lock:
                        seen.unknown.add(title)
                    return
                if response.status_code == 201:
                    with seen.lock:
                        seen.acked.add(title)

    def reader() -> None:
        while not stop.is_set():
            try:
                raw = file.read_bytes()
                orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                seen.bad_reads.append(str(exc))
            except FileNotFoundError:
                seen.bad_reads.append("missing")
            seen.reads += 1

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    watcher = threading.Thread(target=reader)
    for worker in [*workers, watcher]:
        worker.start()
    time.sleep(random.uniform(0.5, 1.5))
    kill()
    stop.set()
    for worker in [*workers, watcher]:
        worker.join(timeout=30)
    return seen


def titles(file: Path) -> set[str]:
    return {p["title"] for p in orjson.loads(file.read_bytes())["posts"]}


def test_kill_9_under_always_keeps_the_file_whole(tmp_path: Path, db: Path) -> None:
    total = 0
    for round_ in range(3):
        served = serve(tmp_path, db, "--fsync", "always")
        seen = burst(served.url, db, f"r{round_}", served.kill)
        assert len(seen.acked) >= 20, served.logs()
        assert seen.bad_reads == [] and seen.reads > 0
        on_disk = titles(db)  # valid JSON, or this raises
        assert seen.acked <= on_disk, f"lost {len(seen.acked - on_disk)} writes"
        assert {t for t in on_disk if t.startswith(f"r{round_}-")} <= (
            seen.acked | seen.unknown
        )
        total += len(seen.acked)
    assert len(titles(db)) >= total


def test_json_server_017_under_the_same_burst(tmp_path: Path, db: Path) -> None:
    """The figure for comparison: how many acknowledged writes json-server 0.17
    loses to ``kill -9`` (it answers before it writes, and rewrites the file in
    place). Nothing is asserted about it beyond running."""
    node = shutil.which("node")
    if node is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed: json-server runs on node")
    entry = find_json_server(JSON_SERVER_017_NAME, install=True)
    assert entry is not None, "npm could not install json-server 0.17"
    lost, acked, bad = 0, 0, 0
    for round_ in range(3):
        port = free_port()
        log = tmp_path / f"js-{round_}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [node, str(entry), "--port", str(port), str(db)],
                cwd=tmp_path,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(os.environ),
            )
        url = f"http://{HOST}:{port}"
        wait_http(url + "/posts", process, log)

        def kill() -> None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

        seen = burst(url, db, f"j{round_}", kill)
        bad += len(seen.bad_reads)
        try:
            on_disk = titles(db)
        except (orjson.JSONDecodeError, KeyError):
            bad += 1
            db.write_text(json.dumps({"posts": [], "comments": [], "profile": {}}))
            on_disk = set()
        lost += len(seen.acked - on_disk)
        acked += len(seen.acked)
    print(
        f"json-server 0.17 under kill -9: {lost} of {acked} acknowledged writes "
        f"lost, {bad} reads of a file that was not valid JSON"
    )


def test_watch_reloads_an_edited_file(tmp_path: Path, db: Path) -> None:
    served = serve(tmp_path, db, "--watch")
    try:
        with httpx.Client(base_url=served.url) as client:
            document = json.loads(db.read_text())
            document["posts"].append({"id": 2, "title": "by hand"})
            document["tags"] = [{"id": 1, "name": "new"}]
            db.write_text(json.dumps(document, indent=2))
            deadline = time.monotonic() + 10
            while client.get("/posts/2").status_code != 200:
                assert time.monotonic() < deadline, served.logs()
                time.sleep(0.1)
            assert client.get("/tags").json() == [{"id": 1, "name": "new"}]
            edited = db.read_text()
            time.sleep(1.5)  # the reload is not written back over the edit
            assert db.read_text() == edited
            assert client.post("/posts", json={"title": "after"}).status_code == 201
            deadline = time.monotonic() + 10
            while "after" not in titles(db):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert "by hand" in titles(db)
            # a broken edit is reported and changes nothing
            db.write_text("{broken")
            time.sleep(1.5)
            assert client.get("/posts/2").status_code == 200
            assert "dbfile.reload_failed" in served.logs()
    finally:
        served.terminate()


def test_ids_given_on_a_reload_are_written_to_the_file(
    tmp_path: Path, db: Path
) -> None:
    """A record an edit adds without an id gets one, and the file is saved
    with it: after a restart the record still answers to the same id."""
    served = serve(tmp_path, db, "--watch")
    try:
        with httpx.Client(base_url=served.url) as client:
            document = json.loads(db.read_text())
            document["notes"] = [{"text": "no id yet"}]
            db.write_text(json.dumps(document, indent=2))
            deadline = time.monotonic() + 10
            while (
                client.get("/notes").status_code != 200
                or not client.get("/notes").json()
            ):
                assert time.monotonic() < deadline, served.logs()
                time.sleep(0.1)
            given = client.get("/notes").json()[0]["id"]
            while json.loads(db.read_text())["notes"][0].get("id") != given:
                assert time.monotonic() < deadline, served.logs()
                time.sleep(0.1)
    finally:
        served.terminate()
    again = serve(tmp_path, db)
    try:
        with httpx.Client(base_url=again.url) as client:
            assert client.get(f"/notes/{given}").json()["text"] == "no id yet"
    finally:
        again.terminate()


def test_a_file_that_cannot_be_served_stops_it(tmp_path: Path) -> None:
    bad = tmp_path / "db.json"
    bad.write_text('{"posts": "nope"}')
    served = serve(tmp_path, bad, wait=False)
    assert served.process.wait(timeout=30) == 1
    assert "db.json cannot be served" in served.logs()
    assert "posts" in served.logs()
    missing = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", str(tmp_path / "none.json")],
        cwd=BACKEND,
        env=server_environment(),
        capture_output=True,
        timeout=30,
    )
    assert missing.returncode == 1
    assert b"no such file" in missing.stderr


def test_the_readme_examples(tmp_path: Path) -> None:
    """The curl lines of the README's "Coming from json-server" answer what the
    README shows, on json-server's README example db.json."""
    readme = (BACKEND.parent / "README.md").read_text()
    section = readme.split("## Coming from json-server", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    pairs = [
        (line.split("'")[1] if "'" in line else line.split()[-1], block[i + 1][2:])
        for i, line in enumerate(block)
        if line.startswith("curl -s ")
    ]
    assert len(pairs) >= 2
    # the file the README writes is json-server's README example
    text = "\n".join(block).split("<<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    example = {k: v for k, v in README_1X.items() if k != "$schema"}
    assert json.loads(text) == example
    file = tmp_path / "db.json"
    file.write_text(text)
    served = serve(tmp_path, file)
    try:
        for url, shown in pairs:
            got = httpx.get(url.replace("http://127.0.0.1:3000", served.url))
            assert got.status_code == 200, url
            assert got.json() == json.loads(shown), url
    finally:
        assert served.terminate() == 0


def test_costly_queries_do_not_stall_the_others(tmp_path: Path) -> None:
    """The worst json-server queries on a large file (sorting and answering
    all of 200,000 records, scanning with conditions and a _where tree) from
    three clients at once, while a fourth times /health: each query is done in
    slices and worker threads, so /health never waits long."""
    rng = random.Random(7)
    items = [
        {"id": i, "name": f"item-{i}", "value": rng.randrange(10**6)}
        for i in range(200_000)
    ]
    file = tmp_path / "db.json"
    file.write_bytes(orjson.dumps({"items": items}))
    served = serve(tmp_path, file)
    where = json.dumps({"or": [{"value": {"lt": 10}}, {"name": {"endsWith": "77"}}]})
    queries = [
        "/items?_sort=-value",
        "/items?_sort=name,-value&_page=3&_per_page=50",
        f"/items?_where={where}",
        "/items?name:contains=99&value:gt=500000",
    ]
    stop = threading.Event()
    statuses: list[int] = []
    worst = 0.0

    def hammer(n: int) -> None:
        with httpx.Client(base_url=served.url, timeout=60) as client:
            while not stop.is_set():
                statuses.append(client.get(queries[n % len(queries)]).status_code)

    workers = [threading.Thread(target=hammer, args=(n,)) for n in range(3)]
    try:
        for worker in workers:
            worker.start()
        with httpx.Client(base_url=served.url, timeout=10) as probe:
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                started = time.perf_counter()
                assert probe.get("/health").status_code == 200
                worst = max(worst, time.perf_counter() - started)
                time.sleep(0.05)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
        served.terminate()
    assert statuses and set(statuses) <= {200, 503}, set(statuses)
    assert statuses.count(200) >= 3
    assert worst < 0.25, f"/health waited {worst * 1000:.0f} ms"
