"""``/join/{left}/{right}/{key}``: hash joins of two tables."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

import anyio.to_thread

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response, StreamingResponse

from app.api.deps import TABLE_PATTERN, JoinsDep
from app.api.responses import errors
from app.api.streaming import CHUNK, json_chunks
from app.core.http import json_response
from app.schemas.records import JoinOut
from app.services.joins import How, Pair

router = APIRouter(prefix="/api/v1/join", tags=["joins"])

Table = Annotated[str, Path(pattern=TABLE_PATTERN, examples=["users"])]


def _row(pair: Pair) -> dict[str, Any]:
    return {"left": pair[0], "right": pair[1]}


@router.get(
    "/{left}/{right}/{key}",
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
    key: Annotated[str, Path(examples=["user_id"])],
    joins: JoinsDep,
    how: Annotated[How, Query(description="inner, left, right or full")] = "inner",
    left_on: Annotated[
        str | None, Query(description="The left column, outright")
    ] = None,
    right_on: Annotated[
        str | None, Query(description="The right column, outright")
    ] = None,
) -> Response:
    """Pair the records of two tables. On each side the column is ``key`` when the
    table has that field, and ``id`` otherwise: ``users/orders/user_id`` pairs each
    user with its orders. Missing and null values never match."""
    # the hash join is CPU work: a worker thread keeps the event loop answering
    result = await anyio.to_thread.run_sync(
        partial(
            joins.join, left, right, key, how=how, left_on=left_on, right_on=right_on
        )
    )
    head = {
        "left": result.left,
        "right": result.right,
        "on": {"left": result.left_on, "right": result.right_on},
        "how": result.how,
        "count": len(result.rows),
    }
    if len(result.rows) <= CHUNK:
        return json_response({**head, "items": [_row(p) for p in result.rows]})
    return StreamingResponse(
        json_chunks(head, "items", result.rows, _row), media_type="application/json"
    )
