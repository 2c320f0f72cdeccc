"""``/data/{table}``: create, list, read, update, delete records; drop a table."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response
from pydantic import WithJsonSchema

from app.api.answers import (
    DATA,
    RECORD_ROUTE,
    TABLE_ROUTE,
    as_response,
    created_answer,
    envelope_data,
    list_answer,
    read_answer,
    record_answer,
)
from app.api.deps import QueriesDep, RecordId, RecordsDep, TableName
from app.api.responses import errors, json_body
from app.core.etags import joined
from app.core.http import read_json
from app.core.jsonbody import MERGE_PATCH, media_type
from app.services.query import (
    MAX_OFFSET,
    MAX_VALUE_CHARS,
    RESERVED,
    SYNTAX,
    refuse_json_server_params,
)
from app.services.records import RecordService
from app.schemas.records import (
    USER_EXAMPLE,
    RecordBatch,
    RecordCreate,
    RecordOut,
    RecordPage,
    RecordUpdate,
)


async def _no_json_server_params(request: Request) -> None:
    refuse_json_server_params(request.query_params.multi_items())


router = APIRouter(prefix=DATA, tags=["records"])
# the routes of one record, and create and drop, take no query parameters: a
# json-server one (``_dependent``...) is refused rather than silently ignored
NO_PARAMS = [Depends(_no_json_server_params)]

IfMatch = Annotated[
    str | None, Header(description="Only if the ETag matches (else 412)")
]
IfNoneMatch = Annotated[
    str | None,
    Header(description="A read: 304 if the ETag matches; a write: 412 if it does"),
]


def conditions(request: Request) -> tuple[str | None, str | None]:
    """``If-Match`` and ``If-None-Match``, each sent on one line or several."""
    headers = request.headers
    return joined(headers.getlist("if-match")), joined(headers.getlist("if-none-match"))


@router.post(
    TABLE_ROUTE,
    dependencies=NO_PARAMS,
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
    bulk = isinstance(data, list)
    created = await records.create_records(
        table, data if bulk else [data], bulk=bulk, weight=weight
    )
    return as_response(created_answer(table, created, bulk))


# Documented as the whole numbers they are, but taken as text: the query parser
# checks every parameter, so that both front doors (ADR 0009) answer a bad one alike.
Limit = Annotated[
    str, WithJsonSchema({"type": "integer", "minimum": 0, "maximum": 1000})
]
Offset = Annotated[
    str, WithJsonSchema({"type": "integer", "minimum": 0, "maximum": MAX_OFFSET})
]
Sort = Annotated[str, WithJsonSchema({"type": "string", "pattern": SYNTAX["sort"]})]
Fields = Annotated[str, WithJsonSchema({"type": "string", "pattern": SYNTAX["fields"]})]


# The filters, declared as one free-form parameter so that Swagger UI's "Try
# it out" and generated clients can send them (each pair becomes field=value).
FILTERS = {
    "name": "filters",
    "in": "query",
    "required": False,
    "style": "form",
    "explode": True,
    "description": "Filters, each `field=value` or `field__op=value` with op in "
    "`eq ne gt gte lt lte in contains startswith endswith like ilike exists`; "
    "dotted paths reach nested objects; values are JSON literals where they "
    "parse (`30`, `true`, `null`), else strings; `in` takes a comma list. "
    'For example `{"age__gte": "30", "email__endswith": "@example.com"}`.',
    "schema": {
        "type": "object",
        "propertyNames": {
            "pattern": SYNTAX["filter"],
            "not": {"enum": sorted(RESERVED)},
        },
        "patternProperties": {"__exists$": {"enum": ["true", "false"]}},
        "additionalProperties": {"type": "string", "maxLength": MAX_VALUE_CHARS},
    },
    "example": {"age__gte": "30"},
}


@router.get(
    TABLE_ROUTE,
    summary="List records: filter, search, sort, page, project",
    response_model=None,
    responses={
        200: {"model": RecordPage, "description": "One page of matching records"},
        **errors(400, 404, 422),
    },
    openapi_extra={"parameters": [FILTERS]},
)
async def list_records(
    table: TableName,
    request: Request,
    queries: QueriesDep,
    q: Annotated[str | None, Query(description="Case-insensitive text search")] = None,
    sort: Annotated[Sort | None, Query(description="e.g. age,-created_at")] = None,
    limit: Annotated[Limit | None, Query(description="0 to 1000, default 100")] = None,
    offset: Annotated[Offset | None, Query(description="Records to skip")] = None,
    fields: Annotated[
        Fields | None, Query(description="Projection, e.g. email,age")
    ] = None,
) -> Response:
    """Filters are ``field=value`` or ``field__op=value`` with op in ``eq ne gt gte
    lt lte in contains startswith endswith like ilike exists``; dotted paths reach
    nested objects; values are JSON literals where they parse. ``X-Total-Count``
    and ``Link`` headers describe the pages. Every parameter, ``limit`` and
    ``offset`` too, is checked by the query parser, so a bad one is one 400."""
    params = request.query_params.multi_items()
    page = await queries.list_records(table, queries.parse(params))
    work = queries.limits.work()
    return as_response(await list_answer(request.url.path, params, page, work))


@router.get(
    RECORD_ROUTE,
    dependencies=NO_PARAMS,
    summary="Read a record",
    response_model=None,
    responses={
        200: {"model": RecordOut, "description": "The record, with its ETag"},
        304: {"description": "Not modified (If-None-Match)"},
        **errors(404, 412, 422),
    },
)
async def read_record(
    table: TableName,
    record_id: RecordId,
    request: Request,
    records: RecordsDep,
    if_none_match: IfNoneMatch = None,
    if_match: IfMatch = None,
) -> Response:
    """One record by id. Send ``If-None-Match`` with its ETag to get 304 when unchanged."""
    record = await records.read_record(table, record_id)
    matches, none_match = conditions(request)
    return as_response(read_answer(record, none_match, matches))


@router.put(
    RECORD_ROUTE,
    dependencies=NO_PARAMS,
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
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Merge the given fields into the record; the result is validated whole."""
    data = envelope_data(await read_json(request))
    return await _update(records, table, record_id, data, False, request)


async def _update(
    records: RecordService,
    table: str,
    record_id: str,
    data: Any,
    patch: bool,
    request: Request,
    loc: tuple[str, ...] = ("data",),
) -> Response:
    """PUT and PATCH after their bodies are read: the write and its answer
    (``loc``: where the fields are in the body)."""
    expected = await records.expected_for(table, record_id, *conditions(request))
    record = await records.update_record(
        table, record_id, data, patch=patch, expected=expected, loc=loc
    )
    return as_response(record_answer(record))


@router.patch(
    RECORD_ROUTE,
    dependencies=NO_PARAMS,
    summary="Patch a record (JSON merge patch)",
    response_model=None,
    responses={
        200: {"model": RecordOut, "description": "The patched record"},
        **errors(400, 404, 409, 412, 413, 415, 422),
    },
    openapi_extra=json_body(
        RecordUpdate,
        {"data": {"age": 31}},
        more={
            MERGE_PATCH: {
                "schema": {"$ref": "#/components/schemas/RecordFields"},
                "example": {"age": 31},
            }
        },
    ),
)
async def patch_record(
    table: TableName,
    record_id: RecordId,
    request: Request,
    records: RecordsDep,
    if_match: IfMatch = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """RFC 7396 merge patch: nested objects merge, ``null`` removes a field.
    The body is ``{"data": patch}``, or with ``Content-Type:
    application/merge-patch+json`` the patch itself."""
    body = await read_json(request)
    if media_type(request.headers.get("content-type", "")) == MERGE_PATCH:
        return await _update(records, table, record_id, body, True, request, ())
    return await _update(records, table, record_id, envelope_data(body), True, request)


@router.delete(
    RECORD_ROUTE,
    dependencies=NO_PARAMS,
    status_code=204,
    summary="Delete a record",
    response_class=Response,
    responses=errors(404, 409, 412, 422),
)
async def delete_record(
    table: TableName,
    record_id: RecordId,
    request: Request,
    records: RecordsDep,
    if_match: IfMatch = None,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Delete one record. A user who still has orders cannot be deleted (409)."""
    expected = await records.expected_for(table, record_id, *conditions(request))
    await records.delete_record(table, record_id, expected=expected)
    return Response(status_code=204)


@router.delete(
    TABLE_ROUTE,
    dependencies=NO_PARAMS,
    status_code=204,
    summary="Drop a table",
    response_class=Response,
    responses=errors(404, 409, 422),
)
async def drop_table(table: TableName, records: RecordsDep) -> Response:
    """Drop a table and its records. Built-in tables are emptied, keeping schema and indexes."""
    await records.drop_table(table)
    return Response(status_code=204)
