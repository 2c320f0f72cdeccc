"""JSON request bodies: the media type, parsing (in a worker thread when large),
and the limits the parser alone cannot hold (nesting, 64-bit integers). Plain
Python: the services use it as well as the routes."""

from __future__ import annotations

import json
import re
from typing import Any

import anyio.to_thread
import orjson

from app.core.errors import InvalidJSON, UnsupportedMediaType, ValidationFailed

MERGE_PATCH = "application/merge-patch+json"
JSON_TYPES = ("application/json", MERGE_PATCH)
# A body larger than this is parsed in a worker thread, off the event loop.
LARGE_BODY = 64 * 1024


def media_type(content_type: str) -> str:
    """``application/json`` of ``Application/JSON; charset=utf-8``."""
    return content_type.split(";", 1)[0].strip().lower()


def _is_json(content_type: str) -> bool:
    media = media_type(content_type)
    return media in JSON_TYPES or (
        media.startswith("application/") and media.endswith("+json")
    )


def _balanced(body: bytes) -> bool:
    """Whether every bracket outside strings is closed: well-formed but too deep,
    as opposed to truncated. Only run on the rare too-deep error path."""
    depth, in_string, escaped = 0, False, False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
            if depth < 0:
                return False
    return depth == 0 and not in_string


async def parse_json_off_loop(content_type: str, body: bytes) -> Any:
    """``parse_json``, in a worker thread when the body is large."""
    if len(body) > LARGE_BODY:
        return await anyio.to_thread.run_sync(parse_json, content_type, body)
    return parse_json(content_type, body)


# RFC 6902's patch format: JSON, but not a document this API takes
JSON_PATCH = "application/json-patch+json"
# the patch formats PATCH takes (RFC 5789's Accept-Patch)
ACCEPT_PATCH = ("accept-patch", f"application/json, {MERGE_PATCH}")


def check_json_type(content_type: str) -> None:
    """415 unless the media type is JSON: checked before the body is read."""
    if media_type(content_type) == JSON_PATCH:
        raise UnsupportedMediaType(
            "JSON Patch (RFC 6902) is not taken: send a JSON merge patch "
            f'(Content-Type: {MERGE_PATCH}) or {{"data": ...}} as application/json',
            headers=[ACCEPT_PATCH],
        )
    if not _is_json(content_type):
        raise UnsupportedMediaType(
            "the request body must be JSON (Content-Type: application/json)"
        )


def parse_json(content_type: str, body: bytes) -> Any:
    """A JSON body: 415 for another media type, 400 when it does not parse, 422
    when it is well formed but nested too deep."""
    check_json_type(content_type)
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "infinity" in exc.msg.lower():  # valid JSON, past what a double holds
            raise ValidationFailed(
                "a number is too large for a 64-bit float",
                details=[
                    {
                        "loc": ["body"],
                        "msg": "numbers must lie within about 1.8e308",
                        "type": "float_too_large",
                    }
                ],
            ) from None
        too_deep = "recursion" in exc.msg.lower() or "depth" in exc.msg.lower()
        if too_deep and _balanced(body):
            raise ValidationFailed(
                "JSON nested deeper than 32 levels",
                details=[
                    {"loc": ["body"], "msg": "nested too deep", "type": "too_deep"}
                ],
            ) from None
        raise InvalidJSON(f"the request body is not valid JSON: {exc.msg}") from None
    check_integers(body)
    return parsed


# A run of 19 digits may be an integer beyond 64 bits, which orjson reads as a
# float (rounded): such bodies are read again to find out, and refused.
_LONG_NUMBER = re.compile(rb"\d{19}")
_LOWEST, _HIGHEST = -(2**63), 2**64 - 1


def _exact_int(text: str) -> int:
    value = int(text)
    if not _LOWEST <= value <= _HIGHEST:
        raise OverflowError(text)
    return value


def check_integers(body: bytes) -> None:
    """422 when the JSON text holds an integer outside 64 bits (orjson would
    quietly read it as a rounded float)."""
    if not _LONG_NUMBER.search(body):
        return
    try:
        json.loads(body, parse_int=_exact_int)
    except OverflowError:
        raise ValidationFailed(
            "an integer does not fit in 64 bits",
            details=[
                {
                    "loc": ["body"],
                    "msg": "integers must lie between -2**63 and 2**64-1",
                    "type": "int_too_large",
                }
            ],
        ) from None
    except (ValueError, RecursionError):
        pass  # orjson accepted it; the stricter reader's other opinions do not matter
