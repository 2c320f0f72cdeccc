"""Settings, read from ``MEMDB_*`` environment variables and an optional ``.env``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting of the service. Built in ``create_app()``, never at import."""

    model_config = SettingsConfigDict(
        env_prefix="MEMDB_", env_file=".env", extra="ignore", frozen=True
    )

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    api_keys: str = ""
    cors_origins: str = ""
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    max_records: int = Field(default=5_000_000, ge=1)
    max_bulk: int = Field(default=1000, ge=1)
    max_tables: int = Field(default=10_000, ge=2)
    # Cost bounds of one request (README, "Limits"): the query string, the
    # filters in it, the units of work a query may spend, the rows a join may
    # make without a limit, the passwords one request may hash, and how many
    # heavy requests run at once before the next one is told to come back.
    max_query_bytes: int = Field(default=8192, ge=256)
    max_filters: int = Field(default=32, ge=1)
    query_budget: int = Field(default=20_000_000, ge=1000)
    max_join_rows: int = Field(default=1_000_000, ge=1)
    max_passwords: int = Field(default=100, ge=1)
    max_heavy_requests: int = Field(default=4, ge=1)
    metrics_max_tables: int = Field(default=50, ge=1)
    # Slow clients (README, "Limits"): the seconds a request's head may take
    # from its first byte, and a body may pause between two pieces, before
    # the client is answered 408 and the connection closed.
    header_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    body_timeout_s: float = Field(default=20.0, gt=0, le=3600)
    seed_file: str | None = None
    # the built-in tables (users, orders) with their schemas and rules; off,
    # every table is schemaless (memdb serve's default)
    builtin_schemas: bool = True
    # ``memdb serve FILE``: json-server's routes at the root on FILE's data,
    # written back to FILE (MEMDB_FSYNC: when), in one of its dialects
    json_server_file: str | None = None
    json_server_dialect: Literal["1", "0.17"] = "1"
    json_server_watch: bool = False
    # Where the data lives: this process's memory, or Redis/Valkey (README,
    # "Scaling out"); with Redis, several workers and replicas share it.
    store: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = False
    redis_prefix: str = Field(default="memdb", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    redis_pool_size: int = Field(default=64, ge=1)
    redis_timeout: float = Field(default=2.0, gt=0)
    redis_wait_replicas: int = Field(default=0, ge=0)
    workers: int = Field(default=1, ge=1, le=64)
    # The change feed (README, "Following changes"): the changes kept for
    # followers to resume from, the followers served at once, how far one may
    # fall behind before it is told to resume, the idle keep-alive, and how
    # long one write may wait on a client before it is let go.
    changes_retain: int = Field(default=10_000, ge=1, le=10_000_000)
    changes_retain_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    max_subscribers: int = Field(default=1000, ge=1)
    changes_max_lag: int = Field(default=5000, ge=1)
    changes_heartbeat_s: float = Field(default=15.0, gt=0, le=300)
    changes_send_timeout_s: float = Field(default=10.0, gt=0, le=300)
    persistence: Literal["none", "aof"] = "none"
    data_dir: str = "data"
    fsync: Literal["always", "everysec", "no"] = "everysec"
    # Compact the log into a snapshot once it is this many percent of the last
    # snapshot's size, and at least this large (as Redis's auto-aof-rewrite).
    aof_rewrite_percent: int = Field(default=100, ge=1)
    aof_rewrite_min_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    # Cost of the argon2id password hash. The defaults follow RFC 9106's
    # second recommended option; tests lower them to stay fast.
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65536, ge=8)
    argon2_parallelism: int = Field(default=4, ge=1)


def refusal(settings: Settings) -> str | None:
    """Why these settings cannot run together, if they cannot."""
    if settings.store == "memory" and settings.workers > 1:
        return (
            f"MEMDB_WORKERS={settings.workers} needs MEMDB_STORE=redis: with the "
            "memory store each worker would hold its own copy of the data"
        )
    if settings.store == "redis" and settings.persistence == "aof":
        return (
            "MEMDB_PERSISTENCE=aof is for the memory store; with MEMDB_STORE=redis "
            "the data's durability is Redis's own (its AOF, RDB and replicas)"
        )
    if settings.json_server_file and settings.store != "memory":
        return (
            "MEMDB_JSON_SERVER_FILE (memdb serve) keeps the data in this process "
            "and its file; it cannot run with MEMDB_STORE=redis"
        )
    if settings.json_server_file and settings.persistence != "none":
        return (
            "MEMDB_JSON_SERVER_FILE (memdb serve) saves the data into its file; "
            "MEMDB_PERSISTENCE must be none with it"
        )
    return None


def setting_errors(exc: ValidationError) -> list[str]:
    """Each refused setting as its variable, the reason and the value given
    (``MEMDB_PERSISTENCE: input should be 'none' or 'aof' (given 'aoff')``)."""
    lines = []
    for error in exc.errors():
        name = "MEMDB_" + "_".join(str(p) for p in error["loc"]).upper()
        given = f" (given {error['input']!r})" if "input" in error else ""
        message = str(error["msg"])
        lines.append(f"{name}: {message[:1].lower()}{message[1:]}{given}")
    return lines
