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
    412: "If-Match does not match the record's current ETag",
    413: "The body is larger than MEMDB_MAX_BODY_BYTES",
    415: "The body is not JSON",
    422: "Validation failed; details name each field",
    503: "The store is still loading",
    507: "The store is full (MEMDB_MAX_RECORDS)",
}


def errors(*statuses: int, keyed: bool = True) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of a route, each with the envelope's schema.
    ``keyed`` routes also answer 401/403 when API keys are configured."""
    always = (401, 403, 503) if keyed else (503,)
    return {
        status: {"model": ErrorEnvelope, "description": _DESCRIPTIONS[status]}
        for status in sorted({*statuses, *always})
    }


def json_body(model: Any, example: Any) -> dict[str, Any]:
    """An ``openapi_extra`` request body for a route that parses its body itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": model.model_json_schema(),
                    "example": example,
                }
            },
        }
    }
