"""Plain value types shared by the core, storage and transport layers."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MAX_INDEX = 2**63 - 1
"""Highest log index anything may hold: indexes are signed 64-bit in storage."""

MAX_TERM = 2**63 - 2
"""Highest term a message may carry or a core may reach: a term below 2^63 - 1 can always
be incremented without leaving signed 64-bit, and the core never campaigns past it."""

NODE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""What a node id looks like (the same rule as the node settings)."""

Index = Annotated[int, Field(ge=0, le=MAX_INDEX)]
"""A log index, or 0 for "none" (bounded at decode)."""

Term = Annotated[int, Field(ge=0, le=MAX_TERM)]
"""A term, or 0 for "none" (bounded at decode, with room to increment)."""

NodeId = Annotated[str, Field(pattern=NODE_ID_PATTERN)]
"""A node id: 1-64 ASCII letters, digits, ``_`` or ``-``."""

INCARNATION_PATTERN = r"^[0-9a-f]{32}$"
"""What a database's incarnation id looks like (128 random bits in hex)."""

Incarnation = Annotated[str, Field(pattern=r"^([0-9a-f]{32})?$")]
"""An incarnation id, or "" from a sender that does not tell (a version before them)."""


class EntryKind(IntEnum):
    """What a log entry carries."""

    NORMAL = 0  # application data (one producer write, or a batch encoded by the driver)
    NOOP = 1  # the empty entry a new leader appends in its term (§5.4.2, §8)
    CONFIG = 2  # a voter-set change (reserved for membership changes)


class Entry(BaseModel):
    """One log entry. Invariant (validated): 1 <= index <= MAX_INDEX, 1 <= term <= MAX_TERM."""

    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    index: Annotated[int, Field(ge=1, le=MAX_INDEX)]  # position in the log, 1-based
    term: Annotated[int, Field(ge=1, le=MAX_TERM)]  # term of the leader that created the entry
    kind: EntryKind = EntryKind.NORMAL  # what `data` means (only the enum's values validate)
    data: bytes = b""  # opaque payload; empty for NOOP


class HardState(BaseModel):
    """State that must be durable before any message that depends on it is sent (§5.1 Fig. 2)."""

    model_config = ConfigDict(frozen=True)

    term: int = 0  # latest term this node has seen; never decreases
    voted_for: str | None = None  # candidate voted for in `term`, or None
    commit: int = 0  # highest index known committed; never decreases


class Role(StrEnum):
    """A node's role in its current term."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class ElectionCause(StrEnum):
    """Why a node started an election (counted by the core, shown as node counters)."""

    TIMEOUT = "timeout"  # its randomized election timeout passed (§5.2)
    TRANSFER = "transfer"  # its leader handed leadership over with TimeoutNow (thesis §3.10)


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting when it changes (not persisted)."""

    role: Role  # role after the change
    leader_id: str | None  # known leader of the current term, or None
    term: int  # current term


@dataclass(frozen=True, slots=True)
class Membership:
    """Who is in the cluster (thesis ch. 4): ``voters`` elect leaders and form majorities;
    ``learners`` receive the log but neither vote nor count (they catch up before being
    promoted). Both sorted; see :mod:`raftmq.core.membership` for validation, encoding
    and how a configuration entry changes it."""

    voters: tuple[str, ...]  # sorted, non-empty
    learners: tuple[str, ...] = ()  # sorted, disjoint from voters
    # (member, incarnation) pairs, sorted: the database each member must answer from
    # (raftmq.core.membership, "Incarnations"); a member not named here is not pinned yet.
    incarnations: tuple[tuple[str, str], ...] = ()

    @property
    def members(self) -> frozenset[str]:
        """Voters and learners."""
        return frozenset(self.voters) | frozenset(self.learners)

    def pins(self) -> dict[str, str]:
        """Member id -> the incarnation it must answer from."""
        return dict(self.incarnations)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine at a log index: what replaces the log up to ``index`` (thesis ch. 5).

    Invariant: ``index`` is committed (a snapshot never covers an uncommitted entry) and
    ``term`` is the term of the entry at ``index``; both >= 1.
    """

    index: int  # last log index the state covers
    term: int  # term of the entry at index (the term of first_index - 1 after compaction)
    voters: tuple[str, ...]  # the configuration at index
    data: bytes  # the state machine's bytes, opaque to the core
    learners: tuple[str, ...] = ()  # the configuration's learners at index
    incarnations: tuple[tuple[str, str], ...] = ()  # the configuration's pins at index

    @property
    def membership(self) -> Membership:
        """The configuration at ``index``."""
        return Membership(self.voters, self.learners, self.incarnations)


@dataclass(frozen=True, slots=True)
class InitialState:
    """What a node loads from storage on start; the core is rebuilt from this alone.

    Invariant: the log holds indexes first_index..last_index; ``term_runs`` covers
    them as ascending (first index of run, term) pairs, and covers first_index - 1 too
    when that index is compacted and is not ``snapshot.index`` (a run may start before
    first_index: it is clipped); ``tail`` is a contiguous suffix of the log ending at
    last_index (possibly empty). With a snapshot: first_index - 1 <= snapshot.index <=
    applied, and last_index >= snapshot.index.
    """

    hard_state: HardState = field(default_factory=HardState)  # persisted term/vote/commit
    first_index: int = 1  # first index held in the log (snapshot.index + 1 or lower)
    last_index: int = 0  # last index held in the log (0 when empty; snapshot.index at least)
    term_runs: tuple[tuple[int, int], ...] = ()  # (first index, term) runs, ascending
    tail: tuple[Entry, ...] = ()  # recent entries kept in memory after a restart
    applied: int = 0  # highest index already applied by the state machine
    snapshot: Snapshot | None = None  # the latest snapshot taken or installed, if any
    # The configuration entries the log holds (index > snapshot index), ascending: the
    # membership is the last of them, else the snapshot's, else the RaftConfig's voters.
    config_entries: tuple[Entry, ...] = ()
    # This database's incarnation id, made when the database was created ("" for a store
    # that keeps none): a node that lost its database comes back with another one.
    incarnation: str = ""


@dataclass(frozen=True, slots=True)
class ReadState:
    """The answer to :meth:`RaftCore.read_index` (thesis §6.4): once the state machine
    has applied ``index``, a read of it is linearizable -- it sees every write committed
    before the read was asked. ``index`` None: this node lost leadership before a
    majority confirmed it (ask again, on the new leader)."""

    request_id: int  # the caller's id of the read
    index: int | None  # the read index, or None when the read failed


@dataclass(frozen=True, slots=True)
class LogRead:
    """A request from the core to read ``lo..hi`` (inclusive) from storage.

    The driver answers with :meth:`RaftCore.step_read`. ``peer`` is the follower the
    entries are for, or None when they are committed entries to apply.
    """

    lo: int  # first index wanted
    hi: int  # last index wanted (inclusive)
    max_bytes: int  # stop after this many payload bytes (always at least one entry)
    peer: str | None  # follower to replicate to, or None for applying


@dataclass(frozen=True, slots=True)
class LogReadResult:
    """The driver's answer to a :class:`LogRead`, stepped in with ``RaftCore.step_read``.

    Invariant: ``entries`` are contiguous from ``read.lo`` (possibly fewer than asked
    when ``max_bytes`` was reached, or none when storage no longer holds them).
    """

    read: LogRead  # the request this answers (compared by value)
    entries: tuple[Entry, ...]  # entries read.lo.. in ascending order


@dataclass(frozen=True, slots=True)
class ProgressView:
    """What the leader knows about one follower's log (read-only snapshot)."""

    match: int  # highest index known replicated on the follower; never decreases in a term
    next: int  # next index to send; match < next
    state: str  # "probe", "replicate" or "snapshot"
    recent_active: bool  # heard from it since the last check-quorum round


@dataclass(frozen=True, slots=True)
class CoreStatus:
    """A read-only snapshot of a core, for status pages and tests."""

    id: str  # this node's id
    role: Role  # current role
    term: int  # current term
    leader_id: str | None  # known leader of `term`, or None
    commit: int  # commit index; applied <= commit
    applied: int  # highest index handed to the state machine and advanced
    last_index: int  # last index in the log
    voters: tuple[str, ...]  # the voter set
    progress: dict[str, ProgressView]  # per follower, filled on the leader only
    learners: tuple[str, ...] = ()  # members that receive the log without voting
    incarnation: str = ""  # this node's database's incarnation id
    # Members whose pinned incarnation this node's database is not (a lost disk): (id,
    # the incarnation it answered from), on the leader; this node itself when its own
    # database is not the one its configuration pins.
    strangers: tuple[tuple[str, str], ...] = ()
