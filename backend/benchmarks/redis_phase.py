"""The Redis backend (``MEMDB_STORE=redis``), measured in the same run:

- GET by id and POST on the service over a standalone Redis, with one and with
  two workers, in interleaved rounds with the memory backend;
- ``redis-benchmark``'s own GET and SET rates on the same Redis: the engine's
  limit on this machine;
- round trips per operation, as the commands the service sends, read from
  ``MONITOR`` (a script is one command; the commands it runs are not counted):
  GET by id, POST, PUT with ``If-Match`` and a page of an indexed equality
  filter;
- the join users x orders read whole over Redis, beside the memory backend's.

Redis runs with no persistence (``--save "" --appendonly no``): the figures are
the service's and the engine's, not the disk's.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from benchmarks import data, servers
from benchmarks.harness import HOST, Process, free_port, log
from benchmarks.servers import Server

if TYPE_CHECKING:
    from benchmarks.scenarios import Context

REDIS_1 = "memdb redis 1 worker"
REDIS_2 = "memdb redis 2 workers"
REDIS_JOIN = "memdb redis join"
MEMORY_BESIDE = "memdb memory (beside redis)"
ROUND_TRIPS_N = 500


def start_redis(ctx: Context, name: str) -> tuple[Process, int]:
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server is not installed")
    port = free_port()
    directory = ctx.workdir / f"redis-{port}"
    directory.mkdir()
    process = ctx.processes.start(
        name,
        [
            executable,
            *("--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"),
            *("--dir", str(directory), "--protected-mode", "no"),
        ],
        cwd=directory,
        env={},
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if redis_cli(port, "ping") == "PONG":
            return process, port
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not answer:\n{process.tail()}")


def redis_cli(port: int, *args: str) -> str:
    done = subprocess.run(
        ["redis-cli", "-h", HOST, "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout.strip()


def redis_env(port: int, prefix: str, **more: str) -> dict[str, str]:
    return {
        "MEMDB_STORE": "redis",
        "MEMDB_REDIS_URL": f"redis://{HOST}:{port}/0",
        "MEMDB_REDIS_PREFIX": prefix,
        **more,
    }


class Monitor:
    """Commands that clients send to Redis, read from ``MONITOR``; a command a
    script runs is tagged ``lua`` there and not counted (``INFO commandstats``
    and ``total_commands_processed`` count those too)."""

    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path

    def count(self, action: Any) -> int:
        marker = f"memdb-bench-{time.monotonic_ns()}"
        with self.log_path.open("wb") as out:
            monitor = subprocess.Popen(
                ["redis-cli", "-h", HOST, "-p", str(self.port), "monitor"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            try:
                deadline = time.monotonic() + 10
                while b"OK" not in self.log_path.read_bytes():
                    if time.monotonic() > deadline:
                        raise RuntimeError("MONITOR did not start")
                    time.sleep(0.01)
                action()
                redis_cli(self.port, "echo", marker)
                deadline = time.monotonic() + 30
                while marker.encode() not in self.log_path.read_bytes():
                    if time.monotonic() > deadline:
                        raise RuntimeError("MONITOR lost the end marker")
                    time.sleep(0.01)
            finally:
                monitor.terminate()
                monitor.wait(timeout=10)
        sent = 0
        for line in self.log_path.read_text(errors="replace").splitlines():
            found = re.match(r"[0-9.]+ \[\d+ ([^\]]+)\] \"(\w+)\"", line)
            if found and found.group(1) != "lua" and found.group(2).lower() != "echo":
                sent += 1
        return sent


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of every CPU of the machine, from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0, 0.0
    values = [float(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)
    return sum(values) - idle, sum(values)


def cpu_busy(before: tuple[float, float], after: tuple[float, float]) -> float:
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0


def redis_benchmark(ctx: Context, port: int) -> dict[str, float]:
    """``redis-benchmark``'s GET and SET rates with the service's connection count."""
    tool = shutil.which("redis-benchmark")
    if tool is None:
        raise RuntimeError("redis-benchmark is not installed")
    done = subprocess.run(
        [
            tool,
            *("-h", HOST, "-p", str(port), "-t", "get,set"),
            *("-n", "200000", "-c", str(ctx.load.connections), "-P", "1", "--csv"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    rates: dict[str, float] = {}
    for line in done.stdout.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if len(cells) >= 2 and cells[0] in ("SET", "GET"):
            rates[cells[0].lower()] = float(cells[1])
    if not rates:
        raise RuntimeError(
            f"redis-benchmark printed nothing usable: {done.stdout[-500:]}"
        )
    return rates


def round_trips(process: Process, monitor: Monitor) -> dict[str, float]:
    """Commands sent to Redis per request, for each kind of request (each
    command of a pipeline counts: an upper bound of the round trips)."""
    base = f"{process.url}/api/v1/data"
    out: dict[str, float] = {}
    with httpx.Client(timeout=30) as client:

        def ok(response: httpx.Response) -> httpx.Response:
            if response.status_code >= 300:
                raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
            return response

        ok(client.post(f"{base}/rt", json={"data": {"id": "r1", "n": 0, "tag": "x"}}))
        ok(
            client.post(
                f"{process.url}/api/v1/tables/rt/indexes", json={"field": "tag"}
            )
        )
        for i in range(20):
            row = {"n": i, "tag": "x" if i % 2 else "y"}
            ok(client.post(f"{base}/rt", json={"data": row}))
        state = {"etag": ok(client.get(f"{base}/rt/r1")).headers["etag"]}

        def per_request(call: Any) -> float:
            return monitor.count(lambda: [call(i) for i in range(ROUND_TRIPS_N)]) / (
                ROUND_TRIPS_N
            )

        def put(i: int) -> None:
            answer = ok(
                client.put(
                    f"{base}/rt/r1",
                    json={"data": {"n": i, "tag": "x"}},
                    headers={"If-Match": state["etag"]},
                )
            )
            state["etag"] = answer.headers["etag"]

        out["get"] = per_request(lambda i: ok(client.get(f"{base}/rt/r1")))
        out["post"] = per_request(
            lambda i: ok(client.post(f"{base}/rt", json={"data": {"n": i}}))
        )
        out["put_if_match"] = per_request(put)
        out["indexed_page"] = per_request(
            lambda i: ok(client.get(f"{base}/rt", params={"tag": "x", "limit": "5"}))
        )
    return out


def redis_phase(ctx: Context) -> None:
    s = ctx.settings
    if not s.wants("redis") or not s.serves("memdb"):
        return
    if "redis" in ctx.tools.missing:
        ctx.results.skip("redis", ctx.tools.missing["redis"])
        return
    log("phase: the Redis backend")
    redis, port = start_redis(ctx, "redis-server")
    notes: dict[str, Any] = {}
    ctx.results.notes["redis"] = notes
    try:
        notes["redis_benchmark"] = redis_benchmark(ctx, port)
        log(f"  redis-benchmark: {notes['redis_benchmark']}")
    except Exception as exc:
        ctx.results.errors.append(f"redis-benchmark: {exc}")
    started: list[Server] = []
    for name, env in (
        (MEMORY_BESIDE, {}),
        (REDIS_1, redis_env(port, "one", MEMDB_WORKERS="1")),
        (REDIS_2, redis_env(port, "two", MEMDB_WORKERS="2")),
    ):
        log(f"starting {name}")
        process = servers.start_small_memdb(
            ctx.processes, ctx.workdir, name=name, items=s.items, env=env
        )
        started.append(Server(name, process, servers.memdb_requests()))
        if name == REDIS_1:  # counted while no other client talks to Redis
            try:
                monitor = Monitor(port, ctx.workdir / "redis-monitor.log")
                notes["round_trips"] = round_trips(process, monitor)
                log(f"  round trips per request: {notes['round_trips']}")
            except Exception as exc:
                ctx.results.errors.append(f"round trips: {exc}")
    from benchmarks.scenarios import measure, rotate, warm_up

    plan = [(sc, sv) for sc in ("get", "post") for sv in started]
    for scenario, server in plan:
        warm_up(ctx, server.process, server.requests[scenario])
    busy: dict[str, list[float]] = {}
    for round_ in range(s.rounds):
        log(f"round {round_ + 1}/{s.rounds}")
        for scenario in ("get", "post"):
            for server in rotate([sv for sc, sv in plan if sc == scenario], round_):
                before = cpu_times()
                measure(
                    ctx, server.process, scenario, server.requests[scenario], round_
                )
                busy.setdefault(f"{server.name} {scenario}", []).append(
                    cpu_busy(before, cpu_times())
                )
    # how much of the machine a run used: the limit of what more workers can add
    notes["cpu_busy"] = {k: round(statistics.median(v), 3) for k, v in busy.items()}
    log(f"  share of all CPUs busy during each run: {notes['cpu_busy']}")
    for server in started:
        ctx.processes.stop(server.process)
    if s.wants("join"):
        _join(ctx, port)
    ctx.processes.stop(redis)


def _join(ctx: Context, port: int) -> None:
    from benchmarks.scenarios import read_join

    s = ctx.settings
    log(f"join over Redis: users ({s.users}) x orders ({s.orders})")
    process = servers.start_memdb(
        ctx.processes, ctx.workdir, name=REDIS_JOIN, env=redis_env(port, "join")
    )
    started = time.perf_counter()
    servers.import_records(process, "users", data.users(s.users))
    servers.import_records(process, "orders", data.orders(s.orders, s.users))
    ctx.results.notes["redis"]["join_load_seconds"] = time.perf_counter() - started
    path = "/api/v1/join/users/orders/user_id"
    for round_ in range(s.rounds):
        result = read_join(process.url, path)
        ctx.results.join.append({"kind": "redis", "round": round_, **result})
        log(
            f"  join    {'redis':<20} {result['seconds']:9.2f} s "
            f"({result['bytes'] / 1e6:.0f} MB, {result['rows']} rows)"
        )
    ctx.processes.stop(process)
