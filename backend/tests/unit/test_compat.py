"""app.services.compat (json-server's semantics) and app.storage.dbfile (the
file kept in step), on their own: against small reference models written from
json-server's sources, and the file's atomic, batched saves."""

from __future__ import annotations

import asyncio
import math
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.services.compat import (
    MISSING,
    CompatError,
    View,
    coerce,
    deep_contains,
    encoded_line,
    id_value,
    js_string,
    loose_equal,
    matches_tree,
    parse_017,
    parse_1,
    parse_document,
    show,
    show_object,
    sort_in_slices,
    sort_rows,
)
from app.services.compat import CompatService
from app.services.imports import ImportService
from app.services.passwords import PasswordHasher
from app.services.records import RecordService
from app.services.work import Limits
from app.storage.base import JournalError
from app.storage.dbfile import DbFile
from app.storage.memory import MemoryStore, Store

# -- values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw,value",
    [
        ("true", True),
        ("false", False),
        ("null", None),
        ("100", 100),
        ("-2.5", -2.5),
        ("1e3", 1000),
        ("", ""),
        ("  ", "  "),
        ("abc", "abc"),
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("1e400", "1e400"),
    ],
)
def test_coerce_as_json_server(raw: str, value: Any) -> None:
    got = coerce(raw)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    "value,text",
    [
        (True, "true"),
        (1, "1"),
        (1.0, "1"),
        (1.5, "1.5"),
        ([1, None, "a"], "1,,a"),
        ({"a": 1}, "[object Object]"),
        ("x", "x"),
    ],
)
def test_js_string(value: Any, text: str) -> None:
    assert js_string(value) == text


def test_loose_equality_meets_ids_only_across_int_and_digits() -> None:
    assert loose_equal(1, "1") and loose_equal("1", 1)
    assert not loose_equal(1, "01") and not loose_equal(True, 1)
    assert loose_equal(True, True) and not loose_equal(True, "true")
    assert loose_equal(1.0, 1) and not loose_equal(None, "null")


def test_views_show_ids_and_stamps_as_the_file_had_them() -> None:
    record = {"id": "7", "a": 1, "created_at": "t", "updated_at": "u"}
    assert show(View(), record) == {"id": "7", "a": 1}
    assert show(View(ints={"7"}), record) == {"id": 7, "a": 1}
    # each record's id as it was: a table may hold both kinds
    assert show(View(int_ids=True, ints={"8"}), record) == {"id": "7", "a": 1}
    assert show(View(stamps=True), record) == record
    assert show_object(View(), {**record, "id": "_singleton"}) == {"a": 1}
    assert id_value(View(int_ids=True), "007") == "007"
    assert id_value(View(int_ids=True), "x1") == "x1"


def test_parse_document() -> None:
    assert parse_document(b'{"a": []}') == {"a": []}
    assert parse_document(b"{a: [1,],}", ".json5") == {"a": [1]}
    for raw, suffix in ((b"{", ".json"), (b"{a:", ".json5"), (b"\xff", ".json5")):
        with pytest.raises(CompatError) as caught:
            parse_document(raw, suffix)
        assert caught.value.status_code == 400


# -- 1.x conditions against json-server's matchesWhere -------------------------------


def reference_where(field: Any, op: str, want: Any) -> bool:
    """json-server 1.0.0-beta.15's matches-where.ts for one operator, with the
    two rules this service adds: an integer equals the string of its digits,
    and an order between a number and a string never holds."""
    if field is MISSING:
        return op in ("contains", "startsWith", "endsWith") and False
    num = (int, float)
    same = (
        isinstance(field, num)
        and isinstance(want, num)
        and not isinstance(field, bool)
        and not isinstance(want, bool)
    ) or (isinstance(field, str) and isinstance(want, str))

    def eq(a: Any, b: Any) -> bool:
        if isinstance(a, bool) or isinstance(b, bool):
            return a is b
        if isinstance(a, int) and isinstance(b, str):
            return str(a) == b
        if isinstance(b, int) and isinstance(a, str):
            return str(b) == a
        return bool(a == b)

    if op == "lt":
        return same and field < want
    if op == "lte":
        return same and field <= want
    if op == "gt":
        return same and field > want
    if op == "gte":
        return same and field >= want
    if op == "eq":
        return eq(field, want)
    if op == "ne":
        return not eq(field, want)
    if op == "in":
        return any(eq(field, w) for w in want)
    if not isinstance(field, str):
        return False
    text = str(want).lower()
    if op == "contains":
        return text in field.lower()
    if op == "startsWith":
        return field.lower().startswith(text)
    return field.lower().endswith(text)


values = st.one_of(
    st.integers(-5, 5),
    st.sampled_from(["a", "B", "ab", "1", "2", "", "true"]),
    st.booleans(),
    st.none(),
)
raws = st.sampled_from(["1", "2", "-3", "a", "ab", "B", "true", "null", "1,2", "a,1"])
ops = st.sampled_from(
    ["lt", "lte", "gt", "gte", "eq", "ne", "in", "contains", "startsWith", "endsWith"]
)


@given(field=st.one_of(values, st.just(MISSING)), op=ops, raw=raws)
@settings(max_examples=400, deadline=None)
def test_conditions_match_the_reference(field: Any, op: str, raw: str) -> None:
    query = parse_1([(f"v:{op}", raw)])
    [(parts, test)] = query.where
    want = [coerce(p) for p in raw.split(",")] if op == "in" else coerce(raw)
    assert parts == ("v",)
    assert test(field) == reference_where(field, op, want)


def reference_paginate(total: int, page: int, per_page: int) -> dict[str, Any]:
    """json-server 1.0.0-beta.15's paginate.ts."""
    safe = per_page if per_page > 0 else 1
    pages = max(1, math.ceil(total / safe))
    current = max(1, min(page, pages))
    return {
        "first": 1,
        "prev": current - 1 if current > 1 else None,
        "next": current + 1 if current < pages else None,
        "last": pages,
        "pages": pages,
        "items": total,
        "start": (current - 1) * safe,
        "size": safe,
    }


@given(total=st.integers(0, 60), page=st.integers(-3, 12), per=st.integers(-2, 25))
@settings(max_examples=200, deadline=None)
def test_pages_match_the_reference(total: int, page: int, per: int) -> None:
    store = MemoryStore(max_records=1000)
    limits = Limits(budget=10**7, max_heavy=4)
    hasher = PasswordHasher(time_cost=1, memory_kib=64, parallelism=1)
    records = RecordService(store, hasher=hasher, max_bulk=100, limits=limits)
    compat = CompatService(store, records, ImportService(store, records), limits)

    async def run() -> Any:
        await compat.load({"t": [{"id": i} for i in range(total)]}, replace=True)
        query = parse_1([("_page", str(page)), ("_per_page", str(per))])
        return (await compat.select("t", query)).body

    body = asyncio.run(run())
    expected = reference_paginate(total, page, per)
    start, size = expected.pop("start"), expected.pop("size")
    assert {k: v for k, v in body.items() if k != "data"} == expected
    assert [r["id"] for r in body["data"]] == list(range(total))[start : start + size]


def test_sort_keeps_missing_last_both_ways() -> None:
    rows = [
        {"id": "a", "v": 2},
        {"id": "b"},
        {"id": "c", "v": 1},
        {"id": "d", "v": "x"},
    ]

    def get(record: dict[str, Any], parts: tuple[str, ...]) -> Any:
        return record.get(parts[0], MISSING)

    sort_rows(rows, [(("v",), False)], get)
    assert [r["id"] for r in rows] == ["c", "a", "d", "b"]
    sort_rows(rows, [(("v",), True)], get)
    assert [r["id"] for r in rows] == ["d", "a", "c", "b"]


def test_where_trees() -> None:
    record = {"a": 1, "b": {"c": "Hello"}, "t": [1]}
    assert matches_tree(record, {"a": 1})
    assert matches_tree(record, {"a": "1"})
    assert not matches_tree(record, {"z": 1})
    assert matches_tree(record, {"b": {"c": {"startsWith": "he"}}})
    assert not matches_tree(record, {"a": {"c": {"eq": 1}}})
    assert matches_tree(record, {"or": [{"a": 2}, {"a": 1}]})
    assert not matches_tree(record, {"or": []})
    assert not matches_tree(record, {"and": [{"a": 1}, {"a": 2}]})
    assert not matches_tree(record, {"or": [1, 2]})


def test_full_text_017() -> None:
    assert deep_contains({"a": [{"b": "Hello"}]}, "ell")
    assert deep_contains(12, "2") and not deep_contains(0, "0")
    assert not deep_contains("", "") and not deep_contains(None, "n")


def test_parse_017_parameters() -> None:
    query = parse_017(
        [
            ("_sort", "a,b"),
            ("_order", "DESC"),
            ("_start", "2"),
            ("_end", "x"),
            ("_limit", "3"),
            ("_embed", "c,d"),
            ("_expand", "e"),
            ("callback", "f"),
            ("_", "1"),
        ]
    )
    assert query.sort == [(("a",), True), (("b",), False)]
    assert (query.start, query.end, query.limit, query.page) == (2, None, 3, None)
    assert (query.embed, query.expand, query.where) == (["c", "d"], ["e"], [])
    paged = parse_017([("_page", "-1")])
    assert (paged.page, paged.per_page) == (1, 10)


# -- the file -----------------------------------------------------------------------


def encode(state: Any) -> list[bytes]:
    return [orjson.dumps({name: records for name, records in state})]


def test_saves_are_atomic_and_batched(tmp_path: Path) -> None:
    path = tmp_path / "db.json"
    path.write_text("{}")
    os.chmod(path, 0o640)
    store = Store(max_records=100)
    dbfile = DbFile(path, fsync="always", encode=encode)
    dbfile.open(store)

    async def run() -> None:
        store.create_table("t")
        await asyncio.gather(
            *(asyncio.to_thread(store.insert, "t", [{"id": str(i)}]) for i in range(50))
        )
        await asyncio.gather(*(dbfile.wait_durable() for _ in range(50)))
        await dbfile.close()

    asyncio.run(run())
    saved = orjson.loads(path.read_bytes())
    assert sorted(r["id"] for r in saved["t"]) == sorted(str(i) for i in range(50))
    assert 1 <= dbfile.saves < 50  # one save covers the writes made before it
    assert path.stat().st_mode & 0o777 == 0o640
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_failed_save_refuses_the_write_under_always(tmp_path: Path) -> None:
    path = tmp_path / "gone" / "db.json"
    store = Store(max_records=100)
    dbfile = DbFile(path, fsync="always", encode=encode)
    dbfile.open(store)

    async def run() -> None:
        store.create_table("t")
        with pytest.raises(JournalError, match="could not be saved"):
            await dbfile.wait_durable()
        path.parent.mkdir()
        await dbfile.wait_durable()  # a later save succeeds
        assert dbfile.failure is None

    asyncio.run(run())
    assert orjson.loads(path.read_bytes()) == {"t": []}


def test_everysec_saves_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "db.json"
    store = Store(max_records=100)
    dbfile = DbFile(path, fsync="no", encode=encode)
    dbfile.open(store)

    async def run() -> None:
        dbfile.start()
        store.create_table("t")
        await dbfile.wait_durable()  # returns at once: not "always"
        for _ in range(50):
            if dbfile.saved == dbfile.changed:
                break
            await asyncio.sleep(0.05)
        assert dbfile.saved == dbfile.changed == 1
        await dbfile.close()
        assert store.journal is None

    asyncio.run(run())
    assert orjson.loads(path.read_bytes()) == {"t": []}


@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "a": st.one_of(st.integers(-3, 3), st.sampled_from(["x", "y", "Y"])),
                "b": st.one_of(st.none(), st.booleans(), st.integers(0, 2)),
            },
        ),
        min_size=0,
        max_size=60,
    ),
    keys=st.lists(
        st.tuples(st.sampled_from([("a",), ("b",)]), st.booleans()),
        min_size=1,
        max_size=2,
    ),
)
@settings(max_examples=150, deadline=None)
def test_sorting_in_slices_is_the_same_sort(
    rows: list[dict[str, Any]], keys: Any
) -> None:
    records = [{"id": str(i), **r} for i, r in enumerate(rows * 80)]  # past INLINE

    def get(record: dict[str, Any], parts: tuple[str, ...]) -> Any:
        return record.get(parts[0], MISSING)

    whole = list(records)
    sort_rows(whole, keys, get)
    work = Limits(budget=10**9, max_heavy=4).work()
    sliced = asyncio.run(sort_in_slices(list(records), keys, get, work))
    assert [r["id"] for r in sliced] == [r["id"] for r in whole]


@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {}, optional={"v": st.integers(0, 4) | st.sampled_from(["a", "b"])}
        ),
        max_size=40,
    ),
    keys=st.lists(
        st.tuples(st.sampled_from([("v",), ("id",)]), st.booleans()),
        min_size=1,
        max_size=2,
    ),
    window=st.integers(1, 12),
)
@settings(max_examples=200, deadline=None)
def test_a_sort_for_the_first_rows_gives_the_first_rows_of_the_whole_sort(
    rows: list[dict[str, Any]], keys: Any, window: int
) -> None:
    records = [{"id": str(i), **r} for i, r in enumerate(rows)]

    def get(record: dict[str, Any], parts: tuple[str, ...]) -> Any:
        return record.get(parts[0], MISSING)

    whole = sort_rows(list(records), keys, get)
    first = sort_rows(list(records), keys, get, window)
    assert [r["id"] for r in first[:window]] == [r["id"] for r in whole[:window]]


@given(
    record_id=st.one_of(
        st.integers(-(10**17), 10**17).map(str),
        st.sampled_from(["0", "00", "-0", "1a", "abc", "x_1"]),
    ),
    fields=st.dictionaries(
        st.sampled_from(["a", "b", "created", "note"]),
        st.one_of(
            st.integers(-(2**63), 2**63 - 1),
            st.text(max_size=5),
            st.just(',"created_at":"x"'),
            st.just({"created_at": "y"}),
        ),
        max_size=3,
    ),
    int_ids=st.booleans(),
    stamps=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_encoded_lines_are_the_shown_records(
    record_id: str, fields: dict[str, Any], int_ids: bool, stamps: bool
) -> None:
    record = {
        "id": record_id,
        **fields,
        "created_at": "2026-11-30T01:31:28.390168Z",
        "updated_at": "2026-11-30T01:31:29.000000Z",
    }
    view = View(int_ids=int_ids, stamps=stamps)
    assert encoded_line(view, record) == orjson.dumps(show(view, record))


def _compat() -> CompatService:
    store = MemoryStore(max_records=1000)
    limits = Limits(budget=10**7, max_heavy=4)
    hasher = PasswordHasher(time_cost=1, memory_kib=64, parallelism=1)
    records = RecordService(store, hasher=hasher, max_bulk=100, limits=limits)
    return CompatService(store, records, ImportService(store, records), limits)


def _stamped(record_id: str, value: int) -> dict[str, Any]:
    at = "2026-11-30T01:31:28.390168Z"
    return {"id": record_id, "v": value, "created_at": at, "updated_at": at}


@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.integers(0, 3)),
            st.tuples(st.just("change"), st.integers(0, 40)),
            st.tuples(st.just("delete"), st.integers(0, 40)),
            st.tuples(st.just("stamps"), st.booleans()),
        ),
        max_size=12,
    ),
    kept_bytes=st.sampled_from([10**6, 120]),
)
@settings(max_examples=150, deadline=None)
def test_a_file_made_from_kept_pieces_is_the_file_made_afresh(
    steps: list[tuple[str, Any]], kept_bytes: int
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("app.services.compat.PIECE", 4)
        patch.setattr("app.services.compat.PIECES_KEPT_BYTES", kept_bytes)
        compat = _compat()
        table = {str(i): _stamped(str(i), i) for i in range(10)}
        made = 10
        for op, arg in steps:
            if op == "add":
                for _ in range(arg):
                    table[str(made)] = _stamped(str(made), made)
                    made += 1
            elif op == "change" and table:
                key = list(table)[arg % len(table)]
                table[key] = {**table[key], "v": -1}  # a new record, as the store
            elif op == "delete" and table:
                del table[list(table)[arg % len(table)]]
            elif op == "stamps":
                compat.view("t").stamps = arg
            state = [("t", list(table.values()))]
            kept = b"".join(compat.document(state))
            view = compat.view("t")
            assert orjson.loads(kept)["t"] == [show(view, r) for r in state[0][1]]
            pieces = compat._pieces
            compat._pieces = {}
            assert kept == b"".join(compat.document(state))
            compat._pieces = pieces
            held = sum(len(p.encoded) for ps in pieces.values() for p in ps)
            assert held <= kept_bytes  # the pieces kept stay within the bound


def test_a_save_encodes_only_the_pieces_that_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    encoded: list[str] = []
    real = encoded_line

    def counted(view: View, record: dict[str, Any]) -> bytes:
        encoded.append(record["id"])
        return real(view, record)

    monkeypatch.setattr("app.services.compat.encoded_line", counted)
    compat = _compat()
    records = [_stamped(str(i), i) for i in range(2000)]  # four pieces of 512
    first = b"".join(compat.document([("t", records)]))
    assert len(encoded) == 2000
    encoded.clear()
    assert b"".join(compat.document([("t", records)])) == first
    assert encoded == []  # nothing changed: nothing encoded
    records[600] = {**records[600], "v": "new"}
    records.append(_stamped("2000", 2000))
    b"".join(compat.document([("t", records)]))
    # the piece of the changed record, and the last piece, which grew
    assert encoded == [str(i) for i in range(512, 1024)] + [
        str(i) for i in range(1536, 2001)
    ]
    encoded.clear()
    compat.view("t").stamps = True  # shown otherwise: every piece again
    b"".join(compat.document([("t", records)]))
    assert len(encoded) == 2001
