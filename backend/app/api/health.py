"""Liveness and readiness, outside ``/api/v1`` and never behind a key."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app import __version__
from app.api.responses import errors
from app.api.state import service_of
from app.core.handlers import error_response
from app.core.http import json_response
from app.schemas.records import Health, Ready

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    summary="Liveness",
    response_model=None,
    responses={200: {"model": Health, "description": "The process is up"}},
)
async def health(request: Request) -> Response:
    """200 while the process serves requests, loaded or not."""
    service = service_of(request.app)
    started = time.monotonic() if service is None else service.started
    return json_response(
        {
            "status": "ok",
            "version": __version__,
            "uptime_s": round(time.monotonic() - started, 3),
        }
    )


@router.get(
    "/ready",
    summary="Readiness",
    response_model=None,
    responses={
        200: {"model": Ready, "description": "The store is loaded"},
        **errors(keyed=False),
    },
)
async def ready(request: Request) -> Response:
    """503 ``not_ready`` until the store is loaded, then 200 while the store
    can serve (503 ``store_unavailable`` while a Redis store cannot: Redis out
    of reach or loading; over a Cluster, a master out of reach or one that
    says ``cluster_state`` is not ``ok``)."""
    service = service_of(request.app)
    if service is None or not service.runtime.ready:
        loading = service.runtime.load_error if service is not None else None
        message = loading or "the store is still loading"
        return error_response(request, status=503, code="not_ready", message=message)
    problem = await service.store.state()
    if problem is not None:
        return error_response(
            request,
            status=503,
            code="store_unavailable",
            message=f"the store is unavailable ({problem})",
            headers={"Retry-After": "1"},
        )
    return json_response({"status": "ready", "store": service.store.kind})
