"""``/stats``: counts, index sizes, memory, uptime and per-route latency, as JSON."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.deps import StatsDep
from app.api.responses import errors
from app.core.http import json_response
from app.core.metrics import Metrics
from app.schemas.records import StatsOut

router = APIRouter(prefix="/api/v1/stats", tags=["operations"])


@router.get(
    "",
    summary="Service statistics",
    response_model=None,
    responses={
        200: {"model": StatsOut, "description": "Counts, memory, latency"},
        **errors(),
    },
)
async def read_stats(request: Request, stats: StatsDep) -> Response:
    """Records and index entries per table, the store's memory estimate and the
    process RSS, uptime, the event loop's lag (latest and worst of the last 10
    seconds), heavy requests and refusals, and per-route request counts with
    p50/p95/p99 latency over each route's latest 1024 requests."""
    metrics: Metrics = request.app.state.service.runtime.metrics
    return json_response(
        {
            "uptime_s": round(metrics.uptime(), 3),
            **(await stats.store_stats()),
            "event_loop": metrics.loop_summary(),
            "work": metrics.work_summary(),
            "requests": metrics.route_summary(),
        }
    )
