"""CORS from ``MEMDB_CORS_ORIGINS``, configured when the first request arrives
(settings are read in the lifespan, after the middleware stack is built)."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.handlers import error_body
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


class EnvelopeCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with a refused preflight (an origin, method or header
    not allowed) answered in the contract's error envelope, not as plain text."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            headers = Headers(scope=scope)
            if "origin" in headers and "access-control-request-method" in headers:
                response = self.preflight_response(request_headers=headers)
                if response.status_code >= 400:
                    response = _refused(response, scope)
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _refused(response: Response, scope: Scope) -> Response:
    reason = bytes(response.body).decode("latin-1")  # "Disallowed CORS origin"
    asked = reason.removeprefix("Disallowed CORS ")
    body = error_body(
        code="bad_request",
        message=f"the CORS preflight asks for an {asked} the service does not "
        "allow (MEMDB_CORS_ORIGINS names the origins)",
        request_id=scope.get("state", {}).get("request_id", ""),
    )
    return Response(
        body, status_code=response.status_code, media_type="application/json"
    )


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
                EnvelopeCORSMiddleware(
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
