"""Password hashing with argon2id, off the event loop."""

from __future__ import annotations

import anyio
import anyio.to_thread
from argon2 import PasswordHasher as _Argon2
from argon2.exceptions import InvalidHashError, VerificationError


class PasswordHasher:
    """Hashes write-only passwords; the plain text is never stored or logged.

    Each hash takes ``memory_kib`` of memory and a core for a while, so at most
    ``concurrency`` run at once (in worker threads); the others wait their turn.
    """

    def __init__(
        self, *, time_cost: int, memory_kib: int, parallelism: int, concurrency: int = 2
    ) -> None:
        self._hasher = _Argon2(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        self._concurrency = concurrency
        self._limiter: anyio.CapacityLimiter | None = None

    async def hash(self, password: str) -> str:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._concurrency)
        return await anyio.to_thread.run_sync(
            self._hasher.hash, password, limiter=self._limiter
        )

    def verify(self, hashed: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(hashed, password))
        except (VerificationError, InvalidHashError):
            return False
