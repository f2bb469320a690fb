"""Log retention, the arithmetic every adapter shares (no I/O): how far each bound lets
the oldest entries go, and how the bounds combine (the furthest wins, like a RabbitMQ
stream's max-length / max-length-bytes / max-age).

Entry times are whole milliseconds since the epoch (``raftmq_log.appended_ms``, revision
0005), stamped when an entry is saved; None for rows saved before that revision.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

Clock = Callable[[], float]
"""A wall clock in seconds since the epoch (``time.time``; tests pass their own)."""


def clock_ms(clock: Clock) -> int:
    """``clock()`` in whole milliseconds (what an entry saved now is stamped with)."""
    return math.floor(clock() * 1000)


def age_cutoff_ms(now: float, max_age: float) -> int:
    """Entries stamped below this were saved before ``now - max_age`` (for an integer
    ``ms``, ``ms < x`` iff ``ms < ceil(x)``)."""
    return math.ceil((now - max_age) * 1000)


def oldest_appended(ms: int | None) -> float | None:
    """A stored stamp as LogExtent.oldest_appended (seconds)."""
    return None if ms is None else ms / 1000


def bytes_going_forward(sizes_oldest_first: Iterable[tuple[int, int]], excess: int) -> int | None:
    """The first index by which the oldest entries' payloads reach ``excess`` bytes (what
    must go so that the rest fits), or None if they never do. ``sizes_oldest_first``:
    (index, payload bytes) from the first stored entry on."""
    total = 0
    for index, size in sizes_oldest_first:
        total += size
        if total >= excess:
            return index
    return None


def bytes_going_backward(sizes_newest_first: Iterable[tuple[int, int]], keep: int) -> int | None:
    """The newest index that no longer fits in ``keep`` bytes counted from the newest entry
    backwards (it and everything before it may go), or None when all fit."""
    total = 0
    for index, size in sizes_newest_first:
        total += size
        if total > keep:
            return index
    return None


def furthest(first: int, last: int, *points: int | None) -> int:
    """The furthest of the bounds' points, never the newest entry; ``first - 1`` (nothing
    goes) for an empty log or when no bound found anything to let go."""
    nothing = first - 1
    if last < first:
        return nothing
    found = max((p for p in points if p is not None), default=nothing)
    return max(nothing, min(found, last - 1))


def count_point(last: int, keep_entries: int) -> int | None:
    """All but the newest ``keep_entries`` may go (None when the bound is not set)."""
    return last - keep_entries if keep_entries > 0 else None


def walk_forward(payload_bytes: int, keep_bytes: int) -> bool:
    """Whether the byte bound is cheaper to find from the oldest entry (what must go is
    smaller than what stays) than from the newest; both give the same answer."""
    return payload_bytes - keep_bytes <= keep_bytes
