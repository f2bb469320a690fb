"""The transport port: how Raft messages leave and reach a node.

Delivery is best effort: messages may be lost, delayed, duplicated or reordered,
and the core is built for that (terms and indexes decide, never arrival order).
A Raft reply is just another message stepped into the core; nothing waits on it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, runtime_checkable

from raftmq.core.messages import Message

MessageHandler = Callable[[Message], None]
"""Called for every valid inbound Raft message, on the event loop. Must not block."""

RequestHandler = Callable[[str, bytes], Awaitable[bytes]]
"""Serves a client-facing request (``kind``, body) -> reply body (e.g. status queries)."""


@runtime_checkable
class Transport(Protocol):
    """One node's view of the network."""

    node_id: str  # whose inbox this transport consumes
    cluster: str  # messages of other clusters are dropped

    async def start(self, on_message: MessageHandler, on_request: RequestHandler | None = None) -> None:
        """Connect and start consuming this node's inbox."""
        ...

    def send(self, messages: Sequence[Message]) -> None:
        """Queue messages for delivery to their recipients; never blocks, never raises
        for an unreachable peer (the loss is counted and logged)."""
        ...

    async def flush(self) -> None:
        """Wait until queued messages were handed to the network (best effort)."""
        ...

    async def pause(self) -> None:
        """Stop consuming the inbox (used to simulate or enforce isolation)."""
        ...

    async def resume(self) -> None:
        """Resume consuming the inbox after :meth:`pause`."""
        ...

    async def stop(self) -> None:
        """Stop consuming and close connections. Idempotent."""
        ...
