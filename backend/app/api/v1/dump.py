"""``/dump``: every record of a table, or of the whole store (db.json shape)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import Response

from app.api.deps import TableName, TablesDep
from app.api.paging import CURSOR_HEADER
from app.api.responses import errors
from app.api.streaming import (
    Counted,
    answer,
    db_object,
    json_object,
    rows_json,
    rows_ndjson,
)
from app.schemas.records import TableDump
from app.services.work import paced
from app.storage.base import SNAPSHOT_CURSOR

router = APIRouter(prefix="/api/v1/dump", tags=["dumps"])

NDJSON = "application/x-ndjson"


@router.get(
    "",
    summary="Dump every table (json-server db.json shape)",
    response_model=None,
    responses={200: {"description": '{"<table>": [records...], ...}'}, **errors()},
)
async def dump_all(tables: TablesDep) -> Response:
    """Every table, all taken at the same instant: ``{"users": [...], ...}``."""
    scans, work = await tables.dump_all()
    pieces = db_object(
        (name, rows_json(paced(scan.batches(), work))) for name, scan in scans
    )
    return await answer(pieces, work, headers=taken_at())


@router.get(
    "/{table}",
    summary="Dump one table",
    response_model=None,
    responses={
        200: {
            "model": TableDump,
            "description": "The records; one a line with Accept: application/x-ndjson",
            "content": {NDJSON: {"schema": {"type": "string"}}},
        },
        **errors(404, 422),
    },
)
async def dump_table(
    table: TableName,
    tables: TablesDep,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Every record of a table in insertion order: ``{"table", "items", "count"}``,
    or NDJSON (one record a line) when the client accepts ``application/x-ndjson``."""
    scan, work = await tables.dump_table(table)
    if accept and NDJSON in accept:
        return await answer(
            rows_ndjson(paced(scan.batches(), work)),
            work,
            media_type=NDJSON,
            headers=taken_at(),
        )
    counted = Counted(paced(scan.batches(), work))
    pieces = json_object(
        {"table": table}, "items", rows_json(counted), lambda: {"count": counted.rows}
    )
    return await answer(pieces, work, headers=taken_at())


def taken_at() -> dict[str, str]:
    """The change-feed cursor the dump was read at, as a header."""
    cursor = SNAPSHOT_CURSOR.get()
    return {} if cursor is None else {CURSOR_HEADER: cursor}
