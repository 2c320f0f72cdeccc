"""Index consistency: random writes through the services keep every index exact.

A state machine drives ``RecordService``, ``ImportService`` and ``TableService``
over a store with unique and non-unique indexes (a dotted path among them, null
values, values equal as JSON such as 1 and 1.0). A small model predicts every
outcome: the records, in order, and which writes are refused. After every step
each index must equal one rebuilt from scratch, and ``Table.seq`` must order
the ids as the table does.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
from typing import Any, Awaitable, Callable

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from app.core.errors import Conflict, DomainError, NotFound, ValidationFailed
from app.services.imports import ImportService
from app.services.passwords import PasswordHasher
from app.schemas.builtin import BUILTIN_RULES
from app.services.records import RecordService
from app.services.tables import TableService
from app.storage.index import HashIndex, SortedIndex
from app.storage.keys import json_key, order_of
from app.storage.memory import MemoryStore, Record, Table

from tests.unit.jsonvalues import json_equal

Fields = dict[str, Any]
ABSENT = object()
SERVER = ("id", "created_at", "updated_at")

ITEM_IDS = ["i0", "i1", "i2", "i3"]
USER_IDS = ["u0", "u1", "u2"]
# items.code is unique: 1 and 1.0 clash, "1" and true do not, nulls never clash.
CODES = [None, "a", "b", 1, 1.0, True, "1"]
# items.meta.group is a non-unique index on a dotted path.
GROUPS = [None, "x", "y", 1, 1.0, [1], {"k": "v"}]
META = st.one_of(
    st.fixed_dictionaries({"group": st.sampled_from(GROUPS)}),
    st.fixed_dictionaries({"group": st.sampled_from(GROUPS), "other": st.just(1)}),
    st.just({}),
    st.just("flat"),
    st.none(),
)
ITEM_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "code": st.sampled_from(CODES),
        "meta": META,
        "tag": st.sampled_from(["t", 2, None]),
    },
)
ITEM_PATCH = st.fixed_dictionaries(
    {},
    optional={
        "code": st.sampled_from(CODES),
        "meta": META | st.fixed_dictionaries({"group": st.none()}),
        "tag": st.sampled_from(["t", 2, None]),
        "extra": st.sampled_from([None, "e"]),
    },
)
EMAILS = ["a@x.io", "b@x.io", "c@x.io"]
USER_FIELDS = st.fixed_dictionaries(
    {"email": st.sampled_from(EMAILS), "full_name": st.sampled_from(["Ann", "Bob"])},
    optional={"age": st.sampled_from([None, 1, 30])},
)
USER_UPDATE = st.fixed_dictionaries(
    {},
    optional={
        "email": st.sampled_from(EMAILS),
        "full_name": st.sampled_from(["Ann", "Bob"]),
        "age": st.sampled_from([None, 1, 30]),
    },
)
USER_PATCH = st.fixed_dictionaries(
    {},
    optional={
        "email": st.sampled_from(EMAILS + [None]),  # null removes: then invalid
        "full_name": st.sampled_from(["Ann", None]),
        "age": st.sampled_from([None, 1, 30]),
    },
)
TABLES = ["items", "users"]
INDEXABLE = ["code", "meta.group", "tag", "age", "email"]


def ids_for(table: str) -> list[str]:
    return ITEM_IDS if table == "items" else USER_IDS


def fields_for(table: str) -> st.SearchStrategy[Fields]:
    return ITEM_FIELDS if table == "items" else USER_FIELDS


def ref_get(record: Any, path: str) -> Any:
    value = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return ABSENT
        value = value[part]
    return value


def ref_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = ref_merge_patch(result.get(key), value)
    return result


def strict(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def rebuilt_groups(table: Table, field: str) -> dict[Any, frozenset[str]]:
    """The index of ``field`` built from scratch with plain loops."""
    groups: dict[Any, set[str]] = {}
    for record_id, record in table.records.items():
        value = ref_get(record, field)
        if value is not ABSENT:
            groups.setdefault(json_key(value), set()).add(record_id)
    return {key: frozenset(ids) for key, ids in groups.items()}


def index_groups(index: HashIndex) -> dict[Any, frozenset[str]]:
    out: dict[Any, frozenset[str]] = {}
    for key, group in index.groups.items():
        # One id is kept bare, several as a set: never an empty or one-id set.
        assert isinstance(group, str) or (isinstance(group, set) and len(group) >= 2)
        out[key] = frozenset([group] if isinstance(group, str) else group)
    return out


def run(result: Awaitable[Any] | Any) -> Any:
    """The result of a service call, awaited on a fresh event loop when it is a
    coroutine (services that write may be async)."""
    if not inspect.isawaitable(result):
        return result

    async def main() -> Any:
        return await result

    return asyncio.run(main())


class IndexMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        backend = MemoryStore(max_records=1_000, rules=BUILTIN_RULES)
        backend.ensure_builtins()
        self.store = backend.engine
        hasher = PasswordHasher(time_cost=1, memory_kib=64, parallelism=1)
        self.records = RecordService(backend, hasher=hasher, max_bulk=10)
        self.imports = ImportService(backend, self.records)
        self.tables = TableService(backend)
        self.store.create_table("items")
        run(self.tables.create_index("items", "code", unique=True))
        run(self.tables.create_index("items", "meta.group", unique=False))
        run(self.tables.create_index("users", "age", unique=False))
        # The model: fields by id in table order, and the indexes of each table.
        self.rows: dict[str, dict[str, Fields]] = {
            "users": {},
            "orders": {},
            "items": {},
        }
        self.indexes: dict[str, dict[str, bool]] = {
            "users": {"email": True, "age": False},
            "orders": {"user_id": False},
            "items": {"code": True, "meta.group": False},
        }

    # -- the model's rules ------------------------------------------------

    def violates_unique(self, table: str, rows: dict[str, Fields]) -> bool:
        for field, unique in self.indexes.get(table, {}).items():
            if not unique:
                continue
            seen: list[Any] = []
            for fields in rows.values():
                value = ref_get(fields, field)
                if value is ABSENT or value is None:
                    continue
                if any(json_equal(value, other) for other in seen):
                    return True
                seen.append(value)
        return False

    def attempt(
        self, expected: type[DomainError] | None, call: Callable[[], Any]
    ) -> Any:
        try:
            result = call()
        except DomainError as exc:
            assert expected is not None, f"unexpected {exc!r}: {exc.details}"
            assert type(exc) is expected, f"{exc!r}, expected {expected.__name__}"
            return None
        assert expected is None, f"expected {expected.__name__}, the call succeeded"
        return result

    def ensure_table(self, table: str) -> None:
        if table not in self.rows:
            self.rows[table] = {}
            self.indexes[table] = {}

    # -- rules -------------------------------------------------------------

    def some_id(self, table: str, data: st.DataObject) -> str:
        """An id of the table, or one from the pool (which may be free)."""
        held = list(self.rows.get(table, {}))
        if held and data.draw(st.booleans()):
            return data.draw(st.sampled_from(held))
        return data.draw(st.sampled_from(ids_for(table)))

    @rule(
        table=st.sampled_from(TABLES),
        data=st.data(),
        with_id=st.integers(0, 3),
    )
    def create(self, table: str, data: st.DataObject, with_id: int) -> None:
        fields = data.draw(fields_for(table))
        record_id = data.draw(st.sampled_from(ids_for(table))) if with_id else None
        payload = {**fields, **({"id": record_id} if record_id else {})}
        rows = self.rows.get(table, {})
        candidate = {**rows, record_id or "new": fields}
        refused = (record_id in rows) or self.violates_unique(table, candidate)
        created = self.attempt(
            Conflict if refused else None,
            lambda: run(self.records.create_records(table, [payload], bulk=False)),
        )
        if created is not None:
            self.ensure_table(table)
            self.rows[table][created[0]["id"]] = fields

    @rule(table=st.sampled_from(TABLES), data=st.data())
    def create_many(self, table: str, data: st.DataObject) -> None:
        ids = data.draw(
            st.lists(st.sampled_from(ids_for(table)), min_size=1, max_size=3)
        )
        batch = [(i, data.draw(fields_for(table))) for i in ids]
        rows = self.rows.get(table, {})
        candidate = {**rows, **dict(batch)}
        refused = (
            len(set(ids)) < len(ids)
            or any(i in rows for i in ids)
            or self.violates_unique(table, candidate)
        )
        payload = [{"id": i, **f} for i, f in batch]
        created = self.attempt(
            Conflict if refused else None,
            lambda: run(self.records.create_records(table, payload, bulk=True)),
        )
        if created is not None:
            self.ensure_table(table)
            self.rows[table].update(batch)

    @rule(table=st.sampled_from(TABLES), data=st.data(), patch=st.booleans())
    def update(self, table: str, data: st.DataObject, patch: bool) -> None:
        record_id = self.some_id(table, data)
        if table == "items":
            change = data.draw(ITEM_PATCH if patch else ITEM_FIELDS)
        else:
            change = data.draw(USER_PATCH if patch else USER_UPDATE)
        rows = self.rows.get(table, {})
        expected: type[DomainError] | None = None
        new: Fields = {}
        if record_id not in rows:
            expected = NotFound
        else:
            current = rows[record_id]
            new = ref_merge_patch(current, change) if patch else {**current, **change}
            if table == "users" and not {"email", "full_name"} <= new.keys():
                expected = ValidationFailed
            elif self.violates_unique(table, {**rows, record_id: new}):
                expected = Conflict
        updated = self.attempt(
            expected,
            lambda: run(
                self.records.update_record(table, record_id, change, patch=patch)
            ),
        )
        if updated is not None:
            self.rows[table][record_id] = new

    @rule(table=st.sampled_from(TABLES), data=st.data())
    def delete(self, table: str, data: st.DataObject) -> None:
        record_id = self.some_id(table, data)
        rows = self.rows.get(table, {})
        expected = None if record_id in rows else NotFound
        self.attempt(
            expected,
            lambda: run(self.records.delete_record(table, record_id)),
        )
        if expected is None:
            del self.rows[table][record_id]

    @rule(
        data=st.data(),
        names=st.lists(st.sampled_from(TABLES), min_size=1, max_size=2, unique=True),
        replace=st.booleans(),
        invalid=st.integers(0, 9),
    )
    def import_tables(
        self, data: st.DataObject, names: list[str], replace: bool, invalid: int
    ) -> None:
        payload: dict[str, list[Fields]] = {}
        batches: dict[str, list[tuple[str, Fields]]] = {}
        for name in names:
            ids = data.draw(st.lists(st.sampled_from(ids_for(name)), max_size=3))
            batches[name] = [(i, data.draw(fields_for(name))) for i in ids]
            payload[name] = [{"id": i, **f} for i, f in batches[name]]
        if invalid == 0 and payload[names[-1]]:
            payload[names[-1]][-1]["bad-name"] = 1  # one bad record: nothing written
        expected: type[DomainError] | None = None
        after: dict[str, dict[str, Fields]] = {}
        if invalid == 0 and payload[names[-1]]:
            expected = ValidationFailed
        else:
            for name, batch in batches.items():
                ids = [i for i, _ in batch]
                if len(set(ids)) < len(ids):
                    expected = Conflict
                base = {} if replace else dict(self.rows.get(name, {}))
                base.update(batch)
                after[name] = base
                if self.violates_unique(name, base):
                    expected = Conflict
        mode = "replace" if replace else "merge"
        counts = self.attempt(
            expected, lambda: run(self.imports.run(payload, mode=mode))
        )
        if counts is not None:
            assert counts == {n: len(batches[n]) for n in names}
            for name, rows in after.items():
                self.ensure_table(name)
                self.rows[name] = rows

    @precondition(lambda self: sum(map(len, self.rows.values())) >= 4)
    @rule(table=st.sampled_from(TABLES))
    def drop(self, table: str) -> None:
        expected = None if table in self.rows else NotFound
        self.attempt(expected, lambda: run(self.records.drop_table(table)))
        if expected is None:
            if table == "users":  # a built-in table is emptied, its indexes kept
                self.rows["users"] = {}
            else:
                del self.rows[table]
                del self.indexes[table]

    @rule(
        table=st.sampled_from(TABLES),
        field=st.sampled_from(INDEXABLE),
        unique=st.booleans(),
        kind=st.sampled_from(["hash", "sorted"]),
    )
    def create_index(self, table: str, field: str, unique: bool, kind: str) -> None:
        expected: type[DomainError] | None = None
        if table not in self.rows:
            expected = NotFound
        elif field in self.indexes[table]:
            expected = Conflict
        elif unique:
            probe = {**self.indexes[table], field: True}
            self.indexes[table], saved = probe, self.indexes[table]
            if self.violates_unique(table, self.rows[table]):
                expected = Conflict
            self.indexes[table] = saved
        self.attempt(
            expected,
            lambda: run(
                self.tables.create_index(table, field, unique=unique, kind=kind)
            ),
        )
        if expected is None:
            self.indexes[table][field] = unique

    @rule(table=st.sampled_from(TABLES), field=st.sampled_from(INDEXABLE))
    def drop_index(self, table: str, field: str) -> None:
        expected: type[DomainError] | None = None
        if (table, field) == ("users", "email"):
            expected = Conflict
        elif table not in self.rows or field not in self.indexes[table]:
            expected = NotFound
        self.attempt(expected, lambda: run(self.tables.drop_index(table, field)))
        if expected is None:
            del self.indexes[table][field]

    # -- invariants ----------------------------------------------------------

    @invariant()
    def the_store_holds_what_the_model_holds(self) -> None:
        assert sorted(self.store.tables) == sorted(self.rows)
        for name, rows in self.rows.items():
            table = self.store.tables[name]
            assert list(table.records) == list(rows), name
            for record_id, record in table.records.items():
                assert record["id"] == record_id
                fields = {k: v for k, v in record.items() if k not in SERVER}
                assert strict(fields) == strict(rows[record_id]), (name, record_id)
            specs = {f: i.unique for f, i in table.indexes.items()}
            assert specs == self.indexes[name], name
        assert self.store.total == sum(
            len(t.records) for t in self.store.tables.values()
        )

    @invariant()
    def every_index_equals_one_rebuilt_from_scratch(self) -> None:
        for name, table in self.store.tables.items():
            for field, index in table.indexes.items():
                assert index.field == field
                expected = rebuilt_groups(table, field)
                assert index_groups(index) == expected, (name, field)
                assert index.entries() == sum(len(ids) for ids in expected.values())
                for key, ids in expected.items():
                    assert index.size(key) == len(ids)
                    assert set(index.ids(key)) == ids
                if isinstance(index, SortedIndex):
                    assert list(index.ordered) == sorted(
                        (*order_of(key), i)
                        for key, ids in expected.items()
                        for i in ids
                    ), (name, field)
                    held = {i for ids in expected.values() for i in ids}
                    assert index.absent == set(table.records) - held, (name, field)

    @invariant()
    def seq_orders_ids_as_the_table_does(self) -> None:
        for name, table in self.store.tables.items():
            order = list(table.records)
            if table.indexes:
                assert table.seq is not None, name
            if table.seq is not None:
                assert set(table.seq) == set(order), name
                positions = [table.seq[i] for i in order]
                assert positions == sorted(positions), name
                assert len(set(positions)) == len(positions), name
            assert table.in_order(set(order)) == order, name
            assert table.in_order(set(order[::2])) == order[::2], name


IndexMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_indexes_stay_consistent = IndexMachine.TestCase


def test_the_machine_starts_with_the_builtin_and_custom_indexes() -> None:
    machine = IndexMachine()
    tables = machine.store.tables
    assert {f: i.unique for f, i in tables["users"].indexes.items()} == {
        "email": True,
        "age": False,
    }
    assert {f: i.unique for f, i in tables["items"].indexes.items()} == {
        "code": True,
        "meta.group": False,
    }
    machine.the_store_holds_what_the_model_holds()
    machine.every_index_equals_one_rebuilt_from_scratch()
    machine.seq_orders_ids_as_the_table_does()


def test_rebuilt_groups_follow_json_equality_and_skip_missing_paths() -> None:
    table = Table("t")
    records: list[Record] = [
        {"id": "a", "m": {"g": 1}},
        {"id": "b", "m": {"g": 1.0}},
        {"id": "c", "m": {"g": "1"}},
        {"id": "d", "m": "flat"},
        {"id": "e", "m": {"g": None}},
        {"id": "f"},
    ]
    for record in records:
        table.records[record["id"]] = record
    assert rebuilt_groups(table, "m.g") == {
        1: frozenset({"a", "b"}),
        "1": frozenset({"c"}),
        None: frozenset({"e"}),
    }
