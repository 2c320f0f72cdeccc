"""Request and response models. They document the API; bodies are parsed with orjson."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

USER_EXAMPLE: dict[str, Any] = {
    "email": "john.doe@example.com",
    "full_name": "John Doe",
    "age": 30,
    "password": "securepass123",
}


USER_ID = "952a25bcff47437fab734572a2b1cc0c"
# A stored user as the README's curl examples show it.
USER_RECORD: dict[str, Any] = {
    "id": USER_ID,
    "email": "john.doe@example.com",
    "full_name": "John Doe",
    "age": 30,
    "created_at": "2026-11-26T04:57:20.464640Z",
    "updated_at": "2026-11-26T04:57:20.464640Z",
}
ORDER_RECORD: dict[str, Any] = {
    "id": "9ce6cf81585f44209248d04517e591c1",
    "product_name": "Widget Pro",
    "quantity": 2,
    "total_price": 99.99,
    "user_id": USER_ID,
    "created_at": "2026-11-26T04:57:20.945331Z",
    "updated_at": "2026-11-26T04:57:20.945331Z",
}
_STAMP: JsonDict = {
    "format": "date-time",
    "description": "Set by the server (RFC 3339, UTC)",
}

# What the service checks of a record's fields, stated in the OpenAPI document.
RECORD_FIELDS: dict[str, Any] = {
    "type": "object",
    "maxProperties": 256,
    "propertyNames": {
        "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$",
        "not": {"enum": ["created_at", "updated_at"]},
    },
}


def _create_rules(schema: dict[str, Any]) -> None:
    schema["properties"]["data"] = {
        "anyOf": [
            RECORD_FIELDS,
            {"type": "array", "items": RECORD_FIELDS, "minItems": 1},
        ]
    }
    schema["examples"] = [{"data": dict(USER_EXAMPLE)}]


def _update_rules(schema: dict[str, Any]) -> None:
    schema["properties"]["data"] = dict(RECORD_FIELDS)
    schema["examples"] = [{"data": {"full_name": "John Smith Doe"}}]


class RecordCreate(BaseModel):
    """One record, or a list of them for an all-or-nothing bulk create."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_create_rules)

    data: dict[str, Any] | list[dict[str, Any]]


class RecordUpdate(BaseModel):
    """Fields to merge into the record (PATCH: a JSON merge patch, null removes)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_update_rules)

    data: dict[str, Any]


class RecordOut(BaseModel):
    """A stored record: ``id``, its fields, ``created_at``, ``updated_at``."""

    model_config = ConfigDict(
        extra="allow", json_schema_extra={"examples": [USER_RECORD]}
    )

    id: str
    created_at: str = Field(json_schema_extra=_STAMP)
    updated_at: str = Field(json_schema_extra=_STAMP)


def _item_rules(schema: dict[str, Any]) -> None:
    stamp = {"type": "string", **_STAMP}
    schema["properties"].update(created_at=stamp, updated_at=stamp)
    schema["examples"] = [USER_RECORD]


class RecordItem(BaseModel):
    """A record of a list page: the whole record, or with ``fields=`` only
    ``id`` and the fields named (the ones it has)."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_item_rules)

    id: str


class RecordBatch(BaseModel):
    items: list[RecordOut]
    count: int


class RecordPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"items": [USER_RECORD], "total": 1, "limit": 100, "offset": 0}
            ]
        }
    )

    items: list[RecordItem]
    total: int
    limit: int
    offset: int


class IndexOut(BaseModel):
    field: str
    unique: bool
    kind: Literal["hash", "sorted"]
    builtin: bool


class TableOut(BaseModel):
    name: str
    count: int
    schema_: dict[str, Any] | None = Field(alias="schema")
    indexes: list[IndexOut]


class TableDump(BaseModel):
    table: str
    items: list[RecordOut]
    count: int = Field(description="The records of this answer")


class JoinOn(BaseModel):
    left: str
    right: str


class JoinRow(BaseModel):
    left: RecordOut | None
    right: RecordOut | None


class JoinOut(BaseModel):
    left: str
    right: str
    on: JoinOn
    how: str
    count: int = Field(description="Rows in this answer")
    total: int = Field(description="Rows of the whole join")
    limit: int | None
    offset: int
    items: list[JoinRow]


class ErrorDetail(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail]
    request_id: str


class ErrorEnvelope(BaseModel):
    """Every error the service answers has this shape."""

    error: ErrorBody


class Health(BaseModel):
    status: str
    version: str
    uptime_s: float


class Ready(BaseModel):
    status: str
    store: str = Field(description="memory or redis")


class ImportResult(BaseModel):
    mode: str
    counts: dict[str, int]
    total: int


class IndexCreate(BaseModel):
    """An index on a field (a dotted path reaches nested objects): hash or sorted."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"field": "email", "unique": True}]},
    )

    field: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z_][A-Za-z0-9_]{0,63})*$"
    )
    unique: bool = False
    kind: Literal["hash", "sorted"] = Field(
        default="hash",
        description="hash: equality and in filters; sorted: also sort on the "
        "field and its ranges (gt, gte, lt, lte)",
    )


class TableStats(BaseModel):
    count: int
    indexes: dict[str, int]


class MemoryStats(BaseModel):
    estimate_bytes: int
    rss_bytes: int | None


class RouteStatsOut(BaseModel):
    method: str
    route: str
    count: int
    errors_5xx: int
    aborted: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class GcStats(BaseModel):
    collections: list[int] = Field(description="Runs of each generation")
    max_pause_ms: float = Field(description="The longest pause since the start")
    recent_max_pause_ms: float = Field(description="The longest of the latest 64")
    frozen_objects: int
    freezes: int = Field(description="Collections and freezes of the grown heap")


class LoopStats(BaseModel):
    lag_ms: float = Field(description="The latest lag of the event loop")
    max_lag_ms: float = Field(description="The largest over the last 10 seconds")
    gc: GcStats


class WorkStatsOut(BaseModel):
    heavy_active: int
    heavy_total: int
    busy_refusals: int
    budget_exceeded: int


class StatsOut(BaseModel):
    uptime_s: float
    records: int
    tables: dict[str, TableStats]
    memory: MemoryStats
    event_loop: LoopStats
    work: WorkStatsOut
    requests: list[RouteStatsOut]
