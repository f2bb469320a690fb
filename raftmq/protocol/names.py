"""AMQP names and headers of a cluster (part of the public protocol, docs/protocol.md).

Cluster ``C``, node ``N``:

- ``raftmq.C.node.N``    queue, one per node: Raft RPCs and client requests (transport layer)
- ``raftmq.C.writes``    durable quorum queue: producers' writes, consumed by the leader only;
                         a durable fan-out exchange of the same name routes to it (producers
                         publish there, so their accounts need no write on the default exchange)
- ``raftmq.C.committed`` durable fan-out exchange: every committed write, in index order
- ``raftmq.C.dead``      fan-out exchange + durable queue: rejected writes, reason in a header
- ``raftmq.C.replay``    durable queue, all nodes consume: "send me entries from index i";
                         a durable fan-out exchange of the same name routes to it
- ``raftmq.C.positions`` durable topic exchange: named subscriptions' positions, routed by
                         subscription name to ``raftmq.C.sub.NAME.position``
"""

from __future__ import annotations

import re

# Header names (AMQP message headers) of the public protocol.
H_INDEX = "raftmq-index"  # int: log index of a committed message
H_TERM = "raftmq-term"  # int: term of that entry
H_PRODUCER = "raftmq-producer"  # str: producer id (client session, thesis §6.3)
H_SEQ = "raftmq-seq"  # int: producer sequence number within its session
H_REASON = "raftmq-reason"  # str: why a write was dead-lettered
H_DUPLICATE = "raftmq-duplicate"  # bool: a receipt for a write already in the log
H_STATUS = (
    "raftmq-status"  # str: "ok" | "error" on replies and receipts (error: body is the reason)
)
H_PREV_INDEX = "raftmq-prev-index"  # int: index of the previous committed message published
H_REPLAY_END = "raftmq-replay-end"  # int: end marker of a replay answer (last index covered)
# int, on an end marker: "from" was compacted; the first index the answering node holds
H_REPLAY_FIRST = "raftmq-replay-first"

# RabbitMQ counts every return of an unacked write (the leader's channel closed on a
# leader change) as a delivery: the limit must tolerate leader churn, not only poison.
# Changing it for an existing cluster fails the redeclare with PRECONDITION_FAILED: the
# arguments below are declared only here, identical for every node and client.
WRITES_DELIVERY_LIMIT = 20  # a write delivered more often than this is dead-lettered


def connection_name(cluster: str, node_id: str, role: str | None = None) -> str:
    """The AMQP ``connection_name`` of a node's connection (shown by ``rabbitmqctl
    list_connections name``): ``raftmq:C:N`` for its Raft traffic, ``raftmq-ROLE:C:N`` for
    a service's (ingest, fanout, replay)."""
    return f"raftmq:{cluster}:{node_id}" if role is None else f"raftmq-{role}:{cluster}:{node_id}"


def writes_queue(cluster: str) -> str:
    """The leader queue producers publish to."""
    return f"raftmq.{cluster}.writes"


def bootstrap_queue(cluster: str) -> str:
    """The durable queue holding the cluster's bootstrap record (one message)."""
    return f"raftmq.{cluster}.bootstrap"


def bootstrap_lock_queue(cluster: str) -> str:
    """The queue whose exclusive consumer serializes claims of the bootstrap record."""
    return f"raftmq.{cluster}.bootstrap.lock"


def writes_exchange(cluster: str) -> str:
    """The fan-out exchange producers publish writes to (routes to the writes queue)."""
    return writes_queue(cluster)


def replay_exchange(cluster: str) -> str:
    """The fan-out exchange subscribers publish replay requests to (routes to the queue)."""
    return replay_queue(cluster)


def positions_exchange(cluster: str) -> str:
    """The topic exchange named subscriptions publish their positions to (routing key: the
    subscription name)."""
    return f"raftmq.{cluster}.positions"


def committed_exchange(cluster: str) -> str:
    """The fan-out exchange of committed writes."""
    return f"raftmq.{cluster}.committed"


def dead_name(cluster: str) -> str:
    """The dead-letter exchange and queue (same name)."""
    return f"raftmq.{cluster}.dead"


def replay_queue(cluster: str) -> str:
    """The queue of replay requests, consumed by every node."""
    return f"raftmq.{cluster}.replay"


def inbox_queue(cluster: str, node_id: str) -> str:
    """Name of a node's inbox queue (part of the public protocol)."""
    return f"raftmq.{cluster}.node.{node_id}"


def subscription_queue(cluster: str, name: str) -> str:
    """The durable queue of named subscription ``name``."""
    return f"raftmq.{cluster}.sub.{name}"


def position_queue(cluster: str, name: str) -> str:
    """The one-message queue holding the last index a named subscription delivered."""
    return f"raftmq.{cluster}.sub.{name}.position"


SUBSCRIPTION_NAME = r"[A-Za-z0-9_-]{1,64}"
"""A named subscription's name: one word of a topic routing key (no dots, no wildcards)."""


def subscription_of(cluster: str, queue: str) -> str | None:
    """The name of the named subscription whose queue is ``queue`` (None: ``queue`` is no
    named subscription queue of ``cluster``: a position queue, an anonymous one, ...)."""
    prefix = subscription_queue(cluster, "")
    name = queue[len(prefix) :] if queue.startswith(prefix) else ""
    return name if re.fullmatch(SUBSCRIPTION_NAME, name) else None


def anonymous_subscription_queue(cluster: str, unique: str) -> str:
    """The exclusive queue of an anonymous subscription (``unique`` tells them apart)."""
    return f"raftmq.{cluster}.sub.anon.{unique}"


def producer_reply_queue(cluster: str, producer_id: str, unique: str) -> str:
    """The exclusive queue a producer's receipts come back to."""
    return f"raftmq.{cluster}.reply.{producer_id}.{unique}"


def replay_reply_queue(cluster: str, unique: str) -> str:
    """The exclusive queue a subscriber's replay answers come back to."""
    return f"raftmq.{cluster}.replay-reply.{unique}"


DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"  # RabbitMQ direct reply-to (a requester's channel)


def replay_reply_allowed(cluster: str, reply_to: str) -> bool:
    """Whether a replay answer may go to ``reply_to``: a direct reply-to address or a
    replay reply queue of ``cluster`` (never the writes queue, an inbox, a subscription or
    another cluster's queue, where an answer would be taken for something else)."""
    for prefix in (DIRECT_REPLY_TO + ".", replay_reply_queue(cluster, "")):
        if reply_to.startswith(prefix) and len(reply_to) > len(prefix):
            return True
    return False
