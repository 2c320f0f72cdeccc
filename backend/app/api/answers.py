"""The records routes' templates, and the answers of the hot ones (status,
body, headers) made once for both front doors: the routers in ``v1/data.py``
and the fast path (``fastpath.py``) are thin adapters over these functions."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from app.api.paging import list_body, list_headers
from app.api.streaming import answer
from app.core.errors import PreconditionFailed, ValidationFailed, field_error
from app.core.etags import etag_matches, etag_of
from app.services.query import Page
from app.services.work import Work

DATA = "/api/v1/data"
TABLE_ROUTE = "/{table}"
RECORD_ROUTE = "/{table}/{record_id}"
LIST = CREATE = DATA + TABLE_ROUTE
READ = DATA + RECORD_ROUTE

Header = tuple[bytes, bytes]
# An answer as its parts, or a response to run (a long list, sent as it is made).
Answer = tuple[int, bytes, list[Header]]
Result = Answer | Response

JSON = (b"content-type", b"application/json")


def envelope_data(body: Any) -> Any:
    """The ``data`` member of a ``{"data": ...}`` body."""
    if not isinstance(body, dict) or "data" not in body:
        raise ValidationFailed(
            'the body must be {"data": ...}',
            details=[field_error(["data"], "field required", "missing")],
        )
    extra = [k for k in body if k != "data"]
    if extra:
        raise ValidationFailed(
            'the body must be {"data": ...} and nothing else',
            details=[field_error([k], "extra field", "extra_forbidden") for k in extra],
        )
    return body["data"]


def read_answer(
    record: dict[str, Any], if_none_match: str | None, if_match: str | None = None
) -> Answer:
    """200 with the record and its ETag, 412 when ``If-Match`` does not name
    it, or 304 when ``If-None-Match`` does (RFC 9110 section 13.2.2)."""
    body = orjson.dumps(record)
    etag = etag_of(body)
    if if_match is not None and not etag_matches(if_match, etag, weak=False):
        raise PreconditionFailed("the record does not match If-Match")
    if if_none_match is not None and etag_matches(if_none_match, etag):
        return 304, b"", [(b"etag", etag.encode())]
    return 200, body, [JSON, (b"etag", etag.encode())]


def record_answer(record: dict[str, Any]) -> Answer:
    """200 with a written record and its ETag (PUT, PATCH)."""
    body = orjson.dumps(record)
    return 200, body, [JSON, (b"etag", etag_of(body).encode())]


def created_answer(table: str, created: list[dict[str, Any]], bulk: bool) -> Answer:
    """201: one record with its ETag and ``Location``, or a bulk create's list."""
    if bulk:
        return 201, orjson.dumps({"items": created, "count": len(created)}), [JSON]
    (record,) = created
    body = orjson.dumps(record)
    location = f"{DATA}/{table}/{record['id']}".encode()
    return 201, body, [JSON, (b"etag", etag_of(body).encode()), (b"location", location)]


async def list_answer(
    path: str, params: list[tuple[str, str]], page: Page, work: Work
) -> Result:
    """200 with one page, ``X-Total-Count`` and ``Link``: whole when small,
    else streamed."""
    headers = list_headers(path, params, page)
    body = list_body(page)
    if not isinstance(body, bytes):
        named = {k.decode(): v.decode("latin-1") for k, v in headers}
        return await answer(body, work, headers=named)
    headers.insert(0, JSON)
    return 200, body, headers


def as_response(result: Result) -> Response:
    """An answer as the response a route returns."""
    if isinstance(result, Response):
        return result
    status, body, headers = result
    response = Response(body, status_code=status)
    response.raw_headers.extend(headers)
    return response
