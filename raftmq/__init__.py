"""raftmq: Raft consensus over RabbitMQ -- a replicated, totally ordered, durable log.

The public surface, re-exported here (imported lazily, so that ``import raftmq.core``
does not pull in SQLAlchemy or aio-pika)::

    from raftmq import build_node, NodeSettings, Node, Applied, Commit, NodeStatus
    from raftmq import Producer, Subscriber, Receipt, CommittedMessage, AdminClient, Record
    from raftmq import RaftMQError, NotLeader, WriteRejected, ...   # the tree in raftmq.errors
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from raftmq.errors import (
    ClientNotOpen,
    Compacted,
    ConfigError,
    ConfigPending,
    InvalidEnvelope,
    MalformedMessage,
    NodeStopped,
    NotLeader,
    RaftMQError,
    RequestFailed,
    RequestTimeout,
    StorageError,
    StorageRefused,
    StoreMismatch,
    TransportError,
    WriteRejected,
)

if TYPE_CHECKING:
    from raftmq.client.admin import AdminClient
    from raftmq.client.committed import CommittedMessage
    from raftmq.client.producer import Producer
    from raftmq.client.subscriber import Subscriber
    from raftmq.node.node import Node
    from raftmq.node.settings import NodeSettings
    from raftmq.node.types import Applied
    from raftmq.protocol.receipts import Commit, Receipt
    from raftmq.protocol.record import Record
    from raftmq.protocol.requests import NodeStatus
    from raftmq.runtime import build_node

__version__ = "0.1.0"

_LAZY = {
    "AdminClient": "raftmq.client.admin",
    "CommittedMessage": "raftmq.client.committed",
    "Producer": "raftmq.client.producer",
    "Receipt": "raftmq.protocol.receipts",
    "Subscriber": "raftmq.client.subscriber",
    "Applied": "raftmq.node.types",
    "Commit": "raftmq.protocol.receipts",
    "Node": "raftmq.node.node",
    "NodeStatus": "raftmq.protocol.requests",
    "Record": "raftmq.protocol.record",
    "build_node": "raftmq.runtime",
    "NodeSettings": "raftmq.node.settings",
}

__all__ = [
    "AdminClient",
    "Applied",
    "ClientNotOpen",
    "Commit",
    "CommittedMessage",
    "Compacted",
    "ConfigError",
    "ConfigPending",
    "InvalidEnvelope",
    "MalformedMessage",
    "Node",
    "NodeSettings",
    "NodeStatus",
    "NodeStopped",
    "NotLeader",
    "Producer",
    "RaftMQError",
    "Receipt",
    "Record",
    "RequestFailed",
    "RequestTimeout",
    "StorageError",
    "StorageRefused",
    "StoreMismatch",
    "Subscriber",
    "TransportError",
    "WriteRejected",
    "build_node",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'raftmq' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
