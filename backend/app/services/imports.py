"""Bulk import in the json-server ``db.json`` shape: validate all, then apply at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import anyio.to_thread
import orjson

from app.core.errors import ValidationFailed, field_error
from app.core.jsonbody import LARGE_BODY, check_integers
from app.services.errors import store_errors
from app.services.records import RecordService, now_iso, refuse_repeated_ids
from app.services.validation import TABLE_NAME
from app.storage.base import Record, StoreBackend

Mode = Literal["merge", "replace"]
_MAX_DETAILS = 50
# json-server's singular ("object") resource, ``"profile": {"name": ...}``, is a
# table of one record, stored under this reserved id
SINGLETON_ID = "_singleton"
# json-server 1.x writes ``"$schema": "./node_modules/json-server/schema.json"``
# into db.json: a string under this key is not a table, and is skipped
SCHEMA_KEY = "$schema"


@dataclass
class ImportPlan:
    """Validated tables, users first so that orders can name them.
    ``untimed``: by table, the records given no ``created_at`` or no
    ``updated_at`` (by id: whether each was given), whose times a merge
    takes from the stored record it names; ``now``: the import's time;
    ``exact``: times kept as written (``memdb serve``'s db.json), not ordered."""

    tables: list[tuple[str, list[Record], list[str | None]]]
    untimed: dict[str, dict[str, tuple[bool, bool]]] = field(default_factory=dict)
    now: str = ""
    exact: bool = False


class ImportService:
    def __init__(self, store: StoreBackend, records: RecordService) -> None:
        self.store = store
        self.records = records

    def plan(self, payload: Any, *, exact_times: bool = False) -> ImportPlan:
        """Check every table and record; raise one 422 listing what is wrong.
        ``exact_times``: timestamps are kept as written (a db.json's are its
        own), not written in UTC as the service writes them.

        A table is a list of records, or an object: json-server's singular
        resource, stored as a table of one record whose id is ``SINGLETON_ID``
        (an object that holds an ``id`` of its own is refused). A string under
        ``$schema`` (json-server 1.x) is skipped."""
        if not isinstance(payload, dict):
            raise ValidationFailed(
                'an import is {"<table>": [records...], ...}',
                details=[field_error([], "a JSON object of tables", "dict_type")],
            )
        now = now_iso()
        errors: list[dict[str, Any]] = []
        tables: list[tuple[str, list[Record], list[str | None]]] = []
        untimed: dict[str, dict[str, tuple[bool, bool]]] = {}
        names = self.records.schemas.rules.load_order(
            name
            for name, value in payload.items()
            if not (name == SCHEMA_KEY and isinstance(value, str))
        )
        for name in names:
            rows = payload[name]
            loc: list[str | int] = [name]
            if not TABLE_NAME.fullmatch(name):
                errors.append(field_error(loc, "invalid table name", "table_name"))
                continue
            single = isinstance(rows, dict)
            if single:
                if "id" in rows:
                    errors.append(
                        field_error(
                            loc,
                            "an object resource cannot hold an id (it is stored "
                            f"as the one record {SINGLETON_ID!r})",
                            "object_id",
                        )
                    )
                    continue
                rows = [{"id": SINGLETON_ID, **rows}]
            elif not isinstance(rows, list):
                errors.append(
                    field_error(
                        loc,
                        "a table is a list of records, or an object (a table of "
                        "one record)",
                        "list_type",
                    )
                )
                continue
            records: list[Record] = []
            passwords: list[str | None] = []
            for position, item in enumerate(rows):
                record, password, found = self.records.prepare_record(
                    name,
                    item,
                    loc if single else [*loc, position],
                    now,
                    imported=True,
                    exact_times=exact_times,
                )
                errors.extend(found)
                records.append(record)
                passwords.append(password)
                if len(errors) >= _MAX_DETAILS:
                    break
            tables.append((name, records, passwords))
            untimed[name] = {
                record["id"]: ("created_at" in item, "updated_at" in item)
                for record, item in zip(records, rows)
                if "id" in record
                and ("created_at" not in item or "updated_at" not in item)
            }
            if len(errors) >= _MAX_DETAILS:
                break
        if errors:
            raise ValidationFailed(
                "the import is not valid; nothing was written", details=errors
            )
        for name, records, _ in tables:
            refuse_repeated_ids(name, records, [name])
        return ImportPlan(tables, untimed, now, exact_times)

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
            [p for _, _, passwords in plan.tables for p in passwords], []
        )
        given = {name: records for name, records, _ in plan.tables}
        with store_errors(by_table=True, records=given):
            if not replace:
                await self._keep_created(plan)
            await self.store.check_load(
                [(name, records) for name, records, _ in plan.tables], replace=replace
            )
            batches = []
            for name, records, passwords in plan.tables:
                secrets = await self.records.hash_all(passwords)
                batches.append((name, records, secrets))
            await self.store.load(batches, replace=replace)
        return {name: len(records) for name, records, _ in plan.tables}

    async def _keep_created(self, plan: ImportPlan) -> None:
        """A merge that names a stored record is an update of it: without a
        ``created_at`` it keeps the stored one (it was created then, as an
        update keeps it), and without an ``updated_at`` it was updated now;
        an ``updated_at`` given earlier than the stored ``created_at`` is 422."""
        errors: list[dict[str, Any]] = []
        for name, records, _ in plan.tables:
            untimed = plan.untimed.get(name)
            if not untimed or not await self.store.has_table(name):
                continue
            found = await self.store.read_many(name, list(untimed))
            stored = {r["id"]: r["created_at"] for r in found if "created_at" in r}
            for position, record in enumerate(records):
                created = stored.get(record["id"])
                if created is None:
                    continue
                has_created, has_updated = untimed[record["id"]]
                if not has_created:
                    record["created_at"] = created
                if not has_updated:
                    record["updated_at"] = max(plan.now, record["created_at"])
                elif (
                    not has_created
                    and not plan.exact
                    and record["updated_at"] < created
                ):
                    where = [name] if record["id"] == SINGLETON_ID else [name, position]
                    errors.append(
                        field_error(
                            [*where, "updated_at"],
                            f"earlier than the stored record's created_at ({created})",
                            "timestamp_order",
                        )
                    )
        if errors:
            raise ValidationFailed(
                "the import is not valid; nothing was written",
                details=errors[:_MAX_DETAILS],
            )
