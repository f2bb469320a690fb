"""raftmq: Raft consensus over RabbitMQ -- a replicated, totally ordered, durable log.

The public surface, re-exported here (imported lazily, so that ``import raftmq.core``
does not pull in SQLAlchemy or aio-pika)::

    from raftmq import build_node, NodeSettings, Node, Applied, Commit, NodeStatus
    from raftmq import AdminClient, Record
    from raftmq import RaftMQError, NotLeader, WriteRejected, StorageError, TransportError
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from raftmq.errors import (
    ConfigError,
    MalformedMessage,
    NodeStopped,
    NotLeader,
    RaftMQError,
    StorageError,
    StoreMismatch,
    TransportError,
    WriteRejected,
)

if TYPE_CHECKING:
    from raftmq.client.admin import AdminClient
    from raftmq.node.node import Node
    from raftmq.node.runtime import build_node
    from raftmq.node.settings import NodeSettings
    from raftmq.node.types import Applied
    from raftmq.protocol.receipts import Commit
    from raftmq.protocol.record import Record
    from raftmq.protocol.requests import NodeStatus

__version__ = "0.1.0"

_LAZY = {
    "AdminClient": "raftmq.client.admin",
    "Applied": "raftmq.node.types",
    "Commit": "raftmq.protocol.receipts",
    "Node": "raftmq.node.node",
    "NodeStatus": "raftmq.protocol.requests",
    "Record": "raftmq.protocol.record",
    "build_node": "raftmq.node.runtime",
    "NodeSettings": "raftmq.node.settings",
}

__all__ = [
    "AdminClient",
    "Applied",
    "Commit",
    "ConfigError",
    "MalformedMessage",
    "Node",
    "NodeSettings",
    "NodeStatus",
    "NodeStopped",
    "NotLeader",
    "RaftMQError",
    "Record",
    "StorageError",
    "StoreMismatch",
    "TransportError",
    "WriteRejected",
    "build_node",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'raftmq' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
