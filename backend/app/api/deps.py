"""Dependencies: the state built in the lifespan, handed to routes by type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request

from app.services.imports import ImportService
from app.services.joins import JoinService
from app.services.query import QueryService
from app.services.records import RecordService
from app.services.stats import StatsService
from app.services.tables import TableService
from app.services.validation import TABLE_NAME


@dataclass(frozen=True)
class Services:
    records: RecordService
    joins: JoinService
    tables: TableService
    queries: QueryService
    imports: ImportService
    stats: StatsService


async def get_records(request: Request) -> RecordService:
    services: Services = request.app.state.service.services
    return services.records


async def get_joins(request: Request) -> JoinService:
    services: Services = request.app.state.service.services
    return services.joins


async def get_tables(request: Request) -> TableService:
    services: Services = request.app.state.service.services
    return services.tables


async def get_queries(request: Request) -> QueryService:
    services: Services = request.app.state.service.services
    return services.queries


async def get_imports(request: Request) -> ImportService:
    services: Services = request.app.state.service.services
    return services.imports


async def get_stats(request: Request) -> StatsService:
    services: Services = request.app.state.service.services
    return services.stats


RecordsDep = Annotated[RecordService, Depends(get_records)]
JoinsDep = Annotated[JoinService, Depends(get_joins)]
TablesDep = Annotated[TableService, Depends(get_tables)]
QueriesDep = Annotated[QueryService, Depends(get_queries)]
ImportsDep = Annotated[ImportService, Depends(get_imports)]
StatsDep = Annotated[StatsService, Depends(get_stats)]

TABLE_PATTERN = f"^{TABLE_NAME.pattern}$"
TableName = Annotated[
    str, Path(pattern=TABLE_PATTERN, description="Table name", examples=["users"])
]
RecordId = Annotated[str, Path(description="Record id", examples=["3f2c9a4e"])]
