"""app.core.http: entity tags, If-Match/If-None-Match, JSON bodies in and out."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from starlette.requests import Request
from starlette.types import Message

from app.core.errors import InvalidJSON, UnsupportedMediaType
from app.core.etags import etag_matches, etag_of, record_etag
from app.core.http import JSONBytes, json_response, read_json

TAG = etag_of(b'{"id":"a"}')


def test_an_etag_is_a_strong_quoted_hash() -> None:
    assert TAG.startswith('"') and TAG.endswith('"')
    assert not TAG.startswith("W/")
    assert len(TAG) == 18
    int(TAG.strip('"'), 16)
    assert etag_of(b'{"id":"a"}') == TAG
    assert etag_of(b'{"id":"b"}') != TAG
    assert etag_of(b"") != etag_of(b" ")


def test_the_record_etag_hashes_the_records_json() -> None:
    record = {"id": "a", "n": 1, "updated_at": "2024-01-01T00:00:00.000000Z"}
    assert record_etag(record) == etag_of(orjson.dumps(record))
    assert record_etag(record) != record_etag({**record, "n": 2})
    assert record_etag(record) != record_etag({**record, "n": 1.0})
    assert record_etag(record) != record_etag({**record, "n": True})


@pytest.mark.parametrize(
    "header",
    [
        TAG,
        f"  {TAG}  ",
        "*",
        " * ",
        f'"x", {TAG}',
        f'"x",{TAG},"y"',
        f"W/{TAG}",
        f'"x", W/{TAG}',
    ],
)
def test_headers_that_match(header: str) -> None:
    assert etag_matches(header, TAG)


@pytest.mark.parametrize(
    "header",
    [
        "",
        '"x"',
        TAG.strip('"'),
        '"x", "y"',
        f'{TAG[:-2]}"',
        f"w/{TAG}",
        "**",
        f'"{TAG}"',
    ],
)
def test_headers_that_do_not_match(header: str) -> None:
    assert not etag_matches(header, TAG)


def test_json_response_serialises_once_with_orjson() -> None:
    response = json_response(
        {"a": [1, 2.5, None]}, status_code=201, headers={"X-A": "b"}
    )
    assert isinstance(response, JSONBytes)
    assert response.status_code == 201
    assert response.body == b'{"a":[1,2.5,null]}'
    assert response.headers["x-a"] == "b"
    assert response.headers["content-type"] == "application/json"
    assert json_response(b'{"pre":"made"}').body == b'{"pre":"made"}'


def _request(body: bytes, content_type: str | None) -> Request:
    headers = [] if content_type is None else [(b"content-type", content_type.encode())]
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": headers,
        "query_string": b"",
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/merge-patch+json",
        "application/vnd.api+json",
    ],
)
def test_read_json_parses_json_media_types(content_type: str) -> None:
    request = _request(b'{"data": {"a": [1, 1.5, true, null]}}', content_type)
    assert asyncio.run(read_json(request)) == {"data": {"a": [1, 1.5, True, None]}}


@pytest.mark.parametrize(
    "content_type",
    [None, "", "text/plain", "application/x-www-form-urlencoded", "json"],
)
def test_read_json_refuses_other_media_types(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        asyncio.run(read_json(_request(b"{}", content_type)))
    assert (caught.value.status_code, caught.value.code) == (
        415,
        "unsupported_media_type",
    )


@pytest.mark.parametrize("body", [b"", b"{", b"{'a': 1}", b"[1,]", b"NaN", b"\xff"])
def test_read_json_refuses_a_body_that_does_not_parse(body: bytes) -> None:
    with pytest.raises(InvalidJSON) as caught:
        asyncio.run(read_json(_request(body, "application/json")))
    assert (caught.value.status_code, caught.value.code) == (400, "invalid_json")
