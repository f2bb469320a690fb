"""Declaring and deleting a cluster's shared AMQP objects (the names are in
:mod:`raftmq.protocol.names`; the declarations' arguments are part of the protocol, so
they are declared only here, identical for every node and client)."""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from raftmq.protocol.names import (
    WRITES_DELIVERY_LIMIT,
    committed_exchange,
    dead_name,
    replay_queue,
    writes_queue,
)


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
