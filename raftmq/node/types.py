"""The node's public value types: write results, applied writes, status, services."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from raftmq.core.types import Role
from raftmq.protocol.record import Record

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Commit:
    """Where a write landed: committed at ``index`` in ``term``."""

    index: int  # log index of the write (of the original when duplicate; 0: no longer known)
    term: int  # term of the entry
    duplicate: bool = False  # the write was already in the log (client session, §6.3)


@dataclass(frozen=True, slots=True)
class Applied(Generic[T]):
    """One committed write, handed to ``on_commit`` on every node in index order."""

    index: int  # log index, strictly increasing across calls
    term: int  # term of the entry
    value: T  # the decoded write
    record: Record  # the raw record (body, content type, headers, producer session)


OnCommit = Callable[[Applied[T]], Awaitable[None] | None]
"""A sync or async callback; exceptions are logged and counted, never stop the node."""

OnRecord = Callable[[int, int, Record], Awaitable[None] | None]
"""Raw form of ``on_commit``: (index, term, record), for consumers that keep bytes as bytes."""


class Service(Protocol):
    """Something that runs beside a node (ingest, fan-out, replay): started after the node
    loop starts, stopped before it stops."""

    async def start(self) -> None:
        """Begin (the node is running)."""
        ...

    async def stop(self) -> None:
        """End; must not raise."""
        ...


class NodeStatus(BaseModel):
    """A snapshot of a node's state, as `raftmq status` prints it."""

    cluster: str  # cluster name
    node_id: str  # this node
    role: Role  # current role
    term: int  # current term
    leader_id: str | None  # known leader, if any
    commit: int  # commit index
    applied: int  # highest applied index
    last_index: int  # last log index
    voters: list[str]  # the voter set
    last_contact: float | None  # seconds since the leader was last heard (0 on the leader)
    storage_ok: bool  # False while saves are failing and being retried
    counters: dict[str, int]  # inbox overflow, apply errors, storage retries
    transport: dict[str, Any]  # transport counters: sent, received, dropped by reason, ...
