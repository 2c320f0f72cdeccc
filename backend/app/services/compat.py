"""json-server's resources over the same services and store (``memdb serve``).

A ``db.json`` is tables: a list is a collection, an object is an object
resource (a one-record table whose record has the id ``SINGLETON_ID``). The
store keeps ids as strings; each table's ``View`` remembers how the file gave
them (integers or strings) and whether its records carry the server's
timestamps, so that the routes and the file show the records as they were
written. The two dialects are json-server 1.0.0-beta.15 (``"1"``) and 0.17
(``"0.17"``); ``ListQuery`` holds the parameters of either, ``select`` runs
one over a table's records.
"""

from __future__ import annotations

import asyncio
import base64
import math
import operator
import random
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence

import anyio.to_thread
import inflection
import json5
import orjson
import re2

from app.core.errors import DomainError
from app.core.jsonbody import check_integers
from app.services.imports import SINGLETON_ID, ImportService
from app.services.query import in_sorted_pieces, small_page, sort_key, sort_records
from app.services.records import RecordService
from app.services.validation import TABLE_NAME, valid_record_id
from app.services.work import Limits, Work
from app.storage.base import Record, StoreBackend
from app.storage.keys import MISSING, resolve, split_path

Dialect = Literal["1", "0.17"]
STAMPS = ("created_at", "updated_at")
# a `_where` tree deeper than this is refused (its evaluation recurses)
MAX_WHERE_DEPTH = 16
PER_PAGE = 10
MAX_SORT_KEYS = 8  # as /api/v1's sort
# more rows than this are sorted, shown and encoded in slices (the event loop
# answers between them), as a heavy request
INLINE = 2000
# records tested between two turns of the event loop
CHUNK = 256
# a saved file is made of pieces of this many records; a piece whose records
# are the very ones of the last save is written from the bytes kept then, up
# to this many bytes of pieces in all (about the file's size)
PIECE = 512
PIECES_KEPT_BYTES = 64 * 1024 * 1024
OPERATORS = (
    "lt",
    "lte",
    "gt",
    "gte",
    "eq",
    "ne",
    "in",
    "contains",
    "startsWith",
    "endsWith",
)
RESERVED_1 = frozenset({"_sort", "_page", "_per_page", "_embed", "_where"})
RESERVED_017 = frozenset(
    {"q", "_start", "_end", "_page", "_sort", "_order", "_limit", "_embed"}
    | {"_expand", "callback", "_"}
)
_SUFFIX_017 = re2.compile(r"^(.+)_(gte|lte|ne|like)$")
_SUFFIX_1 = re2.compile(r"^(.+)_([a-z]+)$")


def _digits(text: str) -> bool:
    """Whether an id is a 64-bit integer written as JSON writes it."""
    body = text[1:] if text[:1] == "-" else text
    return (
        0 < len(body) <= 19
        and body.isascii()
        and body.isdigit()
        and (body[0] != "0" or text == "0")
        and -(2**63) <= int(text) < 2**63
    )


class CompatError(DomainError):
    """An answer of the json-server routes: ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status


def not_found() -> CompatError:
    return CompatError(404, "Not Found")


def not_object() -> CompatError:
    return CompatError(400, "Body must be a JSON object")


def parse_document(raw: bytes, suffix: str = ".json") -> Any:
    """A db.json (or, by its suffix, a db.json5) as JSON values."""
    kind = "JSON5" if suffix == ".json5" else "JSON"
    try:
        if suffix != ".json5":
            document = orjson.loads(raw)
            check_integers(raw)
            return document
        document = json5.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CompatError(400, f"not valid {kind}: {str(exc)[:200]}") from None
    except DomainError as exc:
        raise CompatError(400, exc.message) from None
    _check_json(document)
    return document


def _check_json(document: Any) -> None:
    """What JSON5 reads but a JSON file cannot hold: integers beyond 64 bits,
    NaN and infinities (refused, so that the file can be written back)."""
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif is_int(value) and not -(2**63) <= value < 2**64:
            raise CompatError(400, f"an integer beyond 64 bits: {str(value)[:40]}")
        elif isinstance(value, float) and not math.isfinite(value):
            raise CompatError(400, f"{value} is not a JSON number")


# -- how a table is shown -----------------------------------------------------


@dataclass
class Piece:
    """One piece of the last saved file: its records, as encoded then."""

    records: list[Record]
    shown: tuple[bool, bool]  # the view's (int_ids, stamps) then
    encoded: bytes


@dataclass
class View:
    """How the json-server routes show one table's records."""

    int_ids: bool = False  # the ids it makes are integers (0.17)
    stamps: bool = False  # the records show created_at/updated_at
    next_id: int = 1  # 0.17: the next integer id
    # the ids that are JSON integers, each record's as it was given or made
    # (a table may hold both kinds: "1" stays a string, 1 an integer)
    ints: set[str] = field(default_factory=set)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def id_value(view: View, record_id: str) -> Any:
    """A stored id as the table's records show it."""
    return int(record_id) if record_id in view.ints else record_id


def show(view: View, record: Record) -> dict[str, Any]:
    """A stored record as the json-server routes show it."""
    out = dict(record)
    if not view.stamps:
        out.pop("created_at", None)
        out.pop("updated_at", None)
    if view.ints:
        out["id"] = id_value(view, record["id"])
    return out


_STAMPS_AT = b',"created_at":'


def encoded_line(view: View, record: Record) -> bytes:
    """``orjson.dumps(show(view, record))``, made from the record's own JSON:
    the timestamps are its last two fields and the id its first."""
    raw = orjson.dumps(record)
    if not view.stamps:
        cut = raw.rfind(_STAMPS_AT)
        if cut > 0:
            raw = raw[:cut] + b"}"
    record_id = record["id"]
    if record_id in view.ints:
        raw = b'{"id":' + record_id.encode() + raw[8 + len(record_id) :]
    return raw


def show_object(view: View, record: Record) -> dict[str, Any]:
    out = show(view, record)
    out.pop("id", None)
    return out


def loose_equal(a: Any, b: Any) -> bool:
    """JSON equality, except that an integer equals the string of its digits
    (ids are strings in the store, and files name them with integers)."""
    if is_int(a) and isinstance(b, str):
        return str(a) == b
    if is_int(b) and isinstance(a, str):
        return str(b) == a
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def _hashable(value: Any) -> Any:
    """A key under which loosely equal ids and foreign keys meet."""
    if is_int(value):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (str, bool)) or value is None:
        return value
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def new_string_id(length: int = 11) -> str:
    """A random id as json-server makes them (never all digits). Ids are not
    secrets: the generator is Python's, seeded from the system at start and
    again in a forked child, with no system call per id."""
    while True:
        drawn = random.getrandbits(64).to_bytes(8, "big")
        made = base64.urlsafe_b64encode(drawn)[:length].decode()
        if not made.isdigit():
            return made


# -- a list query ---------------------------------------------------------------


Test = Callable[[Any], bool]


@dataclass
class ListQuery:
    """The parameters of ``GET /{resource}`` in one dialect."""

    dialect: Dialect
    where: list[tuple[tuple[str, ...], Test]] = field(default_factory=list)
    tree: Any = None  # 1.x: a `_where` JSON condition tree
    q: str | None = None  # 0.17: full-text
    sort: list[tuple[tuple[str, ...], bool]] = field(default_factory=list)
    page: int | None = None
    per_page: int = PER_PAGE
    start: int | None = None
    end: int | None = None
    limit: int | None = None
    embed: list[str] = field(default_factory=list)
    expand: list[str] = field(default_factory=list)
    # 0.17: equality parameters, dropped when no record has the field
    optional: list[tuple[str, ...]] = field(default_factory=list)
    # units of work a record costs: a value compared, a node of a tree
    cost: int = 0

    def sorted_by(self, keys: list[tuple[tuple[str, ...], bool]]) -> None:
        if len(keys) > MAX_SORT_KEYS:
            raise CompatError(400, f"_sort takes at most {MAX_SORT_KEYS} fields")
        self.sort = keys


def coerce(value: str) -> Any:
    """A 1.x query value: true, false, null, a finite number, else the text."""
    if value == "true":
        return True
    if value == "false":
        return False
    if value == "null":
        return None
    text = value.strip()
    if text and text.lower() not in ("nan", "inf", "-inf", "+inf", "infinity"):
        try:
            number = float(text)
        except ValueError:
            return value
        if math.isfinite(number):
            return int(number) if number.is_integer() and "." not in text else number
    return value


def _compare(op: str, got: Any, want: Any) -> bool:
    """lt/lte/gt/gte between two numbers or two strings; anything else fails."""
    numbers = (
        isinstance(got, (int, float))
        and isinstance(want, (int, float))
        and not isinstance(got, bool)
        and not isinstance(want, bool)
    )
    if not numbers and not (isinstance(got, str) and isinstance(want, str)):
        return False
    if op == "lt":
        return bool(got < want)
    if op == "lte":
        return bool(got <= want)
    if op == "gt":
        return bool(got > want)
    return bool(got >= want)


def operator_test(op: str, want: Any) -> Test:
    """The 1.x test of one operator on a field's value (``MISSING`` fails)."""
    if op in ("lt", "lte", "gt", "gte"):
        return lambda got: got is not MISSING and _compare(op, got, want)
    if op == "eq":
        return lambda got: got is not MISSING and loose_equal(got, want)
    if op == "ne":
        return lambda got: got is not MISSING and not loose_equal(got, want)
    if op == "in":  # one lookup, however many values
        wanted = {_hashable(w) for w in (want if isinstance(want, list) else [want])}
        return lambda got: got is not MISSING and _hashable(got) in wanted
    text = str(want).lower() if not isinstance(want, bool) else str(want).lower()
    if op == "contains":
        return lambda got: isinstance(got, str) and text in got.lower()
    if op == "startsWith":
        return lambda got: isinstance(got, str) and got.lower().startswith(text)
    return lambda got: isinstance(got, str) and got.lower().endswith(text)


def _split_1(key: str) -> tuple[str, str] | None:
    """1.x: ``path:op`` (no op: eq), or 0.17's ``path_op``; ``None``: ignored."""
    if ":" in key:
        path, _, op = key.rpartition(":")
        if not op:
            return key, "eq"
        return (path, op) if op in OPERATORS else None
    found = _SUFFIX_1.match(key)
    if found and found.group(2) in OPERATORS:
        return found.group(1), found.group(2)
    return key, "eq"


def _int_param(raw: str | None) -> int | None:
    """``parseInt``: the leading integer of the text, else ``None``."""
    if raw is None:
        return None
    found = re2.match(r"^\s*([+-]?[0-9]{1,15})", raw)
    return int(found.group(1)) if found else None


def _last(params: Sequence[tuple[str, str]], name: str) -> str | None:
    value = None
    for key, raw in params:
        if key == name:
            value = raw
    return value


def _all(params: Sequence[tuple[str, str]], name: str) -> list[str]:
    return [raw for key, raw in params if key == name]


def _names(raws: Iterable[str]) -> list[str]:
    return [n for raw in raws for n in raw.split(",") if n]


def parse_1(params: Sequence[tuple[str, str]]) -> ListQuery:
    """json-server 1.0.0-beta.15's list parameters."""
    query = ListQuery("1")
    for key, raw in params:
        if key in RESERVED_1:
            continue
        found = _split_1(key)
        if found is None:
            continue
        path, op = found
        want: Any = (
            [coerce(p.strip()) for p in raw.split(",")] if op == "in" else coerce(raw)
        )
        query.where.append((split_path(path), operator_test(op, want)))
        query.cost += 1
    raw_where = _last(params, "_where")
    if raw_where is not None:
        try:
            tree = orjson.loads(raw_where)
        except orjson.JSONDecodeError:
            tree = None
        if isinstance(tree, dict):
            if _depth(tree) > MAX_WHERE_DEPTH:
                raise CompatError(
                    400, f"_where is nested deeper than {MAX_WHERE_DEPTH}"
                )
            # every node of the tree may be tested, on a copy of the record
            query.tree, query.where, query.cost = tree, [], 8 + _size(tree)
    sort = _last(params, "_sort")
    if sort:
        query.sorted_by(
            [
                (split_path(name.lstrip("-")), name.startswith("-"))
                for name in sort.split(",")
                if name.lstrip("-")
            ]
        )
    if _last(params, "_page") is not None:
        query.page = _int_param(_last(params, "_page"))
        per_page = _int_param(_last(params, "_per_page"))
        query.per_page = PER_PAGE if per_page is None else per_page
    query.embed = _names(_all(params, "_embed"))
    return query


def js_string(value: Any) -> str:
    """``String(value)`` as JavaScript writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    if isinstance(value, list):
        return ",".join("" if v is None else js_string(v) for v in value)
    if isinstance(value, dict):
        return "[object Object]"
    return str(value)


def _range_017(op: str, want: str) -> Test:
    """``_gte``/``_lte``: a number against a number, else text against text."""
    number = coerce(want)

    def test(got: Any) -> bool:
        if got is MISSING or got is None:
            return False
        if isinstance(got, (int, float)) and not isinstance(got, bool):
            if not isinstance(number, (int, float)) or isinstance(number, bool):
                return False
            return bool(got >= number if op == "gte" else got <= number)
        text = js_string(got)
        return text >= want if op == "gte" else text <= want

    return test


def _like_017(pattern: str) -> Test:
    """``_like``: a regular expression, case-insensitive, matched anywhere (RE2:
    linear in the value, whatever the pattern)."""
    options = re2.Options()
    options.case_sensitive = False
    options.max_mem = 8 << 20
    try:
        compiled = re2.compile(pattern, options)
    except re2.error:
        raise CompatError(400, f"_like: not a regular expression: {pattern}") from None

    def test(got: Any) -> bool:
        if got is MISSING or got is None:
            return False
        return compiled.search(js_string(got)) is not None

    return test


def _text_test(raw: str, *, equal: bool) -> Test:
    """0.17's equality: the value's text is (or is not) the parameter."""

    def test(got: Any) -> bool:
        if got is MISSING or got is None:
            return False
        return (js_string(got) == raw) is equal

    return test


def _some(tests: list[Test]) -> Test:
    return lambda got: any(test(got) for test in tests)


def _every(tests: list[Test]) -> Test:
    return lambda got: all(test(got) for test in tests)


def parse_017(params: Sequence[tuple[str, str]]) -> ListQuery:
    """json-server 0.17's list parameters."""
    query = ListQuery("0.17")
    groups: dict[str, list[str]] = {}
    for key, raw in params:
        if key not in RESERVED_017:
            groups.setdefault(key, []).append(raw)
    for key, raws in groups.items():
        found = _SUFFIX_017.match(key)
        op = found.group(2) if found else "eq"
        path = split_path(found.group(1) if found else key)
        tests: list[Test]
        if op in ("gte", "lte"):
            tests = [_range_017(op, raw) for raw in raws]
        elif op == "like":
            tests = [_like_017(raw) for raw in raws]
        elif op == "ne":
            tests = [_text_test(raw, equal=False) for raw in raws]
        else:
            tests = [_text_test(raw, equal=True) for raw in raws]
            query.optional.append(path)
        query.where.append((path, _every(tests) if op == "ne" else _some(tests)))
        query.cost += len(tests) * (4 if op == "like" else 1)
    q = _last(params, "q")
    query.q = q.lower() if q else None
    if query.q:
        query.cost += 8
    sort = _last(params, "_sort")
    if sort:
        orders = [o.strip().lower() for o in (_last(params, "_order") or "").split(",")]
        query.sorted_by(
            [
                (
                    split_path(name),
                    position < len(orders) and orders[position] == "desc",
                )
                for position, name in enumerate(sort.split(","))
                if name
            ]
        )
    limit = _int_param(_last(params, "_limit"))
    if _last(params, "_page") is not None:
        page = _int_param(_last(params, "_page"))
        query.page = page if page is not None and page >= 1 else 1
        query.per_page = limit if limit else PER_PAGE
    else:
        query.start = _int_param(_last(params, "_start"))
        query.end = _int_param(_last(params, "_end"))
        query.limit = limit
    query.embed = _names(_all(params, "_embed"))
    query.expand = _names(_all(params, "_expand"))
    return query


def _size(tree: Any) -> int:
    """The nodes of a JSON tree."""
    count, pending = 0, [tree]
    while pending:
        node = pending.pop()
        count += 1
        if isinstance(node, dict):
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return count


def _depth(tree: Any, depth: int = 1) -> int:
    if depth > MAX_WHERE_DEPTH:
        return depth
    if isinstance(tree, dict):
        return max([_depth(v, depth + 1) for v in tree.values()] or [depth])
    if isinstance(tree, list):
        return max([_depth(v, depth + 1) for v in tree] or [depth])
    return depth


def matches_tree(record: Any, tree: dict[str, Any]) -> bool:
    """1.x ``_where``: every key holds; ``or``/``and`` take lists of trees; an
    object of operators tests the field; another object descends into it; a
    plain value is equality."""
    for key, value in tree.items():
        if key in ("or", "and") and isinstance(value, list):
            parts = [
                matches_tree(record, v) if isinstance(v, dict) else False for v in value
            ]
            if not parts or not (any(parts) if key == "or" else all(parts)):
                return False
            continue
        got = record.get(key, MISSING) if isinstance(record, dict) else MISSING
        if isinstance(value, dict):
            ops = [op for op in OPERATORS if op in value]
            if ops:
                if not all(operator_test(op, value[op])(got) for op in ops):
                    return False
            elif not (isinstance(got, dict) and matches_tree(got, value)):
                return False
        elif got is MISSING or not loose_equal(got, value):
            return False
    return True


def deep_contains(value: Any, text: str) -> bool:
    """0.17 ``q``: a value (deeply) whose text holds ``text``; falsy values never."""
    if isinstance(value, list):
        return any(deep_contains(v, text) for v in value)
    if isinstance(value, dict):
        return any(deep_contains(v, text) for v in value.values())
    if not value and value != 0.5:  # JavaScript's falsy: 0, "", false, null
        return False
    return text in js_string(value).lower()


def _window(query: ListQuery, total: int) -> int | None:
    """How many of the sorted rows the answer shows at most (from the start);
    None when it may show any of them."""
    if query.page is not None:
        if query.dialect != "1" and query.per_page < 1:
            return None  # 0.17 slices a page of a negative size from the end
        per_page = max(query.per_page, 1)
        page = query.page
        if query.dialect == "1":
            page = max(1, min(page, max(1, math.ceil(total / per_page))))
        elif page < 1:  # 0.17 slices from the end for these
            return None
        return page * per_page
    start = query.start or 0
    if start < 0:
        return None
    if query.end is not None:
        return query.end if query.end >= 0 else None
    if query.limit is not None and query.limit >= 0:
        return start + query.limit
    return None  # a negative limit counts from the end


def _key(
    keys: Sequence[tuple[tuple[str, ...], bool]],
    get: Callable[[Record, tuple[str, ...]], Any],
    meter: list[int] | None = None,
) -> Callable[[Record], tuple[Any, ...]]:
    """``/api/v1``'s sort key (missing values last in either direction) over
    the values as the routes show them; ``meter`` counts what descending texts
    cost (see ``sort_key``)."""
    plan = [(".".join(parts), desc) for parts, desc in keys]
    return sort_key(plan, meter, get=get)


def sort_rows(
    rows: list[Record],
    keys: Sequence[tuple[tuple[str, ...], bool]],
    get: Callable[[Record, tuple[str, ...]], Any],
    window: int | None = None,
) -> list[Record]:
    """Stable multi-key sort in place; missing values last in either
    direction. With ``window``, only the first ``window`` rows of the answer,
    as a new list (``small_page``)."""
    plan = [(".".join(parts), descending) for parts, descending in keys]
    if window is not None:
        return small_page(rows, plan, 0, window, get)
    return sort_records(rows, plan, get)


async def sort_in_slices(
    rows: list[Record],
    keys: Sequence[tuple[tuple[str, ...], bool]],
    get: Callable[[Record, tuple[str, ...]], Any],
    work: Work,
) -> list[Record]:
    """``sort_rows`` for many rows without holding the event loop: keys made
    and runs of ``INLINE`` rows sorted one at a time, then merged, with the
    loop given back between slices (a stable merge: ties keep their order)."""

    async def sorted_run(size: int) -> None:
        work.spend(0)  # what the descending texts cost, counted
        await asyncio.sleep(0)

    order = await in_sorted_pieces(
        rows, _key(keys, get, work.extra), INLINE, sorted_run
    )
    merged: list[Record] = []
    for position, (_, index) in enumerate(order, 1):
        merged.append(rows[index])
        if position % INLINE == 0:
            await asyncio.sleep(0)
    return merged


@dataclass
class Listed:
    """A list answer: the body (and, when it is long, its JSON already made off
    the event loop) and the total before slicing."""

    body: Any
    total: int
    page: tuple[int, int, int] | None = None  # 0.17: page, per page, last page
    encoded: bytes | None = None


async def _listed(
    body: Any,
    total: int,
    rows: int,
    work: Work,
    page: tuple[int, int, int] | None = None,
) -> Listed:
    """A list answer; one of many records is encoded in slices."""
    if rows <= INLINE or not isinstance(body, list):
        return Listed(body, total, page)
    work.become_heavy()
    pieces: list[bytes] = []
    for start in range(0, len(body), INLINE):
        pieces.append(orjson.dumps(body[start : start + INLINE])[1:-1])
        await asyncio.sleep(0)
    return Listed(body, total, page, b"[" + b",".join(pieces) + b"]")


# -- the service ----------------------------------------------------------------


class CompatService:
    """json-server's routes on the services and the store."""

    def __init__(
        self,
        store: StoreBackend,
        records: RecordService,
        imports: ImportService,
        limits: Limits,
        *,
        dialect: Dialect = "1",
    ) -> None:
        self.store = store
        self.records = records
        self.imports = imports
        self.limits = limits
        self.dialect = dialect
        self.views: dict[str, View] = {}
        self.schema: str | None = None  # the file's "$schema", written back
        self.completed = False  # the last file loaded had records without ids
        self._pieces: dict[str, list[Piece]] = {}  # the last saved file's

    def hidden(self, table: str, count: int) -> bool:
        """A built-in table the file did not hold, still empty, is not shown."""
        builtin = self.records.schemas.rules.tables
        return count == 0 and table in builtin and table not in self.views

    def view(self, table: str) -> View:
        view = self.views.get(table)
        if view is None:
            view = self.views[table] = View(int_ids=self.dialect == "0.17")
        return view

    # -- loading a file ------------------------------------------------------

    def plan(self, document: Any) -> tuple[dict[str, Any], dict[str, View]]:
        """A db.json as an import (ids as strings, objects as one record) and
        the views that show it as it was written."""
        if not isinstance(document, dict):
            raise CompatError(400, "a db.json is an object of resources")
        tables: dict[str, Any] = {}
        views: dict[str, View] = {}
        self.completed = False
        for name, value in document.items():
            if name == "$schema" and isinstance(value, str):
                continue
            if isinstance(value, dict):
                tables[name] = value
                views[name] = View(stamps=any(s in value for s in STAMPS))
                continue
            if not isinstance(value, list):
                kind = "null" if value is None else type(value).__name__
                raise CompatError(
                    400,
                    f"the resource {name!r} is a {kind}: a resource is a list "
                    "of objects or an object",
                )
            rows = []
            ids = [
                item["id"]
                for item in value
                if isinstance(item, dict) and item.get("id") is not None
            ]
            int_ids = all(is_int(i) for i in ids) if ids else self.dialect == "0.17"
            highest: int = max((i for i in ids if is_int(i)), default=0)
            ints: set[str] = set()
            for item in value:
                if isinstance(item, dict):
                    given = item.get("id")
                    if given == SINGLETON_ID:
                        raise CompatError(
                            400,
                            f"a record of {name!r} has the id {SINGLETON_ID!r}, "
                            "which is reserved (it holds an object resource)",
                        )
                    if given is None:
                        self.completed = True
                        highest += 1
                        made = str(highest) if int_ids else new_string_id()
                        item = {**item, "id": made}
                        if int_ids:
                            ints.add(made)
                    elif is_int(given):
                        item = {**item, "id": str(given)}
                        ints.add(item["id"])
                rows.append(item)
            stamps = any(
                isinstance(i, dict) and any(s in i for s in STAMPS) for i in value
            )
            views[name] = View(
                int_ids=int_ids, stamps=stamps, next_id=highest + 1, ints=ints
            )
            tables[name] = rows
        return tables, views

    async def load(self, document: Any, *, replace: bool) -> dict[str, int]:
        """Load a db.json into the store (``replace``: the file is the whole
        data; tables it does not hold are dropped)."""
        # checked in worker threads: a large file would hold the event loop
        tables, views = await anyio.to_thread.run_sync(self.plan, document)
        plan = await anyio.to_thread.run_sync(
            partial(self.imports.plan, exact_times=True), tables
        )
        counts = await self.imports.apply(plan, mode="replace" if replace else "merge")
        if replace:
            for info in await self.store.describe():
                if info.name not in tables:
                    await self.records.drop_table(info.name)
            self.views = views
        else:
            self.views.update(views)
        if isinstance(document, dict) and isinstance(document.get("$schema"), str):
            self.schema = document["$schema"]
        return counts

    def document(self, state: Sequence[tuple[str, list[Record]]]) -> Iterator[bytes]:
        """The store as a db.json, one record a line, in pieces.

        Records are never changed in place (a change puts a new record), so a
        piece whose records are the same objects as at the last save, shown
        the same way, is written from the bytes kept then: a save after a few
        changes encodes only the pieces they touched (and the pieces after a
        deletion, which moves the records behind it)."""
        budget = PIECES_KEPT_BYTES
        kept: dict[str, list[Piece]] = {}
        yield b"{"
        first = True
        if self.schema is not None:
            yield b'\n  "$schema": ' + orjson.dumps(self.schema)
            first = False
        for name, records in state:
            if self.hidden(name, len(records)):
                continue
            view = self.view(name)
            head = b"\n  " if first else b",\n  "
            first = False
            key = orjson.dumps(name)
            single = _singleton(records)
            if single is not None:
                yield head + key + b": " + orjson.dumps(show_object(view, single))
                continue
            if not records:
                yield head + key + b": []"
                continue
            yield head + key + b": ["
            before = self._pieces.get(name, ())
            pieces = kept[name] = []
            shown = (view.int_ids, view.stamps)
            keeping = True  # the pieces kept are the first ones of the table
            for number, start in enumerate(range(0, len(records), PIECE)):
                chunk = records[start : start + PIECE]
                old = before[number] if number < len(before) else None
                if old is not None and _same(old, chunk, shown):
                    encoded = old.encoded
                else:
                    encoded = b",".join(
                        b"\n    " + encoded_line(view, r) for r in chunk
                    )
                keeping = keeping and budget >= len(encoded)
                if keeping:
                    budget -= len(encoded)
                    pieces.append(Piece(chunk, shown, encoded))
                if start:
                    yield b","
                yield encoded
            yield b"\n  ]"
        yield b"\n}\n"
        self._pieces = kept

    # -- reading ---------------------------------------------------------------

    async def resources(self) -> list[tuple[str, str, int]]:
        """(name, "array" or "object", records) of every table, by name."""
        out = []
        for info in sorted(await self.store.describe(), key=lambda t: t.name):
            if self.hidden(info.name, info.count):
                continue
            kind = "array"
            if info.count == 1 and await self.store.read(info.name, SINGLETON_ID):
                kind = "object"
            out.append((info.name, kind, info.count))
        return out

    async def _object(self, name: str) -> Record | None:
        """The record of an object resource, or ``None`` for a collection."""
        return await self.store.read(name, SINGLETON_ID)

    async def _item(self, name: str, record_id: str) -> Record:
        """The record of ``/{name}/{id}``, or 404 (the record of an object
        resource, ``_singleton``, is not an item)."""
        if (
            record_id == SINGLETON_ID
            or not TABLE_NAME.fullmatch(name)
            or not valid_record_id(record_id)
        ):
            raise not_found()
        record = await self.store.read(name, record_id)
        if record is None:
            raise not_found()
        return record

    async def _require(self, name: str) -> None:
        if not TABLE_NAME.fullmatch(name) or not await self.store.has_table(name):
            raise not_found()

    async def find(self, name: str, params: Sequence[tuple[str, str]]) -> Listed:
        """``GET /{name}``: an object resource, or the collection's query."""
        await self._require(name)
        single = await self._object(name)
        if single is not None:
            return Listed(show_object(self.view(name), single), 1)
        query = parse_1(params) if self.dialect == "1" else parse_017(params)
        return await self.select(name, query)

    async def select(self, name: str, query: ListQuery) -> Listed:
        view = self.view(name)
        with self.limits.work() as work:
            rows = await self._matching(name, view, query, work)
            total = len(rows)
            if query.sort:
                work.spend(total * len(query.sort))
                if total > INLINE:  # a long sort: in slices, as heavy work
                    work.become_heavy()
                    rows = await sort_in_slices(rows, query.sort, _getter(view), work)
                else:
                    rows = sort_rows(
                        rows, query.sort, _getter(view), _window(query, total)
                    )
            page: tuple[int, int, int] | None = None
            body: Any
            if query.dialect == "1" and query.page is not None:
                per_page = query.per_page if query.per_page > 0 else 1
                pages = max(1, math.ceil(total / per_page))
                current = max(1, min(query.page, pages))
                start = (current - 1) * per_page
                shown = await self._finish(
                    name, view, rows[start : start + per_page], query, work
                )
                body = {
                    "first": 1,
                    "prev": current - 1 if current > 1 else None,
                    "next": current + 1 if current < pages else None,
                    "last": pages,
                    "pages": pages,
                    "items": total,
                    "data": shown,
                }
                return await _listed(body, total, len(shown), work)
            if query.page is not None:  # 0.17
                per_page = query.per_page
                start = (query.page - 1) * per_page
                rows = rows[start : start + per_page] if start < total else []
                page = (query.page, per_page, math.ceil(total / per_page))
            elif query.end is not None:  # lodash's slice: negatives from the end
                rows = rows[query.start or 0 : query.end]
            elif query.limit is not None:
                begin = query.start or 0
                rows = rows[begin : begin + query.limit]
            body = await self._finish(name, view, rows, query, work)
            return await _listed(body, total, len(body), work, page)

    async def _matching(
        self, name: str, view: View, query: ListQuery, work: Work
    ) -> list[Record]:
        """The records of the table that meet the query's conditions, tested
        ``CHUNK`` records at a time with the event loop given back between."""
        get = _getter(view)
        where = list(query.where)
        records: list[Record] = []
        scan = await self.store.scan(name)
        async for batch in scan.batches():
            records += batch
            work.spend(len(batch))
            await work.pause()
        if query.optional:  # 0.17 ignores a filter on a field no record has
            present: set[tuple[str, ...]] = set()
            for chunk in _chunks(records, work):
                present.update(
                    p
                    for p in query.optional
                    if p not in present and any(get(r, p) is not MISSING for r in chunk)
                )
            where = [
                (p, t) for p, t in where if p in present or p not in query.optional
            ]
        tree, q = query.tree, query.q
        if not (where or tree is not None or q):
            return records
        cost = max(query.cost, 1)
        rows: list[Record] = []
        for chunk in _chunks(records, work):
            work.spend(len(chunk) * cost)
            for record in chunk:
                if (
                    all(test(get(record, parts)) for parts, test in where)
                    and (tree is None or matches_tree(_shown(view, record), tree))
                    and (q is None or deep_contains(_shown(view, record), q))
                ):
                    rows.append(record)
            await work.pause()
            await asyncio.sleep(0)
        return rows

    async def _finish(
        self, name: str, view: View, rows: list[Record], query: ListQuery, work: Work
    ) -> list[dict[str, Any]]:
        shown: list[dict[str, Any]] = []
        for start in range(0, len(rows), INLINE):
            shown += [show(view, r) for r in rows[start : start + INLINE]]
            if len(rows) > INLINE:
                work.become_heavy()
                await asyncio.sleep(0)
        for related in query.embed:
            await self._embed(name, shown, related, work)
        for inner in query.expand:
            await self._expand(shown, inner, work)
        return shown

    async def read(
        self, name: str, record_id: str, params: Sequence[tuple[str, str]]
    ) -> dict[str, Any]:
        """``GET /{name}/{id}``, with ``_embed`` (and ``_expand`` in 0.17)."""
        record = await self._item(name, record_id)
        view = self.view(name)
        if not params:  # the common case: the record alone
            return show(view, record)
        query = ListQuery(
            self.dialect,
            embed=_names(_all(params, "_embed")),
            expand=_names(_all(params, "_expand")) if self.dialect == "0.17" else [],
        )
        with self.limits.work() as work:
            return (await self._finish(name, view, [record], query, work))[0]

    async def _embed(
        self, name: str, items: list[dict[str, Any]], related: str, work: Work
    ) -> None:
        """Children (``comments`` of posts, by ``postId``) or, in 1.x, a parent
        (``post`` of comments, by ``postId`` in the ``posts`` table)."""
        if self.dialect == "1" and inflection.singularize(related) == related:
            await self._expand(items, related, work)
            return
        if not TABLE_NAME.fullmatch(related) or not await self.store.has_table(related):
            return
        key = inflection.singularize(name) + "Id"
        found: dict[Any, list[dict[str, Any]]] = {}
        for start in range(0, len(items), CHUNK):
            found.update(
                (_hashable(i.get("id")), []) for i in items[start : start + CHUNK]
            )
            await asyncio.sleep(0)
        view = self.view(related)
        scan = await self.store.scan(related)
        async for batch in scan.batches(CHUNK):
            work.spend(len(batch))
            for record in batch:
                value = record.get(key, MISSING)
                if value is not MISSING:
                    bucket = found.get(_hashable(value))
                    if bucket is not None:
                        bucket.append(show(view, record))
            await work.pause()
            await asyncio.sleep(0)
        for start in range(0, len(items), CHUNK):
            for item in items[start : start + CHUNK]:
                item[related] = found[_hashable(item.get("id"))]
            await asyncio.sleep(0)

    async def _expand(
        self, items: list[dict[str, Any]], inner: str, work: Work
    ) -> None:
        """The parent of each item (``post`` by ``postId`` from ``posts``)."""
        table = inflection.pluralize(inner)
        if not TABLE_NAME.fullmatch(table) or not await self.store.has_table(table):
            return
        key = inner + "Id"
        ids = {
            str(_hashable(item[key]))
            for item in items
            if isinstance(item.get(key), (str, int)) and not isinstance(item[key], bool)
        }
        valid = sorted(i for i in ids if valid_record_id(i))
        work.spend(len(valid))
        parents: dict[str, Record] = {}
        for start in range(0, len(valid), CHUNK):
            found = await self.store.read_many(table, valid[start : start + CHUNK])
            parents.update((r["id"], r) for r in found)
            await asyncio.sleep(0)
        view = self.view(table)
        for start in range(0, len(items), CHUNK):
            for item in items[start : start + CHUNK]:
                value = item.get(key)
                parent = (
                    parents.get(str(_hashable(value))) if value is not None else None
                )
                if parent is not None:  # json-server leaves out a missing parent
                    item[inner] = show(view, parent)
            await asyncio.sleep(0)

    # -- writing ---------------------------------------------------------------

    def _fields(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise not_object()
        return body

    def _stored_id(self, view: View, given: Any) -> str | None:
        """A given id as the store keeps it (``None``: make one)."""
        if given is None:
            return None
        if is_int(given):
            if given >= view.next_id:
                view.next_id = given + 1
            return str(given)
        if given == SINGLETON_ID:
            raise CompatError(400, f"{SINGLETON_ID} is the id of object resources")
        if isinstance(given, str) and valid_record_id(given):
            return given
        raise CompatError(
            400, "id must be an integer or 1 to 128 of A-Za-z0-9_.:- characters"
        )

    async def create(self, name: str, body: Any) -> dict[str, Any]:
        """``POST /{name}``: a new record with an id made as json-server makes
        it (1.x: a random string; 0.17: the next integer, or a random string
        in a table of string ids), or the one given."""
        fields = dict(self._fields(body))
        await self._require(name)
        view = self.view(name)
        single = await self._object(name)
        if single is not None:
            if self.dialect == "1":
                raise not_found()
            return await self.set_object(name, fields, replace=True)
        raw_id = fields.pop("id", None)
        given = self._stored_id(view, raw_id)
        integer = is_int(raw_id) if given else self.dialect == "0.17" and view.int_ids
        for _ in range(3):
            record_id = given or self._new_id(view)
            # its kind is known before the write: a save under "always" runs in it
            known = record_id in view.ints
            _mark(view.ints, record_id, integer)
            try:
                made = await self.records.create_records(
                    name, [{"id": record_id, **fields}], bulk=False
                )
            except DomainError as exc:
                _mark(view.ints, record_id, known)
                if given is None and exc.status_code == 409 and view.int_ids:
                    view.next_id = await self._highest(name) + 1
                    continue
                raise
            return show(view, made[0])
        raise CompatError(409, "could not choose a free id; try again")

    def _new_id(self, view: View) -> str:
        if self.dialect == "0.17" and view.int_ids:
            view.next_id += 1
            return str(view.next_id - 1)
        return new_string_id(11 if self.dialect == "1" else 7)

    async def _highest(self, name: str) -> int:
        highest = 0
        scan = await self.store.scan(name)
        async for batch in scan.batches(CHUNK):
            for record in batch:
                if _digits(record["id"]):
                    highest = max(highest, int(record["id"]))
            await asyncio.sleep(0)
        return highest

    async def update(
        self, name: str, record_id: str, body: Any, *, replace: bool
    ) -> dict[str, Any]:
        """``PUT`` (the body is the whole record) or ``PATCH`` (its fields are
        merged in) ``/{name}/{id}``; the id stays the path's."""
        fields = dict(self._fields(body))
        fields.pop("id", None)
        current = await self._item(name, record_id)
        for stamp in STAMPS:  # a record read and sent back as it was: no change
            if stamp in fields and fields[stamp] == current.get(stamp):
                del fields[stamp]
        record = await self.records.update_record(
            name, record_id, fields, patch=False, replace=replace, loc=()
        )
        return show(self.view(name), record)

    async def set_object(
        self, name: str, body: Any, *, replace: bool
    ) -> dict[str, Any]:
        """``PUT``/``PATCH /{name}`` of an object resource."""
        fields = dict(self._fields(body))
        fields.pop("id", None)
        await self._require(name)
        if await self._object(name) is None:
            raise not_found()
        record = await self.records.update_record(
            name, SINGLETON_ID, fields, patch=False, replace=replace, loc=()
        )
        return show_object(self.view(name), record)

    async def delete(
        self, name: str, record_id: str, params: Sequence[tuple[str, str]]
    ) -> dict[str, Any]:
        """``DELETE /{name}/{id}``. 1.x answers the record, sets the foreign
        keys that named it to null and deletes the records of the tables named
        by ``_dependent`` that named it; 0.17 answers ``{}`` and deletes every
        record that named it."""
        record = await self._item(name, record_id)
        view = self.view(name)
        key = inflection.singularize(name) + "Id"
        dependents = set(_names(_all(params, "_dependent")))
        # the records that name it, found first: a scan refused (its cost, a
        # busy service) leaves everything as it was
        linked: list[tuple[str, list[str], bool]] = []
        with self.limits.work() as work:
            for info in await self.store.describe():
                if info.name != name:
                    hits = await self._naming(info.name, key, record_id, work)
                    cascade = self.dialect == "0.17" or info.name in dependents
                    linked.append((info.name, hits, cascade))
        await self.records.delete_record(name, record_id)
        for table, hits, cascade in linked:
            for hit in hits:
                try:
                    if cascade:
                        await self.records.delete_record(table, hit)
                    else:
                        await self.records.update_record(
                            table, hit, {key: None}, patch=False, loc=()
                        )
                except DomainError as exc:
                    if exc.status_code != 404:  # deleted meanwhile
                        raise
        return show(view, record) if self.dialect == "1" else {}

    async def _naming(
        self, table: str, key: str, record_id: str, work: Work
    ) -> list[str]:
        """The ids of the records of ``table`` whose field ``key`` names
        ``record_id``."""
        hits: list[str] = []
        scan = await self.store.scan(table)
        async for batch in scan.batches(CHUNK):
            work.spend(len(batch))
            hits += [
                r["id"] for r in batch if key in r and loose_equal(r[key], record_id)
            ]
            await work.pause()
            await asyncio.sleep(0)
        return hits

    # -- 0.17 nested routes -------------------------------------------------------

    def parent_key(self, parent: str) -> str:
        return inflection.singularize(parent) + "Id"

    async def nested_find(
        self, parent: str, parent_id: str, child: str, params: Sequence[tuple[str, str]]
    ) -> Listed:
        """``GET /{parent}/{id}/{child}``: ``GET /{child}?{parent}Id={id}``."""
        return await self.find(child, [*params, (self.parent_key(parent), parent_id)])

    async def nested_create(
        self, parent: str, parent_id: str, child: str, body: Any
    ) -> dict[str, Any]:
        """``POST /{parent}/{id}/{child}``: the body with ``{parent}Id`` set."""
        fields = dict(self._fields(body))
        value: Any = parent_id
        if parent_id in self.view(parent).ints:
            value = int(parent_id)
        fields[self.parent_key(parent)] = value
        return await self.create(child, fields)


def _mark(ints: set[str], record_id: str, integer: bool) -> None:
    """Note whether a record's id is a JSON integer."""
    if integer:
        ints.add(record_id)
    else:
        ints.discard(record_id)


def _chunks(records: list[Record], work: Work) -> list[list[Record]]:
    """``records`` in runs of ``CHUNK``; many of them make the request heavy."""
    if len(records) > INLINE:
        work.become_heavy()
    return [records[i : i + CHUNK] for i in range(0, len(records), CHUNK)]


def _same(piece: Piece, records: list[Record], shown: tuple[bool, bool]) -> bool:
    return (
        piece.shown == shown
        and len(piece.records) == len(records)
        and all(map(operator.is_, piece.records, records))
    )


def _singleton(records: list[Record]) -> Record | None:
    if len(records) == 1 and records[0]["id"] == SINGLETON_ID:
        return records[0]
    return None


def _shown(view: View, record: Record) -> dict[str, Any]:
    return show(view, record) if (view.ints or not view.stamps) else record


def _getter(view: View) -> Callable[[Record, tuple[str, ...]], Any]:
    """The value at a path of a stored record, as the routes show it."""
    hidden = () if view.stamps else STAMPS

    def get(record: Record, parts: tuple[str, ...]) -> Any:
        if len(parts) == 1:
            name = parts[0]
            if name == "id":
                return id_value(view, record["id"])
            if name in hidden:
                return MISSING
            return record.get(name, MISSING)
        return resolve(record, parts)

    return get
