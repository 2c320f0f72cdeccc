"""``/tables``: the tables with their counts, schemas and indexes."""

from __future__ import annotations

from typing import Annotated

from pydantic import ValidationError as PydanticValidationError

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from app.api.deps import TableName, TablesDep
from app.api.responses import errors, json_body
from app.core.errors import ValidationFailed
from app.core.http import json_response, read_json
from app.schemas.records import IndexCreate, IndexOut, TableOut

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
    return json_response(await tables.list_tables())


@router.post(
    "/{table}/indexes",
    status_code=201,
    summary="Create an index",
    response_model=None,
    responses={
        201: {"model": IndexOut, "description": "The index"},
        **errors(400, 404, 409, 413, 415, 422),
    },
    openapi_extra=json_body(IndexCreate, {"field": "email", "unique": True}),
)
async def create_index(
    table: TableName, request: Request, tables: TablesDep
) -> Response:
    """Index a field (dotted paths reach nested objects). Equality and ``in``
    filters use it; a unique index refuses duplicate values with 409. A
    ``sorted`` index also answers a sort on the field (the first sort key)
    and its ranges (``gt``, ``gte``, ``lt``, ``lte``) without reading the
    whole table."""
    body = await read_json(request)
    try:
        spec = IndexCreate.model_validate(body)
    except PydanticValidationError as exc:
        raise ValidationFailed(
            "the index is not valid",
            details=[
                {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_input=False)
            ],
        ) from None
    index = await tables.create_index(
        table, spec.field, unique=spec.unique, kind=spec.kind
    )
    return json_response(index, status_code=201)


@router.delete(
    "/{table}/indexes/{field}",
    status_code=204,
    summary="Drop an index",
    response_class=Response,
    responses=errors(404, 409, 422),
)
async def drop_index(
    table: TableName,
    field: Annotated[str, Path(examples=["email"])],
    tables: TablesDep,
) -> Response:
    """Drop an index. The built-in ones (users.email, orders.user_id) stay: 409."""
    await tables.drop_index(table, field)
    return Response(status_code=204)
