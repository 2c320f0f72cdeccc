"""Times as the service writes them: RFC 3339, UTC, microseconds, a ``Z``.

Records' ``created_at``/``updated_at``, the change feed's ``at`` and the log
lines' ``timestamp`` all read like ``2026-11-30T10:45:44.700695Z``. The date and
time of day are formatted once a second, not once a value.
"""

from __future__ import annotations

import time


class Rfc3339:
    def __init__(self) -> None:
        # one attribute, replaced whole: threads see a matching pair
        self._cached: tuple[int, str] = (-1, "")

    def at(self, when: float) -> str:
        """A Unix time (seconds)."""
        second = int(when)
        cached_second, prefix = self._cached
        if second != cached_second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._cached = (second, prefix)
        return f"{prefix}.{int((when - second) * 1e6):06d}Z"

    def now(self) -> str:
        return self.at(time.time())


RFC3339 = Rfc3339()
