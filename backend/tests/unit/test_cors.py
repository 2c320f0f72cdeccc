"""app.core.cors: CORS from ``MEMDB_CORS_ORIGINS``, read when the first request
arrives; nothing at all when no origin is configured."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import anyio
from starlette.types import Message, Receive, Scope, Send

from app.core.cors import EXPOSE_HEADERS, SettingsCORSMiddleware
from app.core.middleware import Runtime

ORIGIN = "http://a.example"


class Downstream:
    """The app behind the middleware: records what reaches it, answers 204."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope["type"])
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})


def _app(origins: str | None) -> Any:
    """An app whose state has a runtime with these origins (None: not built)."""
    if origins is None:
        return SimpleNamespace(state=SimpleNamespace())
    service = SimpleNamespace(runtime=Runtime(cors_origins=origins))
    return SimpleNamespace(state=SimpleNamespace(service=service))


def _scope(owner: Any, method: str, headers: dict[str, str]) -> Scope:
    return {
        "type": "http",
        "method": method,
        "path": "/api/v1/data/things",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "app": owner,
    }


def _call(
    middleware: SettingsCORSMiddleware, scope: Scope
) -> tuple[int, dict[str, str]]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    anyio.run(middleware, scope, receive, send)
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers


PREFLIGHT = {"Origin": ORIGIN, "Access-Control-Request-Method": "PUT"}


def test_no_settings_means_no_cors() -> None:
    downstream = Downstream()
    middleware = SettingsCORSMiddleware(downstream)
    status, headers = _call(middleware, _scope(_app(None), "OPTIONS", PREFLIGHT))
    assert status == 204
    assert downstream.scopes == ["http"]
    assert not any(name.startswith("access-control-") for name in headers)


def test_empty_origins_mean_no_cors() -> None:
    for spec in ("", " ", " , "):
        downstream = Downstream()
        middleware = SettingsCORSMiddleware(downstream)
        owner = _app(spec)
        status, headers = _call(middleware, _scope(owner, "OPTIONS", PREFLIGHT))
        assert (status, downstream.scopes) == (204, ["http"])
        assert not any(name.startswith("access-control-") for name in headers)


def test_a_configured_origin_gets_its_preflight_answered() -> None:
    downstream = Downstream()
    middleware = SettingsCORSMiddleware(downstream)
    status, headers = _call(
        middleware, _scope(_app(f" {ORIGIN} ,"), "OPTIONS", PREFLIGHT)
    )
    assert status == 200
    assert downstream.scopes == []
    assert headers["access-control-allow-origin"] == ORIGIN
    assert "PUT" in headers["access-control-allow-methods"]


def test_a_simple_request_exposes_the_api_headers() -> None:
    middleware = SettingsCORSMiddleware(Downstream())
    _, headers = _call(middleware, _scope(_app(ORIGIN), "GET", {"Origin": ORIGIN}))
    assert headers["access-control-allow-origin"] == ORIGIN
    exposed = {h.strip() for h in headers["access-control-expose-headers"].split(",")}
    assert {"ETag", "X-Total-Count", "Link", "Location", "X-Request-ID"} <= exposed
    assert set(EXPOSE_HEADERS) == exposed


def test_the_lifespan_passes_through_before_the_settings_exist() -> None:
    """The settings are made in the lifespan: the lifespan must not fix the
    configuration to "no CORS" before they exist."""
    downstream = Downstream()
    middleware = SettingsCORSMiddleware(downstream)
    owner = _app(None)

    async def lifespan() -> None:
        async def receive() -> Message:
            return {"type": "lifespan.startup"}

        async def send(message: Message) -> None:
            return None

        await middleware({"type": "lifespan", "app": owner}, receive, send)

    anyio.run(lifespan)
    assert downstream.scopes == ["lifespan"]

    owner.state.service = SimpleNamespace(runtime=Runtime(cors_origins=ORIGIN))
    status, headers = _call(middleware, _scope(owner, "OPTIONS", PREFLIGHT))
    assert status == 200
    assert headers["access-control-allow-origin"] == ORIGIN
