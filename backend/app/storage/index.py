"""Hash indexes: a JSON value maps to the ids of the records holding it."""

from __future__ import annotations

from typing import Any, Hashable, Iterator

from app.storage.keys import MISSING, json_key, resolve, split_path


class HashIndex:
    """Maps ``json_key(value)`` to one id (a str) or several (a set of str).

    A single id is kept bare, so a near-unique index costs one dict entry per
    record. Records whose field is missing are not indexed; ``null`` is
    indexed (equality filters find it) but a unique index allows many nulls.
    """

    __slots__ = ("field", "unique", "parts", "groups", "count")

    def __init__(self, field: str, *, unique: bool = False) -> None:
        self.field = field
        self.unique = unique
        self.parts = split_path(field)
        self.groups: dict[Hashable, str | set[str]] = {}
        self.count = 0

    def key_of(self, record: dict[str, Any]) -> Hashable:
        value = resolve(record, self.parts)
        return MISSING if value is MISSING else json_key(value)

    def holder(self, key: Hashable) -> str | None:
        """For a unique index: the id holding ``key``, if any (nulls never clash)."""
        if key is None or key is MISSING:
            return None
        group = self.groups.get(key)
        if group is None or isinstance(group, str):
            return group
        return next(iter(group))

    def add(self, record_id: str, key: Hashable) -> None:
        if key is MISSING:
            return
        group = self.groups.get(key)
        if group is None:
            self.groups[key] = record_id
        elif isinstance(group, str):
            if group == record_id:
                return
            self.groups[key] = {group, record_id}
        elif record_id in group:
            return
        else:
            group.add(record_id)
        self.count += 1

    def remove(self, record_id: str, key: Hashable) -> None:
        if key is MISSING:
            return
        group = self.groups.get(key)
        if group is None:
            return
        if isinstance(group, str):
            if group == record_id:
                del self.groups[key]
                self.count -= 1
            return
        if record_id not in group:
            return
        group.discard(record_id)
        self.count -= 1
        if len(group) == 1:
            self.groups[key] = next(iter(group))
        elif not group:
            del self.groups[key]

    def ids(self, key: Hashable) -> Iterator[str]:
        group = self.groups.get(key)
        if group is None:
            return iter(())
        if isinstance(group, str):
            return iter((group,))
        return iter(group)

    def size(self, key: Hashable) -> int:
        group = self.groups.get(key)
        if group is None:
            return 0
        return 1 if isinstance(group, str) else len(group)

    def entries(self) -> int:
        return self.count

    def clear(self) -> None:
        self.groups.clear()
        self.count = 0
