"""Repeated values stored once: the short strings of a table's records that
repeat (a status, a category, a foreign key, the timestamps of one import)
become one object that every record holding them points to.

A record parsed from JSON holds its own copy of each string, about 50 bytes
plus its length, however often the same value recurs in the table. ``Shared``
keeps, per top-level field, the values seen so far and swaps an equal string in
a new record for the one already held: the record is equal before and after
(only which object holds the characters changes), and records are never
changed in place once stored, so this happens before a record is published.
The store does it for bulk writes (an import, a seed file, a snapshot loaded
at start, a batch insert), where large tables come from; a single write is
stored as it came, at no cost.

What it costs, and its bounds (ADR 0016):

- one dict lookup per short string value of a record written in bulk;
- a field whose values do not repeat (a name, an email) is given up once it
  has ``JUDGE`` distinct values found fewer times again than that, and its
  pool freed: unique fields cost one set lookup from then on;
- a table's pools hold at most ``max(PROBE, records)`` values in all; past
  that they start afresh, so values no record holds any more cannot pile up
  (a field patched with ever new values on one record).
"""

from __future__ import annotations

from typing import Any

# Strings longer than this are rarely repeated exactly and are not pooled.
LONGEST = 64
# Distinct values a field is watched for before its repeats are judged.
JUDGE = 128
# The values a table's pools may hold in all, or one per record if more.
PROBE = 1024


class _Pool:
    __slots__ = ("values", "hits")

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.hits = 0  # values found already held


class Shared:
    """The pools of one table's fields; ``skip``: the fields given up (and
    ``id``, unique by definition)."""

    __slots__ = ("pools", "skip", "entries")

    def __init__(self) -> None:
        self.pools: dict[str, _Pool] = {}
        self.skip = {"id"}
        self.entries = 0

    def share(self, record: dict[str, Any], records: int) -> None:
        """Swap each short string of ``record`` for the equal one already held
        (``records``: how many records the table holds, for the bound)."""
        skip = self.skip
        for key, value in record.items():
            if value.__class__ is not str or key in skip or len(value) > LONGEST:
                continue
            pool = self.pools.get(key)
            if pool is None:
                pool = self.pools[key] = _Pool()
            held = pool.values.get(value)
            if held is not None:
                pool.hits += 1
                record[key] = held
                continue
            count = len(pool.values)
            if count >= JUDGE and pool.hits < count:
                del self.pools[key]  # its values do not repeat
                skip.add(key)
                self.entries -= count
                continue
            if self.entries >= max(PROBE, records):
                # values no record holds any more must not pile up: start afresh
                self.pools = {}
                self.entries = 0
                pool = self.pools[key] = _Pool()
            pool.values[value] = value
            self.entries += 1
