"""app.services.query: the list query language against a reference written out here.

The property test builds the same table in two stores, one with hash indexes on
the filtered fields and one without, runs ``QueryService.list_records`` on both
and compares items, total and order with ``reference_list``: plain loops that
follow the module's documented rules, sharing no code with it.
"""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.core.errors import BadRequest, NotFound, QueryTooCostly, ValidationFailed
from app.services.query import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MAX_OFFSET,
    Filter,
    Page,
    Query,
    QueryService,
    deep_page,
    literal,
    sort_key,
    sorted_page,
    parse_query,
    plain_page,
    predicate,
    project,
    sort_records,
    sort_value,
)
from app.services import query as query_module
from app.services.work import Limits
from app.storage.keys import MISSING
from app.storage.memory import MemoryStore, Record, Store

from tests.unit.jsonvalues import equal_variants, json_equal

TABLE = "things"


def listed(service: QueryService, table: str, query: Query) -> Page:
    """``QueryService.list_records``, run to its end."""
    return asyncio.run(service.list_records(table, query))


# -- the reference ------------------------------------------------------------

ABSENT = object()


def ref_get(record: Any, path: str) -> Any:
    """The value at a dotted path, or ``ABSENT``."""
    value = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return ABSENT
        value = value[part]
    return value


def _no_constants(name: str) -> Any:
    raise ValueError(name)  # NaN and Infinity are not JSON


def ref_literal(raw: str) -> Any:
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except ValueError:
        return raw


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def ref_like(pattern: str, text: str, *, ignore_case: bool) -> bool:
    """SQL LIKE: ``%`` any run, ``_`` one character, the whole text must match."""
    if ignore_case:
        pattern, text = pattern.lower(), text.lower()
    # matches[j]: the pattern so far matches text[:j]
    matches = [True] + [False] * len(text)
    for p in pattern:
        row = [False] * (len(text) + 1)
        for j in range(len(text) + 1):
            if p == "%":
                row[j] = matches[j] or (j > 0 and row[j - 1])
            elif j > 0:
                row[j] = matches[j - 1] and (p == "_" or p == text[j - 1])
        matches = row
    return matches[len(text)]


def ref_match(op: str, raw: str, value: Any) -> bool:
    present = value is not ABSENT
    if op == "exists":
        return present == (raw == "true")
    if op == "eq":
        return present and json_equal(value, ref_literal(raw))
    if op == "ne":
        return not present or not json_equal(value, ref_literal(raw))
    if op == "in":
        wanted = [] if raw == "" else [ref_literal(x) for x in raw.split(",")]
        return present and any(json_equal(value, w) for w in wanted)
    if op in ("gt", "gte", "lt", "lte"):
        other = ref_literal(raw)
        if is_number(value) and is_number(other):
            pass
        elif isinstance(value, str) and isinstance(other, str):
            pass
        else:
            return False
        if op == "gt":
            return bool(value > other)
        if op == "gte":
            return bool(value >= other)
        if op == "lt":
            return bool(value < other)
        return bool(value <= other)
    if op == "contains":
        if isinstance(value, str):
            return raw in value
        if isinstance(value, list):
            item = ref_literal(raw)
            return any(json_equal(x, item) for x in value)
        return False
    if not isinstance(value, str):
        return False
    if op == "startswith":
        return value.startswith(raw)
    if op == "endswith":
        return value.endswith(raw)
    return ref_like(raw, value, ignore_case=op == "ilike")


def ref_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    found: list[str] = []
    children = value.values() if isinstance(value, dict) else value
    if isinstance(value, (dict, list)):
        for child in children:
            found.extend(ref_strings(child))
    return found


def _rank(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        return 3
    if is_number(value):
        return 1
    if isinstance(value, str):
        return 2
    return 4 if isinstance(value, list) else 5


def ref_compare_values(a: Any, b: Any) -> int:
    """null < numbers < strings < booleans < arrays < objects; arrays and objects
    among themselves by their compact JSON text with sorted keys."""
    rank_a, rank_b = _rank(a), _rank(b)
    if rank_a != rank_b:
        return -1 if rank_a < rank_b else 1
    if rank_a == 0:
        return 0
    if rank_a >= 4:
        a = json.dumps(a, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        b = json.dumps(b, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if a < b:
        return -1
    if a > b:
        return 1
    return 0


def ref_compare_records(
    left: Record, right: Record, keys: list[tuple[str, bool]]
) -> int:
    for path, descending in keys:
        a, b = ref_get(left, path), ref_get(right, path)
        if a is ABSENT and b is ABSENT:
            continue
        if a is ABSENT:
            return 1  # missing last, whatever the direction
        if b is ABSENT:
            return -1
        result = ref_compare_values(a, b)
        if descending:
            result = -result
        if result:
            return result
    return 0


def ref_sort(rows: list[Record], keys: list[tuple[str, bool]]) -> list[Record]:
    """A stable insertion sort."""
    out: list[Record] = []
    for row in rows:
        position = len(out)
        while position > 0 and ref_compare_records(out[position - 1], row, keys) > 0:
            position -= 1
        out.insert(position, row)
    return out


def ref_project(record: Record, fields: list[str]) -> Record:
    out: Record = {"id": record["id"]}
    for path in fields:
        value = ref_get(record, path)
        if value is ABSENT:
            continue
        parts = path.split(".")
        target = out
        for part in parts[:-1]:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[parts[-1]] = copy.deepcopy(value)
    return out


@dataclass
class Case:
    records: list[Record]  # the table, in its expected order
    params: list[tuple[str, str]]
    filters: list[tuple[str, str, str]]  # path, op, raw
    sort: list[tuple[str, bool]]
    limit: int
    offset: int
    fields: list[str] | None
    q: str | None


def reference_list(case: Case) -> tuple[list[Record], int]:
    rows: list[Record] = []
    for record in case.records:
        if all(ref_match(op, raw, ref_get(record, p)) for p, op, raw in case.filters):
            rows.append(record)
    if case.q:
        needle = case.q.casefold()
        rows = [r for r in rows if any(needle in s.casefold() for s in ref_strings(r))]
    if case.sort:
        rows = ref_sort(rows, case.sort)
    page = rows[case.offset : case.offset + case.limit]
    if case.fields is not None:
        page = [ref_project(r, case.fields) for r in page]
    return page, len(rows)


def strict(value: Any) -> bytes:
    """Equality that tells 1 from 1.0 and true from 1, and sees key order."""
    return orjson.dumps(value)


# -- the generated tables and queries ----------------------------------------

STRINGS = ["", "a", "A", "ab", "aB", "ba", "Ab%", "a_b", "1", "true", "null", "x1"]
SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-2, max_value=3),
    st.sampled_from([0.0, -0.0, 1.0, 1.5, -2.5, 3.0]),
    st.sampled_from(STRINGS),
)
VALUES: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["x", "y"]), inner, max_size=2),
    max_leaves=5,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "a": VALUES,
        "b": st.sampled_from([None, 1, 1.0, 2, "a", "A", True]),
        "o": st.dictionaries(st.sampled_from(["x", "y"]), VALUES, max_size=2) | VALUES,
        "tags": st.lists(SCALARS, max_size=3) | VALUES,
    },
)
PATHS = ["a", "b", "o", "o.x", "o.y", "tags", "id", "a.x", "nope"]
INDEXABLE = ["a", "b", "o", "o.x", "tags"]
OPS = "eq ne gt gte lt lte in contains startswith endswith like ilike exists".split()


def json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


RAW_SCALAR = st.one_of(
    SCALARS.map(json_text),
    st.sampled_from(STRINGS + ["A%", "%b", "_", "%", "a%b", "%1%", "_B", "r1", "r2"]),
    st.text(alphabet='aAb%_1"[]{}', max_size=4),
)
RAW = st.one_of(RAW_SCALAR, VALUES.map(json_text))


STRING_OPS = ("contains", "startswith", "endswith", "like", "ilike")


@st.composite
def string_raw(draw: st.DrawFn, op: str, text: str) -> str:
    """A raw value for a string operator that ``text`` often satisfies."""
    start = draw(st.integers(0, len(text)))
    end = draw(st.integers(start, len(text)))
    if op == "contains":
        return text[start:end]
    if op == "startswith":
        return text[:end]
    if op == "endswith":
        return text[start:]
    chars = list(text)
    for position in sorted(
        set(draw(st.lists(st.integers(0, max(len(chars) - 1, 0)), max_size=3))),
        reverse=True,
    ):
        if position < len(chars):
            chars[position] = draw(st.sampled_from(["_", "%", "%%", ""]))
    pattern = "".join(chars)
    return pattern.swapcase() if op == "ilike" and draw(st.booleans()) else pattern


@st.composite
def filters(
    draw: st.DrawFn,
    present: list[tuple[str, Any]],
    ops: list[str] = OPS + ["eq", "eq", "in", "in"],  # the indexed ops, more often
    always_targeted: bool = False,
) -> tuple[str, str, str, str]:
    """(param, path, op, raw). Two times in three the filter targets a value the
    table holds (or one equal to it as JSON: 1 as 1.0, keys reordered), so that it
    matches something; otherwise path and value are anything."""
    op = draw(st.sampled_from(ops))
    targeted = bool(present) and (always_targeted or draw(st.integers(0, 2)) > 0)
    if targeted:
        path, value = draw(st.sampled_from(present))
        if op in STRING_OPS and isinstance(value, str):
            raw = draw(string_raw(op, value))
        else:
            raw = json_text(draw(equal_variants(value)))
        if op == "in":
            others = draw(st.lists(RAW_SCALAR, max_size=2))
            raw = ",".join(draw(st.permutations([raw, *others])))
    else:
        path = draw(st.sampled_from(PATHS))
        raw = draw(RAW)
    if op == "exists":
        raw = draw(st.sampled_from(["true", "false"]))
    bare = op == "eq" and draw(st.booleans())
    return (path if bare else f"{path}__{op}", path, op, raw)


def held_values(records: list[Record]) -> list[tuple[str, Any]]:
    """(path, value) for every path of PATHS that a record of the table holds."""
    found = []
    for record in records:
        for path in PATHS:
            value = ref_get(record, path)
            if value is not ABSENT:
                found.append((path, value))
    return found


@dataclass
class Plan:
    """How the table is built: inserts, deletes, replacements, later inserts."""

    first: list[Record]
    deleted: set[str]
    replaced: dict[str, Record]
    later: list[Record]
    index_at: dict[str, str]  # path -> none | before | middle | end

    def expected(self) -> list[Record]:
        rows = [self.replaced.get(r["id"], r) for r in self.first]
        rows = [r for r in rows if r["id"] not in self.deleted]
        return rows + self.later


@st.composite
def plans(draw: st.DrawFn, *, always_indexed: bool = False) -> Plan:
    first_fields = draw(st.lists(FIELDS, min_size=1, max_size=12))
    later_fields = draw(st.lists(FIELDS, max_size=3))
    numbers = draw(st.permutations(range(len(first_fields) + len(later_fields))))
    ids = [f"r{n}" for n in numbers]
    first = [{"id": i, **f} for i, f in zip(ids, first_fields)]
    later = [{"id": i, **f} for i, f in zip(ids[len(first) :], later_fields)]
    first_ids = [r["id"] for r in first]
    deleted = (
        set(draw(st.lists(st.sampled_from(first_ids), max_size=4))) if first else set()
    )
    replaced: dict[str, Record] = {}
    if first:
        for record_id in draw(st.lists(st.sampled_from(first_ids), max_size=3)):
            replaced[record_id] = {"id": record_id, **draw(FIELDS)}
    moments = ["before", "middle", "end"] + ([] if always_indexed else ["none"])
    index_at = {path: draw(st.sampled_from(moments)) for path in INDEXABLE}
    return Plan(first, deleted, replaced, later, index_at)


def build(plan: Plan, *, indexed: bool) -> Store:
    store = Store(max_records=10_000)
    store.create_table(TABLE)

    def index(when: str) -> None:
        if indexed:
            for path, at in plan.index_at.items():
                if at == when:
                    store.create_index(TABLE, path)

    index("before")
    half = len(plan.first) // 2
    store.insert(TABLE, plan.first[:half])
    store.insert(TABLE, plan.first[half:])
    index("middle")
    for record_id in sorted(plan.deleted):
        store.delete(TABLE, record_id)
    for record_id, record in plan.replaced.items():
        if record_id not in plan.deleted:
            store.replace(TABLE, record)
    store.insert(TABLE, plan.later)
    index("end")
    return store


@st.composite
def queries(draw: st.DrawFn, plan: Plan, *, narrow: bool = False) -> Case:
    """A query of the table. ``narrow``: only equality and ``in`` filters on values
    the table holds, with every field indexed and no sort, so that the order of
    what an index finds is what the comparison sees."""
    params: list[tuple[str, str]] = []
    held = held_values(plan.expected())
    if narrow:
        count = draw(st.integers(1, 2))
        chosen = [
            draw(filters(held, ["eq", "in"], always_targeted=True))
            for _ in range(count)
        ]
    else:
        chosen = [draw(filters(held)) for _ in range(draw(st.integers(0, 2)))]
    for param, _, _, raw in chosen:
        params.append((param, raw))
    q = None
    if not narrow and draw(st.integers(0, 3)) == 0:
        q = draw(st.text(alphabet="aAbB1r", max_size=2))
        params.append(("q", q))
    sort = []
    if not narrow and draw(st.booleans()):
        sort = draw(
            st.lists(st.tuples(st.sampled_from(PATHS), st.booleans()), max_size=3)
        )
    if sort:
        params.append(("sort", ",".join(("-" if d else "") + p for p, d in sort)))
    limits = [None, 1000] if narrow else [None, 0, 1, 2, 3, 7, 1000]
    limit = draw(st.sampled_from(limits))
    if limit is not None:
        params.append(("limit", str(limit)))
    offset = draw(st.sampled_from([None, 0] if narrow else [None, 0, 1, 2, 5, 20]))
    if offset is not None:
        params.append(("offset", str(offset)))
    fields = draw(st.none() | st.lists(st.sampled_from(PATHS), max_size=3))
    if fields is not None:
        params.append(("fields", ",".join(fields)))
    params = draw(st.permutations(params))
    case = Case(
        records=plan.expected(),
        params=list(params),
        filters=[(path, op, raw) for _, path, op, raw in chosen],
        sort=sort,
        limit=DEFAULT_LIMIT if limit is None else limit,
        offset=offset or 0,
        fields=fields,
        q=q,
    )
    return case


QUERIES_PER_TABLE = 8


@st.composite
def tables_and_queries(
    draw: st.DrawFn, *, narrow: bool = False
) -> tuple[Plan, list[Case]]:
    plan = draw(plans(always_indexed=narrow))
    return plan, [draw(queries(plan, narrow=narrow)) for _ in range(QUERIES_PER_TABLE)]


def check_against_the_reference(plan: Plan, cases: list[Case]) -> None:
    for indexed in (False, True):
        store = build(plan, indexed=indexed)
        records = plan.expected()
        assert strict(store.snapshot(TABLE)) == strict(records)
        before = copy.deepcopy(records)
        label = "indexed" if indexed else "plain"
        for case in cases:
            expected_items, expected_total = reference_list(case)
            query = parse_query(case.params)
            page = listed(QueryService(MemoryStore.around(store)), TABLE, query)
            where = (label, case.params)
            assert page.total == expected_total, where
            ids = [r["id"] for r in page.items]
            assert ids == [r["id"] for r in expected_items], where
            assert strict(page.items) == strict(expected_items), where
            assert (page.limit, page.offset) == (case.limit, case.offset), where
        # A query never changes what it reads.
        assert strict(store.snapshot(TABLE)) == strict(before)


# JSON equality inside a list: [0] and [0.0] are equal values.
LIST_OF_FLOAT = Plan(
    first=[{"id": "r0", "o": {"x": [0.0]}}, {"id": "r1", "o": {"x": [1]}}],
    deleted=set(),
    replaced={},
    later=[],
    index_at={path: "middle" for path in INDEXABLE},
)


@example(
    (
        LIST_OF_FLOAT,
        [
            Case(
                records=LIST_OF_FLOAT.expected(),
                params=[("o.x", "[0]")],
                filters=[("o.x", "eq", "[0]")],
                sort=[],
                limit=DEFAULT_LIMIT,
                offset=0,
                fields=None,
                q=None,
            )
        ],
    )
)
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(tables_and_queries())
def test_list_records_matches_the_reference_with_and_without_indexes(
    generated: tuple[Plan, list[Case]],
) -> None:
    check_against_the_reference(*generated)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(tables_and_queries(narrow=True))
def test_index_narrowed_lists_match_the_reference_in_order(
    generated: tuple[Plan, list[Case]],
) -> None:
    check_against_the_reference(*generated)


def test_an_index_narrowed_list_keeps_insertion_order_after_deletes_and_updates(
    store: Store,
) -> None:
    store.create_table(TABLE)
    store.insert(TABLE, [{"id": i, "g": 1} for i in ("z", "b", "y", "a", "x")])
    store.create_index(TABLE, "g")
    store.delete(TABLE, "b")
    store.insert(TABLE, [{"id": "b", "g": 1}, {"id": "c", "g": 2}])
    store.replace(TABLE, {"id": "y", "g": 2})
    store.replace(TABLE, {"id": "y", "g": 1.0})
    service = QueryService(MemoryStore.around(store))

    def ids(param: str, raw: str) -> list[str]:
        page = listed(service, TABLE, parse_query([(param, raw)]))
        return [r["id"] for r in page.items]

    assert ids("g", "1") == ["z", "y", "a", "x", "b"]
    assert ids("g__in", "1,2") == ["z", "y", "a", "x", "b", "c"]
    assert ids("g__in", "2,1") == ["z", "y", "a", "x", "b", "c"]
    assert ids("id__in", "x,b,z,q") == ["z", "x", "b"]
    store.drop_index(TABLE, "g")
    assert ids("g", "1") == ["z", "y", "a", "x", "b"]


# -- parse_query --------------------------------------------------------------


def bad_request(params: list[tuple[str, str]]) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        parse_query(params)
    error = caught.value
    assert error.status_code == 400
    assert error.code == "bad_request"
    return error


@pytest.mark.parametrize(
    "param",
    ["age__foo", "a.b__between", "age__EQ", "name__regex", "a__eq__eq", "age__"],
)
def test_an_unknown_operator_is_400_naming_the_parameter(param: str) -> None:
    error = bad_request([(param, "1")])
    assert param in error.message
    assert error.details[0]["loc"] == [param]
    assert "unknown operator" in error.message


@pytest.mark.parametrize(
    ("param", "raw"),
    [
        ("limit", "-1"),
        ("limit", "1001"),
        ("limit", "abc"),
        ("limit", "1.5"),
        ("limit", "1e2"),
        ("limit", ""),
        ("limit", " 5"),
        ("limit", "+5"),
        pytest.param("limit", "\u00b2", id="limit-superscript-two"),
        ("offset", "-1"),
        ("offset", "x"),
        ("offset", ""),
        pytest.param("offset", "1" * 5000, id="offset-5000-digits"),
        pytest.param("offset", "1000000001", id="offset-past-the-maximum"),
    ],
)
def test_a_bad_limit_or_offset_is_400_naming_the_parameter(
    param: str, raw: str
) -> None:
    error = bad_request([(param, raw)])
    assert error.details[0]["loc"] == [param]
    assert repr(param) in error.message


@pytest.mark.parametrize(
    ("param", "raw", "said"),
    [
        ("offset", "99999999999999999999", "must be 0 to 1000000000"),
        ("offset", "0" * 30 + "1000000001", "must be 0 to 1000000000"),
        ("limit", "1" * 16, "must be 0 to 1000"),
        ("limit", "1.5", "must be a whole number"),
    ],
)
def test_a_limit_or_offset_out_of_range_says_its_range_however_long(
    param: str, raw: str, said: str
) -> None:
    assert said in bad_request([(param, raw)]).message


def test_leading_zeros_of_a_limit_or_offset_are_read_past() -> None:
    query = parse_query([("limit", "0" * 20 + "1"), ("offset", "007")])
    assert (query.limit, query.offset) == (1, 7)


@pytest.mark.parametrize(
    ("param", "raw"),
    [
        ("sort", "+-a"),
        ("sort", "--a"),
        ("sort", "-+a"),
        ("sort", "a,,b"),
        ("sort", ","),
        ("sort", "a,"),
        ("fields", "a,,b"),
        ("fields", ",a"),
    ],
)
def test_a_sort_key_has_one_sign_at_most_and_no_item_is_empty(
    param: str, raw: str
) -> None:
    error = bad_request([(param, raw)])
    assert error.details[0]["loc"] == [param]


def test_a_blank_sort_or_fields_asks_for_nothing() -> None:
    query = parse_query([("sort", ""), ("fields", " ")])
    assert query.sort == [] and query.fields == []
    assert parse_query([("sort", "+a, -b")]).sort == [("a", False), ("b", True)]


def test_limit_and_offset_bounds_are_accepted() -> None:
    assert parse_query([("limit", "0")]).limit == 0
    assert parse_query([("limit", str(MAX_LIMIT))]).limit == MAX_LIMIT == 1000
    assert parse_query([("offset", "0")]).offset == 0
    assert parse_query([("offset", "123456789")]).offset == 123456789
    assert parse_query([("offset", "1000000000")]).offset == MAX_OFFSET
    default = parse_query([])
    assert (default.limit, default.offset) == (DEFAULT_LIMIT, 0) == (100, 0)
    assert default.filters == [] and default.sort == [] and default.fields is None
    assert default.q is None


@pytest.mark.parametrize(
    ("param", "raw"),
    [
        ("password", "x"),
        ("password__eq", "x"),
        ("password__exists", "true"),
        ("password.inner", "x"),
        ("sort", "password"),
        ("sort", "age,-password"),
        ("fields", "email,password"),
        ("fields", "password.x"),
    ],
)
def test_password_can_never_be_filtered_sorted_or_projected(
    param: str, raw: str
) -> None:
    error = bad_request([(param, raw)])
    assert error.details[0]["loc"] == [param]
    assert "password" in error.message


@pytest.mark.parametrize(
    ("param", "raw"),
    [
        ("a..b", "1"),
        ("1abc", "1"),
        ("__eq", "1"),
        ("a-b", "1"),
        ("sort", "-"),
        ("sort", "a..b"),
        ("fields", "a,b c"),
        ("exists__exists", "yes"),
        ("age__exists", "1"),
        ("age__exists", ""),
    ],
)
def test_malformed_paths_and_exists_values_are_400(param: str, raw: str) -> None:
    error = bad_request([(param, raw)])
    assert error.details[0]["loc"] == [param]


def test_parse_query_reads_every_part() -> None:
    query = parse_query(
        [
            ("age__gte", "30"),
            ("address.city", "Oslo"),
            ("tags__in", "a,1,null"),
            ("nick__exists", "false"),
            ("name__contains", "30"),
            ("q", "Ada"),
            ("sort", "age, -name ,address.city"),
            ("limit", "5"),
            ("offset", "10"),
            ("fields", "name,address.city"),
        ]
    )
    assert [(f.param, f.path, f.op, f.value) for f in query.filters] == [
        ("age__gte", "age", "gte", 30),
        ("address.city", "address.city", "eq", "Oslo"),
        ("tags__in", "tags", "in", ["a", 1, None]),
        ("nick__exists", "nick", "exists", False),
        ("name__contains", "name", "contains", "30"),
    ]
    assert query.filters[1].parts == ("address", "city")
    assert query.q == "Ada"
    assert query.sort == [("age", False), ("name", True), ("address.city", False)]
    assert (query.limit, query.offset) == (5, 10)
    assert query.fields == ["name", "address.city"]
    assert parse_query([("x__in", "")]).filters[0].value == []


@pytest.mark.parametrize(
    ("param", "raw", "value"),
    [
        ("id", "1", "1"),
        ("id__eq", "-7", "-7"),
        ("id", "1.0", "1"),
        ("id", "1e2", "100"),
        ("id", "1.5", 1.5),
        ("id", "true", True),
        ("id", "null", None),
        ("id", '"1"', "1"),
        ("id", "[1]", [1]),
        ("id__ne", "12", "12"),
        ("id__in", "1,2.0,x,true,2,1.5", ["1", "2", "x", True, 1.5]),
        ("id__in", '1,"1",1.0', ["1"]),
        # other operators, and other paths, keep the JSON value
        ("id__gt", "1", 1),
        ("id__contains", "1", "1"),
        ("n", "1", 1),
        ("n__in", "1,1.0", [1, 1.0]),
        ("ref.id", "1", 1),
        ("idx", "1", 1),
    ],
)
def test_an_integer_compared_with_the_id_is_the_id_with_its_digits(
    param: str, raw: str, value: Any
) -> None:
    (flt,) = parse_query([(param, raw)]).filters
    assert strict(flt.value) == strict(value)


def test_an_integer_lists_the_id_with_its_digits(store: Store) -> None:
    store.create_table(TABLE)
    store.insert(
        TABLE,
        [
            {"id": "1", "n": 1},
            {"id": "2", "n": "1"},
            {"id": "10", "n": 1.0},
            {"id": "x", "n": True},
        ],
    )
    service = QueryService(MemoryStore.around(store))

    def ids(*params: tuple[str, str]) -> list[str]:
        page = listed(service, TABLE, parse_query(params))
        return [r["id"] for r in page.items]

    assert ids(("id", "1")) == ["1"]
    assert ids(("id", "10.0")) == ["10"]
    assert ids(("id__in", "10,1,1.0")) == ["1", "10"]
    assert ids(("id__ne", "1")) == ["2", "10", "x"]
    assert ids(("id__in", "1,2"), ("n", "1")) == ["1"]
    assert ids(("id", "true")) == []
    # elsewhere JSON equality: 1 is 1.0, and not "1"
    assert ids(("n", "1")) == ["1", "10"]
    assert ids(("n", '"1"')) == ["2"]


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("30", 30),
        ("-2", -2),
        ("1.5", 1.5),
        ("1e2", 100.0),
        ("true", True),
        ("false", False),
        ("null", None),
        ('"30"', "30"),
        ('"null"', "null"),
        ("[1,2]", [1, 2]),
        ('{"a":1}', {"a": 1}),
        ("abc", "abc"),
        ("", ""),
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("01", "01"),
        ("True", "True"),
        ("1,2", "1,2"),
        ('"open', '"open'),
    ],
)
def test_literal_reads_json_where_it_parses_else_the_string(
    raw: str, value: Any
) -> None:
    assert strict(literal(raw)) == strict(value)


# -- predicate ---------------------------------------------------------------


def matches(op: str, value: Any, candidate: Any) -> bool:
    return predicate(Filter(f"f__{op}", "f", op, value))(candidate)


def test_eq_uses_json_equality_and_never_matches_missing() -> None:
    assert matches("eq", 1, 1.0) and matches("eq", 1.0, 1)
    assert matches("eq", 0, -0.0)
    assert not matches("eq", 1, "1")
    assert not matches("eq", 1, True) and not matches("eq", True, 1)
    assert not matches("eq", 0, False) and not matches("eq", 0, None)
    assert matches("eq", None, None)
    assert not matches("eq", None, MISSING)
    assert matches("eq", {"a": 1, "b": [True]}, {"b": [True], "a": 1})
    assert not matches("eq", [1, 2], [2, 1])


def test_json_equality_holds_inside_lists_and_objects() -> None:
    assert matches("eq", [1], [1.0])
    assert matches("eq", {"a": 2.0}, {"a": 2})
    assert matches("in", [[1]], [1.0])


def test_ne_matches_missing_and_other_types() -> None:
    assert matches("ne", 1, MISSING)
    assert matches("ne", 1, "1")
    assert matches("ne", 1, True)
    assert not matches("ne", 1, 1.0)
    assert matches("ne", None, MISSING)
    assert not matches("ne", None, None)


def test_in_matches_any_listed_value_by_json_equality() -> None:
    assert matches("in", [1, "a", None], 1.0)
    assert matches("in", [1, "a", None], "a")
    assert matches("in", [1, "a", None], None)
    assert not matches("in", [1, "a", None], True)
    assert not matches("in", [1, "a", None], MISSING)
    assert not matches("in", [], 1)


@pytest.mark.parametrize(
    ("op", "value", "candidate", "expected"),
    [
        ("gt", 1, 2, True),
        ("gt", 1, 1.0, False),
        ("gte", 1, 1.0, True),
        ("lt", 1.5, 1, True),
        ("lte", 2, 2, True),
        ("lt", 2, 3, False),
        ("gt", "b", "c", True),
        ("gt", "b", "B", False),
        ("lte", "b", "a", True),
        ("gt", 0, True, False),
        ("lt", 2, False, False),
        ("gte", True, True, False),
        ("gt", 1, "2", False),
        ("lt", "2", 1, False),
        ("gt", 0, None, False),
        ("gte", None, None, False),
        ("gt", 0, [1], False),
        ("gt", 0, {"a": 1}, False),
        ("gt", [0], [1], False),
        ("gt", 0, MISSING, False),
        ("lt", 0, MISSING, False),
    ],
)
def test_ordering_filters_compare_numbers_with_numbers_and_strings_with_strings(
    op: str, value: Any, candidate: Any, expected: bool
) -> None:
    assert matches(op, value, candidate) is expected


def test_exists() -> None:
    assert matches("exists", True, None)
    assert matches("exists", True, 0)
    assert not matches("exists", True, MISSING)
    assert matches("exists", False, MISSING)
    assert not matches("exists", False, None)


def test_contains_is_a_substring_for_strings_and_membership_for_lists() -> None:
    assert matches("contains", "ell", "hello")
    assert not matches("contains", "ELL", "hello")
    assert matches("contains", "1", "a1b")
    assert matches("contains", "1", [3, 1.0])
    assert not matches("contains", "1", ["11"])
    assert not matches("contains", "1", ["1", 2])
    assert matches("contains", '"1"', ["1"])
    assert matches("contains", "a", ["a", "b"])
    assert not matches("contains", "a", ["abc"])
    assert matches("contains", "null", [None])
    assert matches("contains", "true", [True])
    assert not matches("contains", "true", [1])
    assert matches("contains", '{"k":1}', [{"k": 1}])
    assert not matches("contains", "a", {"a": 1})
    assert not matches("contains", "1", 1)
    assert not matches("contains", "a", MISSING)


def test_startswith_and_endswith_apply_to_strings_only() -> None:
    assert matches("startswith", "he", "hello")
    assert not matches("startswith", "He", "hello")
    assert matches("endswith", "lo", "hello")
    assert not matches("startswith", "1", 12)
    assert not matches("endswith", "a", ["a"])
    assert not matches("startswith", "", MISSING)
    assert matches("startswith", "", "")


@pytest.mark.parametrize(
    ("op", "pattern", "text", "expected"),
    [
        ("like", "a%", "abc", True),
        ("like", "a%", "Abc", False),
        ("ilike", "a%", "Abc", True),
        ("like", "%b%", "abc", True),
        ("like", "b", "abc", False),
        ("like", "a_c", "abc", True),
        ("like", "a_c", "abbc", False),
        ("like", "a_c", "ac", False),
        ("like", "%", "", True),
        ("like", "_", "", False),
        ("like", "a.c", "abc", False),
        ("like", "a.c", "a.c", True),
        ("like", "(a)*", "(a)*", True),
        ("like", "a+", "aa", False),
        ("like", "a%", "a\nb", True),
        ("like", "a_b", "a\nb", True),
        ("ilike", "%ÄB%", "xäbx", True),
        ("ilike", "A_C", "abc", True),
        ("like", "abc", "abcd", False),
        ("like", "bcd", "abcd", False),
    ],
)
def test_like_and_ilike_match_the_whole_text(
    op: str, pattern: str, text: str, expected: bool
) -> None:
    assert matches(op, pattern, text) is expected


def test_like_never_matches_a_value_that_is_not_a_string() -> None:
    for candidate in (1, None, True, ["a"], {"a": "a"}, MISSING):
        assert not matches("like", "%", candidate)
        assert not matches("ilike", "%", candidate)


# -- sort ---------------------------------------------------------------------


def test_sort_value_orders_types_null_numbers_strings_booleans_arrays_objects() -> None:
    ordered = [None, -5, 0, 1.5, 2, "", "B", "a", False, True, [1], {"a": 1}]
    keys = [sort_value(v) for v in ordered]
    assert keys == sorted(keys)
    for earlier, later in zip(keys, keys[1:]):
        assert earlier <= later
    assert sort_value(1) == sort_value(1.0)
    assert sort_value(True) > sort_value(10**9)
    assert sort_value("z") < sort_value(False)
    assert sort_value({"b": 1, "a": 2}) == sort_value({"a": 2, "b": 1})


def test_sort_records_puts_missing_last_in_both_directions() -> None:
    rows: list[Record] = [
        {"id": "m1"},
        {"id": "n", "v": None},
        {"id": "t", "v": True},
        {"id": "s", "v": "x"},
        {"id": "m2"},
        {"id": "i", "v": 3},
        {"id": "l", "v": [1]},
        {"id": "o", "v": {"a": 1}},
    ]
    up = sort_records(list(rows), [("v", False)])
    assert [r["id"] for r in up] == ["n", "i", "s", "t", "l", "o", "m1", "m2"]
    down = sort_records(list(rows), [("v", True)])
    assert [r["id"] for r in down] == ["o", "l", "t", "s", "i", "n", "m1", "m2"]


def test_sort_records_is_stable_over_several_keys() -> None:
    rows: list[Record] = [
        {"id": "1", "g": "b", "n": 2},
        {"id": "2", "g": "a", "n": 2},
        {"id": "3", "g": "b", "n": 1},
        {"id": "4", "g": "a", "n": 2.0},
        {"id": "5", "g": "b"},
        {"id": "6", "n": 1},
        {"id": "7", "g": "a", "n": 1},
    ]
    by_g_then_n_down = sort_records(list(rows), [("g", False), ("n", True)])
    assert [r["id"] for r in by_g_then_n_down] == ["2", "4", "7", "1", "3", "5", "6"]
    by_n_then_g_down = sort_records(list(rows), [("n", False), ("g", True)])
    assert [r["id"] for r in by_n_then_g_down] == ["3", "7", "6", "1", "2", "4", "5"]
    # Equal keys keep the input order, in both directions.
    ties = [{"id": str(i), "k": 1 if i % 2 else 1.0} for i in range(6)]
    assert [r["id"] for r in sort_records(list(ties), [("k", True)])] == list("012345")
    assert [r["id"] for r in sort_records(list(ties), [("k", False)])] == list("012345")


def test_sort_records_reaches_dotted_paths() -> None:
    rows: list[Record] = [
        {"id": "a", "p": {"c": "Oslo"}},
        {"id": "b", "p": "flat"},
        {"id": "c", "p": {"c": "Bergen"}},
        {"id": "d"},
    ]
    ordered = sort_records(list(rows), [("p.c", False)])
    assert [r["id"] for r in ordered] == ["c", "a", "b", "d"]


# -- project ------------------------------------------------------------------


def test_project_keeps_id_and_builds_nested_objects_for_dotted_paths() -> None:
    record: Record = {
        "id": "r1",
        "name": "Ada",
        "address": {"city": "London", "zip": "N1", "geo": {"lat": 51.5}},
        "tags": ["x"],
        "created_at": "2020-01-01T00:00:00Z",
    }
    original = copy.deepcopy(record)
    assert project(record, []) == {"id": "r1"}
    assert project(record, ["name"]) == {"id": "r1", "name": "Ada"}
    assert project(record, ["address.city", "address.geo.lat", "tags"]) == {
        "id": "r1",
        "address": {"city": "London", "geo": {"lat": 51.5}},
        "tags": ["x"],
    }
    assert project(record, ["missing", "address.nope", "name.first"]) == {"id": "r1"}
    assert project(record, ["id"]) == {"id": "r1"}
    out = project(record, ["address.city"])
    out["address"]["city"] = "Paris"
    assert record == original


# -- the service --------------------------------------------------------------


def test_list_records_on_a_missing_table_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        listed(QueryService(MemoryStore.around(store)), "nothing", parse_query([]))


@pytest.mark.parametrize("name", ["1abc", "a-b", "", "a" * 65])
def test_list_records_on_a_bad_table_name_is_a_validation_error(
    store: Store, name: str
) -> None:
    with pytest.raises(ValidationFailed):
        listed(QueryService(MemoryStore.around(store)), name, parse_query([]))


def test_list_records_pages_and_counts(store: Store) -> None:
    store.insert(TABLE, [{"id": f"r{i:02d}", "n": i} for i in range(25)])
    service = QueryService(MemoryStore.around(store))
    page = listed(
        service,
        TABLE,
        parse_query([("n__gte", "5"), ("limit", "10"), ("offset", "10")]),
    )
    assert page.total == 20
    assert [r["n"] for r in page.items] == list(range(15, 25))
    assert (page.limit, page.offset) == (10, 10)
    empty = listed(service, TABLE, parse_query([("offset", "100")]))
    assert empty.items == [] and empty.total == 25
    count_only = listed(service, TABLE, parse_query([("limit", "0")]))
    assert count_only.items == [] and count_only.total == 25


# -- bounds -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "found"),
    [
        ([("k__ne", "2")] * 33, "at most 32 filters"),
        ([("k", "x" * 4097)], "at most 4096 characters"),
        ([("k", "[" * 33 + "]" * 33)], "nests at most 32"),
        ([("k__in", "1," + "[" * 40 + "]" * 40)], "nests at most 32"),
        ([("k__contains", "[" * 33 + "]" * 33)], "nests at most 32"),
        ([(".".join(["a"] * 33), "1")], "at most 32 parts"),
        ([("sort", ",".join("abcdefghi"))], "at most 8"),
        ([("fields", ",".join(f"f{i}" for i in range(65)))], "at most 64"),
        ([("name__like", "%" * 257)], "at most 256 characters"),
    ],
    ids=[
        "33-filters",
        "long-value",
        "deep-literal",
        "deep-in-item",
        "deep-contains",
        "deep-path",
        "nine-sort-keys",
        "65-fields",
        "long-pattern",
    ],
)
def test_a_query_past_its_bounds_is_400(
    params: list[tuple[str, str]], found: str
) -> None:
    error = bad_request(params)
    assert found in error.message


def test_the_bounds_themselves_are_accepted() -> None:
    query = parse_query(
        [("k__ne", "2")] * 31
        + [("deep", "[" * 32 + "]" * 32), ("sort", ",".join("abcdefgh"))]
    )
    assert len(query.filters) == 32
    assert len(query.sort) == 8
    assert parse_query([("k__ne", "2")] * 40, max_filters=40).filters


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = '["' + "[" * 40 + '\\"' + "{" * 40 + '"]'
    query = parse_query([("x", text)])
    assert query.filters[0].value == ["[" * 40 + '"' + "{" * 40]


def test_a_literal_255_brackets_deep_is_400_not_a_crash() -> None:
    """The attack of the review: ``?x=`` and 255 (or 500) nested lists."""
    for depth in (33, 255, 500, 2000):
        error = bad_request([("x", "[" * depth + "]" * depth)])
        assert error.details[0]["loc"] == ["x"]


# -- sorting in slices --------------------------------------------------------


def _run_sorted_page(
    rows: list[Record], keys: list[tuple[str, bool]], offset: int, limit: int
) -> list[Record]:
    async def run() -> list[Record]:
        with Limits(budget=10**9, max_heavy=4).work() as work:
            return await sorted_page(list(rows), keys, offset, limit, work)

    return asyncio.run(run())


SORT_ROWS = st.lists(
    st.fixed_dictionaries({}, optional={"a": VALUES, "b": VALUES}), max_size=40
).map(lambda rows: [{"id": f"r{i}", **r} for i, r in enumerate(rows)])
SORT_KEYS = st.lists(
    st.tuples(st.sampled_from(["a", "b", "a.a"]), st.booleans()),
    min_size=1,
    max_size=3,
)


@settings(max_examples=200, deadline=None)
@given(
    rows=SORT_ROWS,
    keys=SORT_KEYS,
    offset=st.integers(0, 45),
    limit=st.integers(0, 45),
)
def test_a_page_selected_in_slices_equals_the_sorted_table(
    rows: list[Record],
    keys: list[tuple[str, bool]],
    offset: int,
    limit: int,
) -> None:
    expected = sort_records(list(rows), keys)[offset : offset + limit]
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr("app.services.query.INLINE_SORT", 0)
        sliced = _run_sorted_page(rows, keys, offset, limit)
    assert strict(sliced) == strict(expected)
    assert _run_sorted_page(rows, keys, offset, limit) == expected


@settings(max_examples=200)
@given(a=VALUES, b=VALUES)
def test_the_composite_key_orders_as_sort_records(a: Any, b: Any) -> None:
    rows: list[Record] = [{"id": "1", "v": a}, {"id": "2", "v": b}, {"id": "3"}]
    for descending in (False, True):
        keys = [("v", descending)]
        key = sort_key(keys)
        by_key = sorted(rows, key=key)
        assert [r["id"] for r in by_key] == [
            r["id"] for r in sort_records(list(rows), keys)
        ]


def test_a_deep_unindexed_sort_of_a_large_table_is_too_costly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("app.services.query.INLINE_SORT", 10)
    rows: list[Record] = [{"id": str(i), "n": i} for i in range(50)]
    monkeypatch.setattr("app.services.query.SORT_WINDOW", 20)
    assert [r["n"] for r in _run_sorted_page(rows, [("n", True)], 15, 5)] == list(
        range(34, 29, -1)
    )
    with pytest.raises(QueryTooCostly):
        _run_sorted_page(rows, [("n", True)], 15, 6)


NUMBERS = st.one_of(st.integers(-3, 3), st.sampled_from([0.5, -1.0, 2.0, -0.0, 1e300]))
TEXTS = st.sampled_from(["", "a", "B", "ab", "é", "a b"])
COLUMN = st.sampled_from([NUMBERS, TEXTS, st.one_of(NUMBERS, TEXTS, VALUES)])


AB_KEYS = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.booleans()), min_size=1, max_size=3
)


def ab_rows(data: st.DataObject, column: Any, most: int) -> list[Record]:
    """Rows ``r0``, ``r1``... each with or without ``a`` and ``b`` drawn from
    ``column``."""
    optional = {"a": column, "b": column}
    drawn = data.draw(
        st.lists(st.fixed_dictionaries({}, optional=optional), max_size=most)
    )
    return [{"id": f"r{i}", **r} for i, r in enumerate(drawn)]


def reference_sort(rows: list[Record], keys: list[tuple[str, bool]]) -> list[Record]:
    """Stable passes from the last key to the first, by ``sort_value``;
    records without the field after the others in either direction."""
    for path, descending in reversed(keys):
        present = [r for r in rows if path in r]
        present.sort(key=lambda r: sort_value(r[path]), reverse=descending)
        rows = present + [r for r in rows if path not in r]
    return rows


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    data=st.data(),
    keys=AB_KEYS,
    offset=st.integers(0, 8),
    limit=st.integers(0, 6),
)
def test_sort_records_and_the_first_key_preselection_equal_the_reference(
    data: st.DataObject, keys: list[tuple[str, bool]], offset: int, limit: int
) -> None:
    """Columns of one plain kind (numbers or strings, some missing) are
    compared as they are; the other columns by type first: the order is the
    reference's either way, and a page picked from the rows that can reach it
    (by the first key) is the reference's page."""
    columns = {name: data.draw(COLUMN) for name in ("a", "b")}
    always = data.draw(st.sets(st.sampled_from(["a", "b"])))
    rows = data.draw(
        st.lists(
            st.fixed_dictionaries(
                {n: c for n, c in columns.items() if n in always},
                optional={n: c for n, c in columns.items() if n not in always},
            ),
            max_size=30,
        )
    )
    rows = [{"id": f"r{i}", **r} for i, r in enumerate(rows)]
    expected = reference_sort(list(rows), keys)
    assert strict(sort_records(list(rows), keys)) == strict(expected)
    assert strict(_run_sorted_page(rows, keys, offset, limit)) == strict(
        expected[offset : offset + limit]
    )


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    keys=AB_KEYS,
    offset=st.integers(0, 40),
    limit=st.integers(0, 20),
)
def test_the_plain_page_is_the_sorted_page_or_declines(
    data: st.DataObject, keys: list[tuple[str, bool]], offset: int, limit: int
) -> None:
    """Few distinct values, so that runs of ties cross the page's edges: the
    page of one sort of positions equals the general sort's page; it declines
    (None) exactly when the first key has a missing value, a boolean or values
    of two kinds."""
    few = st.one_of(
        st.sampled_from([0, 1, 1.0, -0.0, 2.5]), st.sampled_from(["", "a", "b"])
    )
    column = data.draw(st.sampled_from([few, st.one_of(few, st.booleans())]))
    rows = ab_rows(data, column, 60)
    first = keys[0][0]
    kinds = {
        str if isinstance(r[first], str) else type(r[first]) is bool
        for r in rows
        if first in r
    }
    plain = all(first in r for r in rows) and (kinds in ({str}, {False}) or not rows)
    page = plain_page(list(rows), keys, offset, offset + limit)
    if not plain:
        assert page is None
        return
    assert page is not None
    assert strict(page) == strict(
        sort_records(list(rows), keys)[offset : offset + limit]
    )


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    keys=AB_KEYS,
    offset=st.integers(0, 120),
    limit=st.integers(0, 30),
    step=st.integers(1, 16),
)
def test_the_deep_page_in_pieces_is_the_sorted_page(
    data: st.DataObject,
    keys: list[tuple[str, bool]],
    offset: int,
    limit: int,
    step: int,
) -> None:
    """A page deep into a run, sorted in pieces and merged as far as the page:
    the reference's page, ties (few values, kinds mixed, fields missing) in
    the rows' order, whatever the size of a piece."""
    column = st.one_of(
        st.sampled_from([0, 1, 1.0, 2.5, None, True]), st.sampled_from(["", "a"])
    )
    rows = ab_rows(data, column, 120)
    expected = reference_sort(list(rows), keys)[offset : offset + limit]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(query_module, "DEEP_STEP", step)
        with Limits(budget=10**9, max_heavy=4).work() as work:
            page = asyncio.run(
                deep_page(list(rows), keys, offset, offset + limit, work)
            )
    assert strict(page) == strict(expected)


def test_the_plain_page_orders_ties_by_the_next_keys_across_its_edges() -> None:
    rows: list[Record] = [
        {"id": str(i), "g": i % 3, "n": i} for i in range(12)
    ]  # g: 0,1,2,0,1,2,...
    keys = [("g", True), ("n", True)]
    # by g descending: 2 (11, 8, 5, 2), 1 (10, 7, 4, 1), 0 (9, 6, 3, 0)
    page = plain_page(rows, keys, 3, 6)
    assert page is not None
    assert [r["n"] for r in page] == [2, 10, 7]
    assert plain_page(rows, [("g", True)], 3, 6) == [rows[i] for i in (11, 1, 4)]
    assert plain_page(rows, keys, 20, 25) == []
    assert plain_page([{"id": "1", "g": True}], keys, 0, 1) is None
    assert plain_page([{"id": "1"}], keys, 0, 1) is None


def test_the_plain_page_worst_cases_at_the_inline_sort_limit() -> None:
    """At the most rows sorted at once: every row tied on the first key (the
    page widened to the whole table, then sorted by the next key), and a
    column of strings with one number at its end (the sort fails late and
    the general way answers): each the general sort's page."""
    tied: list[Record] = [{"id": str(i), "g": 1, "n": i % 7} for i in range(2000)]
    keys = [("g", True), ("n", False)]
    page = plain_page(tied, keys, 100, 120)
    assert page is not None and page == sort_records(list(tied), keys)[100:120]
    assert [r["n"] for r in page] == [0] * 20
    assert _run_sorted_page(tied, keys, 100, 20) == page
    late: list[Record] = [{"id": str(i), "g": f"s{i:04d}"} for i in range(1999)]
    late.append({"id": "1999", "g": 5})
    assert plain_page(late, [("g", True)], 0, 3) is None
    assert [r["id"] for r in _run_sorted_page(late, [("g", True)], 0, 3)] == [
        "1998",
        "1997",
        "1996",
    ]
