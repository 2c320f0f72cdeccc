"""Large answers written in chunks: one ``orjson.dumps`` per chunk, not per row."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Sequence

import orjson

CHUNK = 2000


def json_chunks(
    head: dict[str, Any],
    key: str,
    rows: Sequence[Any],
    row: Callable[[Any], Any] | None = None,
) -> Iterator[bytes]:
    """``head`` as a JSON object with ``key`` holding ``rows``, yielded in pieces."""
    opening = orjson.dumps(head)
    yield opening[:-1] + (b"," if head else b"") + orjson.dumps(key) + b":["
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        body = orjson.dumps(chunk if row is None else [row(r) for r in chunk])
        yield (b"," if start else b"") + body[1:-1]
    yield b"]}"


def ndjson_chunks(rows: Sequence[Any]) -> Iterator[bytes]:
    """One JSON document a line."""
    dumps = orjson.dumps
    for start in range(0, len(rows), CHUNK):
        yield b"".join(dumps(r) + b"\n" for r in rows[start : start + CHUNK])


def db_chunks(tables: Mapping[str, Sequence[Any]]) -> Iterator[bytes]:
    """``{"table": [records], ...}`` in pieces."""
    yield b"{"
    for position, (name, rows) in enumerate(tables.items()):
        yield (b"," if position else b"") + orjson.dumps(name) + b":["
        for start in range(0, len(rows), CHUNK):
            body = orjson.dumps(rows[start : start + CHUNK])
            yield (b"," if start else b"") + body[1:-1]
        yield b"]"
    yield b"}"
