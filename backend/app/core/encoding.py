"""HTTP's own rules around every answer, for both front doors (ADR 0009):
HEAD as a GET without its body, gzip out (``Accept-Encoding``) and in
(``Content-Encoding``), with the body limit on the decompressed size.
"""

from __future__ import annotations

import zlib
from typing import Any

from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

# answers smaller than this go as they are: gzip would save little or nothing
COMPRESS_MIN_BYTES = 1024
# zlib's default: nearly level 9's size at about a third of its time
COMPRESS_LEVEL = 6
# the key a HEAD request keeps its method under while it is routed as a GET
HEAD = "memdb.head"


class CompressionMiddleware(GZipMiddleware):
    """Answers gzip-compressed where the client accepts it: streamed answers
    piece by piece (never buffered whole), large pieces in a worker thread."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(
            app, minimum_size=COMPRESS_MIN_BYTES, compresslevel=COMPRESS_LEVEL
        )


def accepts_gzip(headers: dict[bytes, bytes]) -> bool:
    return b"gzip" in headers.get(b"accept-encoding", b"")


def as_get(scope: Scope, send: Send) -> tuple[Scope, Send]:
    """A HEAD request routed as the GET it mirrors: same status and headers,
    no body (RFC 9110 section 9.3.2)."""
    scope = {**scope, "method": "GET", HEAD: True}

    async def headers_only(message: Message) -> None:
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                return
            message = {"type": "http.response.body", "body": b""}
        await send(message)

    return scope, headers_only


def method_of(scope: Scope) -> str:
    """The method the client sent (``HEAD`` for one routed as a GET)."""
    return "HEAD" if scope.get(HEAD) else str(scope["method"])


def body_refusal(headers: dict[bytes, bytes]) -> UnsupportedMediaType | None:
    """415 for a ``Content-Encoding`` other than gzip (or none)."""
    encoding = headers.get(b"content-encoding")
    if encoding is None or encoding.strip().lower() in (b"identity", b"gzip", b""):
        return None
    return UnsupportedMediaType(
        "the request body's Content-Encoding must be gzip or none, "
        f"not {encoding.decode('latin-1')!r}"
    )


def body_reader(receive: Receive, headers: dict[bytes, bytes], limit: int) -> Receive:
    """``receive`` with the body counted as it streams in (413 past ``limit``)
    and, when it is gzip-encoded, decompressed first: the limit applies to the
    decompressed bytes, and decompression stops one byte past it, so a small
    zip bomb costs no more than ``limit`` bytes."""
    encoding = headers.get(b"content-encoding", b"").strip().lower()
    inflate = _Inflater(limit) if encoding == b"gzip" else None
    received = 0

    async def reader() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] != "http.request":
            return message
        if inflate is not None:
            body = inflate(message.get("body", b""), message.get("more_body", False))
            message = {**message, "body": body}
        received += len(message.get("body", b""))
        if received > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        return message

    return reader


class _Inflater:
    """gzip decompression that never makes more than ``limit`` + 1 bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.made = 0
        self.zlib: Any = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def __call__(self, data: bytes, more: bool) -> bytes:
        pieces = []
        try:
            while data:
                piece = self.zlib.decompress(data, self.limit - self.made + 1)
                self.made += len(piece)
                pieces.append(piece)
                if self.made > self.limit:
                    break  # the caller refuses it: nothing more is inflated
                data = self.zlib.unconsumed_tail
                if self.zlib.eof and self.zlib.unused_data:
                    raise zlib.error("data after the end of the gzip stream")
        except zlib.error:
            raise BadRequest(
                "the request body is not valid gzip (Content-Encoding: gzip)"
            ) from None
        if not more and not self.zlib.eof and self.made <= self.limit:
            raise BadRequest("the request body is a truncated gzip stream")
        return b"".join(pieces)
