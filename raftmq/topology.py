"""AMQP names and declarations of a cluster (part of the public protocol, docs/protocol.md).

Cluster ``C``, node ``N``:

- ``raftmq.C.node.N``   queue, one per node: Raft RPCs and client requests (transport layer)
- ``raftmq.C.writes``   durable quorum queue: producers' writes, consumed by the leader only
- ``raftmq.C.committed`` durable fan-out exchange: every committed write, in index order
- ``raftmq.C.dead``     fan-out exchange + durable queue: rejected writes, reason in a header
- ``raftmq.C.replay``   durable queue, all nodes consume: "send me entries from index i"
"""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

# Header names (AMQP message headers) of the public protocol.
H_INDEX = "raftmq-index"  # int: log index of a committed message
H_TERM = "raftmq-term"  # int: term of that entry
H_PRODUCER = "raftmq-producer"  # str: producer id (client session, thesis §6.3)
H_SEQ = "raftmq-seq"  # int: producer sequence number within its session
H_REASON = "raftmq-reason"  # str: why a write was dead-lettered
H_DUPLICATE = "raftmq-duplicate"  # bool: a receipt for a write already in the log
H_STATUS = "raftmq-status"  # str: "ok" | "error" on replies and receipts
H_PREV_INDEX = "raftmq-prev-index"  # int: index of the previous committed message published
H_REPLAY_END = "raftmq-replay-end"  # int: end marker of a replay answer (last index covered)

# RabbitMQ counts every return of an unacked write (the leader's channel closed on a
# leader change) as a delivery: the limit must tolerate leader churn, not only poison.
# Changing it for an existing cluster fails the redeclare with PRECONDITION_FAILED: the
# arguments below are declared only here, identical for every node and client.
WRITES_DELIVERY_LIMIT = 20  # a write delivered more often than this is dead-lettered


def writes_queue(cluster: str) -> str:
    """The leader queue producers publish to."""
    return f"raftmq.{cluster}.writes"


def committed_exchange(cluster: str) -> str:
    """The fan-out exchange of committed writes."""
    return f"raftmq.{cluster}.committed"


def dead_name(cluster: str) -> str:
    """The dead-letter exchange and queue (same name)."""
    return f"raftmq.{cluster}.dead"


def replay_queue(cluster: str) -> str:
    """The queue of replay requests, consumed by every node."""
    return f"raftmq.{cluster}.replay"


async def declare_dead(channel: AbstractChannel, cluster: str) -> AbstractExchange:
    """Declare the dead-letter exchange and its queue; return the exchange."""
    exchange = await channel.declare_exchange(
        dead_name(cluster), aio_pika.ExchangeType.FANOUT, durable=True
    )
    queue = await channel.declare_queue(dead_name(cluster), durable=True)
    await queue.bind(exchange)
    return exchange


async def declare_writes(channel: AbstractChannel, cluster: str) -> AbstractQueue:
    """Declare the writes queue: durable, quorum type, delivery limit, dead-lettering."""
    await declare_dead(channel, cluster)
    return await channel.declare_queue(
        writes_queue(cluster),
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": WRITES_DELIVERY_LIMIT,
            "x-dead-letter-exchange": dead_name(cluster),
        },
    )


async def declare_committed(channel: AbstractChannel, cluster: str) -> AbstractExchange:
    """Declare the committed fan-out exchange."""
    return await channel.declare_exchange(
        committed_exchange(cluster), aio_pika.ExchangeType.FANOUT, durable=True
    )


async def declare_replay(channel: AbstractChannel, cluster: str) -> AbstractQueue:
    """Declare the replay request queue."""
    return await channel.declare_queue(replay_queue(cluster), durable=True)


async def declare_all(channel: AbstractChannel, cluster: str) -> None:
    """Declare every shared object of a cluster (idempotent)."""
    await declare_writes(channel, cluster)
    await declare_committed(channel, cluster)
    await declare_replay(channel, cluster)


async def delete_all(channel: AbstractChannel, cluster: str) -> None:
    """Delete every shared object of a cluster (tests and `raftmq` cleanup)."""
    for queue in (writes_queue(cluster), dead_name(cluster), replay_queue(cluster)):
        await channel.queue_delete(queue)
    for exchange in (committed_exchange(cluster), dead_name(cluster)):
        await channel.exchange_delete(exchange)
