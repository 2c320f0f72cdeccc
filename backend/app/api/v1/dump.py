"""``/dump``: every record of a table, or of the whole store (db.json shape)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import Response, StreamingResponse

from app.api.deps import TableName, TablesDep
from app.api.responses import errors
from app.api.streaming import CHUNK, db_chunks, json_chunks, ndjson_chunks
from app.core.http import json_response
from app.schemas.records import TableDump

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
    snapshot = tables.dump_all()
    if sum(len(rows) for rows in snapshot.values()) <= CHUNK:
        return json_response(snapshot)
    return StreamingResponse(db_chunks(snapshot), media_type="application/json")


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
    """Every record of a table in insertion order: ``{"table", "count", "items"}``,
    or NDJSON (one record a line) when the client accepts ``application/x-ndjson``."""
    rows = tables.dump_table(table)
    if accept and NDJSON in accept:
        return StreamingResponse(ndjson_chunks(rows), media_type=NDJSON)
    head = {"table": table, "count": len(rows)}
    if len(rows) <= CHUNK:
        return json_response({**head, "items": rows})
    return StreamingResponse(
        json_chunks(head, "items", rows), media_type="application/json"
    )
