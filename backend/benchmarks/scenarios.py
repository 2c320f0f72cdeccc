"""The scenarios of a run, in four phases, each measured in interleaved rounds.

1. HTTP: every server at once, preloaded with the same small table; GET by id,
   list (sort and page), PUT and POST, plus POST on the service with
   ``MEMDB_PERSISTENCE=aof`` (``everysec`` and ``always``), and on the service
   alone a sorted page on a sorted index and one sorted on unindexed fields.
   The servers run on one CPU, wrk on another (``benchmarks.pinning``).
2. Large table: RSS growth of the service for 1M records against the same
   records as plain dicts; then GET by id against an indexed equality filter,
   a sorted page on a sorted index and a range on it (pinned as above).
3. Join: ``users`` x ``orders`` read whole by a streaming client, against the
   in-process floor (hash join plus one ``orjson.dumps``).
4. Startup: 1M records loaded back from the data directory of ``aof`` against
   the same records from ``MEMDB_SEED_FILE``.

The mixed-load soak (``benchmarks.mixed_phase``, after the HTTP phase), the
Redis phase and the change feed have modules of their own.

A phase that fails is recorded and the next one runs; a scenario that cannot
run here (no json-server, no persistence yet) is recorded as skipped.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import httpx
import orjson

from benchmarks import data, pinning, servers
from benchmarks.harness import (
    BACKEND,
    Load,
    LoadResult,
    Process,
    Processes,
    Request,
    log,
    run_load,
    wait_http,
)
from benchmarks.servers import Server
from benchmarks.settings import Settings
from benchmarks.tools import Tools

HTTP_ORDER = ("get", "sorted-page", "unindexed-page", "list", "put", "post")
# Scenarios of the service alone, on 1,000 records, asked for with "sorted".
SORTED_SMALL = ("sorted-page", "unindexed-page")
SORTED_SMALL_KEY = "sorted index, small table"
SORTED_LARGE_KEY = "sorted index, large table"
BIG_SERVER = "memdb large table"
JOIN_SERVER = "memdb join"
SUBPROCESS_TIMEOUT_S = 900.0
LOAD_TIMEOUT_S = 900.0
SKIP_PERSISTENCE = "skipped: persistence not available"


@dataclass
class Results:
    """Every raw measurement of a run."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    join: list[dict[str, Any]] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)
    startup: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def add_run(
        self, server: str, scenario: str, round_: int, result: LoadResult
    ) -> None:
        self.runs.append(
            {
                "server": server,
                "scenario": scenario,
                "round": round_,
                **result.as_dict(),
            }
        )

    def values(self, server: str, scenario: str, key: str = "rps") -> list[float]:
        return [
            float(r[key])
            for r in self.runs
            if r["server"] == server and r["scenario"] == scenario
        ]

    def skip(self, what: str, reason: str) -> None:
        self.skipped[what] = reason
        log(f"{what}: {reason}")


@dataclass
class Context:
    settings: Settings
    tools: Tools
    processes: Processes
    workdir: Path
    results: Results

    @property
    def load(self) -> Load:
        return self.settings.load


def run_phases(ctx: Context) -> None:
    from benchmarks.changes_phase import changes_phase
    from benchmarks.mixed_phase import mixed_phase
    from benchmarks.redis_phase import redis_phase

    phases = (
        http_phase,
        mixed_phase,
        big_phase,
        join_phase,
        startup_phase,
        redis_phase,
        changes_phase,
    )
    for phase in phases:
        try:
            phase(ctx)
        except Exception as exc:  # one broken phase does not lose the others
            message = f"{phase.__name__}: {type(exc).__name__}: {exc}"
            ctx.results.errors.append(message)
            log(f"error in {message}")
        finally:
            ctx.processes.stop_all()


# -- helpers ----------------------------------------------------------------


def measure(
    ctx: Context, server: Server | Process, scenario: str, request: Request, round_: int
) -> LoadResult | None:
    name = server.name
    try:
        result = run_load(server.url, request, ctx.load, ctx.workdir)
    except Exception as exc:
        ctx.results.errors.append(f"{name} {scenario} round {round_}: {exc}")
        log(f"  {scenario:<7} {name:<20} failed: {exc}")
        return None
    ctx.results.add_run(name, scenario, round_, result)
    log(
        f"  {scenario:<7} {name:<20} {result.rps:>9.0f} req/s   "
        f"p99 {result.p99_ms:7.2f} ms   errors {result.errors}"
    )
    return result


def warm_up(ctx: Context, server: Server | Process, request: Request) -> None:
    if ctx.settings.warmup > 0:
        load = replace(ctx.load, seconds=ctx.settings.warmup)
        try:
            run_load(server.url, request, load, ctx.workdir)
        except Exception as exc:
            log(f"  warm-up of {server.name} failed: {exc}")


def rotate(items: list[Any], by: int) -> list[Any]:
    if not items:
        return items
    by %= len(items)
    return items[by:] + items[:by]


def run_to_end(ctx: Context, name: str, argv: list[str]) -> dict[str, Any]:
    """Run a helper process to its end (registered, so Ctrl-C stops it too) and
    parse the JSON line it printed last."""
    process = ctx.processes.start(name, argv, cwd=BACKEND, env=servers.python_env())
    try:
        code = process.popen.wait(timeout=SUBPROCESS_TIMEOUT_S)
    finally:
        ctx.processes.stop(process)
    lines = process.log_path.read_text().strip().splitlines()
    if code != 0 or not lines:
        raise RuntimeError(f"{name} exited with {code}:\n{process.tail()}")
    parsed: dict[str, Any] = orjson.loads(lines[-1])
    return parsed


def aof_env(data_dir: Path, fsync: str) -> dict[str, str]:
    return {
        "MEMDB_PERSISTENCE": "aof",
        "MEMDB_FSYNC": fsync,
        "MEMDB_DATA_DIR": str(data_dir),
    }


def persisted_files(data_dir: Path) -> dict[str, int]:
    if not data_dir.is_dir():
        return {}
    return {
        str(p.relative_to(data_dir)): p.stat().st_size
        for p in sorted(data_dir.rglob("*"))
        if p.is_file()
    }


def persistence_works(data_dir: Path, timeout_s: float = 3.0) -> bool:
    """After a write: whether the server put anything on disk within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(size > 0 for size in persisted_files(data_dir).values()):
            return True
        time.sleep(0.1)
    return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- phase 1: HTTP ------------------------------------------------------------


def _wants_http(s: Settings, scenario: str) -> bool:
    return s.wants("sorted" if scenario in SORTED_SMALL else scenario)


def _pinned(ctx: Context, pin: pinning.Pinning, started: list[Process]) -> Context:
    """The context of a phase's request rounds: every server in ``started``
    on the server CPU, the load on the other (or nothing, said in the notes)."""
    ctx.results.notes["pinning"] = pin.note
    for process in started:
        if pin.active and not pin.pin(process.pid):
            unpinned = ctx.results.notes.setdefault("unpinned_servers", [])
            unpinned.append(process.name)
    return replace(ctx, settings=replace(ctx.settings, load=pin.load(ctx.load)))


def _start_http_servers(ctx: Context) -> list[Server]:
    s, results = ctx.settings, ctx.results
    http = [sc for sc in HTTP_ORDER if _wants_http(s, sc)]
    started: list[Server] = []

    def attempt(name: str, start: Callable[[], Server]) -> None:
        log(f"starting {name}")
        try:
            started.append(start())
        except Exception as exc:
            results.skip(name, f"did not start: {_first_line(exc)}")

    base = ctx.workdir
    if s.serves("memdb") and (http or s.wants("aof")):
        attempt(
            servers.MEMDB,
            lambda: Server(
                servers.MEMDB,
                servers.start_small_memdb(
                    ctx.processes, base, name=servers.MEMDB, items=s.items
                ),
                servers.memdb_requests(),
            ),
        )
    for key, name, module in (
        ("floor", servers.FLOOR, "benchmarks.floor_app"),
        ("raw-floor", servers.RAW_FLOOR, "benchmarks.raw_floor_app"),
        ("fastapi", servers.FASTAPI, "benchmarks.fastapi_app"),
    ):
        if s.serves(key) and (s.wants("get") or s.wants("post")):
            attempt(
                name,
                lambda name=name, module=module: Server(  # type: ignore[misc]
                    name,
                    servers.start_python_app(
                        ctx.processes, base, name=name, module=module, items=s.items
                    ),
                    servers.floor_requests(),
                ),
            )
    for key, name, major in (
        ("json-server-1", servers.JSON_SERVER_1, 1),
        ("json-server-0.17", servers.JSON_SERVER_017, 0),
    ):
        if not (s.serves(key) and http):
            continue
        entry = ctx.tools.json_servers.get(name)
        if entry is None:
            results.skip(name, ctx.tools.missing.get(name, "not installed"))
            continue
        attempt(
            name,
            lambda name=name, entry=entry, major=major: Server(  # type: ignore[misc]
                name,
                servers.start_json_server(
                    ctx.processes, base, name=name, entry=entry, items=s.items
                ),
                servers.json_server_requests(major),
                {"version": ctx.tools.versions.get(name, "")},
            ),
        )
    for key, name, dialect, major in (
        ("serve-1", servers.SERVE_1, "1", 1),
        ("serve-0.17", servers.SERVE_017, "0.17", 0),
    ):
        if s.serves(key) and http:
            attempt(
                name,
                lambda name=name, dialect=dialect, major=major: Server(  # type: ignore[misc]
                    name,
                    servers.start_memdb_serve(
                        ctx.processes, base, name=name, dialect=dialect, items=s.items
                    ),
                    servers.json_server_requests(major),
                ),
            )
    if s.wants("aof") and s.serves("memdb"):
        for name, fsync in (
            (servers.AOF_EVERYSEC, "everysec"),
            (servers.AOF_ALWAYS, "always"),
        ):
            server = _start_aof_server(ctx, name, fsync)
            if server is not None:
                started.append(server)
    return started


def _start_aof_server(
    ctx: Context, name: str, fsync: str, data_dir: Path | None = None
) -> Server | None:
    """The service with ``MEMDB_PERSISTENCE=aof`` and ``MEMDB_FSYNC=fsync`` in
    ``data_dir`` (``data-<fsync>`` of the run's folder by default), preloaded
    with the small table; None, recorded as skipped, where it writes nothing."""
    data_dir = data_dir or ctx.workdir / f"data-{fsync}"
    log(f"starting {name}")
    try:
        process = servers.start_small_memdb(
            ctx.processes,
            ctx.workdir,
            name=name,
            items=ctx.settings.items,
            env=aof_env(data_dir, fsync),
        )
    except Exception as exc:
        ctx.results.skip(name, f"{SKIP_PERSISTENCE} ({_first_line(exc)})")
        return None
    if not persistence_works(data_dir):
        ctx.processes.stop(process)
        ctx.results.skip(
            name, f"{SKIP_PERSISTENCE} (MEMDB_PERSISTENCE=aof wrote nothing to disk)"
        )
        return None
    return Server(name, process, {"post": servers.memdb_requests()["post"]})


def _http_plan(ctx: Context, started: list[Server]) -> list[tuple[str, Server]]:
    s = ctx.settings
    plan: list[tuple[str, Server]] = []
    for scenario in HTTP_ORDER:
        for server in started:
            if scenario not in server.requests:
                continue
            wanted = _wants_http(s, scenario)
            if server.name in (servers.AOF_EVERYSEC, servers.AOF_ALWAYS):
                wanted = True
            elif server.name == servers.MEMDB and scenario == "post":
                wanted = wanted or s.wants("aof")
            if wanted:
                plan.append((scenario, server))
    return plan


def _sorted_small(ctx: Context, server: Server) -> None:
    """The small table again as ``ranked`` with a sorted index on ``value``: a
    sorted page on it, and the same size of page sorted on two fields of the
    small table, which no index holds. Without a sorted index (the service
    answers 422, say) the first is "not run", with the answer."""
    s = ctx.settings
    base = f"/api/v1/data/{data.SMALL_TABLE}"
    server.requests["unindexed-page"] = Request(
        "GET", f"{base}?{servers.UNINDEXED_PAGE}"
    )
    process = server.process
    servers.import_records(process, data.SORTED_TABLE, iter(data.small_items(s.items)))
    why = servers.create_sorted_index(process, data.SORTED_TABLE, servers.SORTED_FIELD)
    if why:
        ctx.results.skip(SORTED_SMALL_KEY, why)
        return
    path = f"/api/v1/data/{data.SORTED_TABLE}?{servers.SORTED_PAGE}"
    values = sorted((r["value"] for r in data.small_items(s.items)), reverse=True)
    servers.check_page(process, path, "value", values[100:120])
    server.requests["sorted-page"] = Request("GET", path)


def http_phase(ctx: Context) -> None:
    s = ctx.settings
    if not any(_wants_http(s, sc) for sc in (*HTTP_ORDER, "aof")):
        return
    log("phase: HTTP scenarios")
    started = _start_http_servers(ctx)
    for server in started:
        server.info["pid"] = str(server.process.pid)
        if server.name == servers.MEMDB and s.wants("sorted"):
            try:
                _sorted_small(ctx, server)
            except Exception as exc:
                ctx.results.errors.append(f"{SORTED_SMALL_KEY}: {exc}")
                log(f"error in {SORTED_SMALL_KEY}: {exc}")
    ctx.results.notes["http_servers"] = {sv.name: sv.info for sv in started}
    plan = _http_plan(ctx, started)
    pin = pinning.plan()
    pinned = _pinned(ctx, pin, [sv.process for sv in started])
    with pin.loading():
        if s.warmup:
            log(f"warm-up: {s.warmup} s per server and scenario")
            for scenario, server in plan:
                warm_up(pinned, server.process, server.requests[scenario])
        for round_ in range(s.rounds):
            log(f"round {round_ + 1}/{s.rounds}")
            for scenario in HTTP_ORDER:
                group = [sv for sc, sv in plan if sc == scenario]
                for server in rotate(group, round_):
                    measure(
                        pinned,
                        server.process,
                        scenario,
                        server.requests[scenario],
                        round_,
                    )


# -- phase 2: the large table -----------------------------------------------


def _load_big(ctx: Context, round_: int) -> Process:
    s = ctx.settings
    process = servers.start_memdb(ctx.processes, ctx.workdir, name=BIG_SERVER)
    time.sleep(0.5)
    before = process.rss()
    started = time.perf_counter()
    loaded = servers.import_records(
        process, data.BIG_TABLE, data.big_records(s.records)
    )
    seconds = time.perf_counter() - started
    time.sleep(1.0)
    after = process.rss()
    entry = {
        "kind": "service",
        "round": round_,
        "records": loaded,
        "rss_before": before,
        "rss_after": after,
        "bytes_per_record": (after - before) / loaded,
        "load_seconds": seconds,
    }
    ctx.results.memory.append(entry)
    log(
        f"  memory  {BIG_SERVER:<20} {entry['bytes_per_record']:9.0f} B/record "
        f"(loaded {loaded} in {seconds:.1f} s)"
    )
    return process


def _dict_reference(ctx: Context, round_: int) -> None:
    result = run_to_end(
        ctx,
        "plain dicts",
        [
            sys.executable,
            "-m",
            "benchmarks.references",
            "memory",
            "--records",
            str(ctx.settings.records),
        ],
    )
    ctx.results.memory.append({"kind": "dicts", "round": round_, **result})
    log(f"  memory  {'plain dicts':<20} {result['bytes_per_record']:9.0f} B/record")


def big_phase(ctx: Context) -> None:
    s = ctx.settings
    want_memory, want_filter = s.wants("memory"), s.wants("filter")
    want_sorted = s.wants("sorted")
    if not (want_memory or want_filter or want_sorted) or not s.serves("memdb"):
        return
    log(f"phase: a table of {s.records} records")
    rounds = s.rounds if want_memory else 1
    kept: Process | None = None
    for round_ in range(rounds):
        order = ["service", "dicts"] if round_ % 2 == 0 else ["dicts", "service"]
        for kind in order:
            if kind == "dicts" and want_memory:
                _dict_reference(ctx, round_)
            elif kind == "service":
                if kept is not None:
                    ctx.processes.stop(kept)
                kept = _load_big(ctx, round_)
    if (want_filter or want_sorted) and kept is not None:
        _table_rounds(ctx, kept)


def _equality_filter(ctx: Context, process: Process) -> dict[str, Request]:
    """A hash index on ``group``: an equality filter finding ``GROUP_SIZE``."""
    s = ctx.settings
    before = process.rss()
    started = time.perf_counter()
    servers.create_index(process, data.BIG_TABLE, "group")
    ctx.results.notes["index_seconds"] = time.perf_counter() - started
    time.sleep(0.5)
    ctx.results.notes["index_bytes_per_record"] = (process.rss() - before) / s.records
    first = data.big_record(7, s.records)
    request = Request("GET", f"/api/v1/data/{data.BIG_TABLE}?group={first['group']}")
    with httpx.Client(base_url=process.url, timeout=30.0) as client:
        answer = client.get(request.path)
    if answer.status_code != 200 or answer.json()["total"] < 1:
        raise RuntimeError(f"the filter found nothing: {answer.text[:300]}")
    ctx.results.notes["filter_matches"] = answer.json()["total"]
    return {"filter": request}


def _sorted_large(ctx: Context, process: Process) -> dict[str, Request]:
    """A sorted index on ``value`` (the records' number, 0..records-1): a
    sorted page of 20 and a range of ten values. Nothing, with the reason,
    where the service makes no sorted index."""
    s = ctx.settings
    before = process.rss()
    started = time.perf_counter()
    why = servers.create_sorted_index(process, data.BIG_TABLE, servers.SORTED_FIELD)
    if why:
        ctx.results.skip(SORTED_LARGE_KEY, why)
        return {}
    ctx.results.notes["sorted_index_seconds"] = time.perf_counter() - started
    time.sleep(0.5)
    grown = process.rss() - before
    ctx.results.notes["sorted_index_bytes_per_record"] = grown / s.records
    base = f"/api/v1/data/{data.BIG_TABLE}"
    page = f"{base}?{servers.SORTED_PAGE}"
    top = s.records - 101  # the value at offset 100 of the descending order
    servers.check_page(process, page, "value", list(range(top, max(-1, top - 20), -1)))
    ranged = f"{base}?{servers.RANGE_PAGE}"
    servers.check_page(
        process, ranged, "value", [n for n in range(500, 510) if n < s.records]
    )
    return {"sorted-large": Request("GET", page), "range-large": Request("GET", ranged)}


def _table_rounds(ctx: Context, process: Process) -> None:
    """GET by id on the large table, interleaved with the filters on it: the
    equality filter (``filter``), the sorted page and the range (``sorted``);
    the server on one CPU, the load on another."""
    s = ctx.settings
    first = data.big_record(7, s.records)
    requests = {
        "get-large": Request("GET", f"/api/v1/data/{data.BIG_TABLE}/{first['id']}")
    }
    if s.wants("filter"):
        requests.update(_equality_filter(ctx, process))
    if s.wants("sorted"):
        try:  # a wrong answer is an error; the other rows still run
            requests.update(_sorted_large(ctx, process))
        except Exception as exc:
            ctx.results.errors.append(f"{SORTED_LARGE_KEY}: {exc}")
            log(f"error in {SORTED_LARGE_KEY}: {exc}")
    if len(requests) == 1:
        return
    pin = pinning.plan()
    pinned = _pinned(ctx, pin, [process])
    with pin.loading():
        for request in requests.values():
            warm_up(pinned, process, request)
        for round_ in range(s.rounds):
            log(f"round {round_ + 1}/{s.rounds} ({s.records} records)")
            for scenario in rotate(list(requests), round_):
                measure(pinned, process, scenario, requests[scenario], round_)


# -- phase 3: the join --------------------------------------------------------

_COUNT = re.compile(rb'"count":(\d+)')


def read_join(url: str, path: str) -> dict[str, Any]:
    """Read the whole answer as a streaming client does: time to the last byte."""
    received = 0
    first: float | None = None
    head = b""
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=LOAD_TIMEOUT_S) as client:
        # the answer as it is made, not gzipped: what the floor makes too
        plain = {"Accept-Encoding": "identity"}
        with client.stream("GET", path, headers=plain) as response:
            for chunk in response.iter_raw(1 << 20):
                if first is None:
                    first = time.perf_counter() - started
                if len(head) < 512:
                    head += chunk[:512]
                received += len(chunk)
            status = response.status_code
    seconds = time.perf_counter() - started
    if status != 200:
        raise RuntimeError(f"the join answered {status}: {head[:300]!r}")
    found = _COUNT.search(head)
    return {
        "seconds": seconds,
        "first_byte_seconds": first or seconds,
        "bytes": received,
        "rows": int(found.group(1)) if found else None,
    }


def join_phase(ctx: Context) -> None:
    s = ctx.settings
    if not s.wants("join") or not s.serves("memdb"):
        return
    log(f"phase: join users ({s.users}) x orders ({s.orders})")
    process = servers.start_memdb(ctx.processes, ctx.workdir, name=JOIN_SERVER)
    started = time.perf_counter()
    servers.import_records(process, "users", data.users(s.users))
    servers.import_records(process, "orders", data.orders(s.orders, s.users))
    ctx.results.notes["join_load_seconds"] = time.perf_counter() - started
    path = "/api/v1/join/users/orders/user_id"
    for round_ in range(s.rounds):
        for kind in rotate(["service", "floor"], round_):
            if kind == "service":
                result = read_join(process.url, path)
            else:
                result = run_to_end(
                    ctx,
                    "join floor",
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.references",
                        "join",
                        "--users",
                        str(s.users),
                        "--orders",
                        str(s.orders),
                    ],
                )
            ctx.results.join.append({"kind": kind, "round": round_, **result})
            log(
                f"  join    {kind:<20} {result['seconds']:9.2f} s "
                f"({result['bytes'] / 1e6:.0f} MB, {result['rows']} rows)"
            )
    ctx.processes.stop(process)


# -- phase 4: startup -------------------------------------------------------


def _write_seed(path: Path, records: int) -> Path:
    with path.open("wb") as out:
        out.write(b'{"' + data.BIG_TABLE.encode() + b'":[')
        for position, group in enumerate(
            data.batches(data.big_records(records), 1 << 20)
        ):
            out.write((b"," if position else b"") + b",".join(group))
        out.write(b"]}")
    return path


def _timed_start(ctx: Context, name: str, env: dict[str, str]) -> dict[str, Any]:
    started = time.perf_counter()
    process = servers.start_memdb(
        ctx.processes, ctx.workdir, name=name, env=env, wait=False
    )
    try:
        wait_http(process, "/ready", timeout_s=LOAD_TIMEOUT_S)
        seconds = time.perf_counter() - started
        with httpx.Client(base_url=process.url, timeout=30.0) as client:
            tables = client.get("/api/v1/tables").json()
        count = next((t["count"] for t in tables if t["name"] == data.BIG_TABLE), 0)
        rss = process.rss()
    finally:
        ctx.processes.stop(process)
    return {"seconds": seconds, "records": count, "rss": rss}


def startup_phase(ctx: Context) -> None:
    s = ctx.settings
    if not s.wants("startup") or not s.serves("memdb"):
        return
    log(f"phase: startup with {s.records} records")
    data_dir = ctx.workdir / "data-startup"
    env = aof_env(data_dir, "everysec")
    try:
        process = servers.start_memdb(
            ctx.processes, ctx.workdir, name="memdb aof loader", env=env
        )
    except Exception as exc:
        ctx.results.skip("startup", f"{SKIP_PERSISTENCE} ({_first_line(exc)})")
        return
    servers.import_records(process, data.BIG_TABLE, data.big_records(s.records))
    if not persistence_works(data_dir):
        ctx.processes.stop(process)
        ctx.results.skip(
            "startup",
            f"{SKIP_PERSISTENCE} (MEMDB_PERSISTENCE=aof wrote nothing to disk)",
        )
        return
    ctx.processes.stop(process)
    ctx.results.notes["startup_files"] = persisted_files(data_dir)
    seed = _write_seed(ctx.workdir / "seed.json", s.records)
    for round_ in range(s.rounds):
        for kind in rotate(["aof", "seed"], round_):
            if kind == "aof":
                result = _timed_start(ctx, "memdb aof restart", env)
            else:
                result = _timed_start(
                    ctx, "memdb seed start", {"MEMDB_SEED_FILE": str(seed)}
                )
            ctx.results.startup.append({"kind": kind, "round": round_, **result})
            log(
                f"  startup {kind:<20} {result['seconds']:9.2f} s "
                f"({result['records']} records)"
            )
