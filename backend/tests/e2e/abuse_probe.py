"""The watcher of an attack: ``python -m tests.e2e.abuse_probe URL PID OUT``.

Times ``GET /health`` every 100 ms and samples the server's RSS beside it, in
its own process (so that the attacker's threads cannot delay it), until it is
sent SIGTERM; then writes ``{"latencies": [...], "rss": [...], "failures": n}``
to OUT. Every request has a 5 second timeout: a frozen server shows as a 5 s
latency, never as a hang of the probe.
"""

from __future__ import annotations

import json
import signal
import sys
import time

import httpx

INTERVAL = 0.1


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def main(url: str, pid: int, out: str) -> None:
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    latencies: list[float] = []
    rss: list[int] = []
    failures = 0
    with httpx.Client(base_url=url, timeout=5.0) as client:
        while not stopping:
            started = time.perf_counter()
            try:
                if client.get("/health").status_code != 200:
                    failures += 1
            except httpx.HTTPError:
                failures += 1
            latencies.append(time.perf_counter() - started)
            try:
                rss.append(rss_of(pid))
            except OSError:
                break
            time.sleep(max(0.0, INTERVAL - (time.perf_counter() - started)))
    with open(out, "w") as handle:
        json.dump({"latencies": latencies, "rss": rss, "failures": failures}, handle)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
