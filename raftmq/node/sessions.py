"""Replicated state of the queue layer, computed at apply time from the log on every node.

Client sessions (thesis §6.3): a write carrying ``(producer_id, seq)`` -- or only a
``message_id``, which is the session ``"mid:" + message_id`` with seq 1 -- is a *duplicate*
when that exact seq was already applied. One producer's writes do not always commit in seq
order (pipelining; after a leader change the writes queue redelivers unacked writes behind
newer ones), so a session keeps ``floor`` (every seq <= floor was applied) and ``above``
(the applied seqs > floor): a write is a duplicate iff ``seq <= floor or seq in above``.
Applying a seq adds it to ``above``, then ``floor`` absorbs ``floor + 1`` while it is in
``above``. Producers number their writes 1, 2, 3... and are mostly in order, so ``above``
stays tiny. Bound: when ``above`` holds more than ``max_gap`` seqs (default 10,000), the
oldest missing seqs are abandoned: ``floor`` jumps to the smallest seq in ``above`` and
absorbs again -- a seq left missing while 10,000 later seqs of the same producer were
applied is considered done (a later copy of it is a duplicate).

A duplicate's receipt names the original's index: exactly for the session's ``last_seq``
and for the last ~200,000 writes applied since the node started; otherwise the index is
unknown (``Original.index is None``; the receipt says ``index: null``). A duplicate that
reached the log is skipped at apply time: no callbacks, no fan-out, no replay; its pending
write resolves with the original index and ``duplicate=True``. Every node decides the same
from the same log.

Expiry: a session untouched for more than ``expiry_entries`` log entries is treated as
absent from then on (checked per entry, so the decision never depends on how entries were
batched) and deleted from the database later by ``expire_sessions_before``.

Duplicates are remembered (for fan-out and replay on any node, across restarts) as pseudo
sessions named ``raftmq:dup:<index>`` in the same table, persisted in the same transaction
as the applied index; they never expire (duplicates in the log are rare: they need a retry
racing a leader change). Producer ids starting with ``raftmq:`` are reserved.

The fan-out watermark is carried to followers by *watermark entries*: NORMAL entries whose
payload is made by :mod:`raftmq.protocol.watermark` (not a Record, so never a write). A node that
applies one persists ``fanout_watermark = max(current, index)`` with its applied index.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from raftmq.protocol.record import Record
from raftmq.storage.port import ClientSession
from raftmq.storage.rules import INT64_MAX, storable_text

logger = logging.getLogger("raftmq.node.sessions")

DEFAULT_SESSION_EXPIRY_ENTRIES = 1_000_000
DEFAULT_MAX_SESSION_GAP = 10_000  # applied seqs kept above a session's floor, at most
RESERVED_PREFIX = "raftmq:"  # producer ids with this prefix are refused at ingest
DUP_PREFIX = "raftmq:dup:"  # pseudo session of a duplicate entry: raftmq:dup:<index>
NEVER = 1 << 62  # updated_index of pseudo sessions: never expired
MAX_PRODUCER_ID = 190  # the session table's key column holds 200 characters
_GC_EVERY = 4096  # entries between in-memory sweeps of expired sessions
_RECENT = 200_000  # (producer, seq) -> index remembered in memory for exact receipts


def _claimed_key(record: Record) -> tuple[str, int] | None:
    if record.producer_id is not None and record.seq is not None:
        return record.producer_id, record.seq
    if record.message_id is not None:
        return "mid:" + record.message_id, 1
    return None


def _usable(producer_id: str, seq: int) -> bool:
    # What the session table can hold on every node and every database: a key the
    # storage column takes, not reserved, and seqs a BIGINT holds with room for floor + 1.
    return (
        1 <= seq < INT64_MAX
        and not producer_id.startswith(RESERVED_PREFIX)
        and storable_text(producer_id)
    )


def session_key(record: Record) -> tuple[str, int] | None:
    """``(session id, seq)`` identifying a write for exactly-once, or None (no key, or a
    key the sessions cannot hold: such a write is applied as a write without session)."""
    key = _claimed_key(record)
    return key if key is not None and _usable(*key) else None


def unusable_session(record: Record) -> bool:
    """True when ``record`` names a session the table cannot hold (see session_key): its
    write is applied without session, the same way on every node."""
    key = _claimed_key(record)
    return key is not None and not _usable(*key)


@dataclass(frozen=True, slots=True)
class Original:
    """Where the first copy of a duplicated write landed. Invariant: index and term are
    both set or both None (None: the original's place is no longer known)."""

    index: int | None  # log index of the original write, when known
    term: int | None  # term of that entry, when known


_UNKNOWN = Original(None, None)


def _duplicate_mark(row: ClientSession) -> int | None:
    """The index of the duplicate entry a pseudo session marks, or None when ``row`` is
    not one the table wrote (decimal index, last_seq 0, never expired)."""
    digits = row.producer_id[len(DUP_PREFIX) :]
    if not row.producer_id.startswith(DUP_PREFIX) or not (digits.isascii() and digits.isdigit()):
        return None
    if len(digits) > 19 or row.last_seq != 0 or row.updated_index != NEVER:
        return None
    return int(digits)


class _Session:
    """Mutable in-memory form of a ClientSession (the table updates it per applied write)."""

    __slots__ = ("above", "floor", "last_index", "last_seq", "last_term", "updated_index")

    def __init__(self, row: ClientSession) -> None:
        self.floor = row.floor  # every seq <= floor was applied
        self.above = set(row.above)  # applied seqs > floor; floor + 1 never in it
        self.last_seq = row.last_seq  # highest seq applied
        self.last_index = row.last_index  # where last_seq landed
        self.last_term = row.last_term  # its term
        self.updated_index = row.updated_index  # last touched (expiry)

    def row(self, producer_id: str) -> ClientSession:
        return ClientSession(
            producer_id,
            self.last_seq,
            self.last_index,
            self.last_term,
            self.updated_index,
            floor=self.floor,
            above=tuple(sorted(self.above)),
        )

    def seen(self, seq: int) -> bool:
        return seq <= self.floor or seq in self.above

    def add(self, seq: int, max_gap: int) -> None:
        """Record ``seq`` as applied (it was not), absorbing and bounding ``above``."""
        above = self.above
        above.add(seq)
        self._absorb()
        while len(above) > max_gap:
            # The oldest missing seqs are abandoned: deterministic on every node.
            self.floor = min(above)
            above.discard(self.floor)
            self._absorb()

    def _absorb(self) -> None:
        above = self.above
        while self.floor + 1 in above:
            self.floor += 1
            above.discard(self.floor)


class SessionTable:
    """Client sessions and duplicate marks of one node (owned by the node loop)."""

    def __init__(
        self,
        expiry_entries: int = DEFAULT_SESSION_EXPIRY_ENTRIES,
        max_gap: int = DEFAULT_MAX_SESSION_GAP,
    ) -> None:
        if max_gap < 1:
            raise ValueError("max_gap must be >= 1")
        self.expiry_entries = expiry_entries  # sessions idle longer are absent
        self.max_gap = max_gap  # most applied seqs kept above a session's floor
        self._sessions: dict[str, _Session] = {}  # by producer id (no pseudo rows)
        self._duplicates: dict[int, Original] = {}  # duplicate entry index -> its original
        self._dirty: set[str] = set()  # producer ids changed since the last take_changes
        self._dirty_pseudo: list[ClientSession] = []  # duplicate marks to persist
        self._last_gc = 0  # applied index of the last in-memory sweep
        # Where recent writes landed, so that a retry of a seq other than last_seq gets its
        # own index in the receipt. Memory only (not replicated state: the duplicate
        # *decision* uses floor/above alone); after a restart such a receipt has no index.
        # (index, term) as plain tuples of ints: the garbage collector stops tracking those,
        # where up to 200,000 Original objects were walked by every full collection.
        self._recent: OrderedDict[tuple[str, int], tuple[int, int]] = OrderedDict()

    def load(self, sessions: Iterable[ClientSession]) -> None:
        """Fill from the database (at node start)."""
        self._sessions.clear()
        self._duplicates.clear()
        self._dirty.clear()
        self._dirty_pseudo.clear()
        for s in sessions:
            if s.producer_id.startswith(RESERVED_PREFIX):
                index = _duplicate_mark(s)
                if index is None:
                    # A producer that took a reserved id before the ingest refused them
                    # (every node holds the same row): it never had a say in any decision
                    # from this version on, so it is left out.
                    logger.warning("ignoring client session %r: reserved id", s.producer_id)
                    continue
                known = s.last_index > 0
                self._duplicates[index] = Original(s.last_index, s.last_term) if known else _UNKNOWN
            else:
                self._sessions[s.producer_id] = _Session(s)

    def __len__(self) -> int:
        return len(self._sessions)

    def rows(self, at_index: int) -> list[ClientSession]:
        """Every session live at ``at_index`` and every duplicate mark, as the database
        holds them, sorted by producer id: the replicated state a snapshot at
        ``at_index`` carries (expired sessions are left out: absent on every node)."""
        rows = [
            s.row(p)
            for p, s in self._sessions.items()
            if at_index - s.updated_index <= self.expiry_entries
        ]
        rows.extend(
            ClientSession(f"{DUP_PREFIX}{index}", 0, o.index or 0, o.term or 0, NEVER)
            for index, o in self._duplicates.items()
        )
        rows.sort(key=lambda row: row.producer_id)
        return rows

    def _live(self, producer_id: str, at_index: int) -> _Session | None:
        session = self._sessions.get(producer_id)
        if session is None or at_index - session.updated_index > self.expiry_entries:
            return None
        return session

    def session(self, producer_id: str) -> ClientSession | None:
        """The current state of ``producer_id``'s session, if any (for inspection)."""
        session = self._sessions.get(producer_id)
        return None if session is None else session.row(producer_id)

    def original(self, producer_id: str, seq: int, at_index: int) -> Original | None:
        """The original of write ``(producer_id, seq)`` if it would be a duplicate at
        ``at_index``, else None (read only: the ingest path checks before proposing).
        The original's index is None when no longer known."""
        session = self._live(producer_id, at_index)
        if session is None or not session.seen(seq):
            return None
        if seq == session.last_seq:
            return Original(session.last_index, session.last_term)
        place = self._recent.get((producer_id, seq))
        return _UNKNOWN if place is None else Original(*place)

    def apply(self, record: Record, index: int, term: int) -> Original | None:
        """Account for the write at ``index``; its original when it is a duplicate."""
        key = session_key(record)
        if key is None:
            return None
        producer_id, seq = key
        original = self.original(producer_id, seq, index)
        if original is not None:
            self._duplicates[index] = original
            pseudo = ClientSession(
                f"{DUP_PREFIX}{index}", 0, original.index or 0, original.term or 0, NEVER
            )
            self._dirty_pseudo.append(pseudo)
            return original
        session = self._live(producer_id, index)
        if session is None:  # new, or expired: a fresh session (producers start at seq 1)
            session = _Session(ClientSession(producer_id, 0, 0, 0, index, floor=0))
            self._sessions[producer_id] = session
        session.add(seq, self.max_gap)
        if seq > session.last_seq:
            session.last_seq, session.last_index, session.last_term = seq, index, term
        session.updated_index = index
        self._recent[(producer_id, seq)] = (index, term)
        if len(self._recent) > _RECENT:
            self._recent.popitem(last=False)
        self._dirty.add(producer_id)
        return None

    def remember(self, record: Record, index: int, term: int) -> None:
        """Note where an already applied write landed (rebuilding receipts after a
        restart); changes no decision."""
        key = session_key(record)
        if key is None or index in self._duplicates:
            return
        self._recent[key] = (index, term)
        if len(self._recent) > _RECENT:
            self._recent.popitem(last=False)

    def is_duplicate(self, index: int) -> bool:
        """True when the entry at ``index`` was skipped as a duplicate."""
        return index in self._duplicates

    def take_changes(self, applied: int) -> tuple[tuple[ClientSession, ...], int | None]:
        """Sessions to upsert and the expiry cut-off to persist with ``applied``."""
        changed = [self._sessions[p].row(p) for p in self._dirty if p in self._sessions]
        changed.extend(self._dirty_pseudo)
        self._dirty.clear()
        self._dirty_pseudo.clear()
        cutoff = applied - self.expiry_entries
        if cutoff <= 0:
            return tuple(changed), None
        if applied - self._last_gc >= _GC_EVERY:
            self._last_gc = applied
            self._sessions = {k: s for k, s in self._sessions.items() if s.updated_index >= cutoff}
        return tuple(changed), cutoff
