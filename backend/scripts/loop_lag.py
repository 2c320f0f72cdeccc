"""The event loop's lag with a large heap: 1,000,000 records loaded, then 1 MiB
bulk POSTs, while another process times ``GET /health``.

    python scripts/loop_lag.py [--records 1000000] [--posts 200]

Writes a seed file (users and notes with nested values, so that the cycle
collector has objects to walk), starts ``python -m app`` on it, waits until it
is ready, then sends the bulk POSTs one after another, each about 0.8 MiB of
records with nested lists and objects. Prints, and writes to
``scripts/loop-lag-result.json``, the server's own figures from
``/api/v1/stats`` (the largest loop lag of the last 10 seconds, the collector's
pauses) and the ``/health`` latencies seen by the probe.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import httpx
import orjson

BACKEND = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BACKEND))

from scripts.generate_seed import generate  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--posts", type=int, default=200)
    parser.add_argument(
        "--out", default=str(BACKEND / "scripts" / "loop-lag-result.json")
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="memdb-lag-"))
    users = args.records // 10
    seed = work / "seed.json"
    seed.write_bytes(orjson.dumps(generate(users, 0, args.records - users, 1)))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMDB_")}
    env.update(
        PYTHONPATH=str(BACKEND),
        MEMDB_SEED_FILE=str(seed),
        MEMDB_LOG_LEVEL="warning",
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "--port", str(port)],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    result: dict[str, Any] = {"records": args.records, "posts": args.posts}
    try:
        started = time.perf_counter()
        with httpx.Client(base_url=base, timeout=10) as client:
            while True:
                try:
                    if client.get("/ready").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.perf_counter() - started > 600:
                    raise SystemExit("the server did not become ready")
                time.sleep(0.2)
        result["load_seconds"] = round(time.perf_counter() - started, 1)
        probe_out = work / "probe.json"
        probe = subprocess.Popen(
            [
                *(sys.executable, "-m", "tests.e2e.abuse_probe"),
                *(base, str(server.pid), str(probe_out)),
            ],
            cwd=BACKEND,
            env=env,
        )
        time.sleep(0.5)
        item = {
            "title": "t" * 300,
            "tags": ["a", "b", "c"],
            "meta": {"k": [1, 2, 3], "s": "m" * 400},
        }
        body = orjson.dumps({"data": [dict(item, n=i) for i in range(1000)]})
        result["body_bytes"] = len(body)
        timings = []
        with httpx.Client(base_url=base, timeout=60) as client:
            for n in range(args.posts):
                begun = time.perf_counter()
                response = client.post(
                    f"/api/v1/data/bulk{n % 3}",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
                timings.append(time.perf_counter() - begun)
                if response.status_code != 201:
                    raise SystemExit(f"POST answered {response.status_code}")
            stats = client.get("/api/v1/stats").json()
        probe.terminate()
        probe.wait()
        seen = json.loads(probe_out.read_text())
        latencies = sorted(seen["latencies"])
        timings.sort()
        result.update(
            post_ms={
                "median": round(timings[len(timings) // 2] * 1000, 1),
                "max": round(timings[-1] * 1000, 1),
            },
            server_max_loop_lag_ms=stats["event_loop"]["max_lag_ms"],
            gc=stats["event_loop"]["gc"],
            health_ms={
                "median": round(latencies[len(latencies) // 2] * 1000, 1),
                "p99": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
                "max": round(latencies[-1] * 1000, 1),
            },
            rss_mb=round(seen["rss"][-1] / 2**20, 1),
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(json.dumps(result, indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
