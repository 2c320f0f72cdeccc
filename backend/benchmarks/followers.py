"""Change-feed followers for the benchmark: N Server-Sent Events streams in one
process, counting the events they get and noting when each probe record
arrives.

    python -m benchmarks.followers URL COUNT SECONDS OUT.json

Each follower opens ``GET /api/v1/changes?since=now`` with ``Accept:
text/event-stream`` and reads as fast as it can, without parsing the events
(a count of ``data:`` lines); records of the table ``probe`` are found in the
bytes and their arrival noted with ``time.monotonic()`` (one clock for every
process of the machine). It writes ``{"events": [per follower], "arrivals":
{probe id: [seconds, ...]}, "seconds": how long it read}`` and exits.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import orjson

PROBE = b'"table":"probe","id":"'
EVENT = b"\ndata: "


async def follow(
    host: str,
    port: int,
    until: float,
    ready: list[int],
    arrivals: dict[str, list[float]],
) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET /api/v1/changes?since=now HTTP/1.1\r\nHost: {host}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n", 1)[0], head[:200]
    ready.append(1)
    events = 0
    rest = b""
    while True:
        left = until - time.monotonic()
        if left <= 0:
            break
        try:
            chunk = await asyncio.wait_for(reader.read(1 << 18), left)
        except asyncio.TimeoutError:
            break
        if not chunk:
            break
        now = time.monotonic()
        whole, _, rest = (rest + chunk).rpartition(b"\n\n")  # whole events only
        events += whole.count(EVENT)
        at = whole.find(PROBE)
        while at >= 0:
            start = at + len(PROBE)
            end = whole.find(b'"', start)
            arrivals.setdefault(whole[start:end].decode(), []).append(now)
            at = whole.find(PROBE, end)
    writer.close()
    return events


async def main_async(url: str, count: int, seconds: float) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    until = time.monotonic() + seconds
    ready: list[int] = []
    arrivals: dict[str, list[float]] = {}
    tasks = [
        asyncio.create_task(follow(host, port, until, ready, arrivals))
        for _ in range(count)
    ]
    while len(ready) < count and time.monotonic() < until:
        await asyncio.sleep(0.01)
    print("ready", flush=True)
    started = time.monotonic()
    events = await asyncio.gather(*tasks)
    return {
        "events": events,
        "arrivals": arrivals,
        "seconds": time.monotonic() - started,
    }


def main(argv: list[str]) -> int:
    url, count, seconds, out = argv[0], int(argv[1]), float(argv[2]), argv[3]
    result = asyncio.run(main_async(url, count, seconds))
    with open(out, "wb") as handle:
        handle.write(orjson.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
