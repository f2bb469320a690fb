"""Canary tests: the aiormq/pamqp internals raftmq._amqp relies on, against the real broker.

raftmq._amqp works below aio-pika's public API, pinned in pyproject.toml to the minor
versions it was written for. Before moving a pin, run these: each test names the _amqp
behaviour that depends on what it checks, so a failure says what to rewrite.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aio_pika
import aio_pika.abc
import aiormq
import pytest
from pamqp.commands import Basic
from pamqp.common import Arguments

from raftmq._amqp.channel import (
    ChannelInvalidStateError,
    RawChannel,
    cancel,
    closing_observer,
    consume,
    consuming,
    on_broker_cancel,
    underlay,
    wait_unless_closed,
)
from raftmq._amqp.delivery import Delivered, ack, delivery_channel, delivery_tag, properties
from raftmq._amqp.wire import (
    default_publish_frame,
    field_table,
    framing,
    message_frames,
    publish_batch,
    publish_confirmed,
    publish_frame,
    write_frames,
)
from raftmq.protocol.codec import Envelope

from ..transport.helpers import wait_until

pytestmark = pytest.mark.integration

_CONFIRM_TIMEOUT = 10.0  # seconds a publisher confirm may take on a busy machine


@dataclass
class Broker:
    """A connection for one test and the queues it declared (deleted at teardown)."""

    connection: aio_pika.abc.AbstractConnection
    prefix: str  # unique per test: every queue name starts with it
    queues: list[str] = field(default_factory=list)

    async def raw(self, *, confirms: bool = True) -> RawChannel:
        """A new raw channel, with publisher confirms unless told otherwise."""
        return await underlay(await self.connection.channel(publisher_confirms=confirms))

    async def queue(self, suffix: str, arguments: Arguments = None) -> str:
        """Declare a non-durable queue ``<prefix>.<suffix>``; return its name."""
        name = f"{self.prefix}.{suffix}"
        async with self.connection.channel() as channel:
            await channel.declare_queue(name, arguments=arguments)
        self.queues.append(name)
        return name

    async def depth(self, queue: str) -> int:
        """Messages ready in ``queue`` (a passive declare)."""
        async with self.connection.channel() as channel:
            declared = await channel.declare_queue(queue, passive=True)
            return declared.declaration_result.message_count or 0

    async def take(self, queue: str, count: int) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """The next ``count`` messages of ``queue``, acked, within 5 s."""
        taken: list[aio_pika.abc.AbstractIncomingMessage] = []
        async with asyncio.timeout(5.0), self.connection.channel() as channel:
            declared = await channel.declare_queue(queue, passive=True)
            async with declared.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    taken.append(message)
                    if len(taken) == count:
                        break
        return taken


@pytest.fixture
async def broker(amqp_url: str, cluster_name: str) -> AsyncIterator[Broker]:
    connection = await aio_pika.connect(amqp_url)
    broker = Broker(connection, f"raftmq.{cluster_name}.canary")
    try:
        yield broker
    finally:
        async with connection.channel() as channel:
            for name in broker.queues:
                await channel.queue_delete(name)
        await connection.close()


def _frames(
    channel: RawChannel, queue: str, body: bytes, correlation_id: str | None = None
) -> bytes:
    """The hand-written frames of one persistent publish of ``body`` to ``queue``."""
    number, max_body = framing(channel)
    publish = default_publish_frame(number, queue)
    return message_frames(number, publish, max_body, body, correlation_id=correlation_id)


async def _confirmed(future: asyncio.Future[None]) -> None:
    async with asyncio.timeout(_CONFIRM_TIMEOUT):
        await future


async def test_confirmed_batches_count_delivery_tags_like_aiormq(broker: Broker) -> None:
    """wire.publish_confirmed numbers its messages from ``channel.delivery_tag`` and puts
    one BatchConfirms under each tag in ``channel.confirmations``: that matches the tags
    the broker acks only while aiormq counts one tag per publish from 1, and resolves each
    entry with ``set_result`` (multiple acks included) and then forgets it."""
    queue = await broker.queue("tags")
    channel = await broker.raw()
    await channel.basic_publish(b"aiormq 1", routing_key=queue)
    await _confirmed(await publish_confirmed(channel, [_frames(channel, queue, b"ours")] * 3))
    await channel.basic_publish(b"aiormq 2", routing_key=queue)
    # Many tags at once: the broker usually answers with multiple=True acks.
    await _confirmed(await publish_confirmed(channel, [_frames(channel, queue, b"x")] * 200))
    assert channel.delivery_tag == 1 + 3 + 1 + 200
    assert not channel.confirmations
    assert await broker.depth(queue) == 205


async def test_cancelled_publish_gives_its_delivery_tag_back(broker: Broker) -> None:
    """aiormq 7.2.4 takes back the delivery tag of a ``basic_publish`` cancelled before
    its frames were queued (and drops its confirmation). wire.publish_confirmed counts on
    it: on a channel that also carries aio-pika publishes, a tag never sent would shift
    every later batch by one, and its confirm would never come."""
    queue = await broker.queue("cancelled")
    channel = await broker.raw()
    real = channel.write_queue
    full: asyncio.Queue[object] = asyncio.Queue(maxsize=1)
    full.put_nowait(object())  # the publish below blocks on it, holding its tag
    channel.write_queue = full
    try:
        publish = asyncio.create_task(channel.basic_publish(b"never sent", routing_key=queue))
        await wait_until(lambda: channel.delivery_tag == 1, what="the publish takes its tag")
        publish.cancel()
        with pytest.raises(asyncio.CancelledError):
            await publish
    finally:
        channel.write_queue = real
    assert channel.delivery_tag == 0
    assert not channel.confirmations
    await _confirmed(await publish_confirmed(channel, [_frames(channel, queue, b"sent")]))
    assert [m.body for m in await broker.take(queue, 1)] == [b"sent"]
    assert await broker.depth(queue) == 0


async def test_failed_publish_gives_its_delivery_tag_back(broker: Broker) -> None:
    """Same as above for a ``basic_publish`` that fails before anything was queued (its
    properties do not marshal): the tag is taken back and later batches still confirm."""
    queue = await broker.queue("failed")
    channel = await broker.raw()
    unmarshallable = Basic.Properties(expiration=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await channel.basic_publish(b"never sent", routing_key=queue, properties=unmarshallable)
    assert channel.delivery_tag == 0
    assert not channel.confirmations
    await _confirmed(await publish_confirmed(channel, [_frames(channel, queue, b"after")]))
    assert [m.body for m in await broker.take(queue, 1)] == [b"after"]


async def test_a_nack_fails_the_batch_and_the_next_batch_confirms(broker: Broker) -> None:
    """aiormq hands a broker nack to each tag's confirmation with ``set_exception``
    (once per tag of a multiple nack): the Producer re-publishes a batch whose future
    failed and the fan-out resumes at its watermark. The nacked tags are consumed, so the
    next batch on the channel still confirms."""
    full = await broker.queue("full", {"x-max-length": 0, "x-overflow": "reject-publish"})
    queue = await broker.queue("open")
    channel = await broker.raw()
    nacked = await publish_confirmed(channel, [_frames(channel, full, b"refused")] * 3)
    with pytest.raises(aiormq.exceptions.DeliveryError):
        await _confirmed(nacked)
    await _confirmed(await publish_confirmed(channel, [_frames(channel, queue, b"taken")]))
    assert not channel.confirmations
    assert channel.delivery_tag == 4


async def test_a_channel_closed_under_a_batch_leaves_its_confirm_pending(
    broker: Broker,
) -> None:
    """When the broker closes a channel with a batch still unconfirmed, aiormq fails only
    the futures it made itself: the batch's future stays pending and only the channel's
    ``closing`` observer tells. wire._drained, the Producer's confirm wait and the
    fan-out loop therefore watch it (channel.wait_unless_closed, closing_observer). A
    later confirmed publish on that channel raises ChannelInvalidStateError."""
    queue = await broker.queue("closed")
    channel = await broker.raw()
    number, max_body = framing(channel)
    missing = f"{broker.prefix}.missing-exchange"  # publishing to it is a channel error
    doomed = message_frames(number, publish_frame(number, missing, ""), max_body, b"to nowhere")
    with closing_observer(channel) as closing:
        confirmed = await publish_confirmed(channel, [doomed, _frames(channel, queue, b"late")])
        async with asyncio.timeout(_CONFIRM_TIMEOUT):
            assert not await wait_unless_closed(channel, confirmed)
        assert isinstance(closing.exception(), aiormq.exceptions.ChannelNotFoundEntity)
    assert channel.is_closed
    assert not confirmed.done()
    with pytest.raises(ChannelInvalidStateError):
        await publish_confirmed(channel, [_frames(channel, queue, b"refused")])
    assert await broker.depth(queue) == 0  # the broker dropped what followed the error


async def test_the_closing_observer_is_independent_of_the_channel(broker: Broker) -> None:
    """channel.closing_observer cancels its future on leaving the block: that must not
    close the channel (aiormq 7.2 hands out an independent observer per read of
    ``channel.closing``), and a later observer still sees the channel close."""
    queue = await broker.queue("observed")
    channel = await broker.raw()
    with closing_observer(channel) as closing:
        assert not closing.done()
    assert closing.cancelled()
    assert not channel.is_closed
    await _confirmed(await publish_confirmed(channel, [_frames(channel, queue, b"still open")]))
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiting = asyncio.create_task(wait_unless_closed(channel, never))
    await channel.close()
    async with asyncio.timeout(5.0):
        assert await waiting is False


async def test_hand_written_frames_reach_the_broker_intact(broker: Broker) -> None:
    """wire.publish_batch and wire.write_frames put one ChannelFrame of many publishes
    on aiormq's connection write queue: the writer sends its payload as it is and
    resolves its drain future once written (publish_batch waits for that), with or
    without confirm mode. Bodies above the negotiated frame size are split by
    ``framing().max_body``; pamqp decodes the headers table's long strings as str,
    which client.committed.parse_delivered takes as they are."""
    queue = await broker.queue("frames")
    channel = await broker.raw(confirms=False)
    number, max_body = framing(channel)
    big = bytes(range(256)) * (2 * max_body // 256 + 1)  # three body frames
    envelope = Envelope(b"raft", "append_entries", "c", reply_to="r", correlation_id="c-1")
    async with asyncio.timeout(5.0):
        await publish_batch(channel, [(queue, envelope, 750), (queue, envelope, None)])
    await write_frames(
        channel,
        message_frames(
            number,
            default_publish_frame(number, queue),
            max_body,
            big,
            headers=field_table({"text": "héllo", "count": 3, "flag": True}),
            content_type="application/octet-stream",
            message_id="m-1",
        ),
    )
    first, second, third = await broker.take(queue, 3)
    assert (first.body, first.type, first.app_id, first.expiration) == (
        b"raft",
        "append_entries",
        "c",
        0.75,
    )
    assert (first.reply_to, first.correlation_id) == ("r", "c-1")
    assert first.delivery_mode == aio_pika.DeliveryMode.NOT_PERSISTENT
    assert second.expiration is None
    assert third.body == big
    assert (third.content_type, third.message_id) == ("application/octet-stream", "m-1")
    assert third.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert third.headers == {"text": "héllo", "count": 3, "flag": True}
    assert type(third.headers["text"]) is str


async def test_raw_deliveries_are_read_and_acked_through_their_tags(broker: Broker) -> None:
    """delivery.properties and delivery.delivery_tag read aiormq's DeliveredMessage
    (``header.properties``, ``delivery.delivery_tag``); ack(multiple) on the delivery's
    channel settles every earlier delivery too: ingest acks one contiguous prefix per
    loop turn, the Subscriber acks up to its stored position."""
    queue = await broker.queue("acks")
    publisher = await broker.raw()
    frames = [_frames(publisher, queue, b"%d" % i, correlation_id=f"c{i}") for i in range(3)]
    await _confirmed(await publish_confirmed(publisher, frames))
    consumer = await broker.raw()
    got: list[Delivered] = []
    all_in = asyncio.Event()

    async def collect(delivered: Delivered) -> None:
        got.append(delivered)
        if len(got) == 3:
            all_in.set()

    tag = await consume(consumer, queue, collect, no_ack=False)
    async with asyncio.timeout(5.0):
        await all_in.wait()
    assert [properties(d).correlation_id for d in got] == ["c0", "c1", "c2"]
    assert [d.body for d in got] == [b"0", b"1", b"2"]
    assert [delivery_tag(d) for d in got] == [1, 2, 3]
    await ack(delivery_channel(got[-1]), delivery_tag(got[-1]), multiple=True)
    await cancel(consumer, tag)
    await consumer.close()  # anything not acked would return to the queue now
    assert await broker.depth(queue) == 0


async def test_broker_cancel_is_reported_and_the_tag_forgotten(broker: Broker) -> None:
    """The Subscriber consumes with fixed tags, skips a tag ``consuming`` reports (aiormq
    registers it before basic.consume goes out, so two concurrent consumes cannot both
    register it), and consumes again when ``on_broker_cancel`` reports the broker
    cancelled it (its queue was deleted): by then aiormq has forgotten the tag."""
    queue = await broker.queue("cancel")
    channel = await broker.raw()
    tag = f"canary-{uuid.uuid4().hex}"
    cancelled: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    on_broker_cancel(channel, cancelled.set_result)

    async def ignore(_: Delivered) -> None:
        pass

    results = await asyncio.gather(
        consume(channel, queue, ignore, no_ack=True, consumer_tag=tag),
        consume(channel, queue, ignore, no_ack=True, consumer_tag=tag),
        return_exceptions=True,
    )
    assert tag in results
    assert [type(r) for r in results if r != tag] == [aiormq.exceptions.DuplicateConsumerTag]
    assert consuming(channel, tag)
    async with broker.connection.channel() as other:
        await other.queue_delete(queue)
    async with asyncio.timeout(5.0):
        assert await cancelled == tag
    assert not consuming(channel, tag)
    assert not channel.is_closed
