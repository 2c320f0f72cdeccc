"""Outside ``/api/v1``: Prometheus metrics and the offline documentation pages."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.deps import StatsDep
from app.api.responses import errors
from app.core.errors import StoreUnavailable
from app.core.metrics import Metrics

router = APIRouter(tags=["operations"])

ASSETS = "/static/docs"


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
        **errors(),
    },
)
async def metrics(request: Request, stats: StatsDep) -> Response:
    """Requests and latency by method, route and status; records per table; index
    entries; memory estimate; uptime; build info; process metrics. While the
    store cannot be reached (Redis down), still 200: ``memdb_store_up`` is 0 and
    the series read from the store (records, index entries, tables, memory) are
    left out."""
    current: Metrics = request.app.state.service.runtime.metrics
    try:
        current.tables = await stats.tables()
        current.memory = await stats.memory()
    except StoreUnavailable as exc:
        # what the process knows is served all the same (a scrape matters most
        # during an outage); the series read from the store are left out
        current.store_problem = exc.message
    else:
        current.store_problem = None
    return Response(generate_latest(current.registry), media_type=CONTENT_TYPE_LATEST)


# ReDoc's bundle shows Redocly's logo from their CDN in its sidebar: served
# here with an empty image in its place, so the page asks no other host.
REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
EMPTY_IMAGE = (
    b"data:image/gif;base64,R0lGODlhAQABAAAAACH5BAEKAAEALAAAAAABAAEAAAICTAEAOw=="
)


@cache
def _redoc_bundle() -> bytes:
    bundle = (files("fastapi_offline") / "static" / "redoc.standalone.js").read_bytes()
    return bundle.replace(REDOC_LOGO, EMPTY_IMAGE)


def install_docs(app: FastAPI) -> None:
    """``/docs`` and ``/redoc`` with every asset served by the service itself."""
    static = files("fastapi_offline") / "static"

    @app.get(f"{ASSETS}/redoc.js", include_in_schema=False)
    async def redoc_bundle() -> Response:
        return Response(
            _redoc_bundle(),
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    app.mount(ASSETS, StaticFiles(directory=str(static)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{ASSETS}/redoc.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
