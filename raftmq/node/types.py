"""The node's public value types: applied writes, callbacks, services and what a
service may use of its node."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from pydantic import BaseModel

from raftmq.core.types import Entry, SoftState
from raftmq.node.sessions import Original
from raftmq.protocol.bootstrap import BootstrapRecord
from raftmq.protocol.receipts import Commit
from raftmq.protocol.record import Record

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Applied(Generic[T]):
    """One committed write, handed to ``on_commit`` on every node in index order."""

    index: int  # log index, strictly increasing across calls
    term: int  # term of the entry
    value: T  # the decoded write
    record: Record  # the raw record (body, content type, headers, producer session)


NODE_COUNTERS = (
    "inbox_overflow",
    "apply_errors",
    "apply_decode_errors",
    "apply_unsessioned",
    "apply_bad_watermarks",
    "storage_retries",
    "storage_read_retries",
    "elections_timeout",  # elections this node started when its election timeout passed
    "elections_transfer",  # elections started on its leader's TimeoutNow (a handover)
    "keepalives",  # heartbeat rounds sent while one loop turn held a leader up (slow disk)
)
"""The node's own counters, shown by ``status`` from the start (services add theirs)."""

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


class ClusterIdentity(Protocol):
    """Which bootstrap of its cluster name a node belongs to: the node calls ``admit`` at
    start with the cluster id its database holds, before it speaks for the cluster (the
    broker's bootstrap record in production, :mod:`raftmq.transport.identity`)."""

    @property
    def record(self) -> BootstrapRecord | None:
        """The cluster's bootstrap record (id and voters), once admitted."""
        ...

    async def admit(self, stored: str | None) -> str:
        """The cluster id to run with. Raises StoreMismatch when the database belongs to
        another bootstrap of the name, ConfigError when this node's voters differ from
        the record's; a node with an empty database (``stored`` None) adopts the
        record's id, or makes the record when there is none."""
        ...


class ServiceHost(Protocol):
    """What a leader service (ingest, fan-out, replay) may use of its node, and nothing
    more: no core, storage or transport. :class:`raftmq.node.node.Node` provides it as
    ``node.service_host``; every method is called on the node's event loop."""

    @property
    def node_id(self) -> str:
        """The node's id (for logs and task names)."""
        ...

    @property
    def cluster(self) -> str:
        """The cluster name (names the broker objects)."""
        ...

    @property
    def is_leader(self) -> bool:
        """True while the node leads."""
        ...

    @property
    def applied_index(self) -> int:
        """The last index applied on this node."""
        ...

    @property
    def write_timeout(self) -> float:
        """Seconds a write may wait for its commit."""
        ...

    @property
    def max_write_bytes(self) -> int:
        """The largest encoded record the node accepts."""
        ...

    @property
    def fanout_watermark(self) -> int:
        """The highest index known published on the committed exchange."""
        ...

    def on_role_change(self, observer: Callable[[SoftState], None]) -> None:
        """Call ``observer`` on every change of role, leader or term."""
        ...

    def on_applied(self, observer: Callable[[tuple[Entry, ...]], None]) -> None:
        """Call ``observer`` with each batch of applied entries."""
        ...

    def count(self, counter: str, n: int = 1) -> None:
        """Add ``n`` to a counter shown by ``status`` (``n=0`` makes it appear)."""
        ...

    def original(self, producer_id: str, seq: int) -> Original | None:
        """Where write ``(producer_id, seq)`` landed when its session already applied it
        (it would be a duplicate if proposed now), else None."""
        ...

    def is_duplicate(self, index: int) -> bool:
        """True when the entry at ``index`` was skipped as a duplicate write."""
        ...

    def submit_payload(self, payload: bytes) -> asyncio.Future[Commit]:
        """Queue an encoded record for the next proposal batch (leader only); payloads
        submitted without an await in between go into one batch (up to the loop's per-turn
        bound), in order. Raises NotLeader, WriteRejected (size) or NodeStopped at once."""
        ...

    async def propose_watermark(self, index: int) -> Commit:
        """Replicate the fan-out watermark ``index`` (leader only)."""
        ...

    def advance_fanout_watermark(self, index: int) -> None:
        """Raise the in-memory fan-out watermark to ``index`` (never lowers it)."""
        ...

    def save_fanout_watermark(self, index: int) -> None:
        """Raise the fan-out watermark to ``index`` and have the loop persist it."""
        ...

    async def first_index(self) -> int:
        """The first index the log holds."""
        ...

    async def committed_entries(
        self, lo: int, hi: int, max_bytes: int | None = None
    ) -> list[Entry]:
        """Entries ``lo..hi`` (at least one when any exist, then up to ``max_bytes``);
        callers ask only for applied, hence committed, indexes."""
        ...
