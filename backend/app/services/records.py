"""Records: create, read, update (merge and merge patch), delete, drop; the built-in rules.

Every rule that must hold atomically (ids, unique values, references, limits,
compare-and-set) is the store's (``app/storage/base.py``); this service checks
what can be checked before the store is asked, and turns the store's refusals
into the domain errors clients see.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import Any, Sequence

import anyio.to_thread

from app.core.clock import RFC3339
from app.core.errors import (
    Conflict,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
    field_error,
)
from app.core.etags import etag_matches, expected_versions
from app.core.jsonbody import LARGE_BODY
from app.schemas.builtin import BUILTIN, Schemas
from app.services.errors import store_errors, translate
from app.services.passwords import PasswordHasher
from app.services.validation import (
    check_table_name,
    field_errors,
    model_errors,
    normalise_email,
    normalise_id,
    raise_if,
    schema_errors,
    valid_record_id,
)
from app.services.work import Limits
from app.storage.base import Change, Record, StoreBackend, StoreError, record_version
from app.storage.keys import MISSING
from app.storage.merge import merge_patch

Loc = list[str | int]


def now_iso() -> str:
    """The current UTC time in RFC 3339 with microseconds and a ``Z``."""
    return RFC3339.now()


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"
)


# how the service writes a time, and a dump gives it back
_CANONICAL = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


def _timestamp(
    value: Any, loc: Loc, errors: list[dict[str, Any]], exact: bool = False
) -> str:
    """An imported RFC 3339 timestamp, written as the service writes times
    (UTC, microseconds, ``Z``: the order of the text is the order of the
    times); one already so, as a dump gives it, is kept as it is, and so is
    any (valid) one when ``exact``."""
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        try:
            when = datetime.fromisoformat(value.upper())
            utc = when.astimezone(timezone.utc)
        except (ValueError, OverflowError):
            pass
        else:
            if exact or _CANONICAL.fullmatch(value):
                return value
            return (
                f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:"
                f"{utc.minute:02d}:{utc.second:02d}.{utc.microsecond:06d}Z"
            )
    errors.append(
        field_error(loc, "an RFC 3339 timestamp with a time zone", "datetime")
    )
    return ""


_ABSENT = object()  # a timestamp the imported record does not give


def _imported_times(
    created_at: Any,
    updated_at: Any,
    now: str,
    loc: Loc,
    errors: list[dict[str, Any]],
    exact: bool,
) -> tuple[str, str]:
    """An imported record's ``created_at`` and ``updated_at``: as given (see
    ``_timestamp``); ``updated_at`` is ``created_at`` when not given, and
    ``created_at`` the given ``updated_at`` (else now) when not given. An
    update before the creation is refused, except as ``memdb serve`` reads a
    db.json (``exact``: kept as written)."""
    updated = None
    if updated_at is not _ABSENT:
        updated = _timestamp(updated_at, [*loc, "updated_at"], errors, exact)
    if created_at is _ABSENT:
        created = updated or now
    else:
        created = _timestamp(created_at, [*loc, "created_at"], errors, exact)
    if updated is None:
        updated = created
    if created and updated and not exact and updated < created:
        errors.append(
            field_error(
                [*loc, "updated_at"],
                f"earlier than created_at ({created})",
                "timestamp_order",
            )
        )
    return created, updated


class RecordService:
    """The rules of records; the only writer of the store's records."""

    def __init__(
        self,
        store: StoreBackend,
        *,
        hasher: PasswordHasher,
        max_bulk: int,
        max_passwords: int = 100,
        limits: Limits | None = None,
        schemas: Schemas = BUILTIN,
    ) -> None:
        self.store = store
        self.schemas = schemas
        self.hasher = hasher
        self.max_bulk = max_bulk
        self.max_passwords = max_passwords
        self.limits = limits or Limits(budget=20_000_000, max_heavy=4)

    # -- create ------------------------------------------------------------

    async def create_records(
        self, table: str, items: list[Any], *, bulk: bool, weight: int = 0
    ) -> list[Record]:
        """Validate every item, hash passwords, then insert all or none.

        ``weight`` is the size of the body the items came in: a large one is
        checked in a worker thread, as a heavy request, so that the event loop
        keeps answering meanwhile."""
        check_table_name(table)
        loc: Loc = ["data"]
        if len(items) > self.max_bulk:
            raise ValidationFailed(
                f"a bulk create takes at most {self.max_bulk} records",
                details=[
                    field_error(loc, f"more than {self.max_bulk} items", "too_long")
                ],
            )
        if bulk and not items:
            raise ValidationFailed(
                "a bulk create needs at least one record",
                details=[field_error(loc, "an empty list", "too_short")],
            )
        if weight > LARGE_BODY or len(items) > 64:
            with self.limits.work() as work:
                work.become_heavy()
                records, passwords = await anyio.to_thread.run_sync(
                    self._prepare_all, table, items, bulk
                )
        else:
            records, passwords = self._prepare_all(table, items, bulk)
        if bulk:
            refuse_repeated_ids(table, records, loc)
        with store_errors(table=table, loc=loc, bulk=bulk, records={table: records}):
            secrets = None
            if any(passwords):
                self.check_passwords(passwords, loc)
                # refuse a taken id or email, a missing reference, a full store
                # before paying for the password hashes; insert checks again
                await self.store.check_insert(table, records)
                secrets = await self.hash_all(passwords)
            await self.store.insert(table, records, secrets)
        return records

    def _prepare_all(
        self, table: str, items: list[Any], bulk: bool
    ) -> tuple[list[Record], list[str | None]]:
        loc: Loc = ["data"]
        now = now_iso()
        records: list[Record] = []
        passwords: list[str | None] = []
        errors: list[dict[str, Any]] = []
        for position, item in enumerate(items):
            where = [*loc, position] if bulk else loc
            record, password, item_errors = self.prepare_record(table, item, where, now)
            errors.extend(item_errors)
            records.append(record)
            passwords.append(password)
        raise_if(errors)
        return records, passwords

    def check_passwords(self, passwords: list[str | None], loc: Loc) -> None:
        """At most ``max_passwords`` password hashes for one request (each
        costs tens of milliseconds of a core and 64 MiB)."""
        count = sum(1 for p in passwords if p is not None)
        if count > self.max_passwords:
            raise ValidationFailed(
                f"one request may set at most {self.max_passwords} passwords "
                f"(MEMDB_MAX_PASSWORDS); this one sets {count}",
                details=[field_error(loc, "too many passwords", "too_many_passwords")],
            )

    def prepare_record(
        self,
        table: str,
        item: Any,
        loc: Loc,
        now: str,
        *,
        imported: bool = False,
        exact_times: bool = False,
    ) -> tuple[Record, str | None, list[dict[str, Any]]]:
        """A new record from client input: its id, checked fields, timestamps.

        Imported records keep their ``created_at``/``updated_at`` when given, so
        that a dump loads back exactly. Returns the record, the plain password to
        hash (users only) and the errors found."""
        if not isinstance(item, dict):
            return (
                {},
                None,
                [field_error(loc, "a record is a JSON object", "dict_type")],
            )
        fields = dict(item)
        errors: list[dict[str, Any]] = []
        record_id = uuid.uuid4().hex if "id" not in fields else None
        if record_id is None:
            try:
                record_id = normalise_id(fields.pop("id"), [*loc, "id"])
            except ValidationFailed as exc:
                errors.extend(exc.details)
                record_id = ""
        created, updated = now, now
        if imported:
            created, updated = _imported_times(
                fields.pop("created_at", _ABSENT),
                fields.pop("updated_at", _ABSENT),
                now,
                loc,
                errors,
                exact_times,
            )
        errors.extend(field_errors(fields, loc))
        if errors:
            return {}, None, errors
        fields, password, errors = self._apply_schema(table, fields, loc)
        record = {
            "id": record_id,
            **fields,
            "created_at": created,
            "updated_at": updated,
        }
        return record, password, errors

    def _apply_schema(
        self, table: str, fields: dict[str, Any], loc: Loc
    ) -> tuple[dict[str, Any], str | None, list[dict[str, Any]]]:
        """Check a built-in schema; split off the write-only password; normalise."""
        errors = schema_errors(table, fields, loc, self.schemas)
        if errors:
            return fields, None, errors
        password = None
        for name in self.schemas.write_only(table):
            password = fields.pop(name, None)
        self.normalise_fields(table, fields)
        return fields, password, []

    async def hash_all(
        self, passwords: list[str | None]
    ) -> list[dict[str, Any] | None] | None:
        if not any(passwords):
            return None
        return [
            {"password": await self.hasher.hash(p)} if p is not None else None
            for p in passwords
        ]

    def normalise_fields(self, table: str, fields: dict[str, Any]) -> None:
        """What is stored in one form only: email addresses (a user's)."""
        for name in self.schemas.rules.emails.get(table, ()):
            if isinstance(fields.get(name), str):
                fields[name] = normalise_email(fields[name])

    async def normalise_stored_emails(self) -> int:
        """Bring stored email addresses to their normalised form (data written
        before addresses were normalised); returns how many changed. Two users
        whose addresses are one mailbox raise ``Conflict`` naming both."""
        changed = 0
        for table, names in self.schemas.rules.emails.items():
            for name in names:
                changed += await self._normalise_stored(table, name)
        return changed

    async def _normalise_stored(self, table: str, name: str) -> int:
        owners: dict[str, str] = {}
        changed: list[tuple[Record, str]] = []
        with store_errors(table=table):
            scan = await self.store.scan(table)
            async for batch in scan.batches():
                for record in batch:
                    email = record.get(name)
                    if not isinstance(email, str):
                        continue
                    normal = normalise_email(email)
                    other = owners.setdefault(normal, record["id"])
                    if other != record["id"]:
                        raise Conflict(
                            f"{table} {other!r} and {record['id']!r} have the same "
                            f"{name} once normalised ({normal!r}); remove or change "
                            "one of them"
                        )
                    if normal != email:
                        changed.append((record, normal))
            for record, normal in changed:
                change = Change(
                    fields={name: normal}, patch=False, updated_at=record["updated_at"]
                )
                await self.store.update(table, record["id"], change)
        return len(changed)

    # -- read --------------------------------------------------------------

    async def read_record(self, table: str, record_id: str) -> Record:
        check_table_name(table)
        try:  # the hottest read: no context manager around it
            record = await self.store.read(table, record_id)
        except StoreError as exc:
            raise translate(exc, table=table) or exc from None
        if record is not None:
            return record
        with store_errors(table=table):
            if not await self.store.has_table(table):
                raise NotFound(f"no table named {table!r}")
        raise NotFound(f"no record with id {record_id!r} in {table!r}")

    # -- update ------------------------------------------------------------

    async def update_record(
        self,
        table: str,
        record_id: str,
        data: Any,
        *,
        patch: bool,
        expected: frozenset[str] | None = None,
        loc: Sequence[str | int] = ("data",),
        replace: bool = False,
    ) -> Record:
        """PUT merges the given fields; PATCH applies a JSON merge patch (null
        removes); ``replace`` makes the given fields the record's only ones.
        ``expected``: the versions ``If-Match`` allows (any: ``None``);
        ``loc``: where the fields are in the request's data. The fields are
        checked here (so that only they can fail: the stored record was
        valid), then merged by the store, atomically."""
        check_table_name(table)
        where = list(loc)
        fields = _update_fields(data, record_id, where)
        raise_if(field_errors(fields, where))
        secret = await self._split_secret(table, fields, where)
        if replace:
            errors = schema_errors(table, fields, where, self.schemas)
        else:
            errors = _change_errors(table, fields, where, self.schemas, patch=patch)
        if errors:
            await self.read_record(table, record_id)  # a missing record is 404 first
            raise_if(errors)
        self.normalise_fields(table, fields)
        change = Change(
            fields=fields,
            patch=patch,
            updated_at=now_iso(),
            expected=expected,
            secret=secret,
            replace=replace,
        )
        with store_errors(table=table, record_id=record_id, loc=where):
            return await self.store.update(table, record_id, change)

    async def _split_secret(self, table: str, fields: dict[str, Any], loc: Loc) -> Any:
        """The write-only fields of an update taken out and hashed: the new
        secret, ``None`` to clear it, or ``MISSING`` to keep it."""
        secret: Any = MISSING
        for name in self.schemas.write_only(table):
            if name in fields:
                value = fields.pop(name)
                if value is not None:
                    raise_if(schema_errors_of(table, {name: value}, loc, self.schemas))
                    secret = {name: await self.hasher.hash(value)}
                else:
                    secret = None
        return secret

    # -- delete ------------------------------------------------------------

    async def expected_for(
        self,
        table: str,
        record_id: str,
        if_match: str | None,
        if_none_match: str | None,
    ) -> frozenset[str] | None:
        """The versions a conditional write may change (RFC 9110 section 13):
        those ``If-Match`` names (any: ``None``); with ``If-None-Match``, 412
        when it names the record's version (or is ``*``), else only that
        version, so that the write happens on the record it was judged on."""
        expected = expected_versions(if_match)
        if if_none_match is None:
            return expected
        version = record_version(await self.read_record(table, record_id))
        if etag_matches(if_none_match, f'"{version}"'):
            raise PreconditionFailed("the record matches If-None-Match")
        return frozenset({version}) if expected is None else expected & {version}

    async def delete_record(
        self, table: str, record_id: str, *, expected: frozenset[str] | None = None
    ) -> None:
        check_table_name(table)
        with store_errors(table=table, record_id=record_id):
            await self.store.delete(table, record_id, expected=expected)

    async def drop_table(self, table: str) -> None:
        """Drop a table. A built-in table is emptied instead, keeping schema and indexes."""
        check_table_name(table)
        with store_errors(table=table):
            await self.store.drop(table)


def _update_fields(data: Any, record_id: str, loc: Loc) -> dict[str, Any]:
    """The fields of an update: an object, whose ``id`` (if any) is the record's."""
    if not isinstance(data, dict):
        raise ValidationFailed(
            "data must be a JSON object",
            details=[field_error(loc, "a JSON object is required", "dict_type")],
        )
    fields = dict(data)
    if "id" in fields:
        given = fields.pop("id")
        if isinstance(given, int) and not isinstance(given, bool):
            given = str(given)
        if given != record_id:
            raise ValidationFailed(
                "the id of a record cannot change",
                details=[
                    field_error(
                        [*loc, "id"], "differs from the id in the path", "read_only"
                    )
                ],
            )
    return fields


def schema_errors_of(
    table: str, fields: dict[str, Any], loc: Loc, schemas: Schemas = BUILTIN
) -> list[dict[str, Any]]:
    """The errors of ``fields`` alone against a built-in schema: validated over
    valid values of the fields they do not give."""
    model = schemas.models.get(table)
    if model is None:
        return []
    placeholders = schemas.placeholders.get(table, {})
    base = {k: v for k, v in placeholders.items() if k not in fields}
    return model_errors(model, {**base, **fields}, loc)


def _change_errors(
    table: str, fields: dict[str, Any], loc: Loc, schemas: Schemas, *, patch: bool
) -> list[dict[str, Any]]:
    """What is wrong with an update's fields on a built-in table: each field's
    value as it will be after the merge, and no required field removed."""
    model = schemas.models.get(table)
    if model is None:
        return []
    errors: list[dict[str, Any]] = []
    values: dict[str, Any] = {}
    for name, value in fields.items():
        if patch and value is None:
            info = model.model_fields.get(name)
            if info is None:  # removing a field the schema has no place for
                errors.append(
                    field_error(
                        [*loc, name],
                        "Extra inputs are not permitted",
                        "extra_forbidden",
                    )
                )
            elif info.is_required():
                errors.append(field_error([*loc, name], "Field required", "missing"))
            continue
        # a patch of a field that holds no object merges into nothing
        values[name] = merge_patch(None, value) if patch else value
    return errors + schema_errors_of(table, values, loc, schemas)


def refuse_repeated_ids(table: str, records: list[Record], loc: Loc) -> None:
    """409 naming the items of one bulk create or one table of an import that
    give the same id (the store would refuse them as taken, naming neither)."""
    first: dict[str, int] = {}
    for position, record in enumerate(records):
        seen = first.setdefault(record["id"], position)
        if seen != position:
            raise Conflict(
                f"records {seen} and {position} of the request both have the id "
                f"{record['id']!r}; nothing was written to {table}",
                details=[
                    field_error([*loc, position, "id"], "repeats an id", "unique")
                ],
            )


def is_valid_path_id(record_id: str) -> bool:
    return valid_record_id(record_id)
