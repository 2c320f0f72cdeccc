"""``/tables``: the tables with their counts, schemas and indexes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from app.api.deps import TablesDep
from app.api.responses import errors
from app.core.http import json_response
from app.schemas.records import TableOut

router = APIRouter(prefix="/api/v1/tables", tags=["tables"])


@router.get(
    "",
    summary="List the tables",
    response_model=None,
    responses={
        200: {"model": list[TableOut], "description": "Every table"},
        **errors(),
    },
)
async def list_tables(tables: TablesDep) -> Response:
    """Each table with its record count, its schema (built-in tables) and its indexes."""
    return json_response(tables.list_tables())
