"""Pages of a list or a join: the ``Link`` header and the list answer's body."""

from __future__ import annotations

import re
from typing import AsyncIterator
from urllib.parse import quote_plus

import orjson

from app.api.streaming import batches_of, json_object, rows_json
from app.services.query import Page
from app.storage.base import SNAPSHOT_CURSOR

# the change-feed cursor a list or a dump was read at: follow from it
CURSOR_HEADER = "X-Changes-Cursor"
CURSOR_HEADER_NAME = CURSOR_HEADER.lower().encode()

# A query longer than this is not repeated in Link (four times over, it would
# make a header that proxies and clients refuse); X-Total-Count still says it all.
MAX_LINK_QUERY = 1024
# A page of at most this many items is written with one orjson call.
_SMALL_PAGE = 20

# the characters a URL carries as they are (what quoting leaves alone)
UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


def _quote(text: str) -> str:
    """``quote_plus`` (what ``urlencode`` applies), skipped for the common text
    that it would leave as it is."""
    return text if UNRESERVED.fullmatch(text) else quote_plus(text)


def page_offsets(*, limit: int, offset: int, total: int) -> dict[str, int]:
    """The offsets of the first, previous, next and last pages, in that order
    (none when the limit is 0); none points past the end."""
    if limit == 0:
        return {}
    last = max(0, (total - 1) // limit * limit)
    offsets = {"first": 0}
    if offset > 0:  # past the end, the previous page is the last one
        offsets["prev"] = min(max(0, offset - limit), last)
    if offset + limit < total:
        offsets["next"] = offset + limit
    offsets["last"] = last
    return offsets


def page_links(
    path: str, params: list[tuple[str, str]], *, limit: int, offset: int, total: int
) -> str:
    """RFC 8288 links to the first, previous, next and last pages; none when
    the query is longer than ``MAX_LINK_QUERY``."""
    key = (path, tuple(params), limit, offset, total)
    link = _LINKS.get(key)
    if link is not None:
        return link
    base = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in params if k != "offset")
    if len(base) > MAX_LINK_QUERY:
        return ""
    prefix = f"{path}?{base}&offset=" if base else f"{path}?offset="
    offsets = page_offsets(limit=limit, offset=offset, total=total)
    link = ", ".join(f'<{prefix}{at}>; rel="{rel}"' for rel, at in offsets.items())
    if len(_LINKS) >= _LINKS_KEPT:
        _LINKS.clear()
    _LINKS[key] = link
    return link


# The Link headers last made (clients ask the same page again), each for a
# query of at most MAX_LINK_QUERY characters; emptied when full.
_LINKS: dict[tuple[str, tuple[tuple[str, str], ...], int, int, int], str] = {}
_LINKS_KEPT = 256


def list_headers(
    path: str, params: list[tuple[str, str]], page: Page
) -> list[tuple[bytes, bytes]]:
    """``X-Total-Count``, the snapshot's cursor and ``Link``, as sent."""
    headers = [(b"x-total-count", b"%d" % page.total)]
    cursor = SNAPSHOT_CURSOR.get()
    if cursor is not None:
        headers.append((CURSOR_HEADER_NAME, cursor.encode("latin-1")))
    link = page_links(
        path, params, limit=page.limit, offset=page.offset, total=page.total
    )
    if link:
        headers.append((b"link", link.encode("latin-1")))
    return headers


def list_body(page: Page) -> bytes | AsyncIterator[bytes]:
    """The list answer: its bytes when the page is small, else its pieces."""
    tail = {"total": page.total, "limit": page.limit, "offset": page.offset}
    if len(page.items) <= _SMALL_PAGE:
        return orjson.dumps({"items": page.items, **tail})
    return json_object({}, "items", rows_json(batches_of(page.items)), tail)
