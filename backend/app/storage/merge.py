"""How an update is merged into a record: the one definition both backends follow
(the Redis backend's script does the same on the JSON text)."""

from __future__ import annotations

from typing import Any

from app.storage.base import Record

SERVER_FIELDS = ("id", "created_at", "updated_at")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge recursively, ``null`` removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def merge_fields(
    record: Record, fields: dict[str, Any], *, patch: bool, replace: bool = False
) -> dict[str, Any]:
    """The record's own fields (without ``id`` and the timestamps) with
    ``fields`` merged in: a field already there keeps its place, a new one comes
    last. ``patch``: RFC 7396; else each given field replaces the old value;
    ``replace``: ``fields`` are all of them."""
    if replace:
        return dict(fields)
    current = {k: v for k, v in record.items() if k not in SERVER_FIELDS}
    if patch:
        merged: dict[str, Any] = merge_patch(current, fields)
        return merged
    return {**current, **fields}


def grown_past(merged: Any, patch: Any, most: int) -> bool:
    """Whether an object a merge patch merged into (the record itself, or one
    nested in it) now holds more than ``most`` fields: a patch adds to objects
    it does not send whole, so its own size does not bound theirs. Walks the
    patch, not the record."""
    stack = [(merged, patch)]
    while stack:
        value, change = stack.pop()
        if not (isinstance(value, dict) and isinstance(change, dict)):
            continue
        if len(value) > most:
            return True
        stack += [(value[k], sub) for k, sub in change.items() if k in value]
    return False


def merged_record(
    record: Record,
    fields: dict[str, Any],
    *,
    patch: bool,
    updated_at: str,
    replace: bool = False,
) -> Record:
    """The new version of ``record`` after an update."""
    return {
        "id": record["id"],
        **merge_fields(record, fields, patch=patch, replace=replace),
        "created_at": record["created_at"],
        "updated_at": updated_at,
    }
