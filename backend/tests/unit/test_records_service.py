"""app.services.records: the rules of records, over a real store and fast argon2."""

from __future__ import annotations

import asyncio
import copy
import sys
import threading
import time
import uuid
from datetime import datetime
from typing import Any, Callable, Coroutine, Iterator, TypeVar

import pytest

from app.core.errors import (
    DATA,
    Conflict,
    DomainError,
    NotFound,
    PreconditionFailed,
    StoreFull,
    ValidationFailed,
)
from app.core.etags import record_etag
from app.services.passwords import PasswordHasher
from app.core.etags import expected_versions
from app.schemas.builtin import BUILTIN_RULES
from app.services.errors import conflict_from
from app.services.records import RecordService, is_valid_path_id, now_iso
from app.storage.base import DuplicateKey
from app.storage.memory import MemoryStore, Record
from app.storage.merge import merge_patch

from tests.conftest import USER
from tests.unit.helpers import store_state

T = TypeVar("T")

PASSWORD = str(USER["password"])
ORDER = {"product_name": "Widget Pro", "quantity": 2, "total_price": 99.99}


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def create(records: RecordService, table: str, item: Any) -> Record:
    return run(records.create_records(table, [item], bulk=False))[0]


def create_many(records: RecordService, table: str, items: list[Any]) -> list[Record]:
    return run(records.create_records(table, items, bulk=True))


def update(
    records: RecordService,
    table: str,
    record_id: str,
    data: Any,
    *,
    patch: bool = False,
    if_match: str | None = None,
) -> Record:
    return run(
        records.update_record(
            table, record_id, data, patch=patch, expected=expected_versions(if_match)
        )
    )


def read(records: RecordService, table: str, record_id: str) -> Record:
    return run(records.read_record(table, record_id))


def refused(
    records: RecordService, error: type[DomainError], call: Callable[[], object]
) -> DomainError:
    """``call`` raises ``error`` and leaves the store exactly as it was."""
    before = store_state(records.store.engine)
    with pytest.raises(error) as caught:
        call()
    assert store_state(records.store.engine) == before
    return caught.value


def fields_of(record: Record) -> dict[str, Any]:
    return {
        k: v for k, v in record.items() if k not in ("id", "created_at", "updated_at")
    }


@pytest.fixture
def user(records: RecordService) -> Record:
    return create(records, "users", dict(USER))


# -- create ----------------------------------------------------------------


def test_create_gives_a_server_id_and_timestamps(records: RecordService) -> None:
    record = create(records, "notes", {"text": "hi", "tags": ["a"], "n": None})
    assert list(record) == ["id", "text", "tags", "n", "created_at", "updated_at"]
    assert uuid.UUID(record["id"]).version == 4
    assert record["created_at"] == record["updated_at"]
    assert record["created_at"].endswith("Z")
    assert datetime.fromisoformat(record["created_at"]).utcoffset() is not None
    assert records.store.engine.get("notes", record["id"]) == record
    assert records.store.engine.snapshot("notes") == [record]


def test_server_ids_differ(records: RecordService) -> None:
    made = create_many(records, "notes", [{}, {}, {}])
    assert len({r["id"] for r in made}) == 3


def test_create_keeps_a_client_id_and_reads_integers_as_strings(
    records: RecordService,
) -> None:
    assert create(records, "notes", {"id": "my-id:1.x", "n": 1})["id"] == "my-id:1.x"
    assert create(records, "notes", {"id": 7})["id"] == "7"
    assert records.store.engine.get("notes", "7") is not None


def test_create_bulk_keeps_the_order(records: RecordService) -> None:
    made = create_many(records, "notes", [{"n": i} for i in range(5)])
    assert [r["n"] for r in made] == list(range(5))
    assert records.store.engine.snapshot("notes") == made


def test_create_refuses_a_taken_id(records: RecordService) -> None:
    create(records, "notes", {"id": "a"})
    error = refused(records, Conflict, lambda: create(records, "notes", {"id": "a"}))
    assert error.code == "conflict"
    assert error.status_code == 409
    assert error.details == [
        {"loc": ["data", "id"], "msg": "already taken", "type": "unique", "of": DATA}
    ]
    refused(
        records,
        Conflict,
        lambda: create_many(records, "notes", [{"id": "b"}, {"id": "a"}]),
    )
    assert records.store.engine.get("notes", "b") is None


def test_create_refuses_one_id_twice_in_a_batch(records: RecordService) -> None:
    refused(
        records,
        Conflict,
        lambda: create_many(records, "notes", [{"id": 1}, {"id": "1"}]),
    )
    assert records.store.engine.table("notes") is None


def test_a_bulk_create_with_one_bad_item_writes_nothing(records: RecordService) -> None:
    items: list[Any] = [{"ok": 1}, {"created_at": "x"}, {"ok": 3}, "not an object"]
    error = refused(records, ValidationFailed, lambda: create_many(records, "t", items))
    assert error.code == "validation_error"
    assert [(d["loc"], d["type"]) for d in error.details] == [
        (["data", 1, "created_at"], "read_only"),
        (["data", 3], "dict_type"),
    ]
    assert records.store.engine.table("t") is None


@pytest.mark.parametrize(
    ("item", "loc", "type_"),
    [
        (
            {"created_at": "2020-01-01T00:00:00Z"},
            ["data", "created_at"],
            "read_only",
        ),
        (
            {"updated_at": "2020-01-01T00:00:00Z"},
            ["data", "updated_at"],
            "read_only",
        ),
        ({"id": ".."}, ["data", "id"], "id"),
        ({"id": True}, ["data", "id"], "id"),
        ({"bad-name": 1}, ["data", "bad-name"], "field_name"),
        ({"s": "x" * (64 * 1024 + 1)}, ["data", "s"], "string_too_long"),
        (["a list"], ["data"], "dict_type"),
    ],
)
def test_create_refuses_an_invalid_record(
    records: RecordService, item: Any, loc: list[Any], type_: str
) -> None:
    error = refused(records, ValidationFailed, lambda: create(records, "notes", item))
    assert [(d["loc"], d["type"]) for d in error.details] == [(loc, type_)]
    assert records.store.engine.table("notes") is None


@pytest.mark.parametrize("table", ["", "1x", "a-b", "x" * 65])
def test_create_refuses_an_invalid_table_name(
    records: RecordService, table: str
) -> None:
    refused(records, ValidationFailed, lambda: create(records, table, {}))


def test_a_bulk_create_takes_at_most_max_bulk_items(
    memory: MemoryStore, hasher: PasswordHasher
) -> None:
    records = RecordService(memory, hasher=hasher, max_bulk=2)
    error = refused(
        records, ValidationFailed, lambda: create_many(records, "t", [{}, {}, {}])
    )
    assert [d["type"] for d in error.details] == ["too_long"]
    assert len(create_many(records, "t", [{}, {}])) == 2


def test_a_full_store_refuses_with_insufficient_storage(hasher: PasswordHasher) -> None:
    store = MemoryStore(max_records=2, rules=BUILTIN_RULES)
    store.ensure_builtins()
    records = RecordService(store, hasher=hasher, max_bulk=10)
    create(records, "t", {})
    error = refused(records, StoreFull, lambda: create_many(records, "t", [{}, {}]))
    assert (error.status_code, error.code) == (507, "insufficient_storage")
    create(records, "t", {})
    refused(records, StoreFull, lambda: create(records, "t", {}))


# -- users -----------------------------------------------------------------


def test_a_user_keeps_only_a_hash_of_the_password(
    records: RecordService, hasher: PasswordHasher, user: Record
) -> None:
    assert "password" not in user
    assert fields_of(user) == {
        "email": "john.doe@example.com",
        "full_name": "John Doe",
        "age": 30,
    }
    stored = records.store.engine.get("users", user["id"])
    assert stored == user
    secret = records.store.engine.require("users").secrets[user["id"]]
    assert set(secret) == {"password"}
    assert secret["password"].startswith("$argon2id$")
    assert PASSWORD not in secret["password"]
    assert hasher.verify(secret["password"], PASSWORD)
    assert not hasher.verify(secret["password"], "wrong password")


def test_a_user_without_a_password_has_no_secret(records: RecordService) -> None:
    made = create(records, "users", {"email": "a@example.com", "full_name": "A"})
    assert records.store.engine.require("users").secrets == {}
    assert "password" not in made


def test_emails_are_lowercased_and_unique(records: RecordService) -> None:
    made = create(records, "users", {**USER, "email": "John.Doe@Example.COM"})
    assert made["email"] == "john.doe@example.com"
    error = refused(
        records,
        Conflict,
        lambda: create(records, "users", {**USER, "email": "JOHN.DOE@example.com"}),
    )
    assert error.details[0]["loc"] == ["data", "email"]
    refused(
        records,
        Conflict,
        lambda: create_many(
            records,
            "users",
            [{**USER, "email": "x@example.com"}, {**USER, "email": "X@example.com"}],
        ),
    )
    assert len(records.store.engine.require("users").records) == 1


def test_a_user_must_match_the_schema(records: RecordService) -> None:
    error = refused(
        records,
        ValidationFailed,
        lambda: create(records, "users", {**USER, "age": 151, "role": "admin"}),
    )
    assert sorted((d["loc"][-1], d["type"]) for d in error.details) == [
        ("age", "less_than_equal"),
        ("role", "extra_forbidden"),
    ]


def test_a_bulk_of_users_hashes_each_password(
    records: RecordService, hasher: PasswordHasher
) -> None:
    made = create_many(
        records,
        "users",
        [
            {**USER, "email": "a@example.com", "password": "password-a"},
            {**USER, "email": "b@example.com", "password": None},
            {**USER, "email": "c@example.com", "password": "password-c"},
        ],
    )
    secrets = records.store.engine.require("users").secrets
    assert set(secrets) == {made[0]["id"], made[2]["id"]}
    assert hasher.verify(secrets[made[0]["id"]]["password"], "password-a")
    assert hasher.verify(secrets[made[2]["id"]]["password"], "password-c")


# -- orders ----------------------------------------------------------------


def test_an_order_names_an_existing_user(records: RecordService, user: Record) -> None:
    order = create(records, "orders", {**ORDER, "user_id": user["id"]})
    assert fields_of(order) == {**ORDER, "user_id": user["id"]}


def test_an_order_for_an_unknown_user_is_refused(
    records: RecordService, user: Record
) -> None:
    error = refused(
        records,
        ValidationFailed,
        lambda: create(records, "orders", {**ORDER, "user_id": "nobody"}),
    )
    assert [(d["loc"], d["type"]) for d in error.details] == [
        (["data", "user_id"], "reference")
    ]
    error = refused(
        records,
        ValidationFailed,
        lambda: create_many(
            records,
            "orders",
            [{**ORDER, "user_id": user["id"]}, {**ORDER, "user_id": "nobody"}],
        ),
    )
    assert [(d["loc"], d["type"]) for d in error.details] == [
        (["data", 1, "user_id"], "reference")
    ]
    assert records.store.engine.require("orders").records == {}


# -- imported records --------------------------------------------------------

NOW = "2030-01-01T00:00:00.000000Z"


def test_an_imported_record_keeps_its_timestamps(records: RecordService) -> None:
    """Kept as the service writes them (UTC, microseconds, Z), so that their
    text sorts in time order; a db.json's (``exact_times``) as they are."""
    item = {
        "id": "a",
        "n": 1,
        "created_at": "2020-01-01T00:00:00Z",
        "updated_at": "2021-06-01T12:30:00.5+02:00",
    }
    record, password, errors = records.prepare_record(
        "notes", item, ["notes", 0], NOW, imported=True
    )
    assert errors == [] and password is None
    assert record == {
        "id": "a",
        "n": 1,
        "created_at": "2020-01-01T00:00:00.000000Z",
        "updated_at": "2021-06-01T10:30:00.500000Z",
    }
    exact, _, errors = records.prepare_record(
        "notes", item, ["notes", 0], NOW, imported=True, exact_times=True
    )
    assert errors == [] and exact == item
    same = {**item, "created_at": NOW, "updated_at": NOW}
    kept, _, _ = records.prepare_record("notes", same, [], NOW, imported=True)
    assert (kept["created_at"], kept["updated_at"]) == (NOW, NOW)


def test_imported_timestamps_default_to_now_and_to_each_other(
    records: RecordService,
) -> None:
    plain, _, _ = records.prepare_record("notes", {"id": "a"}, [], NOW, imported=True)
    assert (plain["created_at"], plain["updated_at"]) == (NOW, NOW)
    created = "2020-01-01T00:00:00.000000Z"
    only, _, _ = records.prepare_record(
        "notes", {"created_at": created}, [], NOW, imported=True
    )
    assert (only["created_at"], only["updated_at"]) == (created, created)


@pytest.mark.parametrize(
    "stamp",
    [
        "yesterday",
        "2020-01-01",
        "2020-01-01T00:00:00",
        "",
        5,
        None,
        pytest.param("20200101T000000Z", id="iso-basic-format-is-not-rfc3339"),
    ],
)
def test_an_imported_timestamp_must_be_rfc3339_with_a_zone(
    records: RecordService, stamp: Any
) -> None:
    item = {"created_at": "2020-01-01T00:00:00Z", "updated_at": stamp}
    _, _, errors = records.prepare_record(
        "notes", item, ["notes", 0], NOW, imported=True
    )
    assert [(e["loc"], e["type"]) for e in errors] == [
        (["notes", 0, "updated_at"], "datetime")
    ]


def test_a_created_record_may_not_bring_timestamps(records: RecordService) -> None:
    _, _, errors = records.prepare_record(
        "notes", {"created_at": "2020-01-01T00:00:00Z"}, ["d"], NOW
    )
    assert [(e["loc"], e["type"]) for e in errors] == [
        (["d", "created_at"], "read_only")
    ]


# -- read ------------------------------------------------------------------


def test_read_record(records: RecordService) -> None:
    made = create(records, "notes", {"id": "a", "n": 1})
    assert read(records, "notes", "a") is records.store.engine.get("notes", "a")
    assert read(records, "notes", "a") == made
    with pytest.raises(NotFound) as caught:
        read(records, "notes", "b")
    assert caught.value.code == "not_found"
    assert "'b'" in caught.value.message
    with pytest.raises(NotFound) as caught:
        read(records, "nothing", "a")
    assert "table" in caught.value.message
    with pytest.raises(ValidationFailed):
        read(records, "bad-name", "a")


# -- update ----------------------------------------------------------------


@pytest.fixture
def note(records: RecordService) -> Record:
    return create(
        records, "notes", {"id": "n1", "a": 1, "b": {"x": 1, "y": 2}, "c": [1, 2]}
    )


def test_put_merges_the_given_fields(records: RecordService, note: Record) -> None:
    new = update(records, "notes", "n1", {"b": {"x": 9}, "d": None, "e": "new"})
    assert fields_of(new) == {"a": 1, "b": {"x": 9}, "c": [1, 2], "d": None, "e": "new"}
    assert new["id"] == "n1"
    assert new["created_at"] == note["created_at"]
    assert new["updated_at"] >= note["updated_at"]
    assert records.store.engine.get("notes", "n1") == new
    assert list(new) == ["id", "a", "b", "c", "d", "e", "created_at", "updated_at"]


def test_patch_is_a_json_merge_patch(records: RecordService, note: Record) -> None:
    new = update(
        records,
        "notes",
        "n1",
        {"a": None, "b": {"x": 9, "y": None}, "z": 0},
        patch=True,
    )
    assert fields_of(new) == {"b": {"x": 9}, "c": [1, 2], "z": 0}
    assert records.store.engine.get("notes", "n1") == new


def test_an_update_stores_a_new_record_and_leaves_the_old_one_alone(
    records: RecordService, note: Record
) -> None:
    frozen = copy.deepcopy(note)
    update(records, "notes", "n1", {"b": {"x": 5}}, patch=True)
    assert note == frozen
    assert records.store.engine.get("notes", "n1") is not note


def test_an_update_may_repeat_the_id(records: RecordService, note: Record) -> None:
    new = update(records, "notes", "n1", {"id": "n1", "a": 2})
    assert new["a"] == 2


def test_an_update_may_repeat_an_integer_id_as_created(records: RecordService) -> None:
    create(records, "notes", {"id": 5, "a": 1})
    new = update(records, "notes", "5", {"id": 5, "a": 2})
    assert new == {**new, "id": "5", "a": 2}


def test_an_update_cannot_change_the_id(records: RecordService, note: Record) -> None:
    error = refused(
        records, ValidationFailed, lambda: update(records, "notes", "n1", {"id": "n2"})
    )
    assert [(d["loc"], d["type"]) for d in error.details] == [
        (["data", "id"], "read_only")
    ]


@pytest.mark.parametrize(
    ("data", "type_"),
    [
        ([1, 2], "dict_type"),
        ("text", "dict_type"),
        ({"created_at": "2020-01-01T00:00:00Z"}, "read_only"),
        ({"updated_at": None}, "read_only"),
        ({"bad name": 1}, "field_name"),
        ({"deep": {"s": "x" * (64 * 1024 + 1)}}, "string_too_long"),
    ],
)
@pytest.mark.parametrize("patch", [False, True])
def test_an_invalid_update_is_refused(
    records: RecordService, note: Record, data: Any, type_: str, patch: bool
) -> None:
    error = refused(
        records,
        ValidationFailed,
        lambda: update(records, "notes", "n1", data, patch=patch),
    )
    assert [d["type"] for d in error.details] == [type_]


def test_an_update_that_would_make_the_record_too_big_is_refused(
    records: RecordService,
) -> None:
    create(records, "wide", {"id": "w", **{f"f{i}": i for i in range(256)}})
    error = refused(
        records, ValidationFailed, lambda: update(records, "wide", "w", {"g": 1})
    )
    assert [d["type"] for d in error.details] == ["too_many_fields"]


def test_an_update_of_a_missing_record_or_table(
    records: RecordService, note: Record
) -> None:
    refused(records, NotFound, lambda: update(records, "notes", "nope", {"a": 1}))
    refused(records, NotFound, lambda: update(records, "nothing", "n1", {"a": 1}))


def test_if_match_lets_the_current_version_through(
    records: RecordService, note: Record
) -> None:
    etag = record_etag(note)
    new = update(records, "notes", "n1", {"a": 2}, if_match=etag)
    assert new["a"] == 2
    newer = update(
        records, "notes", "n1", {"a": 3}, if_match=f'"other", {record_etag(new)}'
    )
    assert newer["a"] == 3
    assert update(records, "notes", "n1", {"a": 4}, if_match="*")["a"] == 4


@pytest.mark.parametrize("patch", [False, True])
def test_if_match_refuses_a_stale_version(
    records: RecordService, note: Record, patch: bool
) -> None:
    stale = record_etag(note)
    update(records, "notes", "n1", {"a": 2})
    error = refused(
        records,
        PreconditionFailed,
        lambda: update(records, "notes", "n1", {"a": 3}, patch=patch, if_match=stale),
    )
    assert (error.status_code, error.code) == (412, "precondition_failed")
    refused(
        records,
        PreconditionFailed,
        lambda: update(records, "notes", "n1", {"a": 3}, if_match='"nonsense"'),
    )


def test_if_match_uses_the_strong_comparison(
    records: RecordService, note: Record
) -> None:
    """RFC 9110 13.1.1: a weak entity tag never matches in If-Match."""
    weak = "W/" + record_etag(note)
    refused(
        records,
        PreconditionFailed,
        lambda: update(records, "notes", "n1", {"a": 2}, if_match=weak),
    )


def test_put_on_a_user_merges_and_keeps_the_password_hash(
    records: RecordService, hasher: PasswordHasher, user: Record
) -> None:
    secrets = records.store.engine.require("users").secrets
    old_hash = secrets[user["id"]]["password"]
    new = update(records, "users", user["id"], {"full_name": "John Smith Doe"})
    assert fields_of(new) == {
        "email": "john.doe@example.com",
        "full_name": "John Smith Doe",
        "age": 30,
    }
    assert secrets[user["id"]]["password"] == old_hash


@pytest.mark.parametrize("patch", [False, True])
def test_a_new_password_replaces_the_hash_and_never_the_record(
    records: RecordService, hasher: PasswordHasher, user: Record, patch: bool
) -> None:
    new = update(
        records, "users", user["id"], {"password": "brand-new-pass"}, patch=patch
    )
    assert "password" not in new
    assert "password" not in records.store.engine.get("users", user["id"])  # type: ignore[operator]
    hashed = records.store.engine.require("users").secrets[user["id"]]["password"]
    assert hasher.verify(hashed, "brand-new-pass")
    assert not hasher.verify(hashed, PASSWORD)


def test_patch_with_a_null_password_removes_the_hash(
    records: RecordService, user: Record
) -> None:
    update(records, "users", user["id"], {"password": None}, patch=True)
    assert records.store.engine.require("users").secrets == {}


def test_an_updated_email_is_lowercased_and_stays_unique(
    records: RecordService, user: Record
) -> None:
    other = create(records, "users", {**USER, "email": "other@example.com"})
    new = update(records, "users", user["id"], {"email": "NEW@Example.com"})
    assert new["email"] == "new@example.com"
    error = refused(
        records,
        Conflict,
        lambda: update(records, "users", other["id"], {"email": "New@example.com"}),
    )
    assert error.code == "conflict"


@pytest.mark.parametrize(
    ("data", "patch", "type_"),
    [
        ({"age": 200}, False, "less_than_equal"),
        ({"age": "30"}, True, "int_type"),
        ({"nickname": "x"}, False, "extra_forbidden"),
        ({"email": None}, True, "missing"),
        ({"full_name": ""}, True, "string_too_short"),
        ({"password": "short"}, False, "string_too_short"),
    ],
)
def test_an_updated_user_is_validated_whole(
    records: RecordService, user: Record, data: dict[str, Any], patch: bool, type_: str
) -> None:
    error = refused(
        records,
        ValidationFailed,
        lambda: update(records, "users", user["id"], data, patch=patch),
    )
    assert [d["type"] for d in error.details] == [type_]


def test_an_updated_order_still_names_an_existing_user(
    records: RecordService, user: Record
) -> None:
    order = create(records, "orders", {**ORDER, "user_id": user["id"]})
    error = refused(
        records,
        ValidationFailed,
        lambda: update(records, "orders", order["id"], {"user_id": "nobody"}),
    )
    assert [d["type"] for d in error.details] == ["reference"]
    refused(
        records,
        ValidationFailed,
        lambda: update(records, "orders", order["id"], {"quantity": 0}, patch=True),
    )
    assert update(records, "orders", order["id"], {"quantity": 5})["quantity"] == 5


class MeddlingHasher(PasswordHasher):
    """Runs ``meddle`` while a password is being hashed, as a concurrent writer would."""

    def __init__(self, meddle: Callable[[], object]) -> None:
        super().__init__(time_cost=1, memory_kib=64, parallelism=1)
        self.meddle = meddle

    async def hash(self, password: str) -> str:
        self.meddle()
        return await super().hash(password)


def test_an_update_merges_onto_a_version_written_while_it_hashed(
    records: RecordService, user: Record
) -> None:
    store = records.store.engine
    concurrent = {**user, "age": 31}
    meddling = RecordService(
        records.store,
        hasher=MeddlingHasher(lambda: store.replace("users", concurrent)),
        max_bulk=10,
    )
    new = update(meddling, "users", user["id"], {"password": "brand-new-pass"})
    assert fields_of(new) == {**fields_of(user), "age": 31}
    assert store.get("users", user["id"]) == new


def test_if_match_sees_a_version_written_while_it_hashed(
    records: RecordService, user: Record
) -> None:
    store = records.store.engine
    concurrent = {**user, "age": 31}
    meddling = RecordService(
        records.store,
        hasher=MeddlingHasher(lambda: store.replace("users", concurrent)),
        max_bulk=10,
    )
    secret = dict(store.require("users").secrets[user["id"]])
    with pytest.raises(PreconditionFailed):
        update(
            meddling,
            "users",
            user["id"],
            {"password": "brand-new-pass"},
            if_match=record_etag(user),
        )
    assert store.get("users", user["id"]) is concurrent
    assert store.require("users").secrets[user["id"]] == secret


def test_an_update_of_a_record_deleted_while_it_hashed_is_not_found(
    records: RecordService, user: Record
) -> None:
    store = records.store.engine
    meddling = RecordService(
        records.store,
        hasher=MeddlingHasher(lambda: store.delete("users", user["id"])),
        max_bulk=10,
    )
    with pytest.raises(NotFound):
        update(meddling, "users", user["id"], {"password": "brand-new-pass"})
    assert store.require("users").records == {}
    assert store.require("users").secrets == {}


# -- delete and drop -------------------------------------------------------


def test_delete_record(records: RecordService, note: Record) -> None:
    run(records.delete_record("notes", "n1"))
    assert records.store.engine.get("notes", "n1") is None
    refused(
        records,
        NotFound,
        lambda: run(records.delete_record("notes", "n1")),
    )
    refused(
        records,
        NotFound,
        lambda: run(records.delete_record("nope", "n1")),
    )


def test_delete_honours_if_match(records: RecordService, note: Record) -> None:
    error = refused(
        records,
        PreconditionFailed,
        lambda: run(
            records.delete_record("notes", "n1", expected=expected_versions('"stale"'))
        ),
    )
    assert error.code == "precondition_failed"
    run(
        records.delete_record(
            "notes", "n1", expected=expected_versions(record_etag(note))
        )
    )
    assert records.store.engine.get("notes", "n1") is None


def test_a_user_with_orders_cannot_be_deleted(
    records: RecordService, user: Record
) -> None:
    order = create(records, "orders", {**ORDER, "user_id": user["id"]})
    error = refused(
        records,
        Conflict,
        lambda: run(records.delete_record("users", user["id"])),
    )
    assert (error.status_code, error.code) == (409, "conflict")
    run(records.delete_record("orders", order["id"]))
    run(records.delete_record("users", user["id"]))
    assert records.store.engine.require("users").records == {}
    assert records.store.engine.require("users").secrets == {}


def test_drop_removes_a_schemaless_table(records: RecordService, note: Record) -> None:
    run(records.drop_table("notes"))
    assert records.store.engine.table("notes") is None
    refused(records, NotFound, lambda: run(records.drop_table("notes")))
    refused(records, ValidationFailed, lambda: run(records.drop_table("no-such")))


def test_drop_empties_a_built_in_table_and_keeps_its_indexes(
    records: RecordService, user: Record
) -> None:
    create(records, "orders", {**ORDER, "user_id": user["id"]})
    error = refused(records, Conflict, lambda: run(records.drop_table("users")))
    assert error.code == "conflict"
    run(records.drop_table("orders"))
    orders = records.store.engine.require("orders")
    assert orders.records == {}
    assert set(orders.indexes) == {"user_id"}
    run(records.drop_table("users"))
    users = records.store.engine.require("users")
    assert users.records == {} and users.secrets == {}
    assert users.indexes["email"].unique is True
    assert records.store.engine.total == 0
    again = create(records, "users", dict(USER))
    assert users.indexes["email"].holder("john.doe@example.com") == again["id"]


def test_every_write_waits_for_the_journal(
    records: RecordService, user: Record
) -> None:
    store = records.store.engine
    ops: list[dict[str, Any]] = []
    synced: list[int] = []

    async def durable() -> None:
        synced.append(len(ops))

    store.journal = ops.append
    store.durable = durable
    note = create(records, "notes", {"n": 1})
    assert synced == [1]
    update(records, "notes", note["id"], {"n": 2})
    assert synced == [1, 2]
    run(records.delete_record("notes", note["id"]))
    assert synced == [1, 2, 3]
    run(records.drop_table("notes"))
    assert synced == [1, 2, 3, 4]
    assert [op["op"] for op in ops] == ["put", "replace", "delete", "drop"]


# -- helpers ---------------------------------------------------------------


def test_ensure_builtins_is_idempotent() -> None:
    backend = MemoryStore(max_records=10, rules=BUILTIN_RULES)
    backend.ensure_builtins()
    backend.ensure_builtins()
    store = backend.engine
    assert set(store.tables) == {"users", "orders"}
    assert {f: i.unique for f, i in store.require("users").indexes.items()} == {
        "email": True
    }
    assert {f: i.unique for f, i in store.require("orders").indexes.items()} == {
        "user_id": False
    }


def test_path_ids_follow_the_id_rule() -> None:
    assert is_valid_path_id("a-1")
    assert not is_valid_path_id("..")
    assert not is_valid_path_id("a b")


def test_conflict_from_names_the_field() -> None:
    by_id = conflict_from(DuplicateKey("notes", "id", "a"), ["data"])
    assert "'a'" in by_id.message and by_id.code == "conflict"
    by_email = conflict_from(DuplicateKey("users", "email", "a@x.io"), ["data"])
    assert "users.email" in by_email.message
    assert "a@x.io" not in by_email.message
    assert by_email.details == [
        {"loc": ["data", "email"], "msg": "already taken", "type": "unique", "of": DATA}
    ]


def test_now_iso_is_rfc3339_utc() -> None:
    stamp = now_iso()
    assert stamp.endswith("Z") and "+" not in stamp
    offset = datetime.fromisoformat(stamp).utcoffset()
    assert offset is not None
    assert offset.total_seconds() == 0


# RFC 7396, Appendix A, every example.
RFC7396 = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "expected"), RFC7396)
def test_merge_patch_follows_rfc_7396(target: Any, patch: Any, expected: Any) -> None:
    target_before, patch_before = copy.deepcopy(target), copy.deepcopy(patch)
    assert merge_patch(target, patch) == expected
    assert target == target_before
    assert patch == patch_before


def test_merge_patch_never_changes_nested_objects_of_the_target() -> None:
    target = {"a": {"b": {"c": 1, "d": 2}}}
    result = merge_patch(target, {"a": {"b": {"c": None}}})
    assert result == {"a": {"b": {"d": 2}}}
    assert target == {"a": {"b": {"c": 1, "d": 2}}}


# -- threads ---------------------------------------------------------------


@pytest.fixture
def busy_switching() -> Iterator[None]:
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("busy_switching")
def test_threads_creating_and_updating_with_if_match_lose_nothing(
    records: RecordService,
) -> None:
    threads, rounds = 6, 25
    create(records, "counters", {"id": "c", "n": 0})
    errors: list[BaseException] = []
    refusals = [0] * threads
    barrier = threading.Barrier(threads)

    def work(number: int) -> None:
        try:
            barrier.wait()
            for i in range(rounds):
                create(records, "items", {"id": f"{number}-{i}"})
                while True:
                    current = read(records, "counters", "c")
                    time.sleep(0)  # let another thread in before the write
                    try:
                        update(
                            records,
                            "counters",
                            "c",
                            {"n": current["n"] + 1},
                            patch=True,
                            if_match=record_etag(current),
                        )
                        break
                    except PreconditionFailed:
                        refusals[number] += 1
        except BaseException as exc:  # handed to the test thread below
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=120)
    assert errors == []
    assert read(records, "counters", "c")["n"] == threads * rounds
    assert len(records.store.engine.require("items").records) == threads * rounds
    assert records.store.engine.total == threads * rounds + 1
