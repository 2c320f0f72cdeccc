"""HTTP in and out for the routes: the JSON body of a request, JSON bytes out
(one serialisation a response), whole answers sent straight to ASGI."""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Mapping

import orjson
from fastapi import Request
from fastapi.responses import Response

from app.core.jsonbody import check_json_type, parse_json_off_loop


class JSONBytes(Response):
    """A response whose body is already JSON bytes (or a value orjson serialises)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes):
            return content
        return orjson.dumps(content)


def json_response(
    content: Any, *, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> JSONBytes:
    return JSONBytes(content, status_code=status_code, headers=headers)


async def send_body(
    send: Callable[[dict[str, Any]], Awaitable[None]],
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
) -> None:
    """A whole answer straight to the ASGI ``send``, for the pure ASGI layers."""
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [*headers, (b"content-length", str(len(body)).encode())],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})


def request_headers(scope: Mapping[str, Any]) -> dict[bytes, bytes]:
    """The request's headers as a dict, built once by the outermost middleware."""
    state = scope.get("state") or {}
    found: dict[bytes, bytes] | None = state.get("headers")
    return found if found is not None else dict(scope["headers"])


async def read_json(request: Request) -> Any:
    """The parsed JSON body: 415 for another media type, 400 when it does not parse."""
    content_type = request.headers.get("content-type", "")
    check_json_type(content_type)
    return await parse_json_off_loop(content_type, await request.body())
