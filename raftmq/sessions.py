"""Replicated state of the queue layer, computed at apply time from the log on every node.

Client sessions (thesis §6.3): a write carrying ``(producer_id, seq)`` -- or only a
``message_id``, which is the session ``"mid:" + message_id`` with seq 1 -- is a *duplicate*
when its seq is at most the session's ``last_seq``. Its receipt names the original's index
(exactly for the last ~200,000 writes applied since the node started, else the session's
``last_index``). A duplicate that reached the log is
skipped at apply time: no callbacks, no fan-out, no replay; its pending write resolves with
the original index and ``duplicate=True``. Every node decides the same from the same log.

Expiry: a session untouched for more than ``expiry_entries`` log entries is treated as
absent from then on (checked per entry, so the decision never depends on how entries were
batched) and deleted from the database later by ``expire_sessions_before``.

Duplicates are remembered (for fan-out and replay on any node, across restarts) as pseudo
sessions named ``raftmq:dup:<index>`` in the same table, persisted in the same transaction
as the applied index; they never expire (duplicates in the log are rare: they need a retry
racing a leader change). Producer ids starting with ``raftmq:`` are reserved.

The fan-out watermark is carried to followers by *watermark entries*: NORMAL entries whose
payload is ``WATERMARK_MAGIC + str(index)`` (not a Record, so never a write). A node that
applies one persists ``fanout_watermark = max(current, index)`` with its applied index.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from raftmq.record import Record
from raftmq.storage.port import ClientSession

DEFAULT_SESSION_EXPIRY_ENTRIES = 1_000_000
RESERVED_PREFIX = "raftmq:"  # producer ids with this prefix are refused at ingest
DUP_PREFIX = "raftmq:dup:"  # pseudo session of a duplicate entry: raftmq:dup:<index>
NEVER = 1 << 62  # updated_index of pseudo sessions: never expired
WATERMARK_MAGIC = b"\xffraftmq-watermark:"  # payload prefix of a watermark entry
MAX_PRODUCER_ID = 190  # the session table's key column holds 200 characters
_GC_EVERY = 4096  # entries between in-memory sweeps of expired sessions
_RECENT = 200_000  # (producer, seq) -> index remembered in memory for exact receipts


def encode_watermark(index: int) -> bytes:
    """The payload of a watermark entry carrying ``index``."""
    return WATERMARK_MAGIC + str(index).encode()


def decode_watermark(payload: bytes) -> int | None:
    """The index carried by a watermark entry payload, or None when it is not one."""
    if not payload.startswith(WATERMARK_MAGIC):
        return None
    try:
        return int(payload[len(WATERMARK_MAGIC) :])
    except ValueError:
        return None


def session_key(record: Record) -> tuple[str, int] | None:
    """``(session id, seq)`` identifying a write for exactly-once, or None."""
    if record.producer_id is not None and record.seq is not None:
        return record.producer_id, record.seq
    if record.message_id is not None:
        return "mid:" + record.message_id, 1
    return None


@dataclass(frozen=True, slots=True)
class Original:
    """Where the first copy of a duplicated write landed."""

    index: int  # log index of the original write
    term: int  # term of that entry


class SessionTable:
    """Client sessions and duplicate marks of one node (owned by the node loop)."""

    def __init__(self, expiry_entries: int = DEFAULT_SESSION_EXPIRY_ENTRIES) -> None:
        self.expiry_entries = expiry_entries  # sessions idle longer are absent
        self._sessions: dict[str, ClientSession] = {}  # by producer id (no pseudo rows)
        self._duplicates: dict[int, Original] = {}  # duplicate entry index -> its original
        self._dirty: dict[str, ClientSession] = {}  # changed since the last take_changes
        self._last_gc = 0  # applied index of the last in-memory sweep
        # Where recent writes landed, so that a retry of a seq older than last_seq gets its
        # own index in the receipt. Memory only (not replicated state: the duplicate
        # *decision* uses last_seq alone); after a restart such a receipt names last_index.
        self._recent: OrderedDict[tuple[str, int], Original] = OrderedDict()

    def load(self, sessions: Iterable[ClientSession]) -> None:
        """Fill from the database (at node start)."""
        self._sessions.clear()
        self._duplicates.clear()
        self._dirty.clear()
        for s in sessions:
            if s.producer_id.startswith(DUP_PREFIX):
                index = int(s.producer_id[len(DUP_PREFIX) :])
                self._duplicates[index] = Original(s.last_index, s.last_term)
            else:
                self._sessions[s.producer_id] = s

    def __len__(self) -> int:
        return len(self._sessions)

    def _live(self, producer_id: str, at_index: int) -> ClientSession | None:
        session = self._sessions.get(producer_id)
        if session is None or at_index - session.updated_index > self.expiry_entries:
            return None
        return session

    def original(self, producer_id: str, seq: int, at_index: int) -> Original | None:
        """The original of write ``(producer_id, seq)`` if it would be a duplicate at
        ``at_index``, else None (read only: the ingest path checks before proposing)."""
        session = self._live(producer_id, at_index)
        if session is None or seq > session.last_seq:
            return None
        known = self._recent.get((producer_id, seq)) if seq < session.last_seq else None
        return known or Original(session.last_index, session.last_term)

    def apply(self, record: Record, index: int, term: int) -> Original | None:
        """Account for the write at ``index``; its original when it is a duplicate."""
        key = session_key(record)
        if key is None:
            return None
        producer_id, seq = key
        original = self.original(producer_id, seq, index)
        if original is not None:
            self._duplicates[index] = original
            pseudo = ClientSession(f"{DUP_PREFIX}{index}", 0, original.index, original.term, NEVER)
            self._dirty[pseudo.producer_id] = pseudo
            return original
        session = ClientSession(producer_id, seq, index, term, index)
        self._sessions[producer_id] = session
        self._recent[(producer_id, seq)] = Original(index, term)
        if len(self._recent) > _RECENT:
            self._recent.popitem(last=False)
        self._dirty[producer_id] = session
        return None

    def is_duplicate(self, index: int) -> bool:
        """True when the entry at ``index`` was skipped as a duplicate."""
        return index in self._duplicates

    def take_changes(self, applied: int) -> tuple[tuple[ClientSession, ...], int | None]:
        """Sessions to upsert and the expiry cut-off to persist with ``applied``."""
        changed = tuple(self._dirty.values())
        self._dirty.clear()
        cutoff = applied - self.expiry_entries
        if cutoff <= 0:
            return changed, None
        if applied - self._last_gc >= _GC_EVERY:
            self._last_gc = applied
            self._sessions = {k: s for k, s in self._sessions.items() if s.updated_index >= cutoff}
        return changed, cutoff
