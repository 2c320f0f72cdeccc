"""OpenAPI ``responses=`` entries: the error envelope on every route."""

from __future__ import annotations

from typing import Any

from app.schemas.records import ErrorEnvelope

_DESCRIPTIONS = {
    400: "Bad request: invalid JSON or a bad query parameter",
    401: "An API key is required (when MEMDB_API_KEYS is set)",
    403: "The API key is read-only",
    404: "No such table or record",
    409: "Conflict: duplicate id or unique value, or a reference blocks the delete",
    410: "The change-feed cursor is older than the changes kept, or not this feed's",
    412: "If-Match does not match the record's current ETag",
    413: "The body is larger than MEMDB_MAX_BODY_BYTES",
    414: "The query string is longer than MEMDB_MAX_QUERY_BYTES",
    415: "The body is not JSON",
    422: "Validation failed; details name each field",
    501: "The store keeps no change feed (a Redis Cluster)",
    503: "The store is still loading",
    507: "The store is full (MEMDB_MAX_RECORDS)",
}


def errors(*statuses: int, keyed: bool = True) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of a route, each with the envelope's schema.
    ``keyed`` routes (the API's) also answer 401/403 when API keys are
    configured, and 414 for a query string over the limit."""
    always = (401, 403, 414, 503) if keyed else (503,)
    return {
        status: {"model": ErrorEnvelope, "description": _DESCRIPTIONS[status]}
        for status in sorted({*statuses, *always})
    }


# The models of request bodies that routes parse themselves: build_openapi()
# adds each to the document's components, where the bodies refer to it.
BODY_MODELS: dict[str, Any] = {}


def json_body(
    model: Any, example: Any, *, more: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An ``openapi_extra`` request body for a route that parses its body
    itself: ``application/json`` with ``model`` (and ``more`` media types)."""
    BODY_MODELS[model.__name__] = model
    content = {
        "application/json": {
            "schema": {"$ref": f"#/components/schemas/{model.__name__}"},
            "example": example,
        },
        **(more or {}),
    }
    return {"requestBody": {"required": True, "content": content}}
