"""Bulk import in the json-server ``db.json`` shape: validate all, then apply at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import anyio.to_thread
import orjson

from app.core.http import LARGE_BODY, check_integers
from app.core.errors import Conflict, StoreFull, ValidationFailed, field_error
from app.services.records import RecordService, conflict_from, now_iso
from app.services.validation import TABLE_NAME
from app.storage.memory import CapacityExceeded, DuplicateKey, Record, Store

Mode = Literal["merge", "replace"]
_MAX_DETAILS = 50
# An import of more records than this is checked and written in a worker thread.
_INLINE_RECORDS = 10_000


@dataclass
class ImportPlan:
    """Validated tables, users first so that orders can name them."""

    tables: list[tuple[str, list[Record], list[str | None]]]


class ImportService:
    def __init__(self, store: Store, records: RecordService) -> None:
        self.store = store
        self.records = records

    def plan(self, payload: Any) -> ImportPlan:
        """Check every table and record; raise one 422 listing what is wrong."""
        if not isinstance(payload, dict):
            raise ValidationFailed(
                'an import is {"<table>": [records...], ...}',
                details=[field_error(["body"], "a JSON object of tables", "dict_type")],
            )
        now = now_iso()
        errors: list[dict[str, Any]] = []
        tables: list[tuple[str, list[Record], list[str | None]]] = []
        names = sorted(payload, key=lambda n: {"users": 0, "orders": 1}.get(n, 2))
        for name in names:
            rows = payload[name]
            loc: list[str | int] = ["body", name]
            if not TABLE_NAME.fullmatch(name):
                errors.append(field_error(loc, "invalid table name", "table_name"))
                continue
            if not isinstance(rows, list):
                errors.append(
                    field_error(loc, "a table is a list of records", "list_type")
                )
                continue
            records: list[Record] = []
            passwords: list[str | None] = []
            for position, item in enumerate(rows):
                record, password, found = self.records.prepare_record(
                    name, item, [*loc, position], now, imported=True
                )
                errors.extend(found)
                records.append(record)
                passwords.append(password)
                if len(errors) >= _MAX_DETAILS:
                    break
            tables.append((name, records, passwords))
            if len(errors) >= _MAX_DETAILS:
                break
        if errors:
            raise ValidationFailed(
                "the import is not valid; nothing was written", details=errors
            )
        return ImportPlan(tables)

    def plan_bytes(self, raw: bytes) -> ImportPlan:
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ValidationFailed(
                "the file is not valid JSON",
                details=[field_error(["file"], exc.msg, "json_invalid")],
            ) from None
        check_integers(raw)
        return self.plan(payload)

    async def run(
        self, payload: Any, *, mode: Mode = "merge", weight: int = 0
    ) -> dict[str, int]:
        """Validate off the event loop (a large import as a heavy request),
        hash passwords, then write all or nothing."""
        with self.records.limits.work() as work:
            if weight > LARGE_BODY:
                work.become_heavy()
            plan = await anyio.to_thread.run_sync(self.plan, payload)
        return await self.apply(plan, mode=mode)

    async def apply(self, plan: ImportPlan, *, mode: Mode) -> dict[str, int]:
        """Check everything the write will check, then hash the passwords (at
        most ``max_passwords``), then write all or nothing (checked again)."""
        replace = mode == "replace"
        self.records.check_passwords(
            [p for _, _, passwords in plan.tables for p in passwords], ["body"]
        )
        unhashed = [(name, records, None) for name, records, _ in plan.tables]
        size = sum(len(records) for _, records, _ in plan.tables)
        await self._locked(size, self._check, plan, unhashed, replace, False)
        batches = []
        for name, records, passwords in plan.tables:
            secrets = await self.records.hash_all(passwords)
            batches.append((name, records, secrets))
        await self._locked(size, self._check, plan, batches, replace, True)
        await self.store.sync()
        return {name: len(records) for name, records, _ in plan.tables}

    async def _locked(self, size: int, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn`` (which takes the store's lock): on the event loop for a
        small import, in a worker thread for a large one (a seed file), so
        that the loop keeps answering meanwhile."""
        if size > _INLINE_RECORDS:
            await anyio.to_thread.run_sync(fn, *args)
        else:
            fn(*args)

    def _check(
        self, plan: ImportPlan, batches: list[Any], replace: bool, write: bool
    ) -> None:
        with self.store.lock:
            self._check_references(plan, replace=replace)
            self._check_store(batches, replace=replace, write=write)

    def _check_store(
        self, batches: list[Any], *, replace: bool, write: bool = False
    ) -> None:
        """Ids, unique indexes, the record and table limits (and the write)."""
        try:
            if write:
                self.store.load(batches, replace=replace)
            else:
                self.store.check_load(batches, replace=replace)
        except DuplicateKey as exc:
            raise conflict_from(exc) from None
        except CapacityExceeded as exc:
            raise StoreFull(str(exc)) from None

    def _check_references(self, plan: ImportPlan, *, replace: bool) -> None:
        """Orders name users that exist once the import is applied. Lock held."""
        tables = {name: records for name, records, _ in plan.tables}
        users = self.store.require("users").records
        user_ids: set[str] | dict[str, Record] = users
        if "users" in tables:
            imported = {r["id"] for r in tables["users"]}
            user_ids = imported if replace else imported | users.keys()
        orders = tables.get("orders")
        if orders is not None:
            errors = [
                field_error(
                    ["body", "orders", position, "user_id"],
                    f"no user has id {order['user_id']!r}",
                    "reference",
                )
                for position, order in enumerate(orders)
                if order["user_id"] not in user_ids
            ]
            if errors:
                raise ValidationFailed(
                    "an order must name an existing user; nothing was written",
                    details=errors[:_MAX_DETAILS],
                )
        if replace and "users" in tables and "orders" not in tables:
            kept = self.store.require("orders").records.values()
            if any(order["user_id"] not in user_ids for order in kept):
                raise Conflict(
                    "existing orders name users that the import would remove"
                )
