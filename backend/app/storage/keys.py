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
