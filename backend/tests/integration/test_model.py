"""The HTTP API against a small reference model, driven by hypothesis.

A ``RuleBasedStateMachine`` opens one fresh app per run and sends creates
(single and bulk), updates, merge patches, deletes, drops, merge imports,
index changes, list queries and joins of ``users`` x ``orders``. Every answer
is checked against the model: the status and error code, the records, the
ETags (stable across reads, new after every write, 412 when stale) and the
references between users and orders. After every step the whole store
(``GET /api/v1/dump``) must equal the model.

Where several refusals apply to one request (say, an order naming an unknown
user *and* reusing a taken id), any of their statuses is accepted; the store
must stay unchanged either way.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from fastapi.testclient import TestClient
from httpx import Response
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from app.main import create_app
from tests.conftest import make_settings
from tests.integration.helpers import API, assert_error, assert_timestamp

Record = dict[str, Any]
Key = tuple[str, str]

NOTES = "notes"
BUILTIN = ("users", "orders")
USER_IDS = ("u1", "u2", "u3")
ORDER_IDS = ("o1", "o2", "o3")
NOTE_IDS = ("n1", "n2", "n3", "n4")
# The last address is the first one in another case: the same address.
EMAILS = ("ann@example.com", "bob@example.com", "cy@example.com", "Ann@Example.COM")
NAMES = ("Ann", "Bob Stone", "Cy")
KINDS = ("red", "blue", "green")
NOTE_INDEX_FIELDS = ("kind", "n")
UNKNOWN_USER = "nobody"
STALE_ETAG = '"0000000000000000"'
SERVER_FIELDS = ("id", "created_at", "updated_at")
CODES = {
    404: "not_found",
    409: "conflict",
    412: "precondition_failed",
    422: "validation_error",
}


def ids(pool: tuple[str, ...]) -> st.SearchStrategy[str | None]:
    """No id (the server makes one) or one of a few, so that ids collide."""
    return st.none() | st.sampled_from(pool)


user_fields = st.fixed_dictionaries(
    {"email": st.sampled_from(EMAILS), "full_name": st.sampled_from(NAMES)},
    optional={"age": st.integers(0, 150), "password": st.just("correct-horse")},
)
note_fields = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from(KINDS),
        "n": st.integers(-3, 3),
        "meta": st.fixed_dictionaries(
            {}, optional={"a": st.integers(0, 2), "b": st.booleans()}
        ),
    },
)
note_changes = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.none() | st.sampled_from(KINDS),
        "n": st.none() | st.integers(-3, 3),
        "meta": st.none()
        | st.fixed_dictionaries(
            {},
            optional={
                "a": st.none() | st.integers(0, 2),
                "b": st.none() | st.booleans(),
            },
        ),
        "extra": st.none() | st.sampled_from(["x", "y"]),
    },
)
user_changes = st.fixed_dictionaries(
    {},
    optional={
        "full_name": st.none() | st.sampled_from(NAMES),
        # 151 is out of range: the merged record is refused
        "age": st.none() | st.integers(0, 151),
        "email": st.sampled_from(EMAILS),
    },
)
order_changes = st.fixed_dictionaries(
    {},
    optional={
        # 0 is out of range: the merged record is refused
        "quantity": st.integers(0, 3),
        "product_name": st.sampled_from(["Lamp", "Desk"]),
    },
)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396, written out again for the model."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


def fields_of(record: Record) -> Record:
    return {k: v for k, v in record.items() if k not in SERVER_FIELDS}


def stored_fields(table: str, fields: Record) -> Record:
    """What the server keeps of the given fields: no password, a lower-case email."""
    kept = {k: v for k, v in fields.items() if k != "password"}
    if table == "users" and isinstance(kept.get("email"), str):
        kept["email"] = kept["email"].strip().lower()
    return kept


def user_valid(fields: Record) -> bool:
    age = fields.get("age")
    return (
        isinstance(fields.get("email"), str)
        and isinstance(fields.get("full_name"), str)
        and (age is None or 0 <= age <= 150)
    )


def order_valid(fields: Record) -> bool:
    return (
        isinstance(fields.get("product_name"), str)
        and isinstance(fields.get("quantity"), int)
        and fields["quantity"] >= 1
        and isinstance(fields.get("total_price"), (int, float))
        and isinstance(fields.get("user_id"), str)
    )


def sort_value(value: Any) -> tuple[int, Any]:
    """The server's order of the values ``n`` takes: null, then numbers."""
    return (0, 0) if value is None else (1, value)


class ApiModel(RuleBasedStateMachine):
    """The service and its model: ``tables`` (records by id, in insertion order),
    ``indexes`` of ``notes`` (field -> unique) and what was seen of each ETag."""

    def __init__(self) -> None:
        super().__init__()
        self.client = TestClient(create_app(make_settings()))
        self.client.__enter__()
        self.tables: dict[str, dict[str, Record]] = {"users": {}, "orders": {}}
        self.note_indexes: dict[str, bool] = {}
        self.etags: dict[Key, str] = {}
        self.old_etags: dict[Key, set[str]] = {}

    def teardown(self) -> None:
        self.client.__exit__(None, None, None)

    # -- helpers ------------------------------------------------------------

    def expect(self, response: Response, statuses: set[int]) -> bool:
        """The status is one of ``statuses``; an error has its code. True on 2xx."""
        assert response.status_code in statuses, (statuses, response.text)
        if response.status_code >= 400:
            assert_error(response, response.status_code, CODES[response.status_code])
            return False
        return True

    def unique_clash(self, table: str, records: Iterable[Record]) -> bool:
        """Whether writing ``records`` (new versions, by id) breaks a unique index:
        two of them, or one of them and a record that stays, share a value."""
        fields = ["email"] if table == "users" else []
        if table == NOTES:
            fields = [f for f, unique in self.note_indexes.items() if unique]
        batch = list(records)
        replaced = {r["id"] for r in batch}
        staying = [
            r for i, r in self.tables.get(table, {}).items() if i not in replaced
        ]
        for name in fields:
            seen: list[Any] = []
            for record in batch:
                value = record.get(name)
                if value is None:
                    continue
                if value in seen or any(r.get(name) == value for r in staying):
                    return True
                seen.append(value)
        return False

    def remember(self, table: str, record: Record, etag: str | None) -> None:
        """A written record: stored in the model; its ETag is new."""
        key = (table, record["id"])
        self.tables.setdefault(table, {})[record["id"]] = record
        old = self.old_etags.setdefault(key, set())
        if key in self.etags:
            old.add(self.etags.pop(key))
        if etag is not None:
            assert etag not in old, "a write must give the record a new ETag"
            self.etags[key] = etag
            again = self.client.get(f"{API}/data/{table}/{record['id']}")
            assert again.status_code == 200
            assert again.json() == record
            assert again.headers["etag"] == etag, "a read gives the write's ETag"

    def forget(self, table: str, record_id: str) -> None:
        self.tables[table].pop(record_id, None)
        self.etags.pop((table, record_id), None)
        self.old_etags.pop((table, record_id), None)

    def check_created(
        self, table: str, record: Record, fields: Record, record_id: str | None
    ) -> None:
        assert fields_of(record) == stored_fields(table, fields)
        if record_id is not None:
            assert record["id"] == record_id
        else:
            assert record["id"] not in self.tables.get(table, {})
        assert_timestamp(record["created_at"])
        assert record["updated_at"] == record["created_at"]

    def pick(self, data: st.DataObject, table: str, pool: Iterable[str]) -> str:
        """Mostly a stored record's id; sometimes one of the pool, stored or not."""
        stored = sorted(self.tables.get(table, {}))
        if stored and data.draw(st.integers(0, 3), label="stored") > 0:
            return data.draw(st.sampled_from(stored), label="id")
        return data.draw(st.sampled_from(sorted(set(pool))), label="id")

    def if_match(self, data: st.DataObject, key: Key) -> tuple[str | None, bool]:
        """An ``If-Match`` header, none, the current ETag or a stale one; and
        whether it is stale."""
        choice = data.draw(st.sampled_from(["none", "current", "stale"]), label="if")
        if choice == "none" or key[1] not in self.tables.get(key[0], {}):
            return None, False
        if choice == "current" and key in self.etags:
            return self.etags[key], False
        if choice == "current":
            return "*", False
        stale = sorted(self.old_etags.get(key, set())) or [STALE_ETAG]
        return data.draw(st.sampled_from(stale), label="stale"), True

    @initialize()
    def seed(self) -> None:
        """A few records to start from, written and checked like any other."""
        self.create_user({"email": EMAILS[0], "full_name": NAMES[0]}, USER_IDS[0])
        self.create_user(
            {"email": EMAILS[1], "full_name": NAMES[1], "age": 40}, USER_IDS[1]
        )
        self.create_note({"kind": KINDS[0], "n": 1}, NOTE_IDS[0])
        self.create_note({"kind": KINDS[1]}, NOTE_IDS[1])
        self.create_note({"n": 2, "meta": {"a": 1}}, None)

    # -- creates ------------------------------------------------------------

    @rule(fields=user_fields, record_id=ids(USER_IDS))
    def create_user(self, fields: Record, record_id: str | None) -> None:
        data = fields if record_id is None else {"id": record_id, **fields}
        response = self.client.post(f"{API}/data/users", json={"data": data})
        users = self.tables["users"]
        candidate = {"id": record_id or "", **stored_fields("users", fields)}
        refused = (record_id in users) or self.unique_clash("users", [candidate])
        if self.expect(response, {409} if refused else {201}):
            record = response.json()
            self.check_created("users", record, fields, record_id)
            assert response.headers["location"] == f"{API}/data/users/{record['id']}"
            self.remember("users", record, response.headers["etag"])

    @rule(data=st.data(), record_id=ids(ORDER_IDS), quantity=st.integers(1, 3))
    def create_order(
        self, data: st.DataObject, record_id: str | None, quantity: int
    ) -> None:
        users = self.tables["users"]
        user_id = data.draw(
            st.sampled_from(sorted(users) + [UNKNOWN_USER]), label="user_id"
        )
        fields = {
            "product_name": "Lamp",
            "quantity": quantity,
            "total_price": 2.5 * quantity,
            "user_id": user_id,
        }
        body = fields if record_id is None else {"id": record_id, **fields}
        response = self.client.post(f"{API}/data/orders", json={"data": body})
        expected = set()
        if user_id not in users:
            expected.add(422)
        if record_id in self.tables["orders"]:
            expected.add(409)
        if self.expect(response, expected or {201}):
            record = response.json()
            self.check_created("orders", record, fields, record_id)
            self.remember("orders", record, response.headers["etag"])

    @rule(fields=note_fields, record_id=ids(NOTE_IDS))
    def create_note(self, fields: Record, record_id: str | None) -> None:
        data = fields if record_id is None else {"id": record_id, **fields}
        response = self.client.post(f"{API}/data/{NOTES}", json={"data": data})
        notes = self.tables.get(NOTES, {})
        candidate = {"id": record_id or "", **fields}
        refused = record_id in notes or self.unique_clash(NOTES, [candidate])
        if self.expect(response, {409} if refused else {201}):
            record = response.json()
            self.check_created(NOTES, record, fields, record_id)
            self.remember(NOTES, record, response.headers["etag"])

    @rule(
        table=st.sampled_from([NOTES, "users"]),
        data=st.data(),
        size=st.integers(1, 3),
    )
    def create_bulk(self, table: str, data: st.DataObject, size: int) -> None:
        pool, strategy = (
            (NOTE_IDS, note_fields) if table == NOTES else (USER_IDS, user_fields)
        )
        items = [
            (data.draw(strategy, label="fields"), data.draw(ids(pool), label="id"))
            for _ in range(size)
        ]
        body = [f if i is None else {"id": i, **f} for f, i in items]
        response = self.client.post(f"{API}/data/{table}", json={"data": body})
        given = [i for _, i in items if i is not None]
        existing = self.tables.get(table, {})
        refused = (
            len(set(given)) < len(given)
            or any(i in existing for i in given)
            or self.unique_clash(
                table,
                [
                    {"id": i or f"new-{n}", **stored_fields(table, f)}
                    for n, (f, i) in enumerate(items)
                ],
            )
        )
        if self.expect(response, {409} if refused else {201}):
            answer = response.json()
            assert answer["count"] == size == len(answer["items"])
            for record, (fields, record_id) in zip(answer["items"], items):
                self.check_created(table, record, fields, record_id)
                self.remember(table, record, None)

    # -- reads --------------------------------------------------------------

    @rule(table=st.sampled_from([NOTES, *BUILTIN]), data=st.data())
    def read(self, table: str, data: st.DataObject) -> None:
        pool = {"users": USER_IDS, "orders": ORDER_IDS, NOTES: NOTE_IDS}[table]
        record_id = self.pick(data, table, pool)
        response = self.client.get(f"{API}/data/{table}/{record_id}")
        record = self.tables.get(table, {}).get(record_id)
        if not self.expect(response, {404} if record is None else {200}):
            return
        assert record is not None
        assert response.json() == record
        key = (table, record_id)
        etag = response.headers["etag"]
        if key in self.etags:
            assert etag == self.etags[key], "an unchanged record keeps its ETag"
        else:
            assert etag not in self.old_etags.get(key, set())
            self.etags[key] = etag
        again = self.client.get(
            f"{API}/data/{table}/{record_id}", headers={"If-None-Match": etag}
        )
        assert again.status_code == 304
        assert again.headers["etag"] == etag

    # -- updates ------------------------------------------------------------

    @rule(
        table=st.sampled_from([NOTES, *BUILTIN]),
        patch=st.booleans(),
        data=st.data(),
    )
    def update(self, table: str, patch: bool, data: st.DataObject) -> None:
        pool = {"users": USER_IDS, "orders": ORDER_IDS, NOTES: NOTE_IDS}[table]
        record_id = self.pick(data, table, pool)
        key = (table, record_id)
        changes: dict[str, Any]
        if table == NOTES:
            changes = data.draw(note_changes, label="changes")
        elif table == "users":
            changes = data.draw(user_changes, label="changes")
        else:
            changes = data.draw(order_changes, label="changes")
            if data.draw(st.booleans(), label="move"):
                changes["user_id"] = data.draw(
                    st.sampled_from(sorted(self.tables["users"]) + [UNKNOWN_USER]),
                    label="user_id",
                )
        header, stale = self.if_match(data, key)
        headers = {} if header is None else {"If-Match": header}
        method = "PATCH" if patch else "PUT"
        response = self.client.request(
            method,
            f"{API}/data/{table}/{record_id}",
            json={"data": changes},
            headers=headers,
        )
        old = self.tables.get(table, {}).get(record_id)
        if old is None:
            self.expect(response, {404})
            return
        current = fields_of(old)
        merged = merge_patch(current, changes) if patch else {**current, **changes}
        merged = stored_fields(table, merged)
        expected = set()
        if table == "users" and not user_valid(merged):
            expected.add(422)
        if table == "orders" and not order_valid(merged):
            expected.add(422)
        if stale:
            expected.add(412)
        if table == "orders" and merged.get("user_id") not in self.tables["users"]:
            expected.add(422)
        if self.unique_clash(table, [{"id": record_id, **merged}]):
            expected.add(409)
        if not self.expect(response, expected or {200}):
            return
        record = response.json()
        assert fields_of(record) == merged
        assert record["id"] == record_id
        assert record["created_at"] == old["created_at"]
        assert record["updated_at"] > old["updated_at"]
        self.remember(table, record, response.headers["etag"])

    # -- deletes and drops --------------------------------------------------

    @rule(table=st.sampled_from([NOTES, *BUILTIN]), data=st.data())
    def delete(self, table: str, data: st.DataObject) -> None:
        pool = {"users": USER_IDS, "orders": ORDER_IDS, NOTES: NOTE_IDS}[table]
        record_id = self.pick(data, table, pool)
        header, stale = self.if_match(data, (table, record_id))
        headers = {} if header is None else {"If-Match": header}
        response = self.client.delete(
            f"{API}/data/{table}/{record_id}", headers=headers
        )
        if record_id not in self.tables.get(table, {}):
            self.expect(response, {404})
            return
        expected = set()
        if stale:
            expected.add(412)
        if table == "users" and any(
            o["user_id"] == record_id for o in self.tables["orders"].values()
        ):
            expected.add(409)
        if self.expect(response, expected or {204}):
            assert response.content == b""
            self.forget(table, record_id)

    @rule(table=st.sampled_from([NOTES, *BUILTIN]), now=st.integers(0, 3))
    def drop(self, table: str, now: int) -> None:
        if now:
            return  # dropping less often leaves the other rules something to do
        response = self.client.delete(f"{API}/data/{table}")
        if table not in self.tables:
            self.expect(response, {404})
            return
        blocked = table == "users" and bool(self.tables["orders"])
        if not self.expect(response, {409} if blocked else {204}):
            return
        for record_id in list(self.tables[table]):
            self.forget(table, record_id)
        if table == NOTES:
            del self.tables[NOTES]
            self.note_indexes.clear()

    # -- imports ------------------------------------------------------------

    @rule(data=st.data())
    def import_merge(self, data: st.DataObject) -> None:
        """``POST /import`` (merge): records keep their ids; an existing id is
        replaced in place, a new one is added at the end."""
        payload: dict[str, list[Record]] = {}
        if data.draw(st.booleans(), label="users"):
            payload["users"] = [
                {
                    "id": data.draw(st.sampled_from(USER_IDS), label="id"),
                    **stored_fields("users", data.draw(user_fields, label="user")),
                }
                for _ in range(data.draw(st.integers(0, 2), label="n users"))
            ]
        if data.draw(st.booleans(), label="orders"):
            known = sorted(self.tables["users"]) + list(USER_IDS) + [UNKNOWN_USER]
            payload["orders"] = [
                {
                    "id": data.draw(st.sampled_from(ORDER_IDS), label="id"),
                    "product_name": "Desk",
                    "quantity": 1,
                    "total_price": 10,
                    "user_id": data.draw(st.sampled_from(known), label="user_id"),
                }
                for _ in range(data.draw(st.integers(0, 2), label="n orders"))
            ]
        if data.draw(st.booleans(), label="notes") or not payload:
            payload[NOTES] = [
                {
                    "id": data.draw(st.sampled_from(NOTE_IDS), label="id"),
                    **data.draw(note_fields, label="note"),
                }
                for _ in range(data.draw(st.integers(0, 3), label="n notes"))
            ]
        response = self.client.post(f"{API}/import", json=payload)

        expected = set()
        for table, rows in payload.items():
            given = [r["id"] for r in rows]
            if len(set(given)) < len(given) or self.unique_clash(table, rows):
                expected.add(409)
        user_ids = set(self.tables["users"]) | {
            r["id"] for r in payload.get("users", [])
        }
        if any(o["user_id"] not in user_ids for o in payload.get("orders", [])):
            expected.add(422)
        if not self.expect(response, expected or {200}):
            return
        counts = {table: len(rows) for table, rows in payload.items()}
        assert response.json() == {
            "mode": "merge",
            "counts": counts,
            "total": sum(counts.values()),
        }
        stored = self.client.get(f"{API}/dump").json()
        for table, rows in payload.items():
            before = self.tables.setdefault(table, {})
            by_id = {r["id"]: r for r in stored[table]}
            for row in rows:
                record = by_id[row["id"]]
                assert fields_of(record) == stored_fields(table, fields_of(row))
                assert_timestamp(record["created_at"])
                old = before.get(row["id"])
                if old is None:  # created by the import
                    assert record["updated_at"] == record["created_at"]
                else:  # updated: created when it was, updated now
                    assert record["created_at"] == old["created_at"]
                    assert record["updated_at"] > old["updated_at"]
                self.remember(table, record, None)

    # -- indexes ------------------------------------------------------------

    @rule(
        field=st.sampled_from(NOTE_INDEX_FIELDS),
        unique=st.booleans(),
        kind=st.sampled_from(["hash", "sorted"]),
    )
    def create_index(self, field: str, unique: bool, kind: str) -> None:
        response = self.client.post(
            f"{API}/tables/{NOTES}/indexes",
            json={"field": field, "unique": unique, "kind": kind},
        )
        if NOTES not in self.tables:
            self.expect(response, {404})
            return
        values = [
            r[field] for r in self.tables[NOTES].values() if r.get(field) is not None
        ]
        clash = unique and len(values) != len(set(values))
        if self.expect(
            response, {409} if field in self.note_indexes or clash else {201}
        ):
            assert response.json() == {
                "field": field,
                "unique": unique,
                "kind": kind,
                "builtin": False,
            }
            self.note_indexes[field] = unique

    @rule(field=st.sampled_from(NOTE_INDEX_FIELDS))
    def drop_index(self, field: str) -> None:
        response = self.client.delete(f"{API}/tables/{NOTES}/indexes/{field}")
        if self.expect(response, {204} if field in self.note_indexes else {404}):
            del self.note_indexes[field]

    @rule(table_field=st.sampled_from([("users", "email"), ("orders", "user_id")]))
    def drop_builtin_index(self, table_field: tuple[str, str]) -> None:
        table, field = table_field
        response = self.client.delete(f"{API}/tables/{table}/indexes/{field}")
        self.expect(response, {409})

    # -- queries ------------------------------------------------------------

    @rule(
        kind=st.sampled_from(KINDS),
        descending=st.booleans(),
        sort=st.booleans(),
    )
    def list_notes(self, kind: str, descending: bool, sort: bool) -> None:
        params = {"kind": kind}
        if sort:
            params["sort"] = "-n" if descending else "n"
        response = self.client.get(f"{API}/data/{NOTES}", params=params)
        if NOTES not in self.tables:
            self.expect(response, {404})
            return
        rows = [r for r in self.tables[NOTES].values() if r.get("kind") == kind]
        if sort:
            present = [r for r in rows if "n" in r]
            present.sort(key=lambda r: sort_value(r["n"]), reverse=descending)
            rows = present + [r for r in rows if "n" not in r]
        self.expect(response, {200})
        assert response.json() == {
            "items": rows,
            "total": len(rows),
            "limit": 100,
            "offset": 0,
        }
        assert response.headers["x-total-count"] == str(len(rows))

    @rule(
        descending=st.booleans(),
        low=st.none() | st.integers(-1, 3),
        offset=st.integers(0, 4),
        limit=st.integers(1, 5),
    )
    def page_notes_by_n(
        self, descending: bool, low: int | None, offset: int, limit: int
    ) -> None:
        """A sorted page, with a range of ``n`` or without (what a sorted index
        on ``n`` answers when there is one)."""
        params = {
            "sort": "-n" if descending else "n",
            "offset": str(offset),
            "limit": str(limit),
        }
        rows = list(self.tables.get(NOTES, {}).values())
        if low is not None:
            params["n__gte"] = str(low)
            rows = [
                r
                for r in rows
                if isinstance(r.get("n"), (int, float))
                and not isinstance(r.get("n"), bool)
                and r["n"] >= low
            ]
        response = self.client.get(f"{API}/data/{NOTES}", params=params)
        if NOTES not in self.tables:
            self.expect(response, {404})
            return
        present = [r for r in rows if "n" in r]
        present.sort(key=lambda r: sort_value(r["n"]), reverse=descending)
        rows = present + [r for r in rows if "n" not in r]
        self.expect(response, {200})
        assert response.json() == {
            "items": rows[offset : offset + limit],
            "total": len(rows),
            "limit": limit,
            "offset": offset,
        }

    @rule(data=st.data())
    def list_orders_of_a_user(self, data: st.DataObject) -> None:
        user_id = self.pick(data, "users", USER_IDS)
        response = self.client.get(
            f"{API}/data/orders", params={"user_id": user_id, "sort": "-quantity"}
        )
        rows = [r for r in self.tables["orders"].values() if r["user_id"] == user_id]
        rows.sort(key=lambda r: r["quantity"], reverse=True)
        self.expect(response, {200})
        assert response.json()["items"] == rows
        assert response.json()["total"] == len(rows)

    @rule(email=st.sampled_from(EMAILS))
    def list_users_by_email(self, email: str) -> None:
        response = self.client.get(f"{API}/data/users", params={"email": email})
        rows = [r for r in self.tables["users"].values() if r["email"] == email]
        self.expect(response, {200})
        assert response.json()["items"] == rows

    @rule(how=st.sampled_from(["inner", "left"]))
    def join_users_orders(self, how: str) -> None:
        response = self.client.get(
            f"{API}/join/users/orders/user_id", params={"how": how}
        )
        self.expect(response, {200})
        orders = list(self.tables["orders"].values())
        rows: list[dict[str, Any]] = []
        for user in self.tables["users"].values():
            mine = [o for o in orders if o["user_id"] == user["id"]]
            rows.extend({"left": user, "right": o} for o in mine)
            if not mine and how == "left":
                rows.append({"left": user, "right": None})
        assert response.json() == {
            "left": "users",
            "right": "orders",
            "on": {"left": "id", "right": "user_id"},
            "how": how,
            "count": len(rows),
            "total": len(rows),
            "limit": None,
            "offset": 0,
            "items": rows,
        }

    # -- after every step ---------------------------------------------------

    @invariant()
    def store_equals_model(self) -> None:
        response = self.client.get(f"{API}/dump")
        assert response.status_code == 200
        expected = {name: list(rows.values()) for name, rows in self.tables.items()}
        assert response.json() == expected
        assert list(response.json()) == list(expected)
        assert "password" not in response.text

    @invariant()
    def every_order_has_its_user(self) -> None:
        users = self.tables["users"]
        assert all(o["user_id"] in users for o in self.tables["orders"].values())


MODEL_SETTINGS = settings(
    max_examples=int(os.environ.get("MODEL_EXAMPLES", "30")),
    stateful_step_count=int(os.environ.get("MODEL_STEPS", "30")),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_the_api_follows_the_model(backend: str) -> None:
    """The state machine, once on each store backend (the ``backend`` fixture
    makes every app of this test use it)."""
    run_state_machine_as_test(ApiModel, settings=MODEL_SETTINGS)
