"""The transport port: how Raft messages leave and reach a node.

Delivery is best effort: messages may be lost, delayed, duplicated or reordered,
and the core is built for that (terms and indexes decide, never arrival order).
A Raft reply is just another message stepped into the core; nothing waits on it.

Client-facing requests (``raftmq status`` and the like) are the one place where
something waits for an answer: a :class:`RequestClient` sends ``(kind, body)`` to
a node's inbox and the node's :data:`RequestHandler` returns the reply body.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from raftmq.core.messages import Message

MessageHandler = Callable[[Message], None]
"""Called for every valid inbound Raft message, on the event loop. Must not block."""

RequestHandler = Callable[[str, bytes], Awaitable[bytes]]
"""Serves a client-facing request (``kind``, body) -> reply body (e.g. status queries)."""


@dataclass
class TransportStats:
    """Counters of one transport; read them, never write them."""

    sent: int = 0  # Raft messages handed to the network
    received: int = 0  # valid Raft messages delivered to on_message (duplicates included)
    requests_served: int = 0  # client-facing requests answered (ok or error)
    reconnects: int = 0  # successful reconnections after a lost broker connection
    dropped: Counter[str] = field(default_factory=Counter)  # inbound drops by DropReason value
    send_dropped: Counter[str] = field(default_factory=Counter)  # outbound drops by reason

    def snapshot(self) -> dict[str, object]:
        """A plain-dict copy, handy for logs and status output."""
        return {
            "sent": self.sent,
            "received": self.received,
            "requests_served": self.requests_served,
            "reconnects": self.reconnects,
            "dropped": dict(self.dropped),
            "send_dropped": dict(self.send_dropped),
        }


@runtime_checkable
class Transport(Protocol):
    """One node's view of the network."""

    node_id: str  # whose inbox this transport consumes
    cluster: str  # messages of other clusters are dropped
    # The cluster's id (signed into every message; others are dropped): set by the node
    # after its cluster identity was admitted, before start. "" while unknown.
    cluster_id: str
    stats: TransportStats  # sent/received counters and drops per reason

    async def start(
        self, on_message: MessageHandler, on_request: RequestHandler | None = None
    ) -> None:
        """Connect and start consuming this node's inbox."""
        ...

    def send(self, messages: Sequence[Message]) -> None:
        """Queue messages for delivery to their recipients; never blocks, never raises
        for an unreachable peer (the loss is counted and logged)."""
        ...

    async def stop(self) -> None:
        """Stop consuming and close connections. Idempotent."""
        ...


@runtime_checkable
class RequestClient(Protocol):
    """Sends client-facing requests to node inboxes and waits for the answers."""

    cluster: str  # requests are addressed to this cluster's node inboxes
    dropped: Counter[str]  # replies not accepted (unsigned, bad MAC, other cluster) by reason

    async def request(
        self, node_id: str, kind: str, body: bytes = b"", *, timeout: float | None = None
    ) -> bytes:
        """Ask ``node_id`` and return its reply body.

        Raises :class:`RequestTimeout` without an answer in time and
        :class:`RequestFailed` when the node's handler failed.
        """
        ...

    async def close(self) -> None:
        """Release the client's resources; pending requests fail. Idempotent."""
        ...
