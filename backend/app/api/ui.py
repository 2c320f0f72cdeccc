"""``/ui``: a small live page of the tables, their records and the change tail.

The page, its script and its style sheet are served by the service itself
(``app/static/ui``), so it works offline and with CORS closed. The page is
public; the data it shows comes from the API with the key the user gives it
(kept in the browser's session storage, sent as ``X-API-Key``, and as
``?key=`` on the change feed, which a browser's ``EventSource`` reaches
without headers). It sets no cookie.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

from app.core.errors import NotFound

router = APIRouter(include_in_schema=False)

# every asset comes from the service itself; no inline script or style
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
PAGE = "index.html"
# the files served under /ui/, with their media types
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}


@cache
def _file(name: str) -> bytes:
    return (files("app") / "static" / "ui" / name).read_bytes()


@router.get("/ui")
async def page() -> Response:
    """The live data page."""
    return Response(_file(PAGE), media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/ui/{name}")
async def asset(name: str) -> Response:
    """The page's script and style sheet."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no such file: /ui/{name}")
    return Response(_file(name), media_type=media_type, headers=HEADERS)
