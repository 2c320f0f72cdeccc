"""The mixed-load soak (``mixed``): reads and durable writes together.

One service of its own with ``MEMDB_PERSISTENCE=aof``, ``MEMDB_FSYNC=always``
and a data directory of its own, preloaded with the small table of the HTTP
phase (``items``, ids "1".."items"), driven by one wrk run of
``BENCH_MIXED_SECONDS`` (60 s) whose Lua script sends

- 80% ``GET /api/v1/data/items/{id}`` of a random existing id,
- 15% ``POST /api/v1/data/posts`` of a new record (a table apart),
- 5% ``PATCH /api/v1/data/items/{id}`` of a random existing id, a JSON merge
  patch sent as ``{"data": {...}}`` with ``Content-Type: application/json``.

The server runs on one CPU, wrk on another with one thread
(``benchmarks.pinning``), as in the other hot phases. Before the run one
request of each kind must answer as the script expects (200, 201, 200).

Errors are the answers outside 2xx, which the script counts by status (wrk's
own summary only counts those of 400 and above, all together), and wrk's
socket errors (connect, read, write, timeout).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from pathlib import Path
from string import Template
from typing import Any

import httpx
import orjson

from benchmarks import data, pinning
from benchmarks.harness import (
    _WRK_DONE,
    Load,
    LoadResult,
    Request,
    _raw_request,
    log,
    parse_wrk,
    python_load,
    wrk_output,
)
from benchmarks.scenarios import (
    Context,
    _pinned,
    _start_aof_server,
    persisted_files,
)

SCENARIO = "mixed"
MIXED_SERVER = "memdb mixed aof always"
MIXED_LABEL = "mixed 80/15/5 GET/POST/PATCH, aof always"
P99_MAX_MS = 10.0
# percent of the requests of each kind, in the order the script rolls them
MIX = (("get", 80), ("post", 15), ("patch", 5))
SOCKET_ERRORS = ("connect", "read", "write", "timeout")

RECORD_PATH = f"/api/v1/data/{data.SMALL_TABLE}/"
POST_PATH = f"/api/v1/data/{data.POST_TABLE}"
POST_BODY = orjson.dumps({"data": data.POST_BODY})
JSON = {"Content-Type": "application/json"}


def patch_body(value: int, active: bool) -> bytes:
    """The merge patch of one PATCH (as the Lua script writes it)."""
    return orjson.dumps({"data": {"value": value, "active": active}})


_SCRIPT = Template(
    """-- The mixed-load soak: GET by id, POST, PATCH of ids 1..items, by share.
local items = $items
local record_path = "$record_path"
local post_path = "$post_path"
local post_body = [==[$post_body]==]
local get_upto, post_upto = $get_upto, $post_upto
local json = {["Content-Type"] = "application/json"}

-- globals: read from each thread by done() (thread:get)
threads = {}
statuses = {}
sent = {get = 0, post = 0, patch = 0}

function setup(thread)
  table.insert(threads, thread)
  thread:set("seed", #threads)
end

function init(args)
  math.randomseed(seed or 1)
end

function request()
  local roll = math.random(100)
  if roll <= get_upto then
    sent.get = sent.get + 1
    return wrk.format("GET", record_path .. math.random(items))
  elseif roll <= post_upto then
    sent.post = sent.post + 1
    return wrk.format("POST", post_path, json, post_body)
  end
  sent.patch = sent.patch + 1
  local body = '{"data":{"value":' .. math.random(0, 999) .. ',"active":' ..
    (math.random(2) == 1 and "true" or "false") .. '}}'
  return wrk.format("PATCH", record_path .. math.random(items), json, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

local function print_mix()
  local codes = {}
  local kinds = {get = 0, post = 0, patch = 0}
  for _, thread in ipairs(threads) do
    for code, count in pairs(thread:get("statuses")) do
      codes[code] = (codes[code] or 0) + count
    end
    for kind, count in pairs(thread:get("sent")) do
      kinds[kind] = kinds[kind] + count
    end
  end
  local parts = {}
  for code, count in pairs(codes) do
    parts[#parts + 1] = string.format('"%d": %d', code, count)
  end
  io.write(string.format(
    'BENCH_MIX {"statuses": {%s}, "sent": {"get": %d, "post": %d, "patch": %d}}\\n',
    table.concat(parts, ", "), kinds.get, kinds.post, kinds.patch))
end

$wrk_done
local print_summary = done
done = function(summary, latency, requests)
  print_mix()
  print_summary(summary, latency, requests)
end
"""
)


def mix_script(items: int) -> str:
    """The wrk Lua script of the soak over ids 1..``items``."""
    shares = dict(MIX)
    body = POST_BODY.decode()
    if "]==]" in body:
        raise ValueError("the body cannot be quoted for Lua")
    return _SCRIPT.substitute(
        items=items,
        record_path=RECORD_PATH,
        post_path=POST_PATH,
        post_body=body,
        get_upto=shares["get"],
        post_upto=shares["get"] + shares["post"],
        wrk_done=_WRK_DONE,
    )


def _with_counts(
    result: LoadResult, statuses: dict[int, int], sent: dict[str, int], socket: int
) -> LoadResult:
    """``result`` whose errors are the answers outside 2xx plus ``socket``."""
    non_2xx = sum(n for code, n in statuses.items() if not 200 <= code < 300)
    extra = {
        **result.extra,
        "statuses": {str(code): n for code, n in sorted(statuses.items())},
        "sent": sent,
        "non_2xx": non_2xx,
        "socket_errors": socket,
        "mix": dict(MIX),
    }
    return replace(result, errors=non_2xx + socket, extra=extra)


def parse_mix(output: str) -> LoadResult:
    """wrk's summary and the script's counts (the ``BENCH_MIX`` line)."""
    result = parse_wrk(output)
    for line in output.splitlines():
        if line.startswith("BENCH_MIX "):
            raw = orjson.loads(line[len("BENCH_MIX ") :])
            break
    else:
        raise RuntimeError(f"wrk printed no counts by status:\n{output[-2000:]}")
    statuses = {int(code): int(n) for code, n in raw["statuses"].items()}
    socket = sum(int(result.extra[k]) for k in SOCKET_ERRORS)
    return _with_counts(result, statuses, raw["sent"], socket)


def _python_mix(url: str, items: int, load: Load) -> LoadResult:
    """The same mix from the harness's Python load generator (no wrk)."""
    parsed = httpx.URL(url)
    host, port = parsed.host, parsed.port or 80
    rng = random.Random(1)
    shares = dict(MIX)
    post = _raw_request(host, port, Request("POST", POST_PATH, POST_BODY))
    sent = {kind: 0 for kind, _ in MIX}

    def next_request() -> bytes:
        roll = rng.randint(1, 100)
        path = f"{RECORD_PATH}{rng.randint(1, items)}"
        if roll <= shares["get"]:
            sent["get"] += 1
            return _raw_request(host, port, Request("GET", path))
        if roll <= shares["get"] + shares["post"]:
            sent["post"] += 1
            return post
        sent["patch"] += 1
        body = patch_body(rng.randint(0, 999), rng.random() < 0.5)
        return _raw_request(host, port, Request("PATCH", path, body))

    statuses: dict[int, int] = {}
    result = asyncio.run(python_load(url, next_request, load, statuses))
    # the generator's errors are its socket errors plus the answers >= 400
    socket = result.errors - sum(n for code, n in statuses.items() if code >= 400)
    return _with_counts(result, statuses, sent, socket)


def run_mix(url: str, items: int, load: Load, script_dir: Path) -> LoadResult:
    """One run of the mix against the service at ``url``."""
    if load.tool == "wrk":
        output = wrk_output(
            url + RECORD_PATH + "1", mix_script(items), load, script_dir
        )
        return parse_mix(output)
    return _python_mix(url, items, load)


def preflight(url: str, items: int) -> None:
    """One request of each kind, as the script sends it: GET and PATCH must
    answer 200 (the patch applied), POST 201. Raises with the answer if not."""
    with httpx.Client(base_url=url, timeout=10.0) as client:
        answers = [
            (client.get(f"{RECORD_PATH}1"), 200),
            (client.post(POST_PATH, content=POST_BODY, headers=JSON), 201),
            (
                client.patch(
                    f"{RECORD_PATH}{items}",
                    content=patch_body(123, True),
                    headers=JSON,
                ),
                200,
            ),
        ]
        patched = client.get(f"{RECORD_PATH}{items}")
    for answer, status in answers:
        if answer.status_code != status:
            request = answer.request
            raise RuntimeError(
                f"{request.method} {request.url.path} answered {answer.status_code}, "
                f"not {status}: {answer.text[:300]}"
            )
    if patched.status_code != 200 or patched.json().get("value") != 123:
        raise RuntimeError(f"the PATCH did not apply: {patched.text[:300]}")


def _count(url: str, table: str) -> int | None:
    try:
        with httpx.Client(base_url=url, timeout=30.0) as client:
            tables = client.get("/api/v1/tables").json()
        return next((int(t["count"]) for t in tables if t["name"] == table), 0)
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


def mixed_phase(ctx: Context) -> None:
    s = ctx.settings
    if not s.wants(SCENARIO) or not s.serves("memdb"):
        return
    log(f"phase: mixed-load soak, {s.mixed_seconds} s, aof always")
    data_dir = ctx.workdir / "data-mixed"
    server = _start_aof_server(ctx, MIXED_SERVER, "always", data_dir)
    if server is None:
        return
    process = server.process
    preflight(process.url, s.items)
    pin = pinning.plan()
    pinned = _pinned(ctx, pin, [process])
    with pin.loading():
        if s.warmup:
            try:
                run_mix(
                    process.url,
                    s.items,
                    replace(pinned.load, seconds=s.warmup),
                    ctx.workdir,
                )
            except Exception as exc:
                log(f"  warm-up of {MIXED_SERVER} failed: {exc}")
        load = replace(pinned.load, seconds=s.mixed_seconds)
        result = run_mix(process.url, s.items, load, ctx.workdir)
    if not process.alive():
        raise RuntimeError(f"{MIXED_SERVER} exited during the run:\n{process.tail()}")
    ctx.results.add_run(MIXED_SERVER, SCENARIO, 0, result)
    extra = result.extra
    log(
        f"  {SCENARIO:<7} {MIXED_SERVER:<20} {result.rps:>9.0f} req/s   "
        f"p50 {result.p50_ms:.2f} ms   p99 {result.p99_ms:.2f} ms   "
        f"errors {result.errors} (non-2xx {extra['non_2xx']}, "
        f"socket {extra['socket_errors']})   statuses {extra['statuses']}"
    )
    notes: dict[str, Any] = {
        "seconds": s.mixed_seconds,
        "posted_records": _count(process.url, data.POST_TABLE),
        "data_dir_bytes": sum(persisted_files(data_dir).values()),
    }
    ctx.results.notes["mixed"] = notes
