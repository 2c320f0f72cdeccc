"""Hash keys with JSON equality: ``1 == 1.0``, but ``1 != "1"`` and ``true != 1``."""

from __future__ import annotations

from typing import Any, Hashable

import orjson

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()


def json_key(value: Any) -> Hashable:
    """A hashable key that two JSON values share exactly when they are equal as JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return (bool, value)
    if isinstance(value, (int, float)):
        return value
    return (list, orjson.dumps(_canonical(value), option=orjson.OPT_SORT_KEYS))


# The ranks of the sort order: null, numbers, strings, booleans, arrays, objects.
NULL_RANK, NUMBER_RANK, STRING_RANK, BOOL_RANK, ARRAY_RANK, OBJECT_RANK = range(6)


def sort_value(value: Any) -> tuple[int, Any]:
    """A key that orders any two JSON values: by type first, then by value
    (arrays and objects by their canonical JSON text). Values equal as JSON
    share it."""
    return order_of(json_key(value))


def order_of(key: Hashable) -> tuple[int, Any]:
    """``sort_value`` of the value whose ``json_key`` is ``key``."""
    if key is None:
        return (NULL_RANK, 0)
    if type(key) is str:
        return (STRING_RANK, key)
    if type(key) is tuple:
        kind, plain = key
        if kind is bool:
            return (BOOL_RANK, plain)
        return (ARRAY_RANK if plain[:1] == b"[" else OBJECT_RANK, plain)
    return (NUMBER_RANK, key)


def _canonical(value: Any) -> Any:
    """Nested numbers as JSON sees them: ``1.0`` is written ``1``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    return value


def split_path(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def resolve(record: dict[str, Any], parts: tuple[str, ...]) -> Any:
    """The value at a dotted path, or ``MISSING`` where the path leads nowhere."""
    value: Any = record
    for part in parts:
        if not isinstance(value, dict):
            return MISSING
        value = value.get(part, MISSING)
        if value is MISSING:
            return MISSING
    return value
