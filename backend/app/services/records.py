"""Records: create, read, update (merge and merge patch), delete, drop; the built-in rules."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread

from app.core.errors import (
    Conflict,
    NotFound,
    PreconditionFailed,
    StoreFull,
    ValidationFailed,
    field_error,
)
from app.core.http import LARGE_BODY, etag_matches, record_etag
from app.schemas.builtin import BUILTIN_INDEXES, BUILTIN_SCHEMAS
from app.services.passwords import PasswordHasher
from app.services.validation import (
    check_table_name,
    field_errors,
    normalise_email,
    normalise_id,
    raise_if,
    schema_errors,
    valid_record_id,
)
from app.services.work import Limits
from app.storage.memory import (
    CapacityExceeded,
    DuplicateKey,
    Record,
    StaleRecord,
    Store,
    UnknownRecord,
)

Loc = list[str | int]
_RETRIES = 16


def now_iso() -> str:
    """The current UTC time in RFC 3339 with microseconds and a ``Z``."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"
)


def _timestamp(value: Any, loc: Loc, errors: list[dict[str, Any]]) -> str:
    """An imported RFC 3339 timestamp, kept exactly as given."""
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        try:
            datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return value
    errors.append(
        field_error(loc, "an RFC 3339 timestamp with a time zone", "datetime")
    )
    return ""


def ensure_builtins(store: Store) -> None:
    """Create the built-in tables and their indexes where they are missing."""
    with store.lock:
        for name in BUILTIN_SCHEMAS:
            store.create_table(name)
        for table, field, unique in BUILTIN_INDEXES:
            existing = store.require(table).indexes
            if field not in existing:
                store.create_index(table, field, unique=unique)


def conflict_from(exc: DuplicateKey) -> Conflict:
    if exc.field == "id":
        message = f"{exc.table} already has a record with id {exc.value!r}"
    else:
        message = f"{exc.table}.{exc.field} must be unique; the value is already taken"
        if exc.ids is not None:
            message += f" (records {exc.ids[0]!r} and {exc.ids[1]!r})"
    return Conflict(
        message,
        details=[field_error(["body", "data", exc.field], "already taken", "unique")],
    )


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge recursively, ``null`` removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class RecordService:
    """The rules of records; the only writer of the store's records."""

    def __init__(
        self,
        store: Store,
        *,
        hasher: PasswordHasher,
        max_bulk: int,
        max_passwords: int = 100,
        limits: Limits | None = None,
    ) -> None:
        self.store = store
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
        loc: Loc = ["body", "data"]
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
        self.check_passwords(passwords, loc)
        if any(passwords):
            # refuse a taken id or email before paying for the password hashes;
            # the insert below checks again, atomically
            try:
                self.store.check_insert(table, records)
            except DuplicateKey as exc:
                raise conflict_from(exc) from None
            except CapacityExceeded as exc:
                raise StoreFull(str(exc)) from None
        secrets = await self.hash_all(passwords)
        with self.store.lock:
            self.check_references(table, records, loc, bulk=bulk)
            try:
                self.store.insert(table, records, secrets=secrets)
            except DuplicateKey as exc:
                raise conflict_from(exc) from None
            except CapacityExceeded as exc:
                raise StoreFull(str(exc)) from None
        await self.store.sync()
        return records

    def _prepare_all(
        self, table: str, items: list[Any], bulk: bool
    ) -> tuple[list[Record], list[str | None]]:
        loc: Loc = ["body", "data"]
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
        self, table: str, item: Any, loc: Loc, now: str, *, imported: bool = False
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
            created = _timestamp(
                fields.pop("created_at", now), [*loc, "created_at"], errors
            )
            updated = _timestamp(
                fields.pop("updated_at", created), [*loc, "updated_at"], errors
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

    @staticmethod
    def _apply_schema(
        table: str, fields: dict[str, Any], loc: Loc
    ) -> tuple[dict[str, Any], str | None, list[dict[str, Any]]]:
        """Check a built-in schema; split off the password; normalise the email."""
        errors = schema_errors(table, fields, loc)
        if errors or table != "users":
            return fields, None, errors
        password = fields.pop("password", None)
        fields["email"] = normalise_email(fields["email"])
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

    def check_references(
        self, table: str, records: list[Record], loc: Loc, *, bulk: bool = False
    ) -> None:
        """Orders must name existing users. Called with the store's lock held."""
        if table != "orders":
            return
        users = self.store.require("users").records
        errors = [
            field_error(
                [*loc, position, "user_id"] if bulk else [*loc, "user_id"],
                f"no user has id {record['user_id']!r}",
                "reference",
            )
            for position, record in enumerate(records)
            if record["user_id"] not in users
        ]
        raise_if(errors, "an order must name an existing user")

    def normalise_stored_emails(self) -> int:
        """Bring the stored users' emails to their normalised form (data written
        before addresses were normalised); returns how many changed. Two users
        whose addresses are one mailbox raise ``Conflict`` naming both."""
        with self.store.lock:
            users = self.store.require("users").records
            owners: dict[str, str] = {}
            changed: list[Record] = []
            for record_id, user in users.items():
                email = user.get("email")
                if not isinstance(email, str):
                    continue
                normal = normalise_email(email)
                other = owners.setdefault(normal, record_id)
                if other != record_id:
                    raise Conflict(
                        f"users {other!r} and {record_id!r} have the same email "
                        f"once normalised ({normal!r}); remove or change one of them"
                    )
                if normal != email:
                    changed.append({**user, "email": normal})
            for record in changed:
                self.store.replace("users", record)
        return len(changed)

    # -- read --------------------------------------------------------------

    def read_record(self, table: str, record_id: str) -> Record:
        check_table_name(table)
        record = self.store.get(table, record_id)
        if record is None:
            if self.store.table(table) is None:
                raise NotFound(f"no table named {table!r}")
            raise NotFound(f"no record with id {record_id!r} in {table!r}")
        return record

    # -- update ------------------------------------------------------------

    async def update_record(
        self,
        table: str,
        record_id: str,
        data: Any,
        *,
        patch: bool,
        if_match: str | None,
    ) -> Record:
        """PUT merges the given fields; PATCH applies a JSON merge patch (null removes)."""
        loc: Loc = ["body", "data"]
        if not isinstance(data, dict):
            raise ValidationFailed(
                "data must be a JSON object",
                details=[field_error(loc, "a JSON object is required", "dict_type")],
            )
        data = dict(data)
        if "id" in data:
            given = data.pop("id")
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
        raise_if(field_errors(data, loc))
        record = self.read_record(table, record_id)
        fields, _ = self._merged(table, record, data, patch=patch, loc=loc)
        secret: Any = ...
        if table == "users" and "password" in data:
            password = data["password"]
            secret = (
                {"password": await self.hasher.hash(password)} if password else None
            )
        for _attempt in range(_RETRIES):
            old = self.read_record(table, record_id)
            if if_match is not None and not etag_matches(
                if_match, record_etag(old), weak=False
            ):
                raise PreconditionFailed(
                    "the record has changed (If-Match does not match)"
                )
            if old is not record:
                record = old
                fields, _ = self._merged(table, record, data, patch=patch, loc=loc)
            new = {
                "id": record_id,
                **fields,
                "created_at": old["created_at"],
                "updated_at": now_iso(),
            }
            with self.store.lock:
                self.check_references(table, [new], loc)
                try:
                    if secret is ...:
                        self.store.replace(table, new, expected=old)
                    else:
                        self.store.replace(table, new, expected=old, secret=secret)
                except StaleRecord:
                    continue
                except UnknownRecord:
                    raise NotFound(
                        f"no record with id {record_id!r} in {table!r}"
                    ) from None
                except DuplicateKey as exc:
                    raise conflict_from(exc) from None
            await self.store.sync()
            return new
        raise Conflict("the record is changing too fast; try again")  # pragma: no cover

    def _merged(
        self, table: str, record: Record, data: dict[str, Any], *, patch: bool, loc: Loc
    ) -> tuple[dict[str, Any], str | None]:
        current = {
            k: v
            for k, v in record.items()
            if k not in ("id", "created_at", "updated_at")
        }
        if patch:
            fields = merge_patch(current, data)
        else:
            fields = {**current, **data}
        check = dict(fields)
        if table == "users":
            check.pop("password", None)
            if data.get("password") is not None:
                check["password"] = data["password"]
        raise_if(field_errors(fields, loc))
        fields, password, errors = self._apply_schema(table, check, loc)
        raise_if(errors)
        return fields, password

    # -- delete ------------------------------------------------------------

    async def delete_record(
        self, table: str, record_id: str, *, if_match: str | None
    ) -> None:
        with self.store.lock:
            old = self.read_record(table, record_id)
            if if_match is not None and not etag_matches(
                if_match, record_etag(old), weak=False
            ):
                raise PreconditionFailed(
                    "the record has changed (If-Match does not match)"
                )
            if table == "users":
                orders = self.store.require("orders").indexes["user_id"]
                if orders.size(record_id):
                    raise Conflict(
                        "the user still has orders; delete them first",
                        details=[
                            field_error(
                                ["orders", "user_id"], "referenced", "reference"
                            )
                        ],
                    )
            self.store.delete(table, record_id)
        await self.store.sync()

    async def drop_table(self, table: str) -> None:
        """Drop a table. A built-in table is emptied instead, keeping schema and indexes."""
        check_table_name(table)
        with self.store.lock:
            if self.store.table(table) is None:
                raise NotFound(f"no table named {table!r}")
            if table not in BUILTIN_SCHEMAS:
                self.store.drop(table)
            elif table == "users" and self.store.require("orders").records:
                raise Conflict("orders still reference users; drop orders first")
            else:
                self.store.clear(table)
        await self.store.sync()


def is_valid_path_id(record_id: str) -> bool:
    return valid_record_id(record_id)
