"""Entity tags: a record's version, quoted; ``If-None-Match`` and ``If-Match``."""

from __future__ import annotations

from typing import Any, Mapping

import orjson

from app.storage.base import version_of


def etag_of(body: bytes) -> str:
    """A strong validator: the version (content hash) of a record's JSON."""
    return '"' + version_of(body) + '"'


def record_etag(record: Mapping[str, Any]) -> str:
    return etag_of(orjson.dumps(record))


def _tags(header: str) -> list[str]:
    return [tag.strip() for tag in header.strip().split(",") if tag.strip()]


def etag_matches(header: str, etag: str, *, weak: bool = True) -> bool:
    """Whether an ``If-None-Match`` (weak comparison) or, with ``weak=False``, an
    ``If-Match`` header (strong comparison: a ``W/`` tag never matches) names
    this entity tag (RFC 9110 section 13.1)."""
    if header.strip() == "*":
        return True
    for candidate in _tags(header):
        if candidate.startswith("W/"):
            if not weak:
                continue
            candidate = candidate[2:]
        if candidate == etag:
            return True
    return False


def joined(values: list[str]) -> str | None:
    """A header sent on several lines as the one comma-separated list they
    make (RFC 9110 section 5.3); ``None`` when it was not sent."""
    return ", ".join(values) if values else None


def expected_versions(if_match: str | None) -> frozenset[str] | None:
    """The versions an ``If-Match`` header allows: ``None`` for any (no header,
    or ``*``); strong comparison, so ``W/`` tags allow nothing."""
    if if_match is None or if_match.strip() == "*":
        return None
    versions = set()
    for tag in _tags(if_match):
        if len(tag) >= 2 and tag[0] == '"' and tag[-1] == '"':
            versions.add(tag[1:-1])
    return frozenset(versions)
