"""Gathers the v1 routers; each carries its full ``/api/v1/...`` prefix, so the
access log and metrics see whole route templates."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.v1 import changes, data, dump, imports, join, stats, tables

router = APIRouter()
router.include_router(data.router)
router.include_router(join.router)
router.include_router(dump.router)
router.include_router(tables.router)
router.include_router(imports.router)
router.include_router(stats.router)
router.include_router(changes.router)
