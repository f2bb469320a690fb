"""Client-facing request/reply over AMQP (``raftmq status`` and the like).

One connection, one channel and ONE long-lived reply consumer on RabbitMQ's
direct reply-to pseudo-queue (``amq.rabbitmq.reply-to``), with a
``correlation_id -> Future`` map: never a queue per request. The node side is the
transport's ``on_request(kind, body)`` callback, which answers every inbox
message whose AMQP ``type`` is not a Raft message type and that carries
``reply_to``; the answer carries the request's ``correlation_id`` and a
``raftmq-status`` header (``ok``, or ``error`` with the reason as body).

With the cluster key, requests are signed and a reply counts only when it is signed by
the node that was asked (others are dropped and counted in ``dropped``): the key an
operator command reads from the node settings (``RAFTMQ_CLUSTER_KEY_FILE``). The cluster
id signed with it comes from the cluster's bootstrap record, read at start: a cluster that
was never bootstrapped is a ConfigError.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections import Counter
from types import TracebackType

import aio_pika

from raftmq._amqp import bootstrap
from raftmq._amqp.channel import RawChannel, consume, underlay
from raftmq._amqp.connect import BrokersLike, Connector
from raftmq._amqp.delivery import Delivered, envelope_from_delivery
from raftmq._amqp.wire import publish_envelope
from raftmq.errors import (
    ClientNotOpen,
    ConfigError,
    InvalidEnvelope,
    RequestFailed,
    RequestTimeout,
    TransportError,
)
from raftmq.protocol.auth import ClusterKey, check_reply
from raftmq.protocol.codec import Envelope
from raftmq.protocol.names import bootstrap_queue, inbox_queue
from raftmq.transport.inbound import OnceLogger

log = logging.getLogger("raftmq.transport.rpc")

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
"""RabbitMQ's pseudo-queue for replies without declaring a queue."""


class RpcClient:
    """Sends client-facing requests to node inboxes; implements RequestClient.

    Use as ``async with RpcClient(url, cluster) as client: await client.request(...)``.
    """

    def __init__(
        self,
        url: BrokersLike,
        cluster: str,
        *,
        timeout: float = 2.0,
        connection_name: str | None = None,
        key: ClusterKey | None = None,
        cluster_id: str | None = None,
        bootstrap_wait: float = 0.0,
    ) -> None:
        self.cluster = cluster  # requests are addressed to this cluster's node inboxes
        self.key = key  # signs requests, required of replies; None: an insecure cluster
        # Signed with the key; None: read from the bootstrap record at start (with a key).
        self.cluster_id = cluster_id
        # Seconds start() waits for a record to appear (nodes that are starting right now);
        # 0: a cluster without one is an error at once (operator commands).
        self.bootstrap_wait = bootstrap_wait
        self.dropped: Counter[str] = Counter()  # replies dropped, by DropReason value
        self.timeout = timeout  # default seconds to wait for an answer
        self.connection_name = connection_name or f"raftmq-client:{cluster}"  # for operators
        self.connector = Connector(url, name=self.connection_name)  # the broker URLs
        self._prefix = uuid.uuid4().hex[:12]  # makes correlation ids unique across clients
        self._ids = itertools.count(1)
        # correlation id -> (the node asked, the waiter of its reply)
        self._pending: dict[str, tuple[str, asyncio.Future[Envelope]]] = {}
        self._once = OnceLogger()  # warns once per reply drop reason
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: RawChannel | None = None  # underlay channel

    async def __aenter__(self) -> RpcClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect and start the reply consumer; raises TransportError when unreachable."""
        try:
            self._connection = await self.connector.connect()
            channel = await self._connection.channel(publisher_confirms=False)
            self._channel = await underlay(channel)
            # Direct reply-to requires no_ack and the consumer on the publishing channel.
            await consume(self._channel, DIRECT_REPLY_TO, self._on_reply, no_ack=True)
            if self.key is not None and self.cluster_id is None:
                self.cluster_id = await self._read_cluster_id(self._connection)
        except (TimeoutError, *aio_pika.exceptions.CONNECTION_EXCEPTIONS) as exc:
            await self.close()
            where = self.connector.brokers.display()
            raise TransportError(f"cannot connect to the broker at {where}: {exc}") from exc
        except BaseException:
            await self.close()
            raise

    async def _read_cluster_id(self, connection: aio_pika.abc.AbstractConnection) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.bootstrap_wait
        while True:
            record = await bootstrap.read(connection, self.cluster, timeout=self.timeout + 3.0)
            if record is not None or loop.time() >= deadline:
                break
            await asyncio.sleep(0.2)
        if record is None:
            raise ConfigError(
                f"cluster {self.cluster!r} was never bootstrapped on this broker (no record "
                f"in {bootstrap_queue(self.cluster)}): start its nodes first, or check "
                "--cluster and --amqp-url"
            )
        return record.cluster_id

    async def request(
        self, node_id: str, kind: str, body: bytes = b"", *, timeout: float | None = None
    ) -> bytes:
        """Ask ``node_id`` and return its reply body (see RequestClient)."""
        channel = self._channel
        if channel is None:
            raise ClientNotOpen("RpcClient is not started (call start() or use async with)")
        if channel.is_closed:
            raise TransportError("RpcClient's channel to the broker is closed")
        correlation_id = f"{self._prefix}-{next(self._ids)}"
        future: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = (node_id, future)
        envelope = Envelope(
            body=body,
            type=kind,
            cluster=self.cluster,
            reply_to=DIRECT_REPLY_TO,
            correlation_id=correlation_id,
        )
        if self.key is not None:
            envelope = self.key.sign(
                envelope, sender="", recipient=node_id, cluster_id=self.cluster_id or ""
            )
        wait = timeout if timeout is not None else self.timeout
        try:
            # A request nobody reads within the timeout is garbage: let it expire.
            await publish_envelope(
                channel, inbox_queue(self.cluster, node_id), envelope, ttl_ms=int(wait * 1000)
            )
            reply = await asyncio.wait_for(future, wait)
        except TimeoutError:
            raise RequestTimeout(f"no answer from node {node_id!r} to {kind!r}") from None
        except aio_pika.exceptions.CONNECTION_EXCEPTIONS as exc:
            raise TransportError(f"request {kind!r} to {node_id!r} failed: {exc}") from exc
        finally:
            self._pending.pop(correlation_id, None)
        if reply.status != "ok":
            raise RequestFailed(reply.body.decode(errors="replace"))
        return reply.body

    async def _on_reply(self, delivered: Delivered) -> None:
        envelope = envelope_from_delivery(delivered)
        pending = self._pending.get(envelope.correlation_id or "")
        if pending is None:
            log.debug("reply %s arrived after its request gave up", envelope.correlation_id)
            return
        node_id, future = pending
        try:
            check_reply(
                envelope,
                self.key,
                cluster=self.cluster,
                node_id=node_id,
                cluster_id=self.cluster_id or "",
            )
        except InvalidEnvelope as exc:
            # Not an answer: the request goes on waiting for the node's own reply.
            self.dropped[exc.reason.value] += 1
            self._once.warn(exc.reason.value, "request client dropped a reply: %s", exc)
            return
        if not future.done():
            future.set_result(envelope)

    async def close(self) -> None:
        """Close the connection; pending requests fail with TransportError. Idempotent."""
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(TransportError("RpcClient closed"))
        self._pending.clear()
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            await connection.close()
