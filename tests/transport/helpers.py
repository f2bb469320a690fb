"""Shared helpers for transport tests: message factories, condition waits, harness protocol."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from raftmq.core.messages import AppendEntries, Message, RequestVote, RequestVoteReply
from raftmq.core.types import Entry
from raftmq.protocol.auth import ClusterKey
from raftmq.protocol.codec import Envelope
from raftmq.transport.port import RequestClient, RequestHandler, Transport, TransportStats

KEY = ClusterKey(b"transport tests: the cluster key")
"""The key of every harness transport and client unless a test says otherwise."""

OTHER_KEY = ClusterKey(b"transport tests: another cluster's key")
"""A valid key that is not the cluster's (a forger's, or a misconfigured node's)."""

CLUSTER_ID = "c1d" * 10 + "00"
"""The cluster id every harness transport and client signs with."""


def signed(
    envelope: Envelope, recipient: str = "b", key: ClusterKey = KEY, cluster_id: str = CLUSTER_ID
) -> Envelope:
    """``envelope`` signed as node traffic to ``recipient``'s inbox."""
    return key.sign(envelope, sender="", recipient=recipient, cluster_id=cluster_id)


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(0.005)


def append(sender: str, recipient: str, commit: int = 0, *, data: bytes = b"") -> AppendEntries:
    """An AppendEntries; ``commit`` doubles as a sequence number in tests."""
    entries = (Entry(index=1, term=1, data=data),) if data else ()
    return AppendEntries(
        term=1,
        sender=sender,
        recipient=recipient,
        prev_log_index=0,
        prev_log_term=0,
        entries=entries,
        leader_commit=commit,
    )


def vote(sender: str, recipient: str) -> RequestVote:
    """A RequestVote (a Raft request: carries reply_to and a correlation id)."""
    return RequestVote(
        term=2, sender=sender, recipient=recipient, last_log_index=0, last_log_term=0
    )


def vote_reply(request: RequestVote) -> RequestVoteReply:
    """The granted answer to ``request``."""
    return RequestVoteReply(
        term=request.term, sender=request.recipient, recipient=request.sender, granted=True
    )


class Inbox:
    """Records what a transport hands to on_message."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def __call__(self, message: Message) -> None:
        self.messages.append(message)

    def __len__(self) -> int:
        return len(self.messages)


class StatsTransport(Transport, Protocol):
    """A Transport with the counters both adapters expose."""

    stats: TransportStats
    queue: str


class Harness(Protocol):
    """What the contract needs from a backend (memory network or RabbitMQ)."""

    cluster: str

    def transport(self, node_id: str, **options: Any) -> StatsTransport:
        """A transport for ``node_id`` in this cluster (options: ttl, size, length limits)."""
        ...

    async def inject(self, node_id: str, envelope: Envelope, ttl_ms: int | None = None) -> None:
        """Put a raw envelope into ``node_id``'s inbox, bypassing the sending transport."""
        ...

    async def client(self, key: ClusterKey | None = KEY) -> RequestClient:
        """A started client-facing request client signing with ``key`` (None: unsigned)."""
        ...


async def started(
    harness: Harness,
    node_id: str,
    inbox: Inbox | None = None,
    on_request: RequestHandler | None = None,
    **options: Any,
) -> StatsTransport:
    """Create and start a transport whose messages go to ``inbox``."""
    transport = harness.transport(node_id, **options)
    await transport.start(inbox if inbox is not None else Inbox(), on_request)
    return transport
