"""The OpenAPI document, made for the clients that read it: Swagger UI's "Try
it out", ReDoc, and generated clients (short operation ids, one shared error
response per status, declared response headers, real examples)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from app.api.answers import READ
from app.api.responses import BODY_MODELS
from app.core.jsonbody import MERGE_PATCH
from app.core.handlers import error_body
from app.schemas.records import RECORD_FIELDS

EXAMPLE_REQUEST_ID = "5f0c6b1e2a7d4c3b9e8f7a6d00000001"
PATCH_EXAMPLE = {"age": 31, "nickname": None}

# One shared response per error status: its name, what it means, an example.
_ERRORS: dict[int, tuple[str, str, str, str]] = {
    400: (
        "BadRequest",
        "Bad request: invalid JSON or a bad query parameter",
        "bad_request",
        "unknown operator 'between' in age__between",
    ),
    401: (
        "Unauthorized",
        "An API key is required (when MEMDB_API_KEYS is set)",
        "unauthorized",
        "an API key is required: Authorization: Bearer <key> or X-API-Key",
    ),
    403: (
        "Forbidden",
        "The API key is read-only",
        "forbidden",
        "this API key is read-only",
    ),
    404: ("NotFound", "No such table or record", "not_found", "no record 42 in users"),
    409: (
        "Conflict",
        "Conflict: duplicate id or unique value, or a reference blocks the delete",
        "conflict",
        "email john.doe@example.com is taken",
    ),
    410: (
        "Gone",
        "The change-feed cursor is older than the changes kept, or not one "
        "this feed gave: reload, then follow from the reload's X-Changes-Cursor "
        "(details[0].oldest: the oldest cursor kept)",
        "gone",
        "the cursor is older than the changes kept; reload, then follow from "
        "the cursor of the reload (the oldest cursor kept is 1796000000000-41)",
    ),
    412: (
        "PreconditionFailed",
        "If-Match does not match the record's current ETag",
        "precondition_failed",
        "the record has changed since the ETag given in If-Match",
    ),
    413: (
        "PayloadTooLarge",
        "The body (decompressed) is larger than MEMDB_MAX_BODY_BYTES",
        "payload_too_large",
        "the body is larger than 1048576 bytes",
    ),
    414: (
        "UriTooLong",
        "The query string is longer than MEMDB_MAX_QUERY_BYTES",
        "uri_too_long",
        "the query string is longer than 8192 bytes",
    ),
    415: (
        "UnsupportedMediaType",
        "The body is not JSON, or its Content-Encoding is not gzip",
        "unsupported_media_type",
        "the request body must be JSON (Content-Type: application/json)",
    ),
    422: (
        "ValidationError",
        "Validation failed; details name each field",
        "validation_error",
        "the record is not valid",
    ),
    501: (
        "NotImplemented",
        "The store keeps no change feed (a Redis Cluster: no one stream can take "
        "every table's changes atomically)",
        "not_implemented",
        "the change feed needs a standalone Redis: a Cluster's tables live in "
        "several hash slots",
    ),
    503: (
        "Unavailable",
        "Not ready yet, too busy, or the store cannot be reached (Retry-After)",
        "not_ready",
        "the store is still loading",
    ),
    507: (
        "InsufficientStorage",
        "The store is full (MEMDB_MAX_RECORDS)",
        "insufficient_storage",
        "the store holds its maximum of 1000000 records",
    ),
}
_DETAILS_422 = [{"loc": ["body", "data", "age"], "msg": "too old", "type": "le"}]

HEADERS: dict[str, dict[str, Any]] = {
    "ETag": {
        "description": "The record's version; send it in If-Match or If-None-Match",
        "schema": {"type": "string"},
        "example": '"1b2cf535f27731c974343645a3985328"',
    },
    "Location": {
        "description": "The created record's URL",
        "schema": {"type": "string"},
        "example": "/api/v1/data/users/1",
    },
    "X-Total-Count": {
        "description": "Rows that match, over every page",
        "schema": {"type": "integer", "minimum": 0},
        "example": 42,
    },
    "X-Changes-Cursor": {
        "description": "The change-feed cursor the answer was read at: follow "
        "GET /api/v1/changes?since=<it> to miss no change after it",
        "schema": {"type": "string"},
        "example": "1796000000000-42",
    },
    "Link": {
        "description": "RFC 8288 links to the first, prev, next and last pages",
        "schema": {"type": "string"},
        "example": '</api/v1/data/users?limit=20&offset=0>; rel="first", '
        '</api/v1/data/users?limit=20&offset=20>; rel="next"',
    },
}
# Which answers carry which headers, by operation id and status.
_ANSWER_HEADERS = {
    ("create_record", "201"): ("ETag", "Location"),
    ("read_record", "200"): ("ETag",),
    ("read_record", "304"): ("ETag",),
    ("update_record", "200"): ("ETag",),
    ("patch_record", "200"): ("ETag",),
    ("list_records", "200"): ("X-Total-Count", "Link", "X-Changes-Cursor"),
    ("join_tables", "200"): ("X-Total-Count", "Link"),
    ("dump_all", "200"): ("X-Changes-Cursor",),
    ("dump_table", "200"): ("X-Changes-Cursor",),
    ("follow_changes", "200"): ("X-Changes-Cursor",),
}


def operation_id(route: APIRoute) -> str:
    """The route function's name: ``create_record``, ``list_records``, ..."""
    return route.name


def build_openapi(
    app: FastAPI, *, keys: bool, tags: list[dict[str, Any]]
) -> dict[str, Any]:
    """The document of ``app``; with ``keys``, the API key schemes on every
    route that needs one."""
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=tags,
    )
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["RecordFields"] = dict(RECORD_FIELDS)
    for name, model in BODY_MODELS.items():
        schemas[name] = _shared(
            model.model_json_schema(ref_template="#/components/schemas/{model}")
        )
    components["responses"] = {
        name: _error_response(status) for status, (name, *_) in _ERRORS.items()
    }
    components["headers"] = HEADERS
    for path, methods in schema.get("paths", {}).items():
        for operation in methods.values():
            _tidy(operation)
            if keys and (path.startswith("/api/") or path == "/metrics"):
                operation["security"] = [{"bearer": []}, {"apiKey": []}]
    if keys:
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
    # the document drops nulls from examples: a merge patch's null is the point
    patch = schema["paths"][READ]["patch"]["requestBody"]["content"]
    patch["application/json"]["example"] = {"data": PATCH_EXAMPLE}
    patch[MERGE_PATCH]["example"] = PATCH_EXAMPLE
    components["schemas"].pop("HTTPValidationError", None)
    components["schemas"].pop("ValidationError", None)
    return schema


def _shared(value: Any) -> Any:
    """``value`` with each copy of the record fields' schema made a reference
    to the one component, so that clients generate one type for it."""
    if value == RECORD_FIELDS:
        return {"$ref": "#/components/schemas/RecordFields"}
    if isinstance(value, dict):
        return {k: _shared(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shared(v) for v in value]
    return value


def _error_response(status: int) -> dict[str, Any]:
    _, description, code, message = _ERRORS[status]
    details = _DETAILS_422 if status == 422 else []
    example = error_body(
        code=code, message=message, request_id=EXAMPLE_REQUEST_ID, details=details
    )
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/ErrorEnvelope"},
                "example": orjson.loads(example),
            }
        },
    }


def _tidy(operation: dict[str, Any]) -> None:
    """Shared error responses, declared headers, and parameters as clients
    read them best (an example to start from, no ``null`` alternative for an
    optional value)."""
    responses = operation.get("responses", {})
    for status in list(responses):
        if status.isdigit() and int(status) in _ERRORS:
            responses[status] = {
                "$ref": f"#/components/responses/{_ERRORS[int(status)][0]}"
            }
        names = _ANSWER_HEADERS.get((operation.get("operationId", ""), status), ())
        if names:
            responses[status]["headers"] = {
                name: {"$ref": f"#/components/headers/{name}"} for name in names
            }
    for parameter in operation.get("parameters", []):
        schema = parameter.get("schema", {})
        choices = schema.get("anyOf")
        if choices and not parameter.get("required"):
            kept = [c for c in choices if c.get("type") != "null"]
            if len(kept) == 1:
                rest = {k: v for k, v in schema.items() if k != "anyOf"}
                parameter["schema"] = {**kept[0], **rest}
        examples = parameter["schema"].get("examples")
        if examples and "example" not in parameter:
            parameter["example"] = examples[0]
