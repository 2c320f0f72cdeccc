"""``/import``: load tables in the ``db.json`` shape, all or nothing."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app.api.deps import TABLE_PATTERN, ImportsDep
from app.api.responses import errors
from app.core.http import json_response, read_json
from app.schemas.records import ImportResult

router = APIRouter(prefix="/api/v1/import", tags=["import and export"])

EXAMPLE = {
    "users": [
        {"id": "u1", "email": "ada@example.com", "full_name": "Ada Lovelace", "age": 36}
    ],
    "orders": [
        {
            "id": "o1",
            "product_name": "Analytical Engine",
            "quantity": 1,
            "total_price": 1843.0,
            "user_id": "u1",
        }
    ],
    "notes": [{"id": 1, "text": "json-server style numeric ids load as strings"}],
}


@router.post(
    "",
    summary="Import tables (db.json shape)",
    response_model=None,
    responses={
        200: {"model": ImportResult, "description": "Records written per table"},
        **errors(400, 409, 413, 415, 422, 507),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "propertyNames": {"pattern": TABLE_PATTERN},
                        "additionalProperties": {
                            "description": "a table: a list of records, or an "
                            "object (json-server's singular resource: a table "
                            "of one record, id _singleton; it holds no id)",
                            "type": ["array", "object"],
                            "items": {"type": "object"},
                        },
                    },
                    "example": EXAMPLE,
                }
            },
        }
    },
)
async def import_tables(
    request: Request,
    imports: ImportsDep,
    mode: Annotated[
        Literal["merge", "replace"],
        Query(
            description="merge: upsert by id; replace: the given tables are replaced"
        ),
    ] = "merge",
) -> Response:
    """``{"<table>": [records...]}``, as ``GET /api/v1/dump`` gives it. Records keep
    their ids (numbers become strings) and timestamps; everything is checked first
    and then written at once, or nothing is."""
    payload = await read_json(request)
    counts = await imports.run(payload, mode=mode, weight=len(await request.body()))
    return json_response(
        {"mode": mode, "counts": counts, "total": sum(counts.values())}
    )
