"""Figures against the targets of CONTRACT section 9, and the outputs of a run:
the table on stdout, ``BENCHMARKS.md``, a plot (PNG) and the raw numbers (JSON)."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import orjson

from benchmarks import servers
from benchmarks.harness import REPO, Load, Summary
from benchmarks.scenarios import (
    BIG_SERVER,
    SORTED_LARGE_KEY,
    SORTED_SMALL_KEY,
    Results,
)
from benchmarks.settings import Settings

NOTES = REPO / "docs" / "bench" / "notes.md"
PLOT_SCENARIOS = (
    "get",
    "list",
    "put",
    "post",
    "get-large",
    "filter",
    "sorted-large",
    "range-large",
    "mixed",
)


@dataclass(frozen=True)
class Target:
    """At least ``ratio_min`` or at most ``ratio_max`` of the reference; or a value
    under ``value_max``. None of them: the figure is for information."""

    text: str = "-"
    ratio_min: float | None = None
    ratio_max: float | None = None
    value_max: float | None = None

    def met(self, value: float, ratio: float | None) -> bool | None:
        checks: list[bool] = []
        if self.value_max is not None:
            checks.append(value < self.value_max)
        if ratio is not None and self.ratio_min is not None:
            checks.append(ratio >= self.ratio_min)
        if ratio is not None and self.ratio_max is not None:
            checks.append(ratio <= self.ratio_max)
        return all(checks) if checks else None


@dataclass(frozen=True)
class Figure:
    label: str
    unit: str
    value: Summary | None
    reference_label: str
    reference: Summary | None
    target: Target
    skipped: str = ""
    # each round's value over the same round's reference, where both were
    # measured in the same interleaved rounds
    rounds: tuple[float, ...] = ()
    # the load errors behind ``value`` where the target allows none: any fails
    errors: int | None = None
    # shown instead of the reference where there is none (say, the other
    # figures of the same run)
    detail: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or self.reference is None or not self.reference.median:
            return None
        return self.value.median / self.reference.median

    @property
    def status(self) -> str:
        if self.value is None:
            return "skipped" if self.skipped else "not run"
        met = self.target.met(self.value.median, self.ratio)
        if met is not None and self.errors:
            met = False
        if met is None:
            return "not run" if self.target.text != "-" else "info"
        return "pass" if met else "FAIL"

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "ratio": self.ratio,
            "status": self.status,
            "target": self.target.text,
        }


def _summary(values: Sequence[float]) -> Summary | None:
    return Summary.of(values) if values else None


def _with_indexes(r: Results) -> Summary | None:
    """The service's bytes per record with the hash index (``group``) and the
    sorted index (``value``) the large table gets: each round's load, plus
    what each index added when it was made."""
    added = [r.notes.get(k) for k in INDEX_NOTES]
    if any(a is None for a in added):
        return None
    grown = sum(float(a) for a in added if a is not None)
    service = [float(x["bytes_per_record"]) for x in r.memory if x["kind"] == "service"]
    return _summary([b + grown for b in service])


# what the large table's two indexes added per record, as the run noted them
INDEX_NOTES = ("index_bytes_per_record", "sorted_index_bytes_per_record")


def round_ratios(
    results: Results,
    value: tuple[str, str],
    reference: tuple[str, str],
    key: str = "rps",
) -> tuple[float, ...]:
    """Per round: the value's ``key`` over the reference's, in round order."""

    def by_round(server: str, scenario: str) -> dict[int, float]:
        return {
            int(run["round"]): float(run[key])
            for run in results.runs
            if run["server"] == server and run["scenario"] == scenario
        }

    mine, theirs = by_round(*value), by_round(*reference)
    return tuple(mine[n] / theirs[n] for n in sorted(mine) if n in theirs and theirs[n])


def build_figures(results: Results, settings: Settings) -> list[Figure]:
    """The figures of CONTRACT section 9 first, then those for information."""
    r = results
    memdb, floor = servers.MEMDB, servers.FLOOR
    js1, js017 = servers.JSON_SERVER_1, servers.JSON_SERVER_017

    def versus(
        label: str,
        value: tuple[str, str],
        reference_label: str,
        reference: tuple[str, str],
        target: Target,
        skipped: str = "",
        key: str = "rps",
        unit: str = "req/s",
    ) -> Figure:
        """A figure from two series of load runs, with the per-round ratios."""
        return Figure(
            label,
            unit,
            _summary(r.values(*value, key)),
            reference_label,
            _summary(r.values(*reference, key)),
            target,
            skipped,
            round_ratios(r, value, reference, key),
        )

    def why(*names: str) -> str:
        return "; ".join(f"{n}: {r.skipped[n]}" for n in names if n in r.skipped)

    def kinds(rows: list[dict[str, Any]], kind: str, key: str) -> Summary | None:
        return _summary([float(x[key]) for x in rows if x["kind"] == kind])

    raw = servers.RAW_FLOOR
    big = f"{settings.records:,} records"
    figures = [
        versus(
            "GET by id",
            (memdb, "get"),
            "Starlette floor",
            (floor, "get"),
            Target(">= 0.6", ratio_min=0.6),
            why(memdb, floor),
        ),
        versus(
            "GET by id vs raw ASGI floor",
            (memdb, "get"),
            "raw ASGI floor",
            (raw, "get"),
            Target(">= 0.85", ratio_min=0.85),
            why(memdb, raw),
        ),
        versus(
            "POST, schemaless table",
            (memdb, "post"),
            "Starlette floor",
            (floor, "post"),
            Target(">= 0.5", ratio_min=0.5),
            why(memdb, floor),
        ),
        versus(
            "POST vs raw ASGI floor",
            (memdb, "post"),
            "raw ASGI floor",
            (raw, "post"),
            Target(">= 0.8", ratio_min=0.8),
            why(memdb, raw),
        ),
        versus(
            "GET by id vs json-server 1.x",
            (memdb, "get"),
            js1,
            (js1, "get"),
            Target("> 1 (ahead)", ratio_min=1.0),
            why(memdb, js1),
        ),
        versus(
            "POST vs json-server 1.x",
            (memdb, "post"),
            js1,
            (js1, "post"),
            Target(">= 20", ratio_min=20.0),
            why(memdb, js1),
        ),
        versus(
            "memdb serve: GET by id vs json-server 1.x",
            (servers.SERVE_1, "get"),
            js1,
            (js1, "get"),
            Target(">= 2", ratio_min=2.0),
            why(servers.SERVE_1, js1),
        ),
        versus(
            "memdb serve: sorted page vs json-server 1.x",
            (servers.SERVE_1, "list"),
            js1,
            (js1, "list"),
            Target(">= 2", ratio_min=2.0),
            why(servers.SERVE_1, js1),
        ),
        versus(
            "memdb serve: POST vs json-server 1.x",
            (servers.SERVE_1, "post"),
            js1,
            (js1, "post"),
            Target(">= 30", ratio_min=30.0),
            why(servers.SERVE_1, js1),
        ),
        versus(
            "p99 of GET by id, 32 connections",
            (memdb, "get"),
            "Starlette floor",
            (floor, "get"),
            Target("< 15 ms", value_max=15.0),
            why(memdb),
            key="p99_ms",
            unit="ms",
        ),
        versus(
            "POST, aof everysec",
            (servers.AOF_EVERYSEC, "post"),
            "no persistence",
            (memdb, "post"),
            Target(">= 0.8", ratio_min=0.8),
            why(servers.AOF_EVERYSEC),
        ),
        Figure(
            f"join users ({settings.users:,}) x orders ({settings.orders:,}), read whole",
            "s",
            kinds(r.join, "service", "seconds"),
            "in-process floor",
            kinds(r.join, "floor", "seconds"),
            Target("<= 1.1", ratio_max=1.1),
        ),
        Figure(
            f"join users ({settings.users:,}) x orders ({settings.orders:,}), first byte",
            "s",
            kinds(r.join, "service", "first_byte_seconds"),
            "-",
            None,
            Target("< 0.3 s", value_max=0.3),
        ),
        Figure(
            f"memory per record, {big}",
            "B",
            kinds(r.memory, "service", "bytes_per_record"),
            "plain dicts",
            kinds(r.memory, "dicts", "bytes_per_record"),
            Target("<= 1.3", ratio_max=1.3),
        ),
        Figure(
            f"memory per record, {big}, with its hash and sorted indexes",
            "B",
            _with_indexes(r),
            "plain dicts",
            kinds(r.memory, "dicts", "bytes_per_record"),
            Target("<= 0.7", ratio_max=0.7),
            skipped="" if _with_indexes(r) else "no index was measured",
        ),
        versus(
            f"indexed equality filter, {big}",
            (BIG_SERVER, "filter"),
            "GET by id, same table",
            (BIG_SERVER, "get-large"),
            Target(">= 0.5", ratio_min=0.5),
        ),
        *_sorted_figures(r, settings, versus),
        versus(
            "POST, aof always",
            (servers.AOF_ALWAYS, "post"),
            "no persistence",
            (memdb, "post"),
            Target(),
            why(servers.AOF_ALWAYS),
        ),
        *_mixed_figures(r, settings),
        versus("PUT", (memdb, "put"), js1, (js1, "put"), Target(), why(memdb)),
        versus(
            "list, sort and page",
            (memdb, "list"),
            js1,
            (js1, "list"),
            Target(),
            why(memdb),
        ),
        versus(
            "Starlette floor vs raw ASGI floor: GET by id",
            (floor, "get"),
            "raw ASGI floor",
            (raw, "get"),
            Target(),
            why(floor, raw),
        ),
        versus(
            "Starlette floor vs raw ASGI floor: POST",
            (floor, "post"),
            "raw ASGI floor",
            (raw, "post"),
            Target(),
            why(floor, raw),
        ),
        versus(
            "GET by id vs plain FastAPI",
            (memdb, "get"),
            servers.FASTAPI,
            (servers.FASTAPI, "get"),
            Target(),
        ),
        versus(
            "POST vs plain FastAPI",
            (memdb, "post"),
            servers.FASTAPI,
            (servers.FASTAPI, "post"),
            Target(),
        ),
        versus(
            "memdb serve --compat 0.17: GET by id vs json-server 0.17",
            (servers.SERVE_017, "get"),
            js017,
            (js017, "get"),
            Target(),
        ),
        versus(
            "memdb serve --compat 0.17: sorted page vs json-server 0.17",
            (servers.SERVE_017, "list"),
            js017,
            (js017, "list"),
            Target(),
        ),
        versus(
            "memdb serve --compat 0.17: POST vs json-server 0.17",
            (servers.SERVE_017, "post"),
            js017,
            (js017, "post"),
            Target(),
        ),
        versus(
            "GET by id vs json-server 0.17",
            (memdb, "get"),
            js017,
            (js017, "get"),
            Target(),
        ),
        versus(
            "POST vs json-server 0.17",
            (memdb, "post"),
            js017,
            (js017, "post"),
            Target(),
        ),
        Figure(
            f"startup, {big} from the data dir",
            "s",
            kinds(r.startup, "aof", "seconds"),
            "MEMDB_SEED_FILE",
            kinds(r.startup, "seed", "seconds"),
            Target(),
            r.skipped.get("startup", ""),
        ),
        *_redis_figures(r, settings),
        *_changes_figures(r, settings),
    ]
    return figures


def _sorted_figures(
    r: Results, settings: Settings, versus: Callable[..., Figure]
) -> list[Figure]:
    """Pages of 20 sorted on a sorted index, on two unindexed fields, and a
    range on a sorted index; each against GET by id on a table as large."""
    if not settings.wants("sorted"):
        return []
    small = f"{settings.items:,} records"
    big = f"{settings.records:,} records"
    small_why = r.skipped.get(SORTED_SMALL_KEY, "")
    big_why = r.skipped.get(SORTED_LARGE_KEY, "")
    return [
        versus(
            f"sorted page of 20 on a sorted index, {small}",
            (servers.MEMDB, "sorted-page"),
            f"GET by id, {small}",
            (servers.MEMDB, "get"),
            Target(">= 0.5", ratio_min=0.5),
            small_why,
        ),
        versus(
            f"sorted page of 20 on a sorted index, {big}",
            (BIG_SERVER, "sorted-large"),
            "GET by id, same table",
            (BIG_SERVER, "get-large"),
            Target(">= 0.5", ratio_min=0.5),
            big_why,
        ),
        versus(
            f"sorted page of 20, no index (sort=-name,value), {small}",
            (servers.MEMDB, "unindexed-page"),
            "GET by id, same table",
            (servers.MEMDB, "get"),
            Target(">= 0.2", ratio_min=0.2),
        ),
        versus(
            f"range page on a sorted index (10 of {big})",
            (BIG_SERVER, "range-large"),
            "GET by id, same table",
            (BIG_SERVER, "get-large"),
            Target(">= 0.3", ratio_min=0.3),
            big_why,
        ),
    ]


def _mixed_figures(r: Results, settings: Settings) -> list[Figure]:
    """The mixed-load soak: its p99 against the target, and no errors; its
    req/s, p50 and errors (non-2xx by status, socket) beside."""
    if not settings.wants("mixed"):
        return []
    from benchmarks.mixed_phase import MIXED_LABEL, MIXED_SERVER, P99_MAX_MS, SCENARIO

    runs = [
        run
        for run in r.runs
        if run["server"] == MIXED_SERVER and run["scenario"] == SCENARIO
    ]
    target = Target(
        f"p99 < {P99_MAX_MS:g} ms at {settings.load.connections} connections, 0 errors",
        value_max=P99_MAX_MS,
    )
    if not runs:
        return [
            Figure(
                MIXED_LABEL,
                "ms",
                None,
                "-",
                None,
                target,
                r.skipped.get(MIXED_SERVER, ""),
            )
        ]

    def total(key: str) -> int:
        return sum(int(run.get("extra", {}).get(key, 0)) for run in runs)

    errors = sum(int(run["errors"]) for run in runs)
    rps = Summary.of([float(run["rps"]) for run in runs])
    p50 = Summary.of([float(run["p50_ms"]) for run in runs])
    seconds = sum(float(run["seconds"]) for run in runs)
    requests = sum(int(run["requests"]) for run in runs)
    detail = (
        f"{_spread(rps, 'req/s')}, p50 {_spread(p50, 'ms')}, errors {errors}"
        f" (non-2xx {total('non_2xx')}, socket {total('socket_errors')});"
        f" {requests:,} requests in {seconds:.0f} s"
    )
    return [
        Figure(
            MIXED_LABEL,
            "ms",
            Summary.of([float(run["p99_ms"]) for run in runs]),
            "-",
            None,
            target,
            errors=errors,
            detail=detail,
        )
    ]


def _changes_figures(r: Results, settings: Settings) -> list[Figure]:
    """The change feed: its cost to writes, its delivery rate and delay."""
    if not settings.wants("changes"):
        return []
    from benchmarks.changes_phase import FEED

    notes: dict[str, Any] = r.notes.get("changes", {})
    count = notes.get("followers", 100)
    skipped = r.skipped.get("changes", "")

    def one(value: float | None) -> Summary | None:
        return None if value is None else Summary.of([float(value)])

    return [
        Figure(
            f"Change feed: POST with {count} followers",
            "req/s",
            _summary(r.values(FEED, "post-followers")),
            "POST with none",
            _summary(r.values(FEED, "post-no-followers")),
            Target(">= 0.7", ratio_min=0.7),
            skipped,
        ),
        Figure(
            f"Change feed: events delivered to {count} followers",
            "events/s",
            _summary(notes.get("events_per_s", [])),
            "-",
            None,
            Target(),
            skipped,
        ),
        Figure(
            "Change feed: write answered -> event at a follower, p50",
            "ms",
            one(notes.get("latency_p50_ms")),
            "-",
            None,
            Target(),
            skipped,
        ),
        Figure(
            "Change feed: write answered -> event at a follower, p99",
            "ms",
            one(notes.get("latency_p99_ms")),
            "-",
            None,
            Target("< 50 ms", value_max=50.0),
            skipped,
        ),
    ]


def _redis_figures(r: Results, settings: Settings) -> list[Figure]:
    """The Redis backend beside the memory backend of the same run."""
    if not settings.wants("redis"):
        return []
    from benchmarks.redis_phase import MEMORY_BESIDE, REDIS_1, REDIS_2

    notes: dict[str, Any] = r.notes.get("redis", {})
    engine = notes.get("redis_benchmark", {})
    trips = notes.get("round_trips", {})
    memdb = MEMORY_BESIDE

    def rps(server: str, scenario: str) -> Summary | None:
        return _summary(r.values(server, scenario))

    # "at least 1.5x where the cores allow it": not where the two workers'
    # run already kept the machine's CPUs (shared with wrk and Redis) busy
    busy = notes.get("cpu_busy", {}).get(f"{REDIS_2} get", 0.0)
    saturated = f" (CPUs {busy:.0%} busy)" if busy >= 0.9 else ""

    def one(value: float | None) -> Summary | None:
        return None if value is None else Summary.of([float(value)])

    def join(kind: str) -> Summary | None:
        return _summary([float(x["seconds"]) for x in r.join if x["kind"] == kind])

    figures = [
        Figure(
            "Redis: GET by id, 1 worker",
            "req/s",
            rps(REDIS_1, "get"),
            "memory backend",
            rps(memdb, "get"),
            Target(">= 0.5", ratio_min=0.5),
        ),
        Figure(
            f"Redis: GET by id, 2 workers{saturated}",
            "req/s",
            rps(REDIS_2, "get"),
            "1 worker",
            rps(REDIS_1, "get"),
            Target() if saturated else Target(">= 1.5", ratio_min=1.5),
        ),
        Figure(
            "Redis: POST, 1 worker",
            "req/s",
            rps(REDIS_1, "post"),
            "memory backend",
            rps(memdb, "post"),
            Target(),
        ),
        Figure(
            "Redis: POST, 2 workers",
            "req/s",
            rps(REDIS_2, "post"),
            "1 worker",
            rps(REDIS_1, "post"),
            Target(),
        ),
        Figure(
            "redis-benchmark GET (the engine alone)",
            "req/s",
            one(engine.get("get")),
            "redis-benchmark SET",
            one(engine.get("set")),
            Target(),
        ),
        Figure(
            f"Redis: join users ({settings.users:,}) x orders ({settings.orders:,})",
            "s",
            join("redis"),
            "memory backend",
            join("service"),
            Target("<= 3", ratio_max=3.0),
        ),
    ]
    limits = {"get": 1, "post": 1, "put_if_match": 1, "indexed_page": 2}
    labels = {
        "get": "GET by id",
        "post": "POST",
        "put_if_match": "PUT with If-Match",
        "indexed_page": "indexed equality page",
    }
    for key, limit in limits.items():
        figures.append(
            Figure(
                f"Redis round trips: {labels[key]}",
                "trips",
                one(trips.get(key)),
                "-",
                None,
                Target(f"<= {limit}", value_max=limit + 0.01),
            )
        )
    return figures


# -- formatting -------------------------------------------------------------


def _number(value: float, unit: str) -> str:
    if unit == "trips":
        return f"{value:.2f}"
    if unit in ("s", "ms"):
        return f"{value:.2f}"
    return f"{value:,.0f}"


def _spread(summary: Summary | None, unit: str) -> str:
    if summary is None:
        return "-"
    text = f"{_number(summary.median, unit)} {unit}"
    if summary.count > 1:
        text += f" ({_number(summary.low, unit)}-{_number(summary.high, unit)})"
    return text


def figure_rows(figures: Sequence[Figure]) -> list[list[str]]:
    rows = []
    for f in figures:
        if f.detail:
            reference = f.detail
        elif f.reference is not None:
            reference = f"{f.reference_label}: {_spread(f.reference, f.unit)}"
        else:
            reference = f"{f.reference_label}: -"
        ratio = f"{f.ratio:.2f}" if f.ratio is not None else "-"
        if f.ratio is not None and len(f.rounds) > 1:
            ratio += f" ({min(f.rounds):.2f}-{max(f.rounds):.2f})"
        status = f.status
        if status == "skipped":
            # "not run: <why>" as it is, anything else as "skipped (<why>)"
            not_run = f.skipped.startswith("not run")
            status = f.skipped if not_run else f"skipped ({f.skipped})"
        rows.append(
            [f.label, _spread(f.value, f.unit), reference, ratio, f.target.text, status]
        )
    return rows


FIGURE_HEADER = ["figure", "value", "reference", "ratio", "target", "pass/fail"]
SERVER_HEADER = [
    "server",
    "scenario",
    "req/s median (min-max)",
    "p99 ms median",
    "errors",
]


def server_rows(results: Results) -> list[list[str]]:
    seen: list[tuple[str, str]] = []
    for run in results.runs:
        key = (run["server"], run["scenario"])
        if key not in seen:
            seen.append(key)
    rows = []
    for server, scenario in seen:
        rps = Summary.of(results.values(server, scenario))
        p99 = Summary.of(results.values(server, scenario, "p99_ms"))
        errors = sum(results.values(server, scenario, "errors"))
        rows.append(
            [
                server,
                scenario,
                _spread(rps, "req/s").replace(" req/s", ""),
                f"{p99.median:.2f}",
                f"{errors:.0f}",
            ]
        )
    return rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *map(line, rows)])


# -- machine ----------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "commit": _commit(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": memory,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def _commit() -> str:
    """The commit measured, with ``+changes`` when backend/app differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain", "backend/app"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (head or "unknown") + ("+changes" if changes else "")


# -- outputs ----------------------------------------------------------------


def raw_document(
    results: Results,
    figures: Sequence[Figure],
    settings: Settings,
    host: dict[str, Any],
    versions: dict[str, str],
) -> dict[str, Any]:
    return {
        "machine": host,
        "settings": {
            "seconds": settings.load.seconds,
            "connections": settings.load.connections,
            "threads": settings.load.threads,
            "load_tool": settings.load.tool,
            "rounds": settings.rounds,
            "warmup": settings.warmup,
            "scenarios": list(settings.scenarios),
            "servers": list(settings.servers),
            "items": settings.items,
            "records": settings.records,
            "users": settings.users,
            "orders": settings.orders,
            "mixed_seconds": settings.mixed_seconds,
        },
        "versions": versions,
        "figures": [f.as_dict() for f in figures],
        "runs": results.runs,
        "join": results.join,
        "memory": results.memory,
        "startup": results.startup,
        "skipped": results.skipped,
        "errors": results.errors,
        "notes": results.notes,
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")


def plot(results: Results, path: Path) -> bool:
    """Bars of req/s and p99 per server and scenario (log scales)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names: list[str] = []
    for run in results.runs:
        if run["server"] not in names:
            names.append(run["server"])
    scenarios = [
        s for s in PLOT_SCENARIOS if any(r["scenario"] == s for r in results.runs)
    ]
    if not names or not scenarios:
        return False
    fig, axes = plt.subplots(2, 1, figsize=(11, 8), constrained_layout=True)
    width = 0.8 / len(names)
    for axis, key, title in (
        (axes[0], "rps", "requests per second (median; log scale)"),
        (axes[1], "p99_ms", "p99 latency in ms (median; log scale)"),
    ):
        for position, name in enumerate(names):
            xs, heights = [], []
            for index, scenario in enumerate(scenarios):
                values = results.values(name, scenario, key)
                if values:
                    xs.append(index + position * width - 0.4 + width / 2)
                    heights.append(Summary.of(values).median)
            if xs:
                axis.bar(xs, heights, width, label=name)
        axis.set_xticks(range(len(scenarios)), scenarios)
        axis.set_yscale("log")
        axis.set_title(title)
        axis.grid(axis="y", which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=4, fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _relative(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(path, start)
    except ValueError:
        return str(path)


def markdown(
    document: dict[str, Any],
    figures: Sequence[Figure],
    results: Results,
    plot_path: Path | None,
    markdown_path: Path,
) -> str:
    host = document["machine"]
    s = document["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in document["versions"].items())
    parts = [
        "# Benchmarks",
        "",
        "Written by `make bench` (backend/benchmarks); every run overwrites this file."
        " Targets are those of CONTRACT section 9; each figure is the median of"
        " its rounds, with the spread (min-max) in brackets, measured in the same"
        " run as its reference. The ratio is that of the medians; in brackets,"
        " the lowest and highest of the per-round ratios (each round's value over"
        " the same round's reference).",
        "",
        "## Machine",
        "",
        f"- CPU: {host['cpu']}, {host['cores']} cores",
        f"- memory: {host['memory_bytes'] / 2**30:.1f} GiB",
        f"- Python {host['python']}, Linux {host['kernel']}",
        f"- date: {host['date']}; load average at the end: {host['load_average']}",
        f"- code: {host['commit']}",
        f"- tools: {versions or '-'}",
        "",
        "## Settings",
        "",
        f"- load: {s['load_tool']}, {s['connections']} connections, {s['threads']}"
        f" threads, {s['seconds']} s a run, {s['rounds']} rounds (interleaved),"
        f" {s['warmup']} s warm-up",
        f"- data: {s['items']:,} records in the small table of every server;"
        f" {s['records']:,} records in the large table; join {s['users']:,} users"
        f" x {s['orders']:,} orders",
        f"- scenarios: {', '.join(s['scenarios'])}",
        *(
            [
                f"- mixed-load soak: one run of {s.get('mixed_seconds', '?')} s"
                " (80% GET by id, 15% POST, 5% PATCH; aof, fsync always)"
            ]
            if "mixed" in s["scenarios"]
            else []
        ),
        *(
            [f"- HTTP and large-table rounds: {results.notes['pinning']}"]
            if "pinning" in results.notes
            else []
        ),
        "",
        "## Figures",
        "",
        markdown_table(FIGURE_HEADER, figure_rows(figures)),
        "",
        "## Per server",
        "",
        markdown_table(SERVER_HEADER, server_rows(results)),
        "",
    ]
    if plot_path is not None and plot_path.exists():
        link = _relative(plot_path, markdown_path.parent)
        parts += ["## Plot", "", f"![req/s and p99 per server]({link})", ""]
    parts += _details(results)
    if NOTES.exists():
        parts += ["## Profiles and notes", "", NOTES.read_text().strip(), ""]
    return "\n".join(parts)


def _details(results: Results) -> list[str]:
    lines = ["## Details", ""]
    for row in results.join:
        lines.append(
            f"- join, {row['kind']}, round {row['round'] + 1}: {row['seconds']:.2f} s,"
            f" {row['bytes'] / 1e6:.0f} MB, {row['rows']} rows"
            + (
                f", first byte after {row['first_byte_seconds']:.2f} s"
                if "first_byte_seconds" in row
                else ""
            )
        )
    for row in results.memory:
        lines.append(
            f"- memory, {row['kind']}, round {row['round'] + 1}:"
            f" {row['bytes_per_record']:.0f} B/record"
            f" (RSS {row['rss_before'] / 2**20:.0f} -> {row['rss_after'] / 2**20:.0f} MiB)"
        )
    for row in results.startup:
        lines.append(
            f"- startup, {row['kind']}, round {row['round'] + 1}: {row['seconds']:.2f} s,"
            f" {row['records']} records, RSS {row['rss'] / 2**20:.0f} MiB"
        )
    for key, value in results.notes.items():
        if key not in ("http_servers", "pinning"):  # pinning: under Settings
            shown = f"{value:.2f}" if isinstance(value, float) else str(value)
            lines.append(f"- {key}: {shown}")
    for what, reason in results.skipped.items():
        lines.append(f"- {what}: {reason}")
    for error in results.errors:
        lines.append(f"- error: {error}")
    return [*lines, ""]


def write_outputs(
    results: Results,
    settings: Settings,
    versions: dict[str, str],
    host: dict[str, Any] | None = None,
) -> list[Figure]:
    """Print the table; write the JSON, the plot and BENCHMARKS.md where asked."""
    figures = build_figures(results, settings)
    host = host or machine()
    document = raw_document(results, figures, settings, host, versions)
    print()
    print(text_table(FIGURE_HEADER, figure_rows(figures)))
    print()
    print(text_table(SERVER_HEADER, server_rows(results)))
    for what, reason in results.skipped.items():
        print(f"{what}: {reason}")
    for error in results.errors:
        print(f"error: {error}")
    out = settings.outputs
    if out.json_path is not None:
        write_json(out.json_path, document)
    plotted = out.plot_path is not None and plot(results, out.plot_path)
    if out.markdown_path is not None:
        out.markdown_path.parent.mkdir(parents=True, exist_ok=True)
        out.markdown_path.write_text(
            markdown(
                document,
                figures,
                results,
                out.plot_path if plotted else None,
                out.markdown_path,
            )
        )
    return figures


def load_document(
    path: Path,
) -> tuple[Results, Settings, dict[str, str], dict[str, Any]]:
    """A run read back from its JSON: to write the report again (``--report``)."""
    document = orjson.loads(path.read_bytes())
    s = document["settings"]
    settings = Settings(
        load=Load(
            connections=s["connections"],
            threads=s["threads"],
            seconds=s["seconds"],
            tool=s["load_tool"],
        ),
        rounds=s["rounds"],
        warmup=s["warmup"],
        scenarios=tuple(s["scenarios"]),
        servers=tuple(s["servers"]),
        items=s["items"],
        records=s["records"],
        users=s["users"],
        orders=s["orders"],
        mixed_seconds=s.get("mixed_seconds", Settings().mixed_seconds),
    )
    results = Results(
        runs=document["runs"],
        join=document["join"],
        memory=document["memory"],
        startup=document["startup"],
        skipped=document["skipped"],
        errors=document["errors"],
        notes=document["notes"],
    )
    return results, settings, document["versions"], document["machine"]
