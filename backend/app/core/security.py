"""API keys: ``MEMDB_API_KEYS="key1:rw,key2:ro"``, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from typing import Literal

Role = Literal["rw", "ro"]
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class ApiKeys:
    """The configured keys, kept only as SHA-256 digests.

    Every lookup compares the presented key's digest with every stored digest
    using ``hmac.compare_digest``, so the time taken does not depend on which
    key (if any) matched or on how much of it was right.
    """

    def __init__(self, spec: str) -> None:
        self._keys: list[tuple[bytes, Role]] = []
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key, _, role = item.rpartition(":")
            key, role = key.strip(), role.strip()
            if not key or role not in ("rw", "ro"):
                raise ValueError("MEMDB_API_KEYS entries are <key>:rw or <key>:ro")
            self._keys.append((_digest(key), role))  # type: ignore[arg-type]

    def __bool__(self) -> bool:
        return bool(self._keys)

    def role(self, presented: str | None) -> Role | None:
        if not presented:
            return None
        digest = _digest(presented)
        found: Role | None = None
        for stored, role in self._keys:
            if hmac.compare_digest(stored, digest):
                found = role
        return found


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    """The key a request carries: ``Authorization: Bearer <key>`` or ``X-API-Key``."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return api_key or None
