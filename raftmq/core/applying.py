"""Handing committed entries to the state machine, reading them back when needed.

Committed entries normally come from the in-memory window. After a restart the
window (``InitialState.tail``) may not reach back to ``applied + 1``; the core then
asks storage for the gap with a :class:`LogRead` (``peer=None``) and buffers the
answer until the entries are handed out in a Ready.
"""

from __future__ import annotations

import logging

from raftmq.core.state import RaftState
from raftmq.core.types import Entry, LogRead, LogReadResult

log = logging.getLogger("raftmq.core.applying")

# Window trimming deletes from the front of a list: trim in chunks of up to this many
# entries below the max_cached_entries bound so that the cost is amortized.
TRIM_SLACK = 1024


def commit_to(s: RaftState, index: int) -> None:
    """Raise the commit index to ``index`` (never lower it) and fetch what is now due."""
    if index > s.commit:
        s.commit = index
        request_missing(s)


def request_missing(s: RaftState) -> None:
    """Ask storage for committed entries that are neither buffered nor in the window."""
    if s.apply_read is not None:
        return
    wanted = s.applied + len(s.apply_buf) + 1
    start = s.raft_log.window_start
    if wanted <= s.commit and wanted < start:
        read = LogRead(
            lo=wanted, hi=min(s.commit, start - 1), max_bytes=s.cfg.max_batch_bytes, peer=None
        )
        s.apply_read = read
        s.reads.append(read)


def step_apply_read(s: RaftState, result: LogReadResult) -> None:
    """Buffer read-back committed entries; a stale or unusable answer is dropped."""
    if result.read != s.apply_read:
        return
    s.apply_read = None
    wanted = s.applied + len(s.apply_buf) + 1
    taken = 0
    if result.read.lo == wanted:
        for ent in result.entries:
            if ent.index != wanted or ent.term != s.raft_log.term(ent.index):
                break
            s.apply_buf.append(ent)
            wanted += 1
            taken += 1
    if taken:
        request_missing(s)
    else:
        # Do not spin on a read storage cannot serve: retry on the next advance.
        log.warning("%s: storage returned nothing usable for %s", s.id, result.read)


def committed_to_apply(s: RaftState) -> tuple[Entry, ...]:
    """Committed entries from applied + 1, contiguous, as far as they are at hand."""
    rlog = s.raft_log
    hi = min(s.commit, rlog.last_index)
    nxt = s.applied + 1
    if nxt > hi:
        return ()
    out = [ent for ent in s.apply_buf if ent.index <= hi]
    nxt += len(out)
    if nxt <= hi and nxt >= rlog.window_start:
        out.extend(rlog.slice(nxt, hi))
    return tuple(out)


def mark_applied(s: RaftState, entries: tuple[Entry, ...]) -> None:
    """The driver applied ``entries``: move applied, drop buffers, trim the window."""
    s.applied = max(s.applied, entries[-1].index)
    buf = s.apply_buf
    if buf:
        drop = 0
        while drop < len(buf) and buf[drop].index <= s.applied:
            drop += 1
        del buf[:drop]
    trim_window(s)


def trim_window(s: RaftState) -> None:
    """Keep at most max_cached_entries applied entries in memory, trimming in chunks."""
    cached = s.cfg.max_cached_entries
    if s.applied - s.raft_log.window_start + 1 > cached:
        slack = min(TRIM_SLACK, cached // 4)
        s.raft_log.trim_before(s.applied - cached + slack + 1)
