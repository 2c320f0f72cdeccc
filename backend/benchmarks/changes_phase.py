"""The change feed (``GET /api/v1/changes``), measured in the same run:

- POST at full speed (wrk, as in the HTTP phase) with no follower, then with
  ``FOLLOWERS`` Server-Sent Events streams open, in interleaved rounds on one
  memory-backend server: the feed's cost to writes is the ratio;
- while the streams are open, the events delivered per second (all followers
  together), and the delay from a write's answer to its event at the
  followers: a probe writes one record of the table ``probe`` every 20 ms
  beside wrk, notes when each answer came, and the followers
  (``benchmarks.followers``, one process) note when each probe event came.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import replace
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from benchmarks import servers
from benchmarks.harness import log
from benchmarks.servers import Server

if TYPE_CHECKING:
    from benchmarks.scenarios import Context

FEED = "memdb changes"
FOLLOWERS = 100
PROBE_EVERY_S = 0.02


class Probe:
    """One record of ``probe`` every ``PROBE_EVERY_S``; the monotonic time of
    each answer, by record id."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answered: dict[str, float] = {}
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                n += 1
                record_id = f"p{time.monotonic_ns()}-{n}"
                try:
                    answer = client.post(
                        "/api/v1/data/probe", json={"data": {"id": record_id}}
                    )
                except httpx.HTTPError:
                    self.failures += 1
                    continue
                if answer.status_code == 201:
                    self.answered[record_id] = time.monotonic()
                else:
                    self.failures += 1
                self._stop.wait(PROBE_EVERY_S)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def _followers(
    ctx: Context, url: str, seconds: float, out: Path
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.followers",
            url,
            str(FOLLOWERS),
            str(seconds),
            str(out),
        ],
        cwd=str(Path(__file__).resolve().parent.parent),
        stdout=subprocess.PIPE,
        env=servers.python_env(),
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # "ready": every stream is open
    if line.strip() != b"ready":
        process.kill()
        raise RuntimeError(f"the followers did not start: {line!r}")
    return process


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` onto ``cpus`` (threads made later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def changes_phase(ctx: Context) -> None:
    s = ctx.settings
    if not s.wants("changes") or not s.serves("memdb"):
        return
    log("phase: the change feed")
    process = servers.start_small_memdb(
        ctx.processes, ctx.workdir, name=FEED, items=s.items
    )
    server = Server(FEED, process, servers.memdb_requests())
    post = server.requests["post"]
    # the server on one CPU, the load (wrk, the followers, the probe: children
    # of this process) on the others: the followers' own reading does not
    # take the server's CPU, and the ratio is the server's cost
    own = os.sched_getaffinity(0)
    if len(own) >= 2:
        first = min(own)
        pin(process.pid, {first})
        os.sched_setaffinity(0, own - {first})
    # one wrk thread (the loop of one core), so that the followers and the
    # probe share the load's CPU with a single busy thread
    one_thread = replace(s, load=replace(s.load, threads=1))
    try:
        _rounds(replace(ctx, settings=one_thread), server, post)
    finally:
        os.sched_setaffinity(0, own)


def _rounds(ctx: Context, server: Server, post: Any) -> None:
    from benchmarks.scenarios import measure, warm_up

    s = ctx.settings
    process = server.process
    warm_up(ctx, process, post)
    notes: dict[str, Any] = {
        "followers": FOLLOWERS,
        "events_per_s": [],
        "latency_ms": [],
        "probe_failures": 0,
        "missed": 0,
    }
    ctx.results.notes["changes"] = notes
    for round_ in range(s.rounds):
        measure(ctx, server, "post-no-followers", post, round_)
        out = ctx.workdir / f"followers-{round_}.json"
        seconds = ctx.load.seconds + 3
        followers = _followers(ctx, process.url, seconds, out)
        with Probe(process.url) as probe:
            measure(ctx, server, "post-followers", post, round_)
            time.sleep(0.5)  # the last probes reach the followers
        followers.communicate(timeout=seconds + 30)  # its exit, its pipe closed
        got = orjson.loads(out.read_bytes())
        notes["events_per_s"].append(sum(got["events"]) / got["seconds"])
        delays = []
        for record_id, answered in probe.answered.items():
            arrived = got["arrivals"].get(record_id, [])
            notes["missed"] += FOLLOWERS - len(arrived)
            delays += [(t - answered) * 1000 for t in arrived]
        notes["probe_failures"] += probe.failures
        notes["latency_ms"] += delays
        if delays:
            log(
                f"  {FOLLOWERS} followers: {notes['events_per_s'][-1]:,.0f} events/s, "
                f"write->event p50 {statistics.median(delays):.1f} ms, "
                f"p99 {_percentile(delays, 0.99):.1f} ms"
            )
    delays = notes.pop("latency_ms")
    if delays:
        notes["latency_p50_ms"] = statistics.median(delays)
        notes["latency_p99_ms"] = _percentile(delays, 0.99)
        notes["latency_samples"] = len(delays)
