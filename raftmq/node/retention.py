"""Retention: how much of the log a node keeps for replay (issue LOG, item 4).

Like a RabbitMQ stream's ``max-length``, ``max-length-bytes`` and ``max-age``, each bound
that is set (> 0) alone decides how far the oldest entries may go, and the furthest
wins: ``entries`` keeps the newest N entries, ``bytes`` the newest entries whose payloads
total at most N bytes, ``age`` the entries saved in the last N seconds. Retention works
in steps, like a stream drops whole segments: the loop checks it about once a second
(:data:`CHECK_INTERVAL`) and compacts only once a bound is exceeded by a tenth
(:meth:`Retention.exceeded`), so a compaction deletes many rows at once, not one per write.

Compaction needs a snapshot that covers what it deletes, so a node with retention takes
one when retention asks for it (besides the periodic ``snapshot_entries`` ones), and it
never deletes past:

- its applied index and the core's first index (``trailing_entries`` before the
  snapshot stay for followers that lag a little);
- the fan-out watermark where the queue services run (fan-out reads from storage).

So a log holds at least ``trailing_entries`` entries and the newest unpublished ones
whatever the bounds say; docs/core.md, "Retention", has the whole story.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftmq.errors import ConfigError
from raftmq.storage.port import LogExtent

__all__ = ["CHECK_INTERVAL", "Retention"]

CHECK_INTERVAL = 1.0  # seconds between two retention checks of a node's loop
_MIN_AGE_SLACK = 1.0  # seconds an entry may outlive max_age at least before it goes


@dataclass(frozen=True, slots=True)
class Retention:
    """The retention bounds of a node's log (0: that bound is off)."""

    entries: int = 0  # keep the newest this many entries
    bytes: int = 0  # keep the newest entries whose payloads total at most this
    age: float = 0.0  # keep the entries saved in the last this many seconds

    def check(self) -> Retention:
        """Return self, or raise ConfigError for a negative bound."""
        for name in ("entries", "bytes", "age"):
            if getattr(self, name) < 0:
                raise ConfigError(f"retain_{name} must not be negative (0: no bound)")
        return self

    @property
    def active(self) -> bool:
        """True when any bound is set."""
        return self.entries > 0 or self.bytes > 0 or self.age > 0

    def exceeded(self, extent: LogExtent, now: float) -> bool:
        """True when the stored log passed a bound by its slack (a tenth of it): time to
        compact. ``now``: wall-clock seconds (``time.time()``)."""
        if self.entries > 0 and extent.entries > self.entries + max(1, self.entries // 10):
            return True
        if self.bytes > 0 and extent.payload_bytes > self.bytes + max(1, self.bytes // 10):
            return True
        if self.age > 0 and extent.oldest_appended is not None and extent.entries > 1:
            slack = max(_MIN_AGE_SLACK, self.age / 10)
            return bool(extent.oldest_appended < now - self.age - slack)
        return False
