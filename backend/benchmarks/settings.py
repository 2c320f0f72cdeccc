"""What one run measures, read from ``BENCH_*`` environment variables.

| variable | default | meaning |
|---|---|---|
| ``BENCH_SECONDS`` | 10 | seconds of each load run |
| ``BENCH_ROUNDS`` | 3 | times each figure is taken (interleaved); the median is reported |
| ``BENCH_WARMUP`` | 2 | seconds of one warm-up run per server and scenario |
| ``BENCH_CONNECTIONS`` / ``BENCH_THREADS`` | 32 / 2 | wrk's ``-c`` and ``-t`` |
| ``BENCH_SCENARIOS`` | all | comma list of get,post,put,list,sorted,aof,filter,memory, |
| | | join,startup,redis,changes,mixed |
| ``BENCH_SERVERS`` | all | comma list of memdb,floor,raw-floor,fastapi,json-server-1, |
| | | json-server-0.17,serve-1,serve-0.17 (``memdb serve`` in each dialect) |
| ``BENCH_RECORDS`` | 1000000 | records of the large table (filter, memory, startup) |
| ``BENCH_USERS`` / ``BENCH_ORDERS`` | 100000 / 1000000 | sizes of the join |
| ``BENCH_ITEMS`` | 1000 | records of the small table every server holds |
| ``BENCH_MIXED_SECONDS`` | 60 | seconds of the one load run of ``mixed`` (the soak) |
| ``BENCH_LOAD_TOOL`` | wrk | ``wrk``, or ``python`` for the small built-in generator |
| ``BENCH_KEEP`` | unset | keep the temporary folder (server logs, data) |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

from benchmarks.harness import REPO, Load

SCENARIOS = (
    "get",
    "post",
    "put",
    "list",
    "sorted",
    "aof",
    "filter",
    "memory",
    "join",
    "startup",
    "redis",
    "changes",
    "mixed",
)
SERVERS = (
    "memdb",
    "floor",
    "raw-floor",
    "fastapi",
    "json-server-1",
    "json-server-0.17",
    "serve-1",
    "serve-0.17",
)


@dataclass(frozen=True)
class Outputs:
    """Where the results go; ``None`` skips that output."""

    json_path: Path | None = REPO / "backend" / "benchmarks" / "results" / "latest.json"
    markdown_path: Path | None = REPO / "BENCHMARKS.md"
    plot_path: Path | None = REPO / "docs" / "bench" / "latest.png"


@dataclass(frozen=True)
class Settings:
    load: Load = field(default_factory=Load)
    rounds: int = 3
    warmup: int = 2
    scenarios: tuple[str, ...] = SCENARIOS
    servers: tuple[str, ...] = SERVERS
    items: int = 1000
    records: int = 1_000_000
    users: int = 100_000
    orders: int = 1_000_000
    # the one load run of the mixed-load soak (``mixed``), in seconds
    mixed_seconds: int = 60
    keep: bool = False
    outputs: Outputs = field(default_factory=Outputs)

    def wants(self, scenario: str) -> bool:
        return scenario in self.scenarios

    def serves(self, server: str) -> bool:
        return server in self.servers

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        base = cls()

        def number(name: str, default: int, minimum: int = 1) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            value = int(raw.replace("_", ""))
            if value < minimum:
                raise ValueError(f"{name} must be at least {minimum}")
            return value

        def names(name: str, known: tuple[str, ...]) -> tuple[str, ...]:
            raw = env.get(name, "").strip()
            if not raw or raw == "all":
                return known
            chosen = tuple(n.strip() for n in raw.split(",") if n.strip())
            unknown = [n for n in chosen if n not in known]
            if unknown:
                raise ValueError(f"{name}: unknown {unknown}; known: {list(known)}")
            return chosen

        tool = env.get("BENCH_LOAD_TOOL", "wrk").strip() or "wrk"
        if tool not in ("wrk", "python"):
            raise ValueError("BENCH_LOAD_TOOL is wrk or python")
        load = Load(
            connections=number("BENCH_CONNECTIONS", base.load.connections),
            threads=number("BENCH_THREADS", base.load.threads),
            seconds=number("BENCH_SECONDS", base.load.seconds),
            tool=tool,
        )
        return replace(
            base,
            load=load,
            rounds=number("BENCH_ROUNDS", base.rounds),
            warmup=number("BENCH_WARMUP", base.warmup, minimum=0),
            scenarios=names("BENCH_SCENARIOS", SCENARIOS),
            servers=names("BENCH_SERVERS", SERVERS),
            items=number("BENCH_ITEMS", base.items, minimum=10),
            records=number("BENCH_RECORDS", base.records, minimum=10),
            users=number("BENCH_USERS", base.users),
            orders=number("BENCH_ORDERS", base.orders),
            mixed_seconds=number("BENCH_MIXED_SECONDS", base.mixed_seconds),
            keep=bool(env.get("BENCH_KEEP")),
        )
