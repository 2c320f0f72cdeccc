"""The list query language: filters, ``q``, sort, pages and projection.

Comparisons never raise. Ordering filters (``gt gte lt lte``) compare a number
only with a number and a string only with a string; a value of another type does
not match. Sorting puts values of different types in a fixed order
(null, numbers, strings, booleans, arrays, objects) and missing values last in
both directions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Sequence

import orjson

from app.core.errors import BadRequest, NotFound, field_error
from app.services.validation import FIELD_NAME, check_table_name
from app.storage.keys import MISSING, json_key, resolve, split_path
from app.storage.memory import Record, Store, Table

OPERATORS = frozenset(
    "eq ne gt gte lt lte in contains startswith endswith like ilike exists".split()
)
RESERVED = frozenset({"q", "sort", "limit", "offset", "fields"})
HIDDEN = frozenset({"password"})
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

Predicate = Callable[[Any], bool]


@dataclass(frozen=True)
class Filter:
    param: str
    path: str
    op: str
    value: Any

    @property
    def parts(self) -> tuple[str, ...]:
        return split_path(self.path)


@dataclass
class Query:
    filters: list[Filter] = field(default_factory=list)
    q: str | None = None
    sort: list[tuple[str, bool]] = field(default_factory=list)
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    fields: list[str] | None = None


@dataclass(frozen=True)
class Page:
    items: list[Record]
    total: int
    limit: int
    offset: int


def _bad(param: str, message: str) -> BadRequest:
    return BadRequest(
        f"bad query parameter {param!r}: {message}",
        details=[field_error(["query", param], message, "query")],
    )


def _path(param: str, path: str) -> str:
    parts = path.split(".")
    if not all(FIELD_NAME.fullmatch(p) for p in parts):
        raise _bad(param, f"{path!r} is not a field name or dotted path")
    if parts[0] in HIDDEN:
        raise _bad(param, f"{parts[0]!r} is write-only and cannot be queried")
    return path


_JSON_STARTS = frozenset('-0123456789"[{tfn')


def literal(raw: str) -> Any:
    """A query value read as a JSON literal where it parses, else as the string itself."""
    if raw.lstrip(" \t\n\r")[:1] not in _JSON_STARTS:
        return raw  # cannot be JSON: no parse attempt (and no exception) needed
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


def _int(param: str, raw: str, *, low: int, high: int | None) -> int:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 15:
        raise _bad(param, "must be a whole number")
    value = int(raw)
    if value < low or (high is not None and value > high):
        bound = f"{low} to {high}" if high is not None else f"at least {low}"
        raise _bad(param, f"must be {bound}")
    return value


def parse_query(params: Iterable[tuple[str, str]]) -> Query:
    """Read the query string; a malformed part is 400 naming its parameter."""
    query = Query()
    for param, raw in params:
        if param == "q":
            query.q = raw
        elif param == "sort":
            query.sort = []
            for item in filter(None, (s.strip() for s in raw.split(","))):
                descending = item.startswith("-")
                query.sort.append((_path(param, item.lstrip("-+")), descending))
        elif param == "limit":
            query.limit = _int(param, raw, low=0, high=MAX_LIMIT)
        elif param == "offset":
            query.offset = _int(param, raw, low=0, high=None)
        elif param == "fields":
            query.fields = [
                _path(param, f)
                for f in filter(None, (s.strip() for s in raw.split(",")))
            ]
        else:
            query.filters.append(_filter(param, raw))
    return query


def _filter(param: str, raw: str) -> Filter:
    path, _, op = param.partition("__")
    op = op or "eq"
    if op not in OPERATORS:
        raise _bad(
            param, f"unknown operator {op!r}; use one of {', '.join(sorted(OPERATORS))}"
        )
    path = _path(param, path)
    value: Any
    if op == "in":
        value = [literal(v) for v in raw.split(",")] if raw else []
    elif op == "exists":
        if raw not in ("true", "false"):
            raise _bad(param, "exists takes true or false")
        value = raw == "true"
    elif op in ("contains", "startswith", "endswith", "like", "ilike"):
        value = raw
    else:
        value = literal(raw)
    return Filter(param, path, op, value)


# -- matching ----------------------------------------------------------------


def _same_kind(a: Any, b: Any) -> bool:
    numeric = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    if isinstance(a, numeric) and isinstance(b, numeric):
        return True
    return isinstance(a, str) and isinstance(b, str)


def _like(pattern: str, flags: int) -> re.Pattern[str]:
    out = []
    for char in pattern:
        out.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
    return re.compile("".join(out), flags | re.DOTALL)


def predicate(flt: Filter) -> Predicate:
    """A test of one value (``MISSING`` when the path leads nowhere)."""
    op, value = flt.op, flt.value
    if op == "exists":
        return lambda v: (v is not MISSING) is value
    if op in ("eq", "ne", "in"):
        wanted = {json_key(v) for v in value} if op == "in" else {json_key(value)}
        if op == "ne":
            return lambda v: v is MISSING or json_key(v) not in wanted
        return lambda v: v is not MISSING and json_key(v) in wanted
    if op in ("gt", "gte", "lt", "lte"):
        compare: Callable[[Any, Any], bool] = {
            "gt": lambda a, b: a > b,
            "gte": lambda a, b: a >= b,
            "lt": lambda a, b: a < b,
            "lte": lambda a, b: a <= b,
        }[op]
        return lambda v: v is not MISSING and _same_kind(v, value) and compare(v, value)
    if op == "contains":
        item = literal(value)
        item_key = json_key(item)

        def contains(v: Any) -> bool:
            if isinstance(v, str):
                return value in v
            if isinstance(v, list):
                return any(json_key(x) == item_key for x in v)
            return False

        return contains
    if op == "startswith":
        return lambda v: isinstance(v, str) and v.startswith(value)
    if op == "endswith":
        return lambda v: isinstance(v, str) and v.endswith(value)
    pattern = _like(value, re.IGNORECASE if op == "ilike" else 0)
    return lambda v: isinstance(v, str) and pattern.fullmatch(v) is not None


def _strings(value: Any) -> Iterable[str]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def search(text: str) -> Callable[[Record], bool]:
    """``q``: a case-insensitive substring of any string field (nested too)."""
    needle = text.casefold()

    def found(record: Record) -> bool:
        return any(needle in s.casefold() for s in _strings(record))

    return found


# -- sorting -----------------------------------------------------------------

_NUMBER, _STRING, _BOOL, _ARRAY, _OBJECT = 1, 2, 3, 4, 5


def sort_value(value: Any) -> tuple[int, Any]:
    """A key that orders any two JSON values: by type first, then by value."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (_BOOL, value)
    if isinstance(value, (int, float)):
        return (_NUMBER, value)
    if isinstance(value, str):
        return (_STRING, value)
    dumped = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return (_ARRAY if isinstance(value, list) else _OBJECT, dumped)


def sort_records(rows: list[Record], keys: Sequence[tuple[str, bool]]) -> list[Record]:
    """Stable multi-key sort; missing values last whatever the direction."""
    for path, descending in reversed(keys):
        parts = split_path(path)

        def key(record: Record, parts: tuple[str, ...] = parts) -> tuple[Any, ...]:
            value = resolve(record, parts)
            present = value is not MISSING
            flag = int(present) if descending else int(not present)
            return (flag, *sort_value(value)) if present else (flag, 0, 0)

        rows.sort(key=key, reverse=descending)
    return rows


# -- projection --------------------------------------------------------------


def project(record: Record, fields: Sequence[str]) -> Record:
    out: Record = {"id": record["id"]}
    for path in fields:
        parts = split_path(path)
        value = resolve(record, parts)
        if value is MISSING:
            continue
        target = out
        for part in parts[:-1]:
            nested = target.get(part)
            if not isinstance(nested, dict):
                nested = target[part] = {}
            target = nested
        target[parts[-1]] = value
    return out


# -- the service -------------------------------------------------------------


class QueryService:
    def __init__(self, store: Store) -> None:
        self.store = store

    def list_records(self, table: str, query: Query) -> Page:
        """Filter, search, sort, page and project one table's records."""
        check_table_name(table)
        with self.store.lock:
            current = self.store.table(table)
            if current is None:
                raise NotFound(f"no table named {table!r}")
            rows, rest = _candidates(current, query.filters)
        tests = [(f.parts, predicate(f)) for f in rest]
        if tests:
            rows = [r for r in rows if all(t(resolve(r, p)) for p, t in tests)]
        if query.q:
            found = search(query.q)
            rows = [r for r in rows if found(r)]
        if query.sort:
            rows = sort_records(list(rows), query.sort)
        total = len(rows)
        items = rows[query.offset : query.offset + query.limit]
        if query.fields is not None:
            items = [project(r, query.fields) for r in items]
        return Page(
            items=list(items), total=total, limit=query.limit, offset=query.offset
        )


def _candidates(
    table: Table, filters: list[Filter]
) -> tuple[list[Record], list[Filter]]:
    """The records that can match, narrowed by the most selective index; and the
    filters still to apply. Called with the store's lock held."""
    best: tuple[int, Filter, list[Hashable]] | None = None
    for flt in filters:
        if flt.op not in ("eq", "in"):
            continue
        values = flt.value if flt.op == "in" else [flt.value]
        keys = [json_key(v) for v in values]
        if flt.path == "id":
            size = len(keys)
        elif flt.path in table.indexes:
            index = table.indexes[flt.path]
            if len(keys) == 1:
                size = index.size(keys[0])
            else:
                size = sum(index.size(k) for k in set(keys))
        else:
            continue
        if best is None or size < best[0]:
            best = (size, flt, keys)
    if best is None:
        return list(table.records.values()), filters
    _, chosen, keys = best
    rest = [f for f in filters if f is not chosen]
    if chosen.path == "id":
        ids = {k for k in keys if isinstance(k, str) and k in table.records}
        return [table.records[i] for i in table.in_order(ids)], rest
    index = table.indexes[chosen.path]
    found: set[str] = set()
    for key in set(keys):
        found.update(index.ids(key))
    return [table.records[i] for i in table.in_order(found)], rest
