"""Soak: a bounded mixed read/write load against a real server, watching its RSS.

    python scripts/soak.py                 # from backend/, or: make soak
    SOAK_SECONDS=600 SOAK_THREADS=16 python scripts/soak.py

Starts ``python -m app`` on 127.0.0.1 (a free port, an empty working directory,
no ``MEMDB_*`` setting of the caller's shell; only the argon2 cost is lowered,
``SOAK_ARGON2=default`` keeps it), seeds a few tables, then runs
``SOAK_THREADS`` client threads (httpx, keep-alive) for ``SOAK_SECONDS``. The
mix reads by id, lists with an indexed filter, updates (PUT and PATCH, some
with ``If-Match``), creates and deletes again, bulk-creates and deletes again,
creates users (with a password) and deletes them, joins, dumps and reads stats.
Every create is undone, so the data set stays the same size: the server's RSS
should level off. Every ``SOAK_SAMPLE_SECONDS`` the server's RSS (VmRSS of
``/proc/<pid>/status``) and the latency of the last window are recorded.

It prints a summary and writes ``scripts/soak-result.json`` (``SOAK_RESULT``
names another file). Exit status 1 when any request failed (an unexpected
status, a timeout, a connection error), when the server logged an error, or
when the mean RSS of the last third of the run is more than
``SOAK_MAX_RSS_GROWTH`` (10%) above that of the middle third.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx

BACKEND = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
API = "/api/v1"
KINDS = ("red", "green", "blue", "amber")
NOTES = 2000
TEAMS = 20
MEMBERS = 200
USERS = 50
ORDERS = 250
FAST_ARGON2 = {
    "MEMDB_ARGON2_TIME_COST": "1",
    "MEMDB_ARGON2_MEMORY_KIB": "1024",
    "MEMDB_ARGON2_PARALLELISM": "1",
}


@dataclass(frozen=True)
class Config:
    seconds: float
    threads: int
    sample_seconds: float
    max_rss_growth: float
    timeout: float
    result: Path
    argon2: dict[str, str]

    @classmethod
    def from_env(cls) -> Config:
        env = os.environ
        result = Path(env.get("SOAK_RESULT", BACKEND / "scripts" / "soak-result.json"))
        return cls(
            seconds=float(env.get("SOAK_SECONDS", "180")),
            threads=int(env.get("SOAK_THREADS", "8")),
            sample_seconds=float(env.get("SOAK_SAMPLE_SECONDS", "5")),
            max_rss_growth=float(env.get("SOAK_MAX_RSS_GROWTH", "0.10")),
            timeout=float(env.get("SOAK_TIMEOUT", "10")),
            result=result,
            argon2={} if env.get("SOAK_ARGON2") == "default" else FAST_ARGON2,
        )


# -- the server -------------------------------------------------------------------


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path

    def rss_bytes(self) -> int:
        """VmRSS of the server process, from /proc."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")

    def error_lines(self) -> list[str]:
        """Log lines at level error (or lines that are not JSON at all)."""
        bad = []
        with self.log_path.open(errors="replace") as log:
            for line in log:
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    bad.append(line.rstrip())
                    continue
                if not isinstance(event, dict) or event.get("level") == "error":
                    bad.append(line.rstrip())
        return bad

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_server(config: Config) -> Server:
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="memdb-soak-"))
    log_path = workdir / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMDB_")}
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(BACKEND), **config.argon2)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "--host", HOST, "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://{HOST}:{port}", process, workdir, log_path)
    deadline = time.monotonic() + 30
    with httpx.Client(base_url=server.url, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited: {log_path.read_text()}")
            try:
                if client.get("/ready").status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    server.stop()
    raise RuntimeError("the server did not become ready in 30 s")


def seed(client: httpx.Client) -> None:
    """Bounded data: notes (indexed on kind), teams x members, users x orders."""
    rng = random.Random(1)
    notes = [
        {"id": f"n{i}", "kind": rng.choice(KINDS), "n": i, "text": "x" * 40}
        for i in range(NOTES)
    ]
    for start in range(0, NOTES, 500):
        batch = notes[start : start + 500]
        created = client.post(f"{API}/data/notes", json={"data": batch})
        created.raise_for_status()
    client.post(
        f"{API}/tables/notes/indexes", json={"field": "kind"}
    ).raise_for_status()
    payload = {
        "teams": [{"id": f"t{i}", "name": f"team {i}"} for i in range(TEAMS)],
        "members": [
            {"id": f"m{i}", "team_id": f"t{i % TEAMS}", "name": f"member {i}"}
            for i in range(MEMBERS)
        ],
        "users": [
            {"id": f"u{i}", "email": f"user{i}@example.com", "full_name": f"User {i}"}
            for i in range(USERS)
        ],
        "orders": [
            {
                "id": f"o{i}",
                "product_name": "Widget",
                "quantity": 1 + i % 5,
                "total_price": 9.5,
                "user_id": f"u{i % USERS}",
            }
            for i in range(ORDERS)
        ],
    }
    client.post(f"{API}/import", json=payload).raise_for_status()


# -- the load ---------------------------------------------------------------------


@dataclass
class Stats:
    """What the workers saw; appended under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies: list[float] = field(default_factory=list)
    window: list[float] = field(default_factory=list)
    ops: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    conflicts: int = 0

    def record(self, op: str, seconds: float) -> None:
        with self.lock:
            self.latencies.append(seconds)
            self.window.append(seconds)
            self.ops[op] += 1

    def fail(self, op: str, what: str) -> None:
        with self.lock:
            self.errors[op] += 1
            if len(self.samples) < 20:
                self.samples.append(f"{op}: {what}")

    def record_conflict(self) -> None:
        with self.lock:
            self.conflicts += 1

    def take_window(self) -> list[float]:
        with self.lock:
            window, self.window = self.window, []
        return window


class Worker:
    """One client thread: picks an operation by weight, checks its status."""

    def __init__(self, number: int, server: Server, stats: Stats, config: Config):
        self.rng = random.Random(number)
        self.number = number
        self.stats = stats
        self.client = httpx.Client(base_url=server.url, timeout=config.timeout)
        self.ops: list[tuple[str, int, Callable[[], None]]] = [
            ("read", 30, self.read),
            ("list", 12, self.list_by_kind),
            ("put", 10, self.put),
            ("patch_if_match", 8, self.patch_if_match),
            ("create_delete", 12, self.create_delete),
            ("bulk_create_delete", 3, self.bulk_create_delete),
            ("user_create_delete", 2, self.user_create_delete),
            ("order_create_delete", 5, self.order_create_delete),
            ("join", 4, self.join),
            ("dump_table", 3, self.dump_table),
            ("read_user", 8, self.read_user),
            ("stats", 3, self.read_stats),
        ]
        self.weights = [w for _, w, _ in self.ops]

    def call(self, op: str, method: str, url: str, expect: int, **kw: Any) -> Any:
        started = time.perf_counter()
        try:
            response = self.client.request(method, url, **kw)
        except httpx.HTTPError as exc:
            self.stats.fail(op, f"{method} {url}: {type(exc).__name__}: {exc}")
            return None
        self.stats.record(op, time.perf_counter() - started)
        if response.status_code != expect:
            self.stats.fail(
                op, f"{method} {url}: {response.status_code} {response.text[:200]}"
            )
            return None
        return response

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                _, _, op = self.rng.choices(self.ops, weights=self.weights)[0]
                op()
        finally:
            self.client.close()

    def note_id(self) -> str:
        return f"n{self.rng.randrange(NOTES)}"

    def read(self) -> None:
        self.call("read", "GET", f"{API}/data/notes/{self.note_id()}", 200)

    def read_user(self) -> None:
        self.call(
            "read_user", "GET", f"{API}/data/users/u{self.rng.randrange(USERS)}", 200
        )

    def list_by_kind(self) -> None:
        params = {"kind": self.rng.choice(KINDS), "limit": "20", "sort": "-n"}
        self.call("list", "GET", f"{API}/data/notes", 200, params=params)

    def put(self) -> None:
        data = {"n": self.rng.randrange(10**6), "text": "y" * self.rng.randrange(60)}
        self.call(
            "put", "PUT", f"{API}/data/notes/{self.note_id()}", 200, json={"data": data}
        )

    def patch_if_match(self) -> None:
        """Read, then patch with its ETag: 200, or 412 when another thread wrote
        in between (expected under contention, not an error)."""
        url = f"{API}/data/notes/{self.note_id()}"
        current = self.call("patch_if_match", "GET", url, 200)
        if current is None:
            return
        started = time.perf_counter()
        try:
            response = self.client.patch(
                url,
                json={"data": {"kind": self.rng.choice(KINDS), "tag": None}},
                headers={"If-Match": current.headers["etag"]},
            )
        except httpx.HTTPError as exc:
            self.stats.fail("patch_if_match", f"PATCH {url}: {exc!r}")
            return
        self.stats.record("patch_if_match", time.perf_counter() - started)
        if response.status_code == 412:
            self.stats.record_conflict()
        elif response.status_code != 200:
            self.stats.fail("patch_if_match", f"PATCH {url}: {response.status_code}")

    def create_delete(self) -> None:
        record_id = f"s{self.number}-{uuid.uuid4().hex[:12]}"
        data = {"id": record_id, "kind": self.rng.choice(KINDS), "payload": "z" * 100}
        if self.call(
            "create_delete", "POST", f"{API}/data/scratch", 201, json={"data": data}
        ):
            self.call("create_delete", "DELETE", f"{API}/data/scratch/{record_id}", 204)

    def bulk_create_delete(self) -> None:
        items = [
            {"v": i, "payload": "b" * 50} for i in range(self.rng.randrange(2, 11))
        ]
        created = self.call(
            "bulk_create_delete",
            "POST",
            f"{API}/data/scratch",
            201,
            json={"data": items},
        )
        if created is not None:
            for record in created.json()["items"]:
                url = f"{API}/data/scratch/{record['id']}"
                self.call("bulk_create_delete", "DELETE", url, 204)

    def user_create_delete(self) -> None:
        tag = uuid.uuid4().hex[:12]
        data = {
            "email": f"soak-{tag}@example.com",
            "full_name": "Soak",
            "password": "p" * 12,
        }
        created = self.call(
            "user_create_delete", "POST", f"{API}/data/users", 201, json={"data": data}
        )
        if created is not None:
            url = f"{API}/data/users/{created.json()['id']}"
            self.call("user_create_delete", "DELETE", url, 204)

    def order_create_delete(self) -> None:
        data = {
            "product_name": "Soak",
            "quantity": 1,
            "total_price": 1.0,
            "user_id": f"u{self.rng.randrange(USERS)}",
        }
        created = self.call(
            "order_create_delete",
            "POST",
            f"{API}/data/orders",
            201,
            json={"data": data},
        )
        if created is not None:
            url = f"{API}/data/orders/{created.json()['id']}"
            self.call("order_create_delete", "DELETE", url, 204)

    def join(self) -> None:
        path = self.rng.choice(["teams/members/team_id", "users/orders/user_id"])
        self.call("join", "GET", f"{API}/join/{path}", 200)

    def dump_table(self) -> None:
        self.call(
            "dump_table",
            "GET",
            f"{API}/dump/{self.rng.choice(['teams', 'members'])}",
            200,
        )

    def read_stats(self) -> None:
        self.call("stats", "GET", f"{API}/stats", 200)


# -- the run ----------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def mean_rss(samples: list[dict[str, Any]], low: float, high: float) -> float:
    """Mean RSS (MiB) of the samples taken in [low, high) seconds."""
    window = [s["rss_mib"] for s in samples if low <= s["t_s"] < high]
    return statistics.fmean(window) if window else 0.0


def run(config: Config) -> dict[str, Any]:
    server = start_server(config)
    stats = Stats()
    stop = threading.Event()
    samples: list[dict[str, Any]] = []
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            seed(client)
        workers = [Worker(n, server, stats, config) for n in range(config.threads)]
        threads = [
            threading.Thread(target=w.run, args=(stop,), daemon=True) for w in workers
        ]
        started = time.monotonic()
        samples.append(
            {"t_s": 0.0, "rss_mib": round(server.rss_bytes() / 2**20, 1), "requests": 0}
        )
        for thread in threads:
            thread.start()
        next_sample = started + config.sample_seconds
        while (now := time.monotonic()) < started + config.seconds:
            time.sleep(max(0.0, min(next_sample, started + config.seconds) - now))
            if time.monotonic() >= next_sample:
                window = stats.take_window()
                sample = {
                    "t_s": round(time.monotonic() - started, 1),
                    "rss_mib": round(server.rss_bytes() / 2**20, 1),
                    "requests": len(stats.latencies),
                    "window_rps": round(len(window) / config.sample_seconds, 1),
                    "window_p99_ms": ms(percentile(window, 0.99)),
                }
                samples.append(sample)
                print(
                    f"  t={sample['t_s']:6.1f}s  rss={sample['rss_mib']:7.1f} MiB  "
                    f"rps={sample['window_rps']:7.1f}  "
                    f"p99={sample['window_p99_ms']:7.2f} ms  "
                    f"errors={sum(stats.errors.values())}",
                    flush=True,
                )
                next_sample += config.sample_seconds
        stop.set()
        for thread in threads:
            thread.join(timeout=config.timeout + 5)
        elapsed = time.monotonic() - started
        final_rss = round(server.rss_bytes() / 2**20, 1)
    finally:
        stop.set()
        exit_code = server.stop()
    log_errors = server.error_lines()
    log_bytes = server.log_path.stat().st_size
    shutil.rmtree(server.workdir, ignore_errors=True)

    third = config.seconds / 3
    middle = mean_rss(samples, third, 2 * third)
    last = mean_rss(samples, 2 * third, config.seconds + config.sample_seconds)
    growth = (last - middle) / middle if middle else 0.0
    errors = sum(stats.errors.values())
    reasons = []
    if errors:
        reasons.append(f"{errors} request(s) failed")
    if log_errors:
        reasons.append(f"{len(log_errors)} error line(s) in the server log")
    if growth > config.max_rss_growth:
        reasons.append(
            f"RSS grew {growth:.1%} from the middle third to the last "
            f"(limit {config.max_rss_growth:.0%})"
        )
    latencies = stats.latencies
    return {
        "verdict": "fail" if reasons else "pass",
        "reasons": reasons,
        "seconds": round(elapsed, 1),
        "threads": config.threads,
        "requests": len(latencies),
        "throughput_rps": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "errors": errors,
        "errors_by_op": dict(stats.errors),
        "if_match_conflicts_412": stats.conflicts,
        "error_samples": stats.samples,
        "server_log_error_lines": log_errors[:20],
        "server_log_bytes": log_bytes,
        "server_exit_code": exit_code,
        "latency_ms": {
            "p50": ms(percentile(latencies, 0.50)),
            "p90": ms(percentile(latencies, 0.90)),
            "p99": ms(percentile(latencies, 0.99)),
            "max": ms(max(latencies, default=0.0)),
        },
        "requests_by_op": dict(stats.ops),
        "rss_mib": {
            "start": samples[0]["rss_mib"],
            "middle_third_mean": round(middle, 1),
            "last_third_mean": round(last, 1),
            "growth_last_over_middle_pct": round(growth * 100, 2),
            "max": max(s["rss_mib"] for s in samples),
            "final": final_rss,
        },
        "rss_samples": samples,
        "settings": {
            "sample_seconds": config.sample_seconds,
            "max_rss_growth": config.max_rss_growth,
            "argon2": "lowered" if config.argon2 else "default",
            "data": {
                "notes": NOTES,
                "teams": TEAMS,
                "members": MEMBERS,
                "users": USERS,
                "orders": ORDERS,
            },
        },
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> int:
    config = Config.from_env()
    print(
        f"soak: {config.seconds:.0f} s, {config.threads} threads, "
        f"RSS every {config.sample_seconds:.0f} s",
        flush=True,
    )
    result = run(config)
    config.result.write_text(json.dumps(result, indent=2) + "\n")
    latency = result["latency_ms"]
    rss = result["rss_mib"]
    print(
        f"soak: {result['requests']} requests in {result['seconds']} s "
        f"({result['throughput_rps']}/s), {result['errors']} errors\n"
        f"      latency p50 {latency['p50']} ms, p99 {latency['p99']} ms, "
        f"max {latency['max']} ms\n"
        f"      RSS start {rss['start']} MiB, middle third {rss['middle_third_mean']} MiB, "
        f"last third {rss['last_third_mean']} MiB "
        f"({rss['growth_last_over_middle_pct']:+.2f}%), max {rss['max']} MiB\n"
        f"      {result['verdict'].upper()}"
        + "".join(f"\n      - {reason}" for reason in result["reasons"])
        + f"\n      written to {config.result}"
    )
    return 1 if result["reasons"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
