"""Client-facing requests a node answers on its inbox, and their answers (docs/protocol.md).

Kinds: ``status`` (-> :class:`NodeStatus` JSON), ``write`` (an encoded Record ->
:class:`WriteReply` JSON), ``transfer`` (a voter id: hand leadership to it), and, only with
``allow_fault_injection``, ``isolate`` / ``rejoin`` for chaos tests.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from raftmq.core.types import Role


class WriteReply(BaseModel):
    """Answer to a client-facing ``write`` request (the body is an encoded Record)."""

    ok: bool  # committed
    index: int | None = None  # where it committed, when ok
    term: int | None = None  # term of that entry, when ok
    duplicate: bool = False  # the write was already in the log (client sessions)
    error: str | None = None  # "not_leader" or the exception name, when not ok
    leader_hint: str | None = None  # with not_leader: the known leader, if any
    detail: str | None = None  # human-readable reason


class FollowerProgress(BaseModel):
    """What a leader knows about one follower's log (``NodeStatus.followers``)."""

    match: int  # highest index known replicated on the follower
    next: int  # next index the leader sends it
    state: str  # "probe", "replicate" or "snapshot" (catching up through InstallSnapshot)
    lag: int  # the leader's last index minus match
    active: bool  # heard from since the last check-quorum round


class NodeStatus(BaseModel):
    """A snapshot of a node's state, as `raftmq status` prints it."""

    cluster: str  # cluster name
    cluster_id: str | None = None  # the id of the cluster's bootstrap this node belongs to
    node_id: str  # this node
    role: Role  # current role
    term: int  # current term
    leader_id: str | None  # known leader, if any
    commit: int  # commit index
    applied: int  # highest applied index
    last_index: int  # last log index
    voters: list[str]  # the voter set in force (the latest configuration in the log)
    learners: list[str] = []  # members that receive the log without voting
    incarnation: str | None = None  # this node's database's id
    incarnations: dict[str, str] = {}  # the database each member is pinned to
    # Members answering from a database that is not their pin's (a lost disk: not
    # counted until `raftmq members replace`), as the leader heard them; this node
    # itself when its own database is not the one pinned for it.
    strangers: dict[str, str] = {}
    bootstrap_voters: list[str] | None = None  # the voters the cluster was bootstrapped with
    last_contact: float | None  # seconds since the leader was last heard (0 on the leader)
    storage_ok: bool  # False while storage operations fail and are retried
    loop_ok: bool = True  # False once the node's loop failed (the process should exit)
    loop_error: str | None = None  # what ended the loop, when it failed
    counters: dict[str, int]  # inbox overflow, apply errors, storage retries
    transport: dict[str, Any]  # transport counters: sent, received, dropped by reason, ...
    # The leader's view of each follower (None on a follower)
    followers: dict[str, FollowerProgress] | None = None
    first_index: int | None = None  # the first index this node's log holds (compaction)
