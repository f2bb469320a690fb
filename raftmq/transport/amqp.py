"""The AMQP transport (aio-pika): one inbox queue per node on a RabbitMQ broker.

Topology (public protocol, see docs/architecture.md, "AMQP"): node N of cluster C consumes
``raftmq.C.node.N``, a non-durable, non-exclusive queue that outlives a short node
restart, with an exclusive consumer (so a second process of node N cannot start),
bounded by ``x-max-length`` with ``x-overflow: drop-head`` and deleted by
the broker after ``x-expires`` without consumers. Messages are published to the
default exchange, routed by queue name, non-persistent, ``type`` = message type,
``app_id`` = cluster name, ``message_id`` = the cluster id and the MAC of the cluster key,
with a per-message
``expiration`` of about one election timeout: Raft tolerates loss, not staleness.

Throughput: ``send`` only appends to an outbox; one background task publishes
without publisher confirms, up to 256 publishes per socket write, and the
inbox is consumed with ``no_ack`` (a lost message is a dropped RPC, which Raft
retries). A supervisor task reconnects after the broker closes the connection and
restores the consumer; sends while disconnected are dropped and counted. Given several
broker URLs (a RabbitMQ cluster), each reconnect tries the next one first
(:mod:`raftmq._amqp.connect`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence

import aio_pika

from raftmq._amqp.channel import RawChannel, consume_exclusive, underlay
from raftmq._amqp.connect import BrokersLike, Connector
from raftmq._amqp.delivery import Delivered, envelope_from_delivery
from raftmq._amqp.wire import publish_batch
from raftmq.core.messages import Message
from raftmq.errors import ConfigError, TransportError
from raftmq.protocol.auth import ClusterKey
from raftmq.protocol.codec import DEFAULT_MAX_MESSAGE_BYTES, Envelope
from raftmq.protocol.names import connection_name, inbox_queue
from raftmq.transport.inbound import Endpoint
from raftmq.transport.port import MessageHandler, RequestHandler

log = logging.getLogger("raftmq.transport.amqp")

_PUBLISH_BATCH = 256  # publishes written to the socket in one write


class AmqpTransport:
    """Transport port over RabbitMQ. See the module docstring for the topology."""

    def __init__(
        self,
        url: BrokersLike,
        cluster: str,
        node_id: str,
        *,
        key: ClusterKey | None,
        cluster_id: str = "",
        message_ttl_ms: int = 1000,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        inbox_max_length: int = 10_000,
        queue_expires_ms: int = 300_000,
        prefetch: int = 1000,
        outbox_limit: int = 10_000,
        reconnect_delay: tuple[float, float] = (0.1, 2.0),
        connect_timeout: float = 5.0,
        inbox_wait: float = 5.0,
    ) -> None:
        self.node_id = node_id  # whose inbox this transport consumes
        self.cluster = cluster  # messages of other clusters are dropped
        self.key = key  # signs outbound, required of inbound; None only for --insecure
        self.queue = inbox_queue(cluster, node_id)  # this node's inbox
        self.connection_name = connection_name(cluster, node_id)  # shown by list_connections
        # The broker URLs; each reconnect starts with the next one (a RabbitMQ cluster).
        self.connector = Connector(url, name=self.connection_name)
        self.message_ttl_ms = message_ttl_ms  # per-message expiration (~one election timeout)
        self.max_message_bytes = max_message_bytes  # size limit, both directions
        self.inbox_max_length = inbox_max_length  # x-max-length of the inbox (drop-head)
        self.queue_expires_ms = queue_expires_ms  # x-expires: idle inbox deleted by the broker
        self.prefetch = prefetch  # basic.qos; no_ack consumers are limited by TCP instead
        self.outbox_limit = outbox_limit  # queued sends beyond this are dropped (oldest first)
        self.reconnect_delay = reconnect_delay  # (first, max) seconds between attempts
        self.connect_timeout = connect_timeout  # seconds for one connection attempt
        # Seconds start() waits for another consumer of the inbox to go (a SIGKILLed
        # predecessor's, until the broker sees its socket close) before it gives up.
        self.inbox_wait = inbox_wait
        self._endpoint = Endpoint(
            cluster=cluster,
            node_id=node_id,
            queue=self.queue,
            max_bytes=max_message_bytes,
            send_reply=self._send_reply,
            key=key,
            cluster_id=cluster_id,
        )
        self.stats = self._endpoint.stats  # counters; see TransportStats
        self._dispatcher = self._endpoint.dispatcher
        # Invariant: entries are (routing key, envelope, ttl); len <= outbox_limit.
        self._outbox: deque[tuple[str, Envelope, int | None]] = deque()
        self._wakeup = asyncio.Event()  # set when the outbox gained messages
        self._connected = asyncio.Event()  # set while a channel is open and the inbox declared
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: RawChannel | None = None  # underlay channel while connected
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []  # supervisor and publisher

    @property
    def cluster_id(self) -> str:
        """The cluster's id, signed into every message; set it before :meth:`start`."""
        return self._endpoint.cluster_id

    @cluster_id.setter
    def cluster_id(self, cluster_id: str) -> None:
        self._endpoint.cluster_id = cluster_id

    # -- lifecycle -----------------------------------------------------------------------
    async def start(
        self, on_message: MessageHandler, on_request: RequestHandler | None = None
    ) -> None:
        """Connect, declare the inbox, start consuming; raises TransportError if the
        broker cannot be reached now (later losses are handled by reconnecting), and
        ConfigError when another process consumes this node's inbox for ``inbox_wait``
        seconds (the node is already running). A stopped transport is not restarted:
        create a new one (the inbox queue stays)."""
        if self._stopping or self._tasks:
            raise TransportError(f"{self.connection_name} was already started")
        self._endpoint.check_startable(self.connection_name)
        self._dispatcher.bind(on_message, on_request)
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tasks = [
            asyncio.create_task(self._supervise(first), name=f"{self.connection_name}:supervisor"),
            asyncio.create_task(self._publish_loop(), name=f"{self.connection_name}:publisher"),
        ]
        try:
            await first
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop consuming and publishing, close the connection. Idempotent."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._dispatcher.close()
        connection, self._connection = self._connection, None
        self._set_disconnected()
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except aio_pika.exceptions.CONNECTION_EXCEPTIONS as exc:
                log.debug("closing %s: %s", self.connection_name, exc)
        self._outbox.clear()

    @property
    def connected(self) -> bool:
        """Whether a broker connection with a declared inbox is up right now."""
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> None:
        """Wait until connected (e.g. after a broker-side close); TimeoutError otherwise."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    # -- sending ---------------------------------------------------------------------------
    def send(self, messages: Sequence[Message]) -> None:
        """Queue messages for the publisher task; never blocks, never raises."""
        endpoint = self._endpoint
        for message in messages:
            if self._stopping or not self._connected.is_set():
                endpoint.drop_send("disconnected" if not self._stopping else "stopped", message)
                continue
            envelope = endpoint.envelope(message)
            if envelope is None:
                continue
            if len(self._outbox) >= self.outbox_limit:
                self._outbox.popleft()  # the oldest is the most likely to be stale
                self.stats.send_dropped["overflow"] += 1
            self._outbox.append(
                (inbox_queue(self.cluster, message.recipient), envelope, self.message_ttl_ms)
            )
            self.stats.sent += 1
        if self._outbox:
            self._wakeup.set()

    def _send_reply(self, reply_to: str, envelope: Envelope) -> None:
        # Client-facing replies never expire: the client's own timeout decides.
        self._outbox.append((reply_to, envelope, None))
        self._wakeup.set()

    async def _publish_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._outbox:
                channel = self._channel
                if channel is None or channel.is_closed:
                    self.stats.send_dropped["disconnected"] += len(self._outbox)
                    self._outbox.clear()
                    break
                batch = [
                    self._outbox.popleft() for _ in range(min(_PUBLISH_BATCH, len(self._outbox)))
                ]
                try:
                    await publish_batch(channel, batch)
                except (TimeoutError, *aio_pika.exceptions.CONNECTION_EXCEPTIONS) as exc:
                    self.stats.send_dropped["publish_failed"] += len(batch)
                    self._endpoint.once.warn(
                        "publish-failed", "publish from %s failed: %s", self.queue, exc
                    )

    # -- consuming ---------------------------------------------------------------------------
    async def _on_delivery(self, delivered: Delivered) -> None:
        self._dispatcher.dispatch(envelope_from_delivery(delivered))

    # -- connection supervision -------------------------------------------------------------
    async def _supervise(self, first: asyncio.Future[None]) -> None:
        delay = self.reconnect_delay[0]
        give_up = asyncio.get_running_loop().time() + self.inbox_wait
        while not self._stopping:
            closed = asyncio.Event()
            try:
                if not await self._connect(closed):
                    await self._discard_connection()
                    if not first.done() and asyncio.get_running_loop().time() >= give_up:
                        first.set_exception(self._already_running())
                        return
                    self._endpoint.once.warn(
                        "inbox-in-use", "%s: another process consumes the inbox", self.queue
                    )
                    await asyncio.sleep(min(delay, 0.25))
                    continue
            except (TimeoutError, *aio_pika.exceptions.CONNECTION_EXCEPTIONS) as exc:
                await self._discard_connection()
                if not first.done():
                    first.set_exception(
                        TransportError(f"cannot connect {self.connection_name} to broker: {exc}")
                    )
                    return
                log.warning("%s: reconnect failed (%s); retrying in %.1fs", self.queue, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_delay[1])
                continue
            delay = self.reconnect_delay[0]
            if first.done():
                self.stats.reconnects += 1
                log.warning("%s: reconnected to the broker, consumer restored", self.queue)
            else:
                first.set_result(None)
            self._connected.set()
            await closed.wait()
            self._set_disconnected()
            await self._discard_connection()
            if not self._stopping:
                log.warning("%s: lost the broker connection; reconnecting", self.queue)
                # A pause before the first attempt: a broker that is closing connections
                # (shutdown, memory alarm, operator) must not see a reconnect storm.
                await asyncio.sleep(self.reconnect_delay[0])

    def _already_running(self) -> ConfigError:
        return ConfigError(
            f"node {self.node_id} of cluster {self.cluster} is already running: another "
            f"process has consumed its inbox {self.queue} for {self.inbox_wait:g} s; stop "
            "that process first (or check --node-id and --cluster)"
        )

    async def _connect(self, closed: asyncio.Event) -> bool:
        """Connect and consume the inbox; False when another consumer holds it."""

        def on_close(*_: object) -> None:
            self._set_disconnected()
            closed.set()

        connection = await self.connector.connect(timeout=self.connect_timeout)
        self._connection = connection
        connection.close_callbacks.add(on_close)
        channel = await connection.channel(publisher_confirms=False)
        channel.close_callbacks.add(on_close)  # a channel error also means: start afresh
        await channel.set_qos(prefetch_count=self.prefetch)
        await channel.declare_queue(
            self.queue,
            durable=False,
            exclusive=False,
            auto_delete=False,
            arguments={
                "x-expires": self.queue_expires_ms,
                "x-max-length": self.inbox_max_length,
                "x-overflow": "drop-head",
            },
        )
        self._channel = await underlay(channel)
        tag = await consume_exclusive(self._channel, self.queue, self._on_delivery, no_ack=True)
        return tag is not None

    def _set_disconnected(self) -> None:
        self._connected.clear()
        self._channel = None

    async def _discard_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except aio_pika.exceptions.CONNECTION_EXCEPTIONS as exc:
                log.debug("discarding %s: %s", self.connection_name, exc)
