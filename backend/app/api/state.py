"""What the lifespan builds, on ``app.state.service``: one typed object that
the routes, the fast path and the middleware read (``service_of()``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.api.deps import Services
from app.core.config import Settings
from app.core.loop import GcMonitor, LoopMonitor
from app.core.middleware import Runtime
from app.services.changes import ChangeService
from app.services.compat import CompatService
from app.services.work import Limits
from app.storage.aof import AppendOnlyLog
from app.storage.base import StoreBackend
from app.storage.dbfile import DbFile


@dataclass
class ServiceState:
    settings: Settings
    started: float
    store: StoreBackend
    limits: Limits
    services: Services
    runtime: Runtime
    gc_monitor: GcMonitor
    loop_monitor: LoopMonitor
    changes: ChangeService
    aof: AppendOnlyLog | None = None
    # ``memdb serve``: json-server's routes, and the db.json written back
    compat: CompatService | None = None
    dbfile: DbFile | None = None
    # the data could not be loaded: the server stops (exit 1)
    fatal: bool = False


def service_of(app: Any) -> ServiceState | None:
    """The app's state, or None before its lifespan has built it (read from
    the state's dict: ``State.__getattr__`` costs a call on every request)."""
    found: ServiceState | None = app.state._state.get("service")
    return found
