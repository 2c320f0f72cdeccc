"""Indexes: a hash index maps a JSON value to the ids of the records holding
it; a sorted index also keeps its entries in the sort order of ``sort`` and
range filters."""

from __future__ import annotations

from typing import Any, Hashable, Iterator

from sortedcontainers import SortedList

from app.storage.keys import MISSING, json_key, order_of, resolve, split_path

# After every record id in an entry (ids are ASCII): ``(rank, value, LAST)``
# sorts after each entry of that value.
LAST = "\uffff"


class HashIndex:
    """Maps ``json_key(value)`` to one id (a str) or several (a set of str).

    A single id is kept bare, so a near-unique index costs one dict entry per
    record. Records whose field is missing are not indexed; ``null`` is
    indexed (equality filters find it) but a unique index allows many nulls.

    ``shared()`` hands out the groups as they are at one instant (for a join
    that reads them while writes go on): from then on, a write copies a set
    that was handed out before it changes it (``fresh`` holds the sets made
    since, which it may change in place).
    """

    __slots__ = ("field", "unique", "parts", "groups", "count", "fresh")
    kind = "hash"

    def __init__(self, field: str, *, unique: bool = False) -> None:
        self.field = field
        self.unique = unique
        self.parts = split_path(field)
        self.groups: dict[Hashable, str | set[str]] = {}
        self.count = 0
        # None until the groups are first handed out
        self.fresh: set[int] | None = None

    def shared(self) -> dict[Hashable, str | set[str]]:
        """The groups as they are now; later writes leave what it holds as it
        is (call it under the store's lock)."""
        self.fresh = set()
        return self.groups.copy()

    def _own(self, key: Hashable, group: set[str]) -> set[str]:
        """``group`` itself, or a copy of it put in its place when a copy of
        the groups may hold it."""
        fresh = self.fresh
        if fresh is None or id(group) in fresh:
            return group
        group = set(group)
        self.groups[key] = group
        fresh.add(id(group))
        return group

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
            made = self.groups[key] = {group, record_id}
            if self.fresh is not None:
                self.fresh.add(id(made))
        elif record_id in group:
            return
        else:
            self._own(key, group).add(record_id)
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
        group = self._own(key, group)
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


class SortedIndex(HashIndex):
    """A hash index that also keeps one entry ``(rank, value, id)`` per indexed
    record in a ``SortedList``, in the order of ``keys.sort_value``: a page
    sorted on the field or a range of its values is found in O(log n), and so
    is how many records a range holds. Records without the field are kept
    apart (``absent``): a sort puts them last."""

    __slots__ = ("ordered", "absent")
    kind = "sorted"

    def __init__(self, field: str, *, unique: bool = False) -> None:
        super().__init__(field, unique=unique)
        self.ordered: SortedList = SortedList()
        self.absent: set[str] = set()

    def add(self, record_id: str, key: Hashable) -> None:
        if key is MISSING:
            self.absent.add(record_id)
            return
        before = self.count
        super().add(record_id, key)
        if self.count != before:
            self.ordered.add((*order_of(key), record_id))

    def remove(self, record_id: str, key: Hashable) -> None:
        if key is MISSING:
            self.absent.discard(record_id)
            return
        before = self.count
        super().remove(record_id, key)
        if self.count != before:
            self.ordered.remove((*order_of(key), record_id))

    def clear(self) -> None:
        super().clear()
        self.ordered.clear()
        self.absent.clear()

    def span(
        self, low: tuple[Any, bool] | None, high: tuple[Any, bool] | None, rank: int
    ) -> tuple[int, int]:
        """The positions ``[start, stop)`` of the entries of ``rank`` between
        ``low`` and ``high`` (each a value and whether it is included)."""
        entries = self.ordered
        start = entries.bisect_left((rank,))
        stop = entries.bisect_left((rank + 1,))
        if low is not None:
            value, included = low
            start = max(
                start, entries.bisect_left((rank, value, "" if included else LAST))
            )
        if high is not None:
            value, included = high
            stop = min(
                stop, entries.bisect_left((rank, value, LAST if included else ""))
            )
        return start, max(start, stop)

    def group_start(self, position: int) -> int:
        """The first position of the entries equal to the one at ``position``."""
        rank, value, _ = self.ordered[position]
        return int(self.ordered.bisect_left((rank, value)))

    def group_stop(self, position: int) -> int:
        """One past the last position of the entries equal to the one at ``position``."""
        rank, value, _ = self.ordered[position]
        return int(self.ordered.bisect_left((rank, value, LAST)))


def make_index(field: str, *, unique: bool = False, kind: str = "hash") -> HashIndex:
    """A new, empty index of ``kind`` (``hash`` or ``sorted``)."""
    if kind == "sorted":
        return SortedIndex(field, unique=unique)
    return HashIndex(field, unique=unique)


def index_spec(index: HashIndex) -> dict[str, Any]:
    """What defines an index, as the journal and the change feed write it."""
    return {"field": index.field, "unique": index.unique, "kind": index.kind}
