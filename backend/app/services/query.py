"""The list query language: filters, ``q``, sort, pages and projection.

Comparisons never raise. Equality is JSON equality (``1`` is not ``"1"``),
except on ``id``: ids are strings, and an integer compared with one (``eq``,
``ne``, ``in``) is the id written with its digits (``?id=1`` finds ``"1"``).
Ordering filters (``gt gte lt lte``) compare a number only with a number and a
string only with a string; a value of another type does not match. Sorting
puts values of different types in a fixed order (null, numbers, strings,
booleans, arrays, objects) and missing values last in both directions.

Every query is bounded: the number of filters, the length of each value, the
nesting of JSON literals, the depth of paths, the sort keys and projected
fields are limited when the query is parsed (400), and the work of running it
is counted against the request's budget (``app.services.work``). Large tables
are scanned, sorted and projected in slices that give the event loop back.
"""

from __future__ import annotations

import heapq
import math
import re
from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import islice
from operator import eq, itemgetter, neg
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Iterator,
    NamedTuple,
    Sequence,
)

import orjson

from app.core.errors import BadRequest, QueryTooCostly, param_error
from app.services.matching import PatternError, like
from app.services.validation import FIELD_NAME, MAX_DEPTH, check_table_name
from app.services.work import Limits, Work
from app.storage.keys import (
    BOOL_RANK,
    MISSING,
    NUMBER_RANK,
    STRING_RANK,
    json_key,
    resolve,
    sort_value,
    split_path,
)
from app.schemas.builtin import BUILTIN, Schemas
from app.services.errors import store_errors
from app.services.joins import as_id
from app.storage.base import Bound, Record, Scan, StoreBackend, Walk

OPERATORS = frozenset(
    "eq ne gt gte lt lte in contains startswith endswith like ilike exists".split()
)
RESERVED = frozenset({"q", "sort", "limit", "offset", "fields"})
# write-only fields: never filtered, sorted, projected or indexed, in any table
HIDDEN = BUILTIN.hidden
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# far past any table (MEMDB_MAX_RECORDS), and within the work budget to skip
MAX_OFFSET = 1_000_000_000
# Bounds of one query (README, "Limits"); the number of filters and the length
# of the whole query string are settings.
DEFAULT_MAX_FILTERS = 32
MAX_VALUE_CHARS = 4096
MAX_PATH_PARTS = MAX_DEPTH


LEGACY_SUFFIXES = ("gte", "lte", "ne", "like")
_LEGACY = re.compile(r"^(.*[^_])_(" + "|".join(LEGACY_SUFFIXES) + ")$")


def _syntax() -> dict[str, str]:
    """The query language's parameters as regular expressions, for the OpenAPI
    document: what the parser below takes (write-only fields aside)."""
    name = FIELD_NAME.pattern
    path = rf"{name}(\.{name}){{0,{MAX_PATH_PARTS - 1}}}"
    # a filter's field has no "__" (the first one starts the operator), and
    # a filter does not start with "_" (json-server's parameters do)
    plain = r"([A-Za-z]|_[A-Za-z0-9])(_?[A-Za-z0-9]){0,31}"
    first = r"[A-Za-z](_?[A-Za-z0-9]){0,31}"
    filtered = rf"{first}(\.{plain}){{0,{MAX_PATH_PARTS - 1}}}"
    ops = "|".join(sorted(OPERATORS))
    key = rf"[-+]?{path}"
    # json-server 0.17's suffixes (views_gte) are refused, not fields
    legacy = "(?!.*[^_]_(" + "|".join(LEGACY_SUFFIXES) + ")$)"
    return {
        "path": f"^{path}$",
        "filter": rf"^{legacy}{filtered}(__({ops}))?$",
        "sort": rf"^({key}(,{key}){{0,{MAX_SORT_KEYS - 1}}})?$",
        "fields": rf"^({path}(,{path}){{0,{MAX_PROJECTED - 1}}})?$",
    }


MAX_SORT_KEYS = 8
MAX_PROJECTED = 64
# An unindexed sort of more rows than this selects its page in slices, and may
# reach at most SORT_WINDOW rows deep (offset + limit).
INLINE_SORT = 2000
SORT_WINDOW = 10_000
SYNTAX = _syntax()

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


class Page(NamedTuple):
    """One page of a list answer (a named tuple: one is made a request)."""

    items: list[Record]
    total: int
    limit: int
    offset: int


def _bad(param: str, message: str) -> BadRequest:
    return BadRequest(
        f"bad query parameter {param!r}: {message}",
        details=[param_error(param, message, "query")],
    )


def _path(param: str, path: str) -> str:
    parts = path.split(".")
    if len(parts) > MAX_PATH_PARTS:
        raise _bad(param, f"a path has at most {MAX_PATH_PARTS} parts")
    if not all(FIELD_NAME.fullmatch(p) for p in parts):
        raise _bad(param, f"{path!r} is not a field name or dotted path")
    return path


def _visible(param: str, path: str, hidden: frozenset[str]) -> str:
    first = path.split(".", 1)[0]
    if first in hidden:
        raise _bad(param, f"{first!r} is write-only and cannot be queried")
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


def _bracket_depth(raw: str) -> int:
    """How deeply the brackets of a text nest, outside its JSON strings."""
    depth = deepest = 0
    quoted = escaped = False
    for char in raw:
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _value(param: str, raw: str) -> Any:
    """A filter's value as a JSON literal, within the nesting of bodies (one
    too deep for the parser itself is refused alike, not read as text)."""
    if raw.lstrip(" \t\n\r")[:1] in ("[", "{") and _bracket_depth(raw) > MAX_DEPTH:
        raise _bad(param, f"a JSON value nests at most {MAX_DEPTH} levels")
    return literal(raw)


def _int(param: str, raw: str, *, low: int, high: int | None) -> int:
    if not (raw.isascii() and raw.isdigit()):
        raise _bad(param, "must be a whole number")
    digits = raw.lstrip("0") or "0"
    # past 15 digits it is out of range: said without reading it as a number
    value = int(digits) if len(digits) <= 15 else None
    if value is None or value < low or (high is not None and value > high):
        bound = f"{low} to {high}" if high is not None else f"at least {low}"
        if high is None and value is None:
            bound = "a whole number of at most 15 digits"
        raise _bad(param, f"must be {bound}")
    return value


def _items(param: str, raw: str, most: int) -> list[str]:
    """The comma-separated items of ``raw`` (none when it is blank); an empty
    item (``a,,b``, a trailing comma) is refused."""
    if not raw.strip():
        return []
    items = [s.strip() for s in raw.split(",")]
    if len(items) > most:
        raise _bad(param, f"at most {most} comma-separated items")
    if not all(items):
        raise _bad(param, "an item between commas is empty")
    return items


@lru_cache(maxsize=512)
def _sort_keys(raw: str, hidden: frozenset[str]) -> tuple[tuple[str, bool], ...]:
    """``sort=-a,b`` as (path, descending) pairs; kept for the sorts asked
    again (a refusal is not kept: it is raised each time)."""
    keys = []
    for item in _items("sort", raw, MAX_SORT_KEYS):
        sign = item[0] if item[0] in "-+" else ""  # one sign at most
        path = _path("sort", item[len(sign) :])
        keys.append((_visible("sort", path, hidden), sign == "-"))
    return tuple(keys)


def parse_query(
    params: Iterable[tuple[str, str]],
    *,
    max_filters: int = DEFAULT_MAX_FILTERS,
    hidden: frozenset[str] = HIDDEN,
) -> Query:
    """Read the query string; a malformed part is 400 naming its parameter, and
    so is a ``hidden`` (write-only) field."""
    query = Query()
    for param, raw in params:
        if len(raw) > MAX_VALUE_CHARS:
            raise _bad(param, f"a value is at most {MAX_VALUE_CHARS} characters")
        if param == "q":
            query.q = raw
        elif param == "sort":
            query.sort = list(_sort_keys(raw, hidden))
        elif param == "limit":
            query.limit = _int(param, raw, low=0, high=MAX_LIMIT)
        elif param == "offset":
            query.offset = _int(param, raw, low=0, high=MAX_OFFSET)
        elif param == "fields":
            query.fields = [
                _visible(param, _path(param, f), hidden)
                for f in _items(param, raw, MAX_PROJECTED)
            ]
        else:
            if len(query.filters) >= max_filters:
                raise _bad(param, f"a query has at most {max_filters} filters")
            found = _filter(param, raw)
            _visible(param, found.path, hidden)
            query.filters.append(found)
    return query


# json-server's parameters, with what memdb calls them: taken as a filter on a
# field of that name, each would answer a silently empty page
JSON_SERVER = {
    "_sort": "sort=field,-other",
    "_order": "sort=-field (a leading - sorts descending)",
    "_limit": "limit",
    "_per_page": "limit",
    "_start": "offset",
    "_end": "limit and offset",
    "_page": "offset (the page number times limit)",
    "_embed": "GET /api/v1/join/{left}/{right}/{key}",
    "_expand": "GET /api/v1/join/{left}/{right}/{key}",
    "_where": "filters: field=value or field__op=value",
    "_dependent": "a DELETE of each record that names this one, first",
}


def refuse_json_server_params(params: Iterable[tuple[str, str]]) -> None:
    """400 for the first json-server parameter (``_sort``, ``_dependent``...):
    on any route of the data, it would otherwise be silently ignored."""
    for param, _ in params:
        if param.startswith("_"):
            raise _not_memdb(param, "no such parameter: this route takes none")


def refuse_unknown_params(
    params: Iterable[tuple[str, str]], known: Sequence[str]
) -> None:
    """400 for the first parameter a route does not take (a json-server one
    named as such): an unknown one would otherwise be silently ignored."""
    refuse_json_server_params(params)
    for param, _ in params:
        if param not in known:
            raise _bad(param, f"no such parameter: this route takes {', '.join(known)}")


def _not_memdb(
    param: str, default: str = "filters (field__op=value), q, sort, limit, offset"
) -> BadRequest:
    """A json-server parameter: 400 naming memdb's equivalent."""
    name = param.split(":", 1)[0]
    instead = JSON_SERVER.get(name, default)
    return _bad(param, f"a parameter starting with _ is json-server's; use {instead}")


def _filter(param: str, raw: str) -> Filter:
    if param.startswith("_"):
        raise _not_memdb(param)
    if ":" in param:  # json-server 1.x: field:op=value
        field, _, op = param.partition(":")
        raise _bad(param, f"write {field}__{op.lower()}={raw} (field__op=value)")
    legacy = None if "__" in param else _LEGACY.match(param)
    if legacy:  # json-server 0.17: field_gte=value
        field, op = legacy.groups()
        raise _bad(param, f"write {field}__{op}={raw} (field__op=value)")
    path, split, op = param.partition("__")
    op = op if split else "eq"
    if op not in OPERATORS:
        raise _bad(
            param, f"unknown operator {op!r}; use one of {', '.join(sorted(OPERATORS))}"
        )
    path = _path(param, path)
    value: Any
    if op == "in":
        value = [_value(param, v) for v in raw.split(",")] if raw else []
    elif op == "exists":
        if raw not in ("true", "false"):
            raise _bad(param, "exists takes true or false")
        value = raw == "true"
    elif op in ("like", "ilike"):
        try:
            like(raw)
        except PatternError as exc:
            raise _bad(param, str(exc)) from None
        value = raw
    elif op in ("contains", "startswith", "endswith"):
        if op == "contains":
            _value(param, raw)
        value = raw
    else:
        value = _value(param, raw)
    if path == "id" and op in ("eq", "ne", "in"):
        # ids are strings; json-server's are integers: ?id=1 finds record "1"
        if op == "in":  # each id once (1 and 1.0 are both "1")
            value = list({json_key(v): v for v in map(as_id, value)}.values())
        else:
            value = as_id(value)
    return Filter(param, path, op, value)


# -- matching ----------------------------------------------------------------


def _same_kind(a: Any, b: Any) -> bool:
    numeric = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    if isinstance(a, numeric) and isinstance(b, numeric):
        return True
    return isinstance(a, str) and isinstance(b, str)


def _metered_key(value: Any, extra: list[int]) -> Hashable:
    """``json_key``, counting the bytes of a list or object it has to write out."""
    key = json_key(value)
    if type(key) is tuple and type(key[1]) is bytes:
        extra[0] += len(key[1]) >> 5
    return key


def predicate(flt: Filter, extra: list[int] | None = None) -> Predicate:
    """A test of one value (``MISSING`` when the path leads nowhere). Operators
    that read a whole value add what they read to ``extra[0]`` (see ``Work``)."""
    op, value = flt.op, flt.value
    meter = extra if extra is not None else [0]
    if op == "exists":
        return lambda v: (v is not MISSING) is value
    if op in ("eq", "ne", "in"):
        wanted = {json_key(v) for v in value} if op == "in" else {json_key(value)}

        def key(v: Any) -> Hashable:
            return v if type(v) is str else _metered_key(v, meter)

        if op == "ne":
            return lambda v: v is MISSING or key(v) not in wanted
        return lambda v: v is not MISSING and key(v) in wanted
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
                meter[0] += len(v) >> 6
                return value in v
            if isinstance(v, list):
                meter[0] += len(v)
                return any(_metered_key(x, meter) == item_key for x in v)
            return False

        return contains
    if op == "startswith":
        return lambda v: isinstance(v, str) and v.startswith(value)
    if op == "endswith":
        return lambda v: isinstance(v, str) and v.endswith(value)
    matches = like(value, ignore_case=op == "ilike")

    def like_test(v: Any) -> bool:
        if not isinstance(v, str):
            return False
        meter[0] += len(v) >> 4
        return matches(v)

    return like_test


def _strings(value: Any, meter: list[int] | None = None) -> Iterable[str]:
    """Every string in a value, nested ones too; ``meter`` counts the values
    looked at and the characters of the strings."""
    count = meter if meter is not None else [0]
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            count[0] += len(item) >> 6
            yield item
        elif isinstance(item, dict):
            count[0] += len(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            count[0] += len(item)
            stack.extend(item)


def search(text: str, extra: list[int] | None = None) -> Callable[[Record], bool]:
    """``q``: a case-insensitive substring of any string field (nested too)."""
    needle = text.casefold()
    meter = extra if extra is not None else [0]

    def found(record: Record) -> bool:
        return any(needle in s.casefold() for s in _strings(record, meter))

    return found


# -- sorting -----------------------------------------------------------------


def inverted(rank: int, value: Any) -> Any:
    """A value whose ascending order is the descending order of ``value`` (of
    one sort rank): numbers negated, strings and serialised arrays or objects
    as their negated code points, closed by a mark that puts a prefix after
    the longer values it starts."""
    if rank == 0:
        return 0
    if rank == NUMBER_RANK:
        return -value
    if rank == BOOL_RANK:
        return -int(value)
    units = map(ord, value) if rank == STRING_RANK else iter(value)
    return (*map(neg, units), 1)


def sort_key(
    keys: Sequence[tuple[str, bool]],
    extra: list[int] | None = None,
    get: Callable[[Record, tuple[str, ...]], Any] = resolve,
) -> Callable[[Record], tuple[Any, ...]]:
    """One key whose ascending order is ``sort_records``'s order (the ties,
    which ``sort_records`` keeps in their order, compare equal). ``extra``
    counts the characters an inverted (descending) text costs; ``get`` reads
    the value at a path (``MISSING`` where there is none)."""
    plans = [(split_path(path), descending) for path, descending in keys]
    meter = extra if extra is not None else [0]

    def key(record: Record) -> tuple[Any, ...]:
        out: list[Any] = []
        for parts, descending in plans:
            value = get(record, parts)
            if value is MISSING:
                out += (1, 0, 0)
                continue
            rank, plain = sort_value(value)
            if descending:
                if rank >= STRING_RANK and rank != BOOL_RANK:
                    meter[0] += len(plain)  # a new tuple of its code points
                out += (0, -rank, inverted(rank, plain))
            else:
                out += (0, rank, plain)
        return tuple(out)

    return key


Getter = Callable[[Record, tuple[str, ...]], Any]


def sort_records(
    rows: list[Record], keys: Sequence[tuple[str, bool]], get: Getter = resolve
) -> list[Record]:
    """Stable multi-key sort in place; missing values last whatever the
    direction. ``get`` reads the value at a path (``MISSING`` where there is
    none)."""
    for path, descending in reversed(keys):
        parts = split_path(path)
        values = values_at(rows, parts, get)
        kind = plain_kind(values)
        if kind is not None:
            # one kind of value (numbers, or strings): compared as they are
            if kind:  # some missing
                order = sorted(
                    [i for i, v in enumerate(values) if v is not MISSING],
                    key=values.__getitem__,
                    reverse=descending,
                )
                order += [i for i, v in enumerate(values) if v is MISSING]
            else:
                order = sorted(
                    range(len(values)), key=values.__getitem__, reverse=descending
                )
            rows[:] = [rows[i] for i in order]
            continue

        def key(record: Record, parts: tuple[str, ...] = parts) -> tuple[Any, ...]:
            value = get(record, parts)
            present = value is not MISSING
            flag = int(present) if descending else int(not present)
            return (flag, *sort_value(value)) if present else (flag, 0, 0)

        rows.sort(key=key, reverse=descending)
    return rows


_MISSING_TYPE = type(MISSING)
_NUMBERS = frozenset({int, float})


def values_at(
    rows: list[Record], parts: tuple[str, ...], get: Getter = resolve
) -> list[Any]:
    """The value of each row at a path (``MISSING`` where there is none)."""
    if get is not resolve:
        return [get(record, parts) for record in rows]
    if len(parts) == 1:
        name = parts[0]
        try:  # every row has it: read at C speed
            return list(map(itemgetter(name), rows))
        except KeyError:
            return [record.get(name, MISSING) for record in rows]
    return [resolve(record, parts) for record in rows]


def plain_kind(values: list[Any]) -> bool | None:
    """When the values present are all numbers or all strings (which sort as
    they compare), with at least one present: whether some are missing.
    Otherwise None."""
    kinds = set(map(type, values))
    missing = _MISSING_TYPE in kinds
    kinds.discard(_MISSING_TYPE)
    if kinds and (kinds <= _NUMBERS or kinds == {str}):
        return missing
    return None


def plain_page(
    rows: list[Record],
    keys: Sequence[tuple[str, bool]],
    offset: int,
    window: int,
    get: Getter = resolve,
) -> list[Record] | None:
    """``sort_records(rows, keys)[offset:window]`` when the first key's values
    are all present and all strings or all numbers: one sort of the rows'
    positions by those values, the other keys applied only where the page's
    rows tie on it. None otherwise (the caller takes the general way)."""
    path, descending = keys[0]
    values = values_at(rows, split_path(path), get)
    try:  # a value of another kind, or a missing one, fails a comparison
        order = sorted(range(len(values)), key=values.__getitem__, reverse=descending)
    except TypeError:
        return None
    if not order:
        return []
    kind = type(values[order[0]])
    # a sort compares every value with another: when one is a string, all are;
    # numbers also compare with booleans, which sort apart
    if kind is not str and (kind not in _NUMBERS or plain_kind(values) is not False):
        return None
    window = min(window, len(order))
    if offset >= window:
        return []
    if len(keys) > 1:
        # the page and one row each side: with no two equal, no run of ties
        # reaches into the page and the other keys change nothing
        near = [values[i] for i in order[max(offset - 1, 0) : window + 1]]
        if any(map(eq, near, islice(near, 1, None))):
            # the page widened to whole runs of equal first values, by
            # bisection (descending, over the positions reversed)
            at = values.__getitem__
            first, edge = at(order[offset]), at(order[window - 1])
            if descending:
                rising, size = order[::-1], len(order)
                low = size - bisect_right(rising, first, key=at)
                high = size - bisect_left(rising, edge, key=at)
            else:
                low = bisect_left(order, first, key=at)
                high = bisect_right(order, edge, key=at)
            ties = sort_records([rows[i] for i in order[low:high]], keys, get)
            return ties[offset - low : window - low]
    return [rows[i] for i in order[offset:window]]


def small_page(
    rows: list[Record],
    keys: Sequence[tuple[str, bool]],
    offset: int,
    window: int,
    get: Getter = resolve,
) -> list[Record]:
    """``sort_records(rows, keys, get)[offset:window]`` in one go (``rows``
    itself is left as it is): the plain column's sort where it applies, else
    only the rows that can reach the page, sorted."""
    page = plain_page(rows, keys, offset, window, get)
    if page is not None:
        return page
    if 0 < window * 2 < len(rows):
        rows = first_key_candidates(rows, keys[0], window, get)
    else:
        rows = list(rows)
    return sort_records(rows, keys, get)[offset:window]


def first_key_candidates(
    rows: list[Record], key: tuple[str, bool], window: int, get: Getter = resolve
) -> list[Record]:
    """The rows that can be among the first ``window`` of a sort whose first key
    is ``key``: those whose value is at least as good as the ``window``-th best
    (ties kept), in their order, as a new list. All of ``rows`` when the values
    are not of one plain kind or too few are present."""
    path, descending = key
    values = values_at(rows, split_path(path), get)
    kind = plain_kind(values)
    if kind is None:
        return list(rows)
    present = [v for v in values if v is not MISSING] if kind else list(values)
    if len(present) <= window:
        return list(rows)
    present.sort(reverse=descending)
    bound = present[window - 1]
    # comparisons written out: a call per row would cost more than the sort
    if kind:
        if descending:
            return [r for r, v in zip(rows, values) if v is not MISSING and v >= bound]
        return [r for r, v in zip(rows, values) if v is not MISSING and v <= bound]
    if descending:
        return [r for r, v in zip(rows, values) if v >= bound]
    return [r for r, v in zip(rows, values) if v <= bound]


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


# -- running a query -----------------------------------------------------------


def _record_test(test: Predicate, parts: tuple[str, ...]) -> Callable[[Record], bool]:
    if len(parts) == 1:
        name = parts[0]
        return lambda record: test(record.get(name, MISSING))
    return lambda record: test(resolve(record, parts))


def _row_test(
    filters: Sequence[Filter], q: str | None, extra: list[int]
) -> Callable[[Record], bool] | None:
    """One test of a whole record: every filter and ``q``; None when there is none."""
    tests = [_record_test(predicate(flt, extra), flt.parts) for flt in filters]
    if q:
        tests.append(search(q, extra))
    if not tests:
        return None
    if len(tests) == 1:
        return tests[0]
    return lambda record: all(test(record) for test in tests)


async def select(
    batches: AsyncIterator[list[Record]],
    test: Callable[[Record], bool] | None,
    cost: int,
    work: Work,
) -> list[Record]:
    """The rows of ``batches`` that pass ``test`` (all, without one), in slices;
    ``cost`` is the units of one row."""
    kept: list[Record] = []
    extra = work.extra
    async for rows in batches:
        if test is None:
            kept += rows
            work.spend(len(rows) >> 6)
            await work.pause()
            continue
        position, count = 0, len(rows)
        while position < count:
            room = work.slice_left()
            stop = min(count, position + max(1, room // cost))
            start = position
            while position < stop:
                record = rows[position]
                position += 1
                if test(record):
                    kept.append(record)
                if extra[0] >= room:
                    break
            work.spend((position - start) * cost)
            await work.pause()
    return kept


async def sorted_page(
    rows: list[Record],
    keys: Sequence[tuple[str, bool]],
    offset: int,
    limit: int,
    work: Work,
    *,
    deepest: int | None = None,
) -> list[Record]:
    """``sort_records(rows, keys)[offset:offset + limit]``; over ``INLINE_SORT``
    rows, the page is selected in slices, keeping only the best rows so far, at
    most ``deepest`` rows deep."""
    count = len(rows)
    window = offset + limit
    if count <= INLINE_SORT:
        work.spend(count * len(keys) * max(1, int(math.log2(count + 1))))
        return small_page(rows, keys, offset, window)
    if deepest is not None and window > SORT_WINDOW:
        return await deep_page(rows, keys, offset, min(window, deepest), work)
    if window > SORT_WINDOW:
        raise QueryTooCostly(
            f"a sort of {count} rows without a sorted index reaches at most "
            f"{SORT_WINDOW} rows deep (offset + limit); filter first",
            details=[param_error("offset", "too deep", "sort_window")],
        )
    if window == 0:
        return []
    extra = work.extra
    key = sort_key(keys, extra)
    cost = 1 + len(keys)
    best: list[tuple[tuple[Any, ...], int]] = []
    bound: tuple[Any, ...] | None = None  # the worst key kept, once best is full
    position = 0
    while position < count:
        room = work.slice_left()
        stop = min(count, position + max(1, room // cost))
        start = position
        chunk = []
        while position < stop:
            found = key(rows[position])
            if bound is None or found < bound:
                chunk.append((found, position))
            position += 1
            if extra[0] >= room:
                break
        merged = 0
        if chunk:
            chunk.sort()
            if len(chunk) * 32 < len(best):  # a few: each put in its place
                for item in chunk:
                    insort(best, item)
                merged = len(chunk) * 16
            else:  # many: two sorted runs, one merge
                best += chunk
                best.sort()
                merged = len(best)
            del best[window:]
            if len(best) == window:
                bound = best[-1][0]
        work.spend((position - start) * cost + (merged >> 2))
        await work.pause()
    return [rows[i] for _, i in best[offset:window]]


# the most rows a step of ``deep_page`` sorts or merges between two pauses
DEEP_STEP = 2048


async def in_sorted_pieces(
    rows: Sequence[Record],
    key: Callable[[Record], Any],
    size: int,
    after_piece: Callable[[int], Awaitable[None]],
) -> Iterator[tuple[Any, int]]:
    """``(key, position)`` of each row in key order, ties in the rows' order:
    pieces of ``size`` rows each sorted on its own, ``after_piece(rows)``
    awaited after each (to count it and give the loop back), then merged
    lazily, so that a caller takes only as many as it needs."""
    pieces = []
    for start in range(0, len(rows), size):
        stop = min(len(rows), start + size)
        pieces.append(sorted([(key(rows[i]), i) for i in range(start, stop)]))
        await after_piece(stop - start)
    return heapq.merge(*pieces)


async def deep_page(
    rows: list[Record],
    keys: Sequence[tuple[str, bool]],
    offset: int,
    window: int,
    work: Work,
) -> list[Record]:
    """``sort_records(rows, keys)[offset:window]`` for a window deeper than
    ``SORT_WINDOW`` into rows that are few enough to keep a key each (a run of
    a sorted index, at most ``MAX_WALK``): sorted in pieces of ``DEEP_STEP``
    rows, then merged only as far as the window, a piece at a time, so that
    no step holds the event loop for longer than one piece takes."""
    if window <= offset:
        return []
    cost = 1 + len(keys)

    async def sorted_piece(size: int) -> None:
        work.spend(size * cost * max(1, int(math.log2(size + 1))))
        await work.pause()

    merged = await in_sorted_pieces(
        rows, sort_key(keys, work.extra), DEEP_STEP, sorted_piece
    )
    pieces = -(-len(rows) // DEEP_STEP)
    step_cost = cost * max(1, int(math.log2(pieces + 1)))
    page: list[Record] = []
    taken = 0
    while taken < window:
        step = list(islice(merged, min(DEEP_STEP, window - taken)))
        if not step:
            break
        if taken + len(step) > offset:
            page += [rows[i] for _, i in step[max(0, offset - taken) :]]
        taken += len(step)
        work.spend(len(step) * step_cost)
        await work.pause()
    return page


async def project_all(
    items: list[Record], fields: Sequence[str], work: Work
) -> list[Record]:
    out: list[Record] = []
    cost = 1 + sum(len(split_path(f)) for f in fields)
    for record in items:
        out.append(project(record, fields))
        work.spend(cost)
        if work.due():
            await work.pause()
    return out


async def _listed(rows: list[Record]) -> AsyncIterator[list[Record]]:
    yield rows


async def run_query(
    rows: list[Record] | Scan, filters: list[Filter], query: Query, work: Work
) -> Page:
    """Filter, search, sort, page and project ``rows`` (a list, or a table's
    scan) within ``work``'s budget."""
    test = _row_test(filters, query.q, work.extra)
    cost = 1 + len(filters) + (1 if query.q else 0)
    batches = rows.batches() if isinstance(rows, Scan) else _listed(rows)
    found = await select(batches, test, cost, work)
    total = len(found)
    if query.sort:
        items = await sorted_page(found, query.sort, query.offset, query.limit, work)
    else:
        items = found[query.offset : query.offset + query.limit]
    if query.fields is not None:
        items = await project_all(items, query.fields, work)
    return Page(items=items, total=total, limit=query.limit, offset=query.offset)


# -- the service -------------------------------------------------------------


class QueryService:
    def __init__(
        self,
        store: StoreBackend,
        limits: Limits | None = None,
        *,
        max_filters: int = DEFAULT_MAX_FILTERS,
        schemas: Schemas = BUILTIN,
    ) -> None:
        self.store = store
        self.limits = limits or Limits(budget=20_000_000, max_heavy=4)
        self.max_filters = max_filters
        self.hidden = schemas.hidden

    def parse(self, params: Iterable[tuple[str, str]]) -> Query:
        """``parse_query`` with this service's limits."""
        return parse_query(params, max_filters=self.max_filters, hidden=self.hidden)

    async def list_records(self, table: str, query: Query) -> Page:
        """Filter, search, sort, page and project one table's records."""
        check_table_name(table)
        with store_errors(table=table), self.limits.work() as work:
            work.spend(query.offset >> 6)
            if not (query.filters or query.q or query.sort):
                # a page of the table as it is: nothing else is read
                items, total = await self.store.page(table, query.offset, query.limit)
                if query.fields is not None:
                    items = await project_all(items, query.fields, work)
                return Page(items, total, query.limit, query.offset)
            narrowed: Page | tuple[list[Record] | Scan, list[Filter]] | None
            if query.filters:
                narrowed = await self._narrowed(table, query, work)
            else:  # nothing to look up: a sorted index may walk the sort
                narrowed = await self._ordered(table, query, work)
                if narrowed is None:
                    narrowed = await self.store.scan(table), []
            if isinstance(narrowed, Page):
                return narrowed
            rows, rest = narrowed
            return await run_query(rows, rest, query, work)

    async def _narrowed(
        self, table: str, query: Query, work: Work
    ) -> Page | tuple[list[Record] | Scan, list[Filter]]:
        """The records that can match, narrowed by the most selective index, and
        the filters still to apply; or, when one indexed filter is the whole
        query, the page itself (the index pages it)."""
        candidates = [
            f
            for f in query.filters
            if f.op in ("eq", "in") and f.path not in self.hidden
        ]
        chosen: Filter | None = None
        if len(candidates) == 1:
            chosen = candidates[0]
        elif candidates:
            best: int | None = None
            for flt in candidates:
                size = await self.store.lookup_size(table, flt.path, _values(flt))
                if size is not None and (best is None or size < best):
                    best, chosen = size, flt
        if chosen is not None:
            rest = [f for f in query.filters if f is not chosen]
            alone = not (rest or query.q or query.sort)
            if alone:
                found = await self.store.lookup(
                    table,
                    chosen.path,
                    _values(chosen),
                    offset=query.offset,
                    limit=query.limit,
                )
                if found is not None:
                    items, total = found
                    if query.fields is not None:
                        items = [project(r, query.fields) for r in items]
                    return Page(items, total, query.limit, query.offset)
            else:
                found = await self.store.lookup(table, chosen.path, _values(chosen))
                if found is not None:
                    return found[0], rest
        ordered = await self._ordered(table, query, work)
        if ordered is not None:
            return ordered
        return await self.store.scan(table), list(query.filters)

    async def _ordered(
        self, table: str, query: Query, work: Work
    ) -> Page | tuple[list[Record], list[Filter]] | None:
        """What a sorted index answers: the page itself when the query sorts on
        the indexed field first and filters nothing but its range; else the
        records in the range of one indexed field, with the filters left; None
        when no sorted index helps."""
        ranged: dict[str, list[Filter]] = {}
        for flt in query.filters:
            if flt.op in RANGE_OPS:
                ranged.setdefault(flt.path, []).append(flt)
        if query.sort and not query.q:
            path, descending = query.sort[0]
            own = ranged.get(path, [])
            bounds = range_bounds(own)
            if len(own) == len(query.filters) and bounds is not None:
                walk = await self.store.sorted_walk(
                    table,
                    path,
                    rank=bounds[0],
                    low=bounds[1],
                    high=bounds[2],
                    descending=descending,
                    offset=query.offset,
                    limit=query.limit,
                )
                if walk is not None:
                    return await walked_page(walk, query, work)
        for path, own in ranged.items():
            bounds = range_bounds(own)
            if bounds is None or bounds[0] is None:
                continue
            rank, low, high = bounds
            walk = await self.store.sorted_walk(
                table, path, rank=rank, low=low, high=high, table_order=True
            )
            if walk is not None:
                rows = walk.groups[0] if walk.groups else []
                return rows, [f for f in query.filters if f not in own]
        return None


# (is a lower bound, includes its value) of each range operator
RANGE_OPS = {
    "gt": (True, False),
    "gte": (True, True),
    "lt": (False, False),
    "lte": (False, True),
}


def range_bounds(
    filters: Sequence[Filter],
) -> tuple[int | None, Bound | None, Bound | None] | None:
    """The sort rank and the tightest bounds of range filters on one field
    (``(None, None, None)`` for none); None when they can match nothing a
    sorted index holds in one rank (values of two kinds, or a value that is
    neither a number nor a string: the scan answers those)."""
    rank: int | None = None
    low: Bound | None = None
    high: Bound | None = None
    for flt in filters:
        value = flt.value
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return None
        kind = STRING_RANK if isinstance(value, str) else NUMBER_RANK
        if rank is not None and kind != rank:
            return None
        rank = kind
        lower, included = RANGE_OPS[flt.op]
        if lower:
            if low is None or value > low[0] or (value == low[0] and not included):
                low = (value, included)
        elif high is None or value < high[0] or (value == high[0] and not included):
            high = (value, included)
    return rank, low, high


async def walked_page(walk: Walk, query: Query, work: Work) -> Page:
    """The page of a sorted walk: the page's stretch of its runs of equal first
    keys, each run ordered by the other sort keys."""
    rest = query.sort[1:]
    start = query.offset - walk.first  # where the page starts in the walk's rows
    stop = start + query.limit
    items: list[Record] = []
    position = 0
    if walk.rows is not None:  # no ties: the other keys change nothing
        rows = walk.rows
        items, position = rows[start:stop], len(rows)
    elif not rest:  # the runs are the order already
        rows = [record for run in walk.groups for record in run]
        items, position = rows[start:stop], len(rows)
    for run in walk.groups if rest and walk.rows is None else ():
        lo, hi = max(start - position, 0), min(stop - position, len(run))
        position += len(run)
        if lo >= hi:
            continue
        if len(run) > 1:
            # a run is as long as the store lets a walk be (``MAX_WALK``): any
            # depth of it may be asked
            items += await sorted_page(run, rest, lo, hi - lo, work, deepest=len(run))
        else:
            items += run[lo:hi]
    work.spend(position)
    if query.fields is not None:
        items = await project_all(items, query.fields, work)
    return Page(items, walk.total, query.limit, query.offset)


def _values(flt: Filter) -> list[Any]:
    return list(flt.value) if flt.op == "in" else [flt.value]
