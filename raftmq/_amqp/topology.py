"""Declaring and deleting a cluster's shared AMQP objects (the names are in
:mod:`raftmq.protocol.names`; the declarations' arguments are part of the protocol, so
they are declared only here, identical for every node and client)."""

from __future__ import annotations

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue
from pamqp.common import FieldTable

from raftmq.errors import ConfigError
from raftmq.protocol.names import (
    WRITES_DELIVERY_LIMIT,
    bootstrap_lock_queue,
    bootstrap_queue,
    committed_exchange,
    dead_name,
    positions_exchange,
    replay_exchange,
    replay_queue,
    writes_exchange,
    writes_queue,
)

# Every queue the cluster shares is a quorum queue: on a RabbitMQ cluster a classic queue
# lives on the broker node that declared it first, and while that node is down nobody can
# declare or use it (a node's ingest failed over and over on the dead-letter queue, and no
# write committed, until that broker node came back).
_REPLICATED: FieldTable = {"x-queue-type": "quorum"}


async def declare_dead(channel: AbstractChannel, cluster: str) -> AbstractExchange:
    """Declare the dead-letter exchange and its queue; return the exchange."""
    queue = await channel.declare_queue(dead_name(cluster), durable=True, arguments=_REPLICATED)
    return await _front(channel, queue, dead_name(cluster))


async def declare_writes(channel: AbstractChannel, cluster: str) -> AbstractQueue:
    """Declare the writes queue (durable, quorum type, delivery limit, dead-lettering) and
    the writes exchange that routes to it."""
    await declare_dead(channel, cluster)
    queue = await channel.declare_queue(
        writes_queue(cluster),
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": WRITES_DELIVERY_LIMIT,
            "x-dead-letter-exchange": dead_name(cluster),
        },
    )
    await _front(channel, queue, writes_exchange(cluster))
    return queue


async def declare_committed(channel: AbstractChannel, cluster: str) -> AbstractExchange:
    """Declare the committed fan-out exchange."""
    return await channel.declare_exchange(
        committed_exchange(cluster), aio_pika.ExchangeType.FANOUT, durable=True
    )


async def declare_replay(channel: AbstractChannel, cluster: str) -> AbstractQueue:
    """Declare the replay request queue and the replay exchange that routes to it."""
    queue = await channel.declare_queue(replay_queue(cluster), durable=True, arguments=_REPLICATED)
    await _front(channel, queue, replay_exchange(cluster))
    return queue


async def _front(channel: AbstractChannel, queue: AbstractQueue, name: str) -> AbstractExchange:
    """Declare the durable fan-out exchange ``name`` and bind ``queue`` to it: clients
    publish there, so they need no write permission on the default exchange."""
    exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT, durable=True)
    await queue.bind(exchange)
    return exchange


async def declare_positions(channel: AbstractChannel, cluster: str) -> AbstractExchange:
    """Declare the topic exchange of named subscriptions' positions."""
    return await channel.declare_exchange(
        positions_exchange(cluster), aio_pika.ExchangeType.TOPIC, durable=True
    )


async def declare_all(channel: AbstractChannel, cluster: str) -> None:
    """Declare every shared object of a cluster (idempotent)."""
    await declare_writes(channel, cluster)
    await declare_committed(channel, cluster)
    await declare_replay(channel, cluster)
    await declare_positions(channel, cluster)


async def declare_shared(connection: AbstractConnection, cluster: str) -> None:
    """:func:`declare_all` on a channel of its own, for a node account; raises ConfigError
    when the account may not declare them, or one exists with other arguments."""
    channel = await connection.channel()
    try:
        await declare_all(channel, cluster)
    except aiormq.exceptions.ChannelAccessRefused as exc:
        raise ConfigError(
            f"the broker account may not declare the shared objects of cluster {cluster!r} "
            f"(a node account needs configure permission on ^raftmq\\.{cluster}\\.: see "
            f"`raftmq permissions print`): {exc}"
        ) from None
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise ConfigError(
            f"a shared object of cluster {cluster!r} exists with other arguments than "
            f"docs/protocol.md section 1 gives (delete it, or fix whoever declared it): {exc}"
        ) from None
    finally:
        if not channel.is_closed:
            await channel.close()


async def exchange_exists(connection: AbstractConnection, name: str) -> bool:
    """True when exchange ``name`` exists. A passive declare needs no configure
    permission, so a restricted client account can ask; it runs on a channel of its own
    because a missing exchange closes the channel it was asked on."""
    return await _exists(connection, name, queue=False)


async def queue_exists(connection: AbstractConnection, name: str) -> bool:
    """True when queue ``name`` exists (a passive declare, as :func:`exchange_exists`)."""
    return await _exists(connection, name, queue=True)


async def _exists(connection: AbstractConnection, name: str, *, queue: bool) -> bool:
    channel = await connection.channel()
    try:
        if queue:
            await channel.declare_queue(name, passive=True)
        else:
            await channel.declare_exchange(name, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        if not channel.is_closed:
            await channel.close()
    return True


async def delete_all(channel: AbstractChannel, cluster: str) -> None:
    """Delete every shared object of a cluster (tests and `raftmq` cleanup)."""
    for queue in (
        writes_queue(cluster),
        dead_name(cluster),
        replay_queue(cluster),
        bootstrap_queue(cluster),
        bootstrap_lock_queue(cluster),
    ):
        await channel.queue_delete(queue)
    for exchange in (
        committed_exchange(cluster),
        dead_name(cluster),
        writes_exchange(cluster),
        replay_exchange(cluster),
        positions_exchange(cluster),
    ):
        await channel.exchange_delete(exchange)
