"""The benchmark harness, run very briefly so that it does not rot.

Only the service (in memory and over a Redis of its own) and the floors, tiny
data, one second a load run and no thresholds: this checks that every phase of
``make bench`` runs, and that its outputs are written, not how fast anything
is. Nothing is installed: wrk is used where it is present, the harness's own
Python load generator elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import httpx
import orjson
import pytest

from benchmarks import data, servers
from benchmarks.__main__ import run
from benchmarks.harness import Load, Processes, Request, Summary, parse_wrk, run_load
from benchmarks.changes_phase import FEED
from benchmarks.mixed_phase import MIXED_LABEL, MIXED_SERVER, parse_mix, run_mix
from benchmarks.redis_phase import MEMORY_BESIDE, REDIS_1, REDIS_2
from benchmarks.report import FIGURE_HEADER, Figure, Target, build_figures
from benchmarks.report import figure_rows, load_document
from benchmarks.scenarios import BIG_SERVER, SORTED_LARGE_KEY, SORTED_SMALL_KEY
from benchmarks.scenarios import Results
from benchmarks.settings import SCENARIOS, Outputs, Settings

pytestmark = pytest.mark.e2e

TOOL = "wrk" if shutil.which("wrk") else "python"

WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:1/items/7
  2 threads and 32 connections
BENCH_JSON {"requests": 2000, "duration_us": 1000000, "bytes": 1, "connect": 0, \
"read": 0, "write": 0, "status": 3, "timeout": 1, "p50_us": 1500.0, \
"p90_us": 2500.0, "p99_us": 4200.0, "max_us": 9000.0, "mean_us": 1600.0}
"""


def test_wrk_summary_is_parsed() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert result.requests == 2000
    assert result.rps == pytest.approx(2000.0)
    assert result.p99_ms == pytest.approx(4.2)
    assert result.errors == 4


MIX_OUTPUT = (
    'BENCH_MIX {"statuses": {"200": 1700, "201": 290, "404": 7, "503": 1}, '
    '"sent": {"get": 1600, "post": 300, "patch": 100}}\n' + WRK_OUTPUT
)


def test_the_mixed_counts_are_parsed() -> None:
    result = parse_mix(MIX_OUTPUT)
    assert result.requests == 2000
    # every answer outside 2xx by status, and the socket errors (one timeout);
    # not wrk's own "status" count (3 here: only those >= 400, all together)
    assert result.extra["non_2xx"] == 8
    assert result.extra["socket_errors"] == 1
    assert result.errors == 9
    assert result.extra["statuses"] == {"200": 1700, "201": 290, "404": 7, "503": 1}
    assert result.extra["sent"] == {"get": 1600, "post": 300, "patch": 100}


def _mixed_run(errors: int, p99_ms: float) -> dict[str, object]:
    return {
        "server": MIXED_SERVER,
        "scenario": "mixed",
        "round": 0,
        "requests": 1000,
        "seconds": 1.0,
        "rps": 1000.0,
        "p50_ms": 1.0,
        "p90_ms": 2.0,
        "p99_ms": p99_ms,
        "max_ms": 9.0,
        "errors": errors,
        "tool": "wrk",
        "extra": {"non_2xx": errors, "socket_errors": 0},
    }


@pytest.mark.parametrize(
    "errors,p99_ms,status", [(0, 4.0, "pass"), (1, 4.0, "FAIL"), (0, 12.0, "FAIL")]
)
def test_the_mixed_row_needs_a_low_p99_and_no_errors(
    errors: int, p99_ms: float, status: str
) -> None:
    results = Results(runs=[_mixed_run(errors, p99_ms)])
    figures = {f.label: f for f in build_figures(results, Settings())}
    row = figure_rows([figures[MIXED_LABEL]])[0]
    assert row[-1] == status
    assert row[1] == f"{p99_ms:.2f} ms"
    assert row[2].startswith("1,000 req/s, p50 1.00 ms, errors")
    assert row[4] == "p99 < 10 ms at 32 connections, 0 errors"
    skipped = Results(skipped={MIXED_SERVER: "skipped: persistence not available"})
    figures = {f.label: f for f in build_figures(skipped, Settings())}
    assert figures[MIXED_LABEL].status == "skipped"


def test_summary_is_the_median_with_the_spread() -> None:
    summary = Summary.of([3.0, 1.0, 2.0])
    assert (summary.median, summary.low, summary.high, summary.count) == (
        2.0,
        1.0,
        3.0,
        3,
    )


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    with Processes(tmp_path) as started:
        yield started


@pytest.mark.parametrize(
    "tool,module",
    [
        ("python", "benchmarks.floor_app"),
        ("python", "benchmarks.raw_floor_app"),
        pytest.param(
            "wrk",
            "benchmarks.floor_app",
            marks=pytest.mark.skipif(TOOL != "wrk", reason="wrk is not installed"),
        ),
    ],
)
def test_load_generators_drive_the_floors(
    processes: Processes, tmp_path: Path, tool: str, module: str
) -> None:
    floor = servers.start_python_app(
        processes, tmp_path, name=servers.FLOOR, module=module, items=10
    )
    load = Load(connections=4, threads=1, seconds=1, tool=tool)
    for request in servers.floor_requests().values():
        result = run_load(floor.url, request, load, tmp_path)
        assert result.requests > 0
        assert result.errors == 0
        assert result.p50_ms <= result.p99_ms
    missing = run_load(floor.url, Request("GET", "/items/nope"), load, tmp_path)
    assert missing.errors == missing.requests > 0
    processes.stop_all()
    assert not floor.alive()


@pytest.mark.parametrize(
    "tool",
    [
        "python",
        pytest.param(
            "wrk",
            marks=pytest.mark.skipif(TOOL != "wrk", reason="wrk is not installed"),
        ),
    ],
)
def test_the_mix_counts_answers_by_status(
    processes: Processes, tmp_path: Path, tool: str
) -> None:
    """Ids 1..20 asked of a service holding 1..10: about half the GETs and
    PATCHes answer 404, each counted as an error, by status."""
    memdb = servers.start_small_memdb(processes, tmp_path, name="memdb", items=10)
    load = Load(connections=4, threads=1, seconds=1, tool=tool)
    result = run_mix(memdb.url, 20, load, tmp_path)
    statuses = result.extra["statuses"]
    assert result.requests > 0
    assert sum(statuses.values()) == result.requests
    assert {"200", "201", "404"} <= set(statuses)
    assert result.extra["non_2xx"] == statuses["404"] > 0
    assert result.errors == result.extra["non_2xx"]
    assert result.extra["socket_errors"] == 0
    sent = result.extra["sent"]
    assert sent["get"] > sent["post"] > 0 and sent["patch"] > 0


def _assert_mixed_row(document: dict[str, Any]) -> None:
    """The soak ran once, with requests and without errors, and has its row."""
    mixed = [r for r in document["runs"] if r["server"] == MIXED_SERVER]
    assert len(mixed) == 1 and mixed[0]["scenario"] == "mixed"
    run_ = mixed[0]
    assert run_["requests"] > 0
    assert run_["errors"] == 0, run_["extra"]
    assert run_["extra"]["non_2xx"] == run_["extra"]["socket_errors"] == 0
    assert set(run_["extra"]["statuses"]) == {"200", "201"}
    assert document["notes"]["mixed"]["posted_records"] > 0
    figures = {f["label"]: f for f in document["figures"]}
    row = figures[MIXED_LABEL]
    assert row["errors"] == 0
    assert row["value"]["median"] == run_["p99_ms"]
    assert row["status"] in ("pass", "FAIL")


def test_the_mixed_soak_runs_in_fast_mode(tmp_path: Path) -> None:
    outputs = Outputs(
        json_path=tmp_path / "latest.json",
        markdown_path=tmp_path / "BENCHMARKS.md",
        plot_path=None,
    )
    settings = replace(
        Settings.from_env(
            {
                "BENCH_SCENARIOS": "mixed",
                "BENCH_SERVERS": "memdb",
                "BENCH_MIXED_SECONDS": "2",
                "BENCH_CONNECTIONS": "4",
                "BENCH_WARMUP": "0",
                "BENCH_ITEMS": "20",
                "BENCH_LOAD_TOOL": TOOL,
            }
        ),
        outputs=outputs,
    )
    assert settings.mixed_seconds == 2
    assert run(settings, install=False) == 0
    document = orjson.loads(outputs.json_path.read_bytes())  # type: ignore[union-attr]
    assert document["errors"] == [] and document["skipped"] == {}
    assert document["settings"]["mixed_seconds"] == 2
    _assert_mixed_row(document)
    assert 1.5 < document["runs"][0]["seconds"] < 4
    text = outputs.markdown_path.read_text()  # type: ignore[union-attr]
    assert f"| {MIXED_LABEL} |" in text


def test_the_raw_floor_answers_like_the_starlette_floor(
    processes: Processes, tmp_path: Path
) -> None:
    raw = servers.start_python_app(
        processes,
        tmp_path,
        name=servers.RAW_FLOOR,
        module="benchmarks.raw_floor_app",
        items=3,
    )
    with httpx.Client(base_url=raw.url) as client:
        created = client.post("/items", content=b'{"name": "x", "value": 1}')
        assert created.status_code == 201
        assert created.headers["content-type"] == "application/json"
        item = created.json()
        assert item["name"] == "x" and item["id"]
        got = client.get(f"/items/{item['id']}")
        assert (got.status_code, got.json()) == (200, item)
        assert client.get("/items/2").json()["name"] == "item 2"
        assert client.get("/items/nope").status_code == 404
        assert client.get("/other").status_code == 404
        # no sorted index there: the reason a sorted row is not run
        why = servers.create_sorted_index(raw, "t", "value")
    assert why.startswith("not run: ") and "answered 404" in why
    processes.stop_all()
    assert "Traceback" not in raw.tail(200)


def test_the_raw_floor_answers_the_lifespan() -> None:
    from benchmarks.raw_floor_app import Message, app

    inbox: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return inbox.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


def test_a_row_not_run_says_why() -> None:
    why = "not run: POST /api/v1/tables/t/indexes with kind sorted answered 422 (x)"
    rows = figure_rows(
        [
            Figure("sorted", "req/s", None, "GET", None, Target(">= 0.5", 0.5), why),
            Figure(
                "a",
                "req/s",
                Summary.of([2.0, 4.0]),
                "b",
                Summary.of([4.0, 4.0]),
                Target(),
                rounds=(0.5, 1.0),
            ),
        ]
    )
    assert rows[0][-1] == why
    assert rows[1][3] == "0.75 (0.50-1.00)"


def test_every_phase_runs_and_writes_its_outputs(tmp_path: Path) -> None:
    outputs = Outputs(
        json_path=tmp_path / "latest.json",
        markdown_path=tmp_path / "BENCHMARKS.md",
        plot_path=tmp_path / "latest.png",
    )
    settings = replace(
        Settings(),
        load=Load(connections=4, threads=1, seconds=1, tool=TOOL),
        rounds=1,
        warmup=0,
        servers=("memdb", "floor", "raw-floor"),
        items=20,
        records=2000,
        users=50,
        orders=500,
        mixed_seconds=1,
        outputs=outputs,
    )
    assert run(settings, install=False) == 0
    document = orjson.loads(outputs.json_path.read_bytes())  # type: ignore[union-attr]
    assert document["errors"] == []
    measured = {(r["server"], r["scenario"]) for r in document["runs"]}
    for scenario in ("get", "post", "put", "list"):
        assert (servers.MEMDB, scenario) in measured
    assert {(servers.FLOOR, "get"), (servers.FLOOR, "post")} <= measured
    assert {(servers.RAW_FLOOR, "get"), (servers.RAW_FLOOR, "post")} <= measured
    # the hot rounds pinned (server CPU, wrk CPU) where taskset and 2 CPUs are
    pinned = shutil.which("taskset") is not None and len(os.sched_getaffinity(0)) > 1
    assert document["notes"]["pinning"].startswith(
        "servers pinned" if pinned else "unpinned"
    )
    # the sorted rows: measured, or not run with the service's answer
    assert (servers.MEMDB, "unindexed-page") in measured
    for key, scenarios in (
        (SORTED_SMALL_KEY, [(servers.MEMDB, "sorted-page")]),
        (SORTED_LARGE_KEY, [(BIG_SERVER, "sorted-large"), (BIG_SERVER, "range-large")]),
    ):
        if key in document["skipped"]:
            assert document["skipped"][key].startswith("not run: ")
        else:
            assert set(scenarios) <= measured
    redis_server = shutil.which("redis-server") is not None
    kinds = {"service", "floor", "redis"} if redis_server else {"service", "floor"}
    assert {r["kind"] for r in document["join"]} == kinds
    assert all(r["rows"] == 500 for r in document["join"])
    assert {r["kind"] for r in document["memory"]} == {"service", "dicts"}
    assert document["notes"]["filter_matches"] == data.GROUP_SIZE
    figures = {f["label"]: f for f in document["figures"]}
    assert figures["GET by id"]["ratio"] is not None
    assert figures["GET by id"]["status"] in ("pass", "FAIL")
    raw_get = figures["GET by id vs raw ASGI floor"]
    assert raw_get["ratio"] is not None and len(raw_get["rounds"]) == 1
    assert figures["POST vs raw ASGI floor"]["ratio"] is not None
    # the Redis phase: both worker counts beside the memory service, the
    # engine's own rates and one round trip per hot request (or why not)
    if redis_server:
        for name in (MEMORY_BESIDE, REDIS_1, REDIS_2):
            assert {(name, "get"), (name, "post")} <= measured
        redis = document["notes"]["redis"]
        assert set(redis["redis_benchmark"]) == {"get", "set"}
        assert redis["round_trips"]["get"] == 1.0
        assert figures["Redis: GET by id, 1 worker"]["ratio"] is not None
    else:
        assert "redis-server is not installed" in document["skipped"]["redis"]
    # the aof scenarios either ran or say why not
    for name in (servers.AOF_EVERYSEC, servers.AOF_ALWAYS):
        ran = (name, "post") in measured
        assert ran or "persistence not available" in document["skipped"][name]
    # the change feed: POST with and without followers, delivery and delay
    assert {(FEED, "post-no-followers"), (FEED, "post-followers")} <= measured
    feed = document["notes"]["changes"]
    assert feed["events_per_s"] and all(rate > 0 for rate in feed["events_per_s"])
    assert feed["latency_samples"] > 0 and feed["missed"] == 0
    # the mixed-load soak, on by default
    _assert_mixed_row(document)
    assert set(document["settings"]["scenarios"]) == set(SCENARIOS)
    text = outputs.markdown_path.read_text()  # type: ignore[union-attr]
    assert "| " + " | ".join(FIGURE_HEADER) + " |" in text
    assert "## Machine" in text
    # the report can be written again from the JSON alone
    results, read_back, _, host = load_document(outputs.json_path)  # type: ignore[arg-type]
    assert len(results.runs) == len(document["runs"])
    assert read_back.records == settings.records
    assert host == document["machine"]
