"""Claiming and reading a cluster's bootstrap record on the broker
(:mod:`raftmq.protocol.bootstrap`).

The record is the one message of the durable quorum queue ``raftmq.C.bootstrap``
(``x-max-length = 1``, ``x-overflow = reject-publish``). Reading it is a ``basic.get``
followed by a requeue; while a reader holds it, the broker does not count it against the
cap, so a claim (read, and publish a proposal when there is none) must not interleave with
another. The claims of one cluster are therefore serialized by an exclusive consumer on
``raftmq.C.bootstrap.lock`` (a classic queue: quorum queues do not enforce exclusive
consumers), which the broker releases when its holder's channel or connection goes.
"""

from __future__ import annotations

import asyncio
import contextlib

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue

from raftmq._amqp import topology
from raftmq.errors import MalformedMessage, TransportError
from raftmq.protocol.bootstrap import BootstrapRecord
from raftmq.protocol.names import bootstrap_lock_queue, bootstrap_queue

# Every read requeues the record, which a quorum queue counts as a delivery; the limit
# must never be reached (RabbitMQ 4 sets a default of 20 where none is given).
_DELIVERY_LIMIT = 2_000_000_000
_LOCK_EXPIRES_MS = 600_000  # an unused lock queue goes away after ten minutes
_RETRY = (0.02, 0.5)  # first and largest pause between attempts to take the lock, seconds


async def declare_bootstrap(channel: AbstractChannel, cluster: str) -> AbstractQueue:
    """Declare the bootstrap record queue (idempotent)."""
    return await channel.declare_queue(
        bootstrap_queue(cluster),
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-max-length": 1,
            "x-overflow": "reject-publish",
            "x-delivery-limit": _DELIVERY_LIMIT,
        },
    )


async def claim(
    connection: AbstractConnection, cluster: str, proposal: BootstrapRecord, timeout: float = 30.0
) -> BootstrapRecord:
    """The record of ``cluster``: the one already there, else ``proposal`` (now stored).
    Raises MalformedMessage when the stored record is not one, TransportError when the
    lock or the record cannot be had within ``timeout``."""
    record = await _locked(connection, cluster, proposal, timeout)
    assert record is not None  # a claim always ends with a record
    return record


async def read(
    connection: AbstractConnection, cluster: str, timeout: float = 30.0
) -> BootstrapRecord | None:
    """The record of ``cluster``, or None when it was never bootstrapped. Creates nothing
    on the broker: a reader of a cluster that does not exist (an operator's typo) must
    not leave a record queue of that name behind."""
    if not await topology.queue_exists(connection, bootstrap_queue(cluster)):
        return None
    return await _locked(connection, cluster, None, timeout)


async def _locked(
    connection: AbstractConnection,
    cluster: str,
    proposal: BootstrapRecord | None,
    timeout: float,
) -> BootstrapRecord | None:
    pause = _RETRY[0]
    try:
        async with asyncio.timeout(timeout):
            while True:
                channel = await connection.channel(publisher_confirms=True)
                try:
                    lock = await channel.declare_queue(
                        bootstrap_lock_queue(cluster),
                        arguments={"x-expires": _LOCK_EXPIRES_MS},
                    )
                    try:
                        await lock.consume(_no_messages, exclusive=True)
                    except aiormq.exceptions.ChannelAccessRefused:
                        pass  # another node holds the lock: try again
                    else:
                        return await _under_lock(channel, cluster, proposal)
                finally:
                    if not channel.is_closed:
                        await channel.close()  # releases the lock
                await asyncio.sleep(pause)
                pause = min(pause * 2, _RETRY[1])
    except TimeoutError:
        raise TransportError(
            f"the bootstrap record of cluster {cluster!r} could not be read in {timeout} s"
        ) from None


async def _under_lock(
    channel: AbstractChannel, cluster: str, proposal: BootstrapRecord | None
) -> BootstrapRecord | None:
    queue = await declare_bootstrap(channel, cluster)
    message = await queue.get(no_ack=False, fail=False)
    if message is not None:
        body = message.body
        await message.nack(requeue=True)  # the record stays for the next reader
        try:
            return BootstrapRecord.decode(body)
        except MalformedMessage as exc:
            raise MalformedMessage(f"{queue.name} holds no valid record: {exc}") from None
    if proposal is None:
        return None
    with contextlib.suppress(aio_pika.exceptions.DeliveryError):  # nack: not possible here
        await channel.default_exchange.publish(
            aio_pika.Message(proposal.encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=queue.name,
        )
    return proposal


async def _no_messages(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    """The lock queue carries no messages; anything published there is dropped."""
    await message.ack()
