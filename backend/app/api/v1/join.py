"""``/join/{left}/{right}/{key}``: hash joins of two tables, whole or in pages."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import WithJsonSchema

from app.api.deps import TABLE_PATTERN, JoinsDep
from app.api.paging import page_links
from app.api.responses import errors
from app.api.streaming import answer, json_object, rows_json
from app.schemas.records import JoinOut
from app.services.joins import How, Pair
from app.services.query import SYNTAX, refuse_unknown_params

router = APIRouter(prefix="/api/v1/join", tags=["joins"])

Table = Annotated[str, Path(pattern=TABLE_PATTERN, examples=["users"])]


def _schema(pattern: str, example: str | None = None) -> WithJsonSchema:
    """Documented as the field path it is, checked by the join service itself."""
    schema: dict[str, Any] = {"type": "string", "pattern": pattern}
    if example is not None:
        schema["examples"] = [example]
    return WithJsonSchema(schema)


Column = Annotated[str, _schema(SYNTAX["path"])]


PARAMS = ("how", "left_on", "right_on", "limit", "offset")


async def _known_params(request: Request) -> None:
    """A filter, a sort or a projection is not a join's: refused, not ignored."""
    refuse_unknown_params(request.query_params.multi_items(), PARAMS)


def _row(pair: Pair) -> dict[str, Any]:
    return {"left": pair[0], "right": pair[1]}


@router.get(
    "/{left}/{right}/{key}",
    dependencies=[Depends(_known_params)],
    summary="Join two tables",
    response_model=None,
    responses={
        200: {"model": JoinOut, "description": "The joined rows"},
        **errors(400, 404, 422),
    },
)
async def join_tables(
    left: Table,
    right: Annotated[str, Path(pattern=TABLE_PATTERN, examples=["orders"])],
    key: Annotated[str, Path(), _schema(SYNTAX["path"], "user_id")],
    request: Request,
    joins: JoinsDep,
    how: Annotated[How, Query(description="inner, left, right or full")] = "inner",
    left_on: Annotated[
        Column | None, Query(description="The left column, outright")
    ] = None,
    right_on: Annotated[
        Column | None, Query(description="The right column, outright")
    ] = None,
    limit: Annotated[
        int | None, Query(ge=0, description="Rows of this page (default: all)")
    ] = None,
    offset: Annotated[int, Query(ge=0, description="Rows to skip")] = 0,
) -> Response:
    """Pair the records of two tables. On each side the column is ``key`` when the
    table has that field, and ``id`` otherwise: ``users/orders/user_id`` pairs each
    user with its orders. Missing and null values never match. ``total`` counts
    every row of the join; a join of more than ``MEMDB_MAX_JOIN_ROWS`` rows must
    be read in pages (``limit``, ``offset``)."""
    result = await joins.join(
        left,
        right,
        key,
        how=how,
        left_on=left_on,
        right_on=right_on,
        limit=limit,
        offset=offset,
    )
    remaining = max(0, result.total - offset)
    count = remaining if limit is None else min(limit, remaining)
    head = {
        "left": result.left,
        "right": result.right,
        "on": {"left": result.left_on, "right": result.right_on},
        "how": result.how,
        "count": count,
        "total": result.total,
        "limit": limit,
        "offset": offset,
    }
    headers = {"X-Total-Count": str(result.total)}
    if limit is not None:
        link = page_links(
            request.url.path,
            request.query_params.multi_items(),
            limit=limit,
            offset=offset,
            total=result.total,
        )
        if link:
            headers["Link"] = link
    pieces = json_object(head, "items", rows_json(result.batches, _row))
    return await answer(pieces, result.work, headers=headers)
