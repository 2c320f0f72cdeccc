"""``/data/{table}``: create, list, read, update, delete records; drop a table."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response
from pydantic import WithJsonSchema

from app.api.deps import QueriesDep, RecordId, RecordsDep, TableName
from app.api.paging import list_body, list_headers
from app.api.responses import errors, json_body
from app.api.streaming import answer
from app.core.errors import ValidationFailed, field_error
from app.core.etags import etag_matches, etag_of, expected_versions
from app.core.http import json_response, read_json
from app.schemas.records import (
    USER_EXAMPLE,
    RecordBatch,
    RecordCreate,
    RecordOut,
    RecordPage,
    RecordUpdate,
)

router = APIRouter(prefix="/api/v1/data", tags=["records"])

IfMatch = Annotated[str | None, Header(description="Only write if the ETag matches")]
IfNoneMatch = Annotated[str | None, Header(description="304 if the ETag matches")]


def envelope_data(body: Any) -> Any:
    """The ``data`` member of a ``{"data": ...}`` body."""
    if not isinstance(body, dict) or "data" not in body:
        raise ValidationFailed(
            'the body must be {"data": ...}',
            details=[field_error(["body", "data"], "field required", "missing")],
        )
    extra = [k for k in body if k != "data"]
    if extra:
        raise ValidationFailed(
            'the body must be {"data": ...} and nothing else',
            details=[
                field_error(["body", k], "extra field", "extra_forbidden")
                for k in extra
            ],
        )
    return body["data"]


def _record_response(
    table: str, record: dict[str, Any], *, status_code: int = 200
) -> Response:
    body = orjson.dumps(record)
    headers = {"ETag": etag_of(body)}
    if status_code == 201:
        headers["Location"] = f"{router.prefix}/{table}/{record['id']}"
    return json_response(body, status_code=status_code, headers=headers)


@router.post(
    "/{table}",
    status_code=201,
    summary="Create a record, or several at once",
    response_model=None,
    responses={
        201: {"model": RecordOut | RecordBatch, "description": "The created record(s)"},
        **errors(400, 409, 413, 415, 422, 507),
    },
    openapi_extra=json_body(RecordCreate, {"data": USER_EXAMPLE}),
)
async def create_record(
    table: TableName, request: Request, records: RecordsDep
) -> Response:
    """Create a record (``{"data": {...}}``) or, all or nothing, a list of them
    (``{"data": [...]}``). The table is created on first write."""
    data = envelope_data(await read_json(request))
    weight = len(await request.body())
    if isinstance(data, list):
        created = await records.create_records(table, data, bulk=True, weight=weight)
        return json_response({"items": created, "count": len(created)}, status_code=201)
    (record,) = await records.create_records(table, [data], bulk=False, weight=weight)
    return _record_response(table, record, status_code=201)


# Documented as the whole numbers they are, but taken as text: the query parser
# checks every parameter, so that both front doors (ADR 0009) answer a bad one alike.
Limit = Annotated[
    str, WithJsonSchema({"type": "integer", "minimum": 0, "maximum": 1000})
]
Offset = Annotated[str, WithJsonSchema({"type": "integer", "minimum": 0})]


@router.get(
    "/{table}",
    summary="List records: filter, search, sort, page, project",
    response_model=None,
    responses={
        200: {"model": RecordPage, "description": "One page of matching records"},
        **errors(400, 404, 422),
    },
)
async def list_records(
    table: TableName,
    request: Request,
    queries: QueriesDep,
    q: Annotated[str | None, Query(description="Case-insensitive text search")] = None,
    sort: Annotated[str | None, Query(description="e.g. age,-created_at")] = None,
    limit: Annotated[Limit | None, Query(description="0 to 1000, default 100")] = None,
    offset: Annotated[Offset | None, Query(description="Records to skip")] = None,
    fields: Annotated[
        str | None, Query(description="Projection, e.g. email,age")
    ] = None,
) -> Response:
    """Filters are ``field=value`` or ``field__op=value`` with op in ``eq ne gt gte
    lt lte in contains startswith endswith like ilike exists``; dotted paths reach
    nested objects; values are JSON literals where they parse. ``X-Total-Count``
    and ``Link`` headers describe the pages. Every parameter, ``limit`` and
    ``offset`` too, is checked by the query parser, so a bad one is one 400."""
    params = request.query_params.multi_items()
    page = await queries.list_records(table, queries.parse(params))
    headers = list_headers(request.url.path, params, page)
    body = list_body(page)
    if isinstance(body, bytes):
        return json_response(body, headers=headers)
    return await answer(body, queries.limits.work(), headers=headers)


@router.get(
    "/{table}/{record_id}",
    summary="Read a record",
    response_model=None,
    responses={
        200: {"model": RecordOut, "description": "The record, with its ETag"},
        304: {"description": "Not modified (If-None-Match)"},
        **errors(404, 422),
    },
)
async def read_record(
    table: TableName,
    record_id: RecordId,
    records: RecordsDep,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """One record by id. Send ``If-None-Match`` with its ETag to get 304 when unchanged."""
    record = await records.read_record(table, record_id)
    body = orjson.dumps(record)
    etag = etag_of(body)
    if if_none_match is not None and etag_matches(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    return json_response(body, headers={"ETag": etag})


@router.put(
    "/{table}/{record_id}",
    summary="Update a record (merge the given fields)",
    response_model=None,
    responses={
        200: {"model": RecordOut, "description": "The updated record"},
        **errors(400, 404, 409, 412, 413, 415, 422),
    },
    openapi_extra=json_body(RecordUpdate, {"data": {"full_name": "John Smith Doe"}}),
)
async def update_record(
    table: TableName,
    record_id: RecordId,
    request: Request,
    records: RecordsDep,
    if_match: IfMatch = None,
) -> Response:
    """Merge the given fields into the record; the result is validated whole."""
    data = envelope_data(await read_json(request))
    record = await records.update_record(
        table, record_id, data, patch=False, expected=expected_versions(if_match)
    )
    return _record_response(table, record)


@router.patch(
    "/{table}/{record_id}",
    summary="Patch a record (JSON merge patch)",
    response_model=None,
    responses={
        200: {"model": RecordOut, "description": "The patched record"},
        **errors(400, 404, 409, 412, 413, 415, 422),
    },
    openapi_extra=json_body(RecordUpdate, {"data": {"age": 31, "nickname": None}}),
)
async def patch_record(
    table: TableName,
    record_id: RecordId,
    request: Request,
    records: RecordsDep,
    if_match: IfMatch = None,
) -> Response:
    """RFC 7396 merge patch: nested objects merge, ``null`` removes a field."""
    data = envelope_data(await read_json(request))
    record = await records.update_record(
        table, record_id, data, patch=True, expected=expected_versions(if_match)
    )
    return _record_response(table, record)


@router.delete(
    "/{table}/{record_id}",
    status_code=204,
    summary="Delete a record",
    response_class=Response,
    responses=errors(404, 409, 412, 422),
)
async def delete_record(
    table: TableName,
    record_id: RecordId,
    records: RecordsDep,
    if_match: IfMatch = None,
) -> Response:
    """Delete one record. A user who still has orders cannot be deleted (409)."""
    await records.delete_record(table, record_id, expected=expected_versions(if_match))
    return Response(status_code=204)


@router.delete(
    "/{table}",
    status_code=204,
    summary="Drop a table",
    response_class=Response,
    responses=errors(404, 409, 422),
)
async def drop_table(table: TableName, records: RecordsDep) -> Response:
    """Drop a table and its records. Built-in tables are emptied, keeping schema and indexes."""
    await records.drop_table(table)
    return Response(status_code=204)
