"""CORS from ``MEMDB_CORS_ORIGINS``, configured when the first request arrives
(settings are read in the lifespan, after the middleware stack is built)."""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.middleware import runtime_of

ALLOW_HEADERS = [
    "Authorization",
    "Content-Type",
    "If-Match",
    "If-None-Match",
    "Last-Event-ID",
    "X-API-Key",
    "X-Request-ID",
]
EXPOSE_HEADERS = [
    "ETag",
    "Link",
    "Location",
    "X-Request-ID",
    "X-Total-Count",
    "X-Changes-Cursor",
    "X-Changes-Oldest",
]


class SettingsCORSMiddleware:
    """Starlette's CORS middleware with the origins from the settings; no CORS
    headers at all when no origin is configured (the default)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.inner: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.inner is None:
            if scope["type"] == "lifespan":
                await self.app(scope, receive, send)
                return
            runtime = runtime_of(scope["app"])
            spec = runtime.cors_origins if runtime is not None else ""
            origins = [o.strip() for o in spec.split(",") if o.strip()]
            self.inner = (
                CORSMiddleware(
                    self.app,
                    allow_origins=origins,
                    allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
                    allow_headers=ALLOW_HEADERS,
                    expose_headers=EXPOSE_HEADERS,
                    max_age=600,
                )
                if origins
                else self.app
            )
        await self.inner(scope, receive, send)
