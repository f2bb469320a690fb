"""Checks every adapter applies before writing, so all of them refuse the same mistakes
and hold the same values.

A refused batch raises :class:`~raftmq.errors.StorageRefused` and writes nothing: the
refusal depends only on the batch and what is stored, so retrying it cannot help.

Bounds (the SQL columns' limits, enforced by every adapter alike, the memory twin too, so
that what one adapter accepts the others can store): integers fit a signed 64-bit column;
text fits :data:`MAX_TEXT_CHARS` characters, is valid UTF-8 and holds no NUL (Postgres
text cannot).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from raftmq.core.types import HardState
from raftmq.errors import StorageRefused, StoreMismatch
from raftmq.storage.port import ClientSession, PersistBatch, Snapshot

INT64_MAX = (1 << 63) - 1  # the largest value of a BIGINT column
MAX_TEXT_CHARS = 200  # the key and id columns (producer_id, voted_for) hold this many

StoredTerms = Callable[[int, int], Sequence[tuple[int, int]]]
"""``stored_terms(lo, hi)``: (index, term) of the stored entries lo..hi, ascending."""


def storable_text(text: str, max_chars: int = MAX_TEXT_CHARS) -> bool:
    """True when ``text`` fits a key column on every adapter (length, UTF-8, no NUL)."""
    if len(text) > max_chars or "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: no database can store them
        return False
    return True


def storable_int(value: int) -> bool:
    """True when ``value`` fits a BIGINT column (and is a real int, not a bool)."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and -INT64_MAX - 1 <= value <= INT64_MAX
    )


def storable_session(session: ClientSession) -> str | None:
    """Why ``session`` cannot be stored, or None when it can."""
    if not storable_text(session.producer_id):
        return f"session key {session.producer_id[:40]!r}... cannot be stored"
    numbers = (
        session.last_seq,
        session.last_index,
        session.last_term,
        session.updated_index,
        session.floor,
        *session.above,
    )
    if not all(storable_int(n) for n in numbers):
        return f"session {session.producer_id!r} holds a number outside int64"
    return None


def _check_values(batch: PersistBatch) -> None:
    hard = batch.hard_state
    if hard is not None:
        if not (storable_int(hard.term) and storable_int(hard.commit)):
            raise StorageRefused(f"hard state {hard} holds a number outside int64")
        if hard.voted_for is not None and not storable_text(hard.voted_for):
            raise StorageRefused(f"voted_for {hard.voted_for[:40]!r} cannot be stored")
    for number in (
        batch.truncate_from,
        batch.applied,
        batch.fanout_watermark,
        batch.expire_sessions_before,
    ):
        if number is not None and not storable_int(number):
            raise StorageRefused(f"{number} does not fit int64")
    if batch.entries and not storable_int(batch.entries[-1].index):
        raise StorageRefused(f"entry index {batch.entries[-1].index} does not fit int64")
    for entry in batch.entries:
        if not storable_int(entry.term):
            raise StorageRefused(f"entry {entry.index} has term {entry.term} outside int64")
    for session in batch.sessions:
        problem = storable_session(session)
        if problem is not None:
            raise StorageRefused(problem)


def check_batch(
    batch: PersistBatch,
    hard: HardState,
    snap_index: int,
    first: int,
    last: int,
    stored_terms: StoredTerms,
) -> tuple[int, int, int]:
    """Validate ``batch`` against the stored state; return the log bounds after it and
    how many of its leading entries are stored already (to be skipped).

    Refused: a value the columns cannot hold; a term going backwards; truncating
    compacted entries; entries that do not continue the log (after the truncation) or
    are not contiguous and ascending. Accepted as already stored: entries without a
    truncation that overlap the end of the log with the same terms -- the retry of a
    save whose commit landed but whose answer was lost (by Log Matching, same index and
    term is the same entry).
    """
    _check_values(batch)
    if batch.hard_state is not None and batch.hard_state.term < hard.term:
        raise StorageRefused(
            f"hard state term would go backwards ({hard.term} -> {batch.hard_state.term})"
        )
    if batch.truncate_from is not None:
        if batch.truncate_from <= snap_index:
            raise StorageRefused(
                f"cannot truncate from {batch.truncate_from}: entries up to {snap_index} "
                "are compacted into the snapshot"
            )
        last = min(last, batch.truncate_from - 1)
    skip = 0
    if batch.entries and batch.truncate_from is None:
        skip = _stored_prefix(batch, first, last, stored_terms)
    expected = last + 1
    for entry in batch.entries[skip:]:
        if entry.index != expected:
            raise StorageRefused(
                f"entry {entry.index} does not continue the log (expected index {expected})"
            )
        expected += 1
    if batch.entries:
        last = max(last, batch.entries[-1].index)
    return first, last, skip


def _stored_prefix(batch: PersistBatch, first: int, last: int, stored_terms: StoredTerms) -> int:
    """How many leading entries of ``batch`` the log already holds with the same terms
    (0 unless they reach the log's end exactly or beyond: a landed save never leaves
    later entries behind it)."""
    lo = batch.entries[0].index
    hi = batch.entries[-1].index
    if lo > last or lo < first or last > hi:
        return 0
    stored = list(stored_terms(lo, last))
    wanted = [(e.index, e.term) for e in batch.entries[: last - lo + 1]]
    if stored != wanted:
        raise StorageRefused(
            f"entries {lo}..{last} are stored with other terms than the batch gives: "
            "it does not continue the log"
        )
    return last - lo + 1


def check_snapshot(snapshot: Snapshot, snap_index: int) -> bool:
    """True when ``snapshot`` is newer than the stored one (an older one is ignored).
    Raises StorageRefused for one the columns cannot hold."""
    if snapshot.index < 1 or snapshot.term < 1:
        raise StorageRefused(f"invalid snapshot at index {snapshot.index}, term {snapshot.term}")
    if not (storable_int(snapshot.index) and storable_int(snapshot.term)):
        raise StorageRefused(f"snapshot index or term outside int64 ({snapshot.index})")
    members = (*snapshot.voters, *snapshot.learners)
    if not all(isinstance(v, str) and storable_text(v) for v in members):
        raise StorageRefused(f"snapshot at {snapshot.index} names a voter that cannot be stored")
    return snapshot.index > snap_index


def check_taken(snapshot: Snapshot, snap_index: int, last: int, term_there: int | None) -> bool:
    """Whether a snapshot taken here is newer than the stored one (an older one is ignored);
    StorageRefused for one beyond the log or whose term is not the log's there."""
    if not check_snapshot(snapshot, snap_index):
        return False
    if snapshot.index > last or term_there != snapshot.term:
        raise StorageRefused(
            f"a snapshot taken at {snapshot.index} (term {snapshot.term}) must cover an entry "
            f"of the log (last index {last}, term there {term_there})"
        )
    return True


def check_install(snapshot: Snapshot, snap_index: int, snap_term: int) -> bool:
    """Whether installing ``snapshot`` replaces the log (True) or is the retry of the
    install of the stored one (False); StorageRefused for an older or conflicting one."""
    check_snapshot(snapshot, 0)
    if (snapshot.index, snapshot.term) == (snap_index, snap_term):
        return False
    if snapshot.index <= snap_index:
        raise StorageRefused(
            f"cannot install a snapshot at {snapshot.index} (term {snapshot.term}): the store "
            f"holds one at {snap_index} (term {snap_term})"
        )
    return True


def check_compact(index: int, snap_index: int) -> None:
    """Raise StorageRefused unless entries up to ``index`` are covered by the snapshot."""
    if not storable_int(index) or index > snap_index:
        raise StorageRefused(
            f"cannot compact up to {index}: the stored snapshot covers entries up to {snap_index}"
        )


MAX_CLUSTER_ID_CHARS = 64  # the column's width; a cluster id is 32 hex digits


def check_cluster_id(cluster_id: str, stored: str | None, where: str) -> None:
    """Raise unless ``cluster_id`` may be saved over ``stored``: StorageRefused for an empty
    or too long id, StoreMismatch when another id is already stored."""
    if not cluster_id or len(cluster_id) > MAX_CLUSTER_ID_CHARS:
        raise StorageRefused(f"a cluster id of {len(cluster_id)} characters cannot be saved")
    if stored is not None and stored != cluster_id:
        raise StoreMismatch(
            f"{where} belongs to cluster id {stored}, not {cluster_id}; nothing was changed"
        )
