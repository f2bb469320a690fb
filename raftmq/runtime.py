"""Assemble a production node from settings: SQL storage + AMQP transport + RaftCore."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel

from raftmq.node import Node, OnCommit, OnRecord
from raftmq.settings import NodeSettings
from raftmq.storage.sql import SqlStorage
from raftmq.transport.amqp import AmqpTransport

T = TypeVar("T", bound=BaseModel)


def build_node(
    settings: NodeSettings,
    model: type[T],
    *,
    on_commit: OnCommit[T] | None = None,
    on_record: OnRecord | None = None,
) -> Node[T]:
    """A node for ``settings`` (not started: use ``async with`` or ``await node.start()``)."""
    election_ms = settings.tick_interval * settings.election_ticks * 1000
    storage = SqlStorage(
        settings.resolved_database_url(),
        cluster=settings.cluster,
        node_id=settings.node_id,
        durability=settings.durability,
    )
    transport = AmqpTransport(
        settings.amqp_url,
        settings.cluster,
        settings.node_id,
        # A Raft message older than one election timeout is useless: let the broker drop it.
        message_ttl_ms=max(int(election_ms), 50),
        max_message_bytes=settings.max_message_bytes,
    )
    return Node(
        config=settings.raft_config(),
        storage=storage,
        transport=transport,
        model=model,
        on_commit=on_commit,
        on_record=on_record,
        tick_interval=settings.tick_interval,
        write_timeout=settings.write_timeout,
        max_write_bytes=settings.max_write_bytes,
        allow_fault_injection=settings.allow_fault_injection,
    )
