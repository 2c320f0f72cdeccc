"""The benchmark harness, run very briefly so that it does not rot.

Only the service (in memory and over a Redis of its own) and the floor, tiny
data, one second a load run and no thresholds: this checks that every phase of
``make bench`` runs, and that its outputs are written, not how fast anything
is. Nothing is installed: wrk is used where it is present, the harness's own
Python load generator elsewhere.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import orjson
import pytest

from benchmarks import data, servers
from benchmarks.__main__ import run
from benchmarks.harness import Load, Processes, Request, Summary, parse_wrk, run_load
from benchmarks.changes_phase import FEED
from benchmarks.redis_phase import MEMORY_BESIDE, REDIS_1, REDIS_2
from benchmarks.report import FIGURE_HEADER, load_document
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
    "tool",
    [
        "python",
        pytest.param(
            "wrk",
            marks=pytest.mark.skipif(TOOL != "wrk", reason="wrk is not installed"),
        ),
    ],
)
def test_load_generators_drive_the_floor(
    processes: Processes, tmp_path: Path, tool: str
) -> None:
    floor = servers.start_python_app(
        processes, tmp_path, name=servers.FLOOR, module="benchmarks.floor_app", items=10
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
        servers=("memdb", "floor"),
        items=20,
        records=2000,
        users=50,
        orders=500,
        outputs=outputs,
    )
    assert run(settings, install=False) == 0
    document = orjson.loads(outputs.json_path.read_bytes())  # type: ignore[union-attr]
    assert document["errors"] == []
    measured = {(r["server"], r["scenario"]) for r in document["runs"]}
    for scenario in ("get", "post", "put", "list"):
        assert (servers.MEMDB, scenario) in measured
    assert {(servers.FLOOR, "get"), (servers.FLOOR, "post")} <= measured
    redis_server = shutil.which("redis-server") is not None
    kinds = {"service", "floor", "redis"} if redis_server else {"service", "floor"}
    assert {r["kind"] for r in document["join"]} == kinds
    assert all(r["rows"] == 500 for r in document["join"])
    assert {r["kind"] for r in document["memory"]} == {"service", "dicts"}
    assert document["notes"]["filter_matches"] == data.GROUP_SIZE
    figures = {f["label"]: f for f in document["figures"]}
    assert figures["GET by id"]["ratio"] is not None
    assert figures["GET by id"]["status"] in ("pass", "FAIL")
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
    assert set(document["settings"]["scenarios"]) == set(SCENARIOS)
    text = outputs.markdown_path.read_text()  # type: ignore[union-attr]
    assert "| " + " | ".join(FIGURE_HEADER) + " |" in text
    assert "## Machine" in text
    # the report can be written again from the JSON alone
    results, measured, _, host = load_document(outputs.json_path)  # type: ignore[arg-type]
    assert len(results.runs) == len(document["runs"])
    assert measured.records == settings.records
    assert host == document["machine"]
