"""Handing committed entries to the state machine, reading them back when needed.

Committed entries normally come from the in-memory window. After a restart the
window (``InitialState.tail``) may not reach back to ``applied + 1``; the core then
asks storage for the gap with a :class:`LogRead` (``peer=None``) and buffers the
answer until the entries are handed out in a Ready.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from raftmq.core.types import Entry, LogRead, LogReadResult

if TYPE_CHECKING:
    from raftmq.core.raft import RaftCore

log = logging.getLogger("raftmq.core.applying")

# Window trimming deletes from the front of a list: trim in chunks of up to this many
# entries below the max_cached_entries bound so that the cost is amortized.
TRIM_SLACK = 1024


def request_missing(r: RaftCore) -> None:
    """Ask storage for committed entries that are neither buffered nor in the window."""
    if r._apply_read is not None:
        return
    wanted = r._applied + len(r._apply_buf) + 1
    start = r._log.window_start
    if wanted <= r._commit and wanted < start:
        read = LogRead(
            lo=wanted, hi=min(r._commit, start - 1), max_bytes=r._cfg.max_batch_bytes, peer=None
        )
        r._apply_read = read
        r._reads.append(read)


def step_apply_read(r: RaftCore, result: LogReadResult) -> None:
    """Buffer read-back committed entries; a stale or unusable answer is dropped."""
    if result.read != r._apply_read:
        return
    r._apply_read = None
    wanted = r._applied + len(r._apply_buf) + 1
    taken = 0
    if result.read.lo == wanted:
        for ent in result.entries:
            if ent.index != wanted or ent.term != r._log.term(ent.index):
                break
            r._apply_buf.append(ent)
            wanted += 1
            taken += 1
    if taken:
        request_missing(r)
    else:
        # Do not spin on a read storage cannot serve: retry on the next advance.
        log.warning("%s: storage returned nothing usable for %s", r._id, result.read)


def committed_to_apply(r: RaftCore) -> tuple[Entry, ...]:
    """Committed entries from applied + 1, contiguous, as far as they are at hand."""
    hi = min(r._commit, r._log.last_index)
    nxt = r._applied + 1
    if nxt > hi:
        return ()
    out = [ent for ent in r._apply_buf if ent.index <= hi]
    nxt += len(out)
    if nxt <= hi and nxt >= r._log.window_start:
        out.extend(r._log.slice(nxt, hi))
    return tuple(out)


def mark_applied(r: RaftCore, entries: tuple[Entry, ...]) -> None:
    """The driver applied ``entries``: move applied, drop buffers, trim the window."""
    r._applied = max(r._applied, entries[-1].index)
    buf = r._apply_buf
    if buf:
        drop = 0
        while drop < len(buf) and buf[drop].index <= r._applied:
            drop += 1
        del buf[:drop]
    trim_window(r)


def trim_window(r: RaftCore) -> None:
    """Keep at most max_cached_entries applied entries in memory, trimming in chunks."""
    cached = r._cfg.max_cached_entries
    if r._applied - r._log.window_start + 1 > cached:
        slack = min(TRIM_SLACK, cached // 4)
        r._log.trim_before(r._applied - cached + slack + 1)
