"""In-memory twin of the AMQP transport, for node-level tests without a broker.

A :class:`MemoryNetwork` plays the broker: it holds one inbox per node (named
like the AMQP queue, kept across a node's restart), applies per-message TTL and
the drop-head length bound while nobody consumes an inbox, and can drop, delay,
duplicate, reorder and partition traffic with a seeded random generator. Inbound
envelopes go through the same codec and dispatcher as on the real broker, and are signed
with the network's cluster key unless the network is created ``insecure``. It also holds
the clusters' bootstrap records (:class:`MemoryClusterIdentity`), and a random cluster id
of its own that its endpoints and clients use until a node admits another.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import random
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from raftmq.core.messages import Message
from raftmq.errors import InvalidEnvelope, RequestFailed, RequestTimeout
from raftmq.protocol.auth import ClusterKey, check_reply
from raftmq.protocol.bootstrap import BootstrapRecord, admit_record, new_cluster_id
from raftmq.protocol.codec import DEFAULT_MAX_MESSAGE_BYTES, Envelope
from raftmq.protocol.names import inbox_queue
from raftmq.transport.inbound import Endpoint
from raftmq.transport.port import MessageHandler, RequestHandler

log = logging.getLogger("raftmq.transport.memory")

NETWORK_KEY: Literal["network"] = "network"
"""Default ``key`` of endpoints and clients: the cluster key of their network."""


@dataclass
class _Inbox:
    """A node's queue on the in-memory broker."""

    max_length: int  # drop-head bound while nobody consumes
    consumer: MemoryTransport | None = None  # None while stopped: messages wait
    backlog: deque[tuple[float, Envelope]] = field(default_factory=deque)  # (expires at, msg)


class MemoryNetwork:
    """An asyncio in-memory broker with fault injection. All knobs may be changed any time.

    ``drop_rate`` / ``duplicate_rate`` / ``reorder_rate`` are probabilities per message;
    ``delay`` is a (low, high) range of seconds; a reordered message is held back an
    extra ``reorder_delay`` seconds at most. Same seed, same fault decisions. Endpoints
    and clients sign with the network's random cluster key ``key`` (None when
    ``insecure``) unless given another.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        drop_rate: float = 0.0,
        duplicate_rate: float = 0.0,
        delay: tuple[float, float] = (0.0, 0.0),
        reorder_rate: float = 0.0,
        reorder_delay: float = 0.02,
        insecure: bool = False,
    ) -> None:
        self.random = random.Random(seed)  # the only source of fault decisions
        self.drop_rate = drop_rate  # probability a message is lost
        self.duplicate_rate = duplicate_rate  # probability a message is delivered twice
        self.delay = delay  # (low, high) delivery delay in seconds
        self.reorder_rate = reorder_rate  # probability a message is held back extra
        self.reorder_delay = reorder_delay  # maximum extra hold-back in seconds
        self.stats: Counter[str] = Counter()  # network-level fates: dropped, expired, ...
        # Not drawn from self.random: a key must not shift the seeded fault decisions.
        self.key = None if insecure else ClusterKey(os.urandom(32))  # the cluster key
        self.cluster_id = new_cluster_id()  # the id endpoints sign with unless told another
        self.records: dict[str, BootstrapRecord] = {}  # cluster name -> bootstrap record
        self._inboxes: dict[str, _Inbox] = {}  # queue name -> inbox (survives node restarts)
        self._groups: dict[str, int] = {}  # node id -> partition group; empty = no partition
        self._isolated: set[str] = set()  # nodes cut from everyone
        self._replies: dict[str, asyncio.Future[Envelope]] = {}  # reply address -> waiter
        self._reply_ids = itertools.count(1)

    def transport(
        self,
        node_id: str,
        cluster: str = "memory",
        *,
        message_ttl_ms: int = 1000,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        inbox_max_length: int = 10_000,
        key: ClusterKey | Literal["network"] | None = NETWORK_KEY,
        cluster_id: str | None = None,
    ) -> MemoryTransport:
        """A transport endpoint for ``node_id`` on this network (``key``: another key,
        or None for an unsigned endpoint, e.g. to play a forger; ``cluster_id``: another
        than the cluster's, e.g. to play a node of another bootstrap)."""
        return MemoryTransport(
            self,
            node_id,
            cluster,
            key=self.key if key == NETWORK_KEY else key,
            cluster_id=cluster_id or self.id_of(cluster),
            message_ttl_ms=message_ttl_ms,
            max_message_bytes=max_message_bytes,
            inbox_max_length=inbox_max_length,
        )

    def client(
        self,
        cluster: str = "memory",
        *,
        timeout: float = 2.0,
        key: ClusterKey | Literal["network"] | None = NETWORK_KEY,
    ) -> MemoryRequestClient:
        """A client-facing request client (twin of :class:`raftmq.transport.rpc.RpcClient`)."""
        return MemoryRequestClient(
            self, cluster, timeout=timeout, key=self.key if key == NETWORK_KEY else key
        )

    def identity(self, cluster: str, voters: Iterable[str]) -> MemoryClusterIdentity:
        """The cluster identity of a node with ``voters`` (twin of the broker's)."""
        return MemoryClusterIdentity(self, cluster, tuple(voters))

    def id_of(self, cluster: str) -> str:
        """The id of ``cluster`` on this network: its record's, else the network's own."""
        record = self.records.get(cluster)
        return record.cluster_id if record is not None else self.cluster_id

    # -- fault injection ---------------------------------------------------------------
    def partition(self, *groups: Iterable[str]) -> None:
        """Only nodes of the same group talk; nodes named in no group form one more group."""
        self._groups = {node: i for i, group in enumerate(groups) for node in group}

    def disconnect(self, node_id: str) -> None:
        """Cut ``node_id`` from every other node (until :meth:`connect` or :meth:`heal`)."""
        self._isolated.add(node_id)

    def connect(self, node_id: str) -> None:
        """Undo :meth:`disconnect` for ``node_id``."""
        self._isolated.discard(node_id)

    def heal(self) -> None:
        """Remove every partition and disconnection."""
        self._groups = {}
        self._isolated.clear()

    def inject(self, queue: str, envelope: Envelope, *, ttl_ms: int | None = None) -> None:
        """Put a raw envelope into a queue, bypassing faults (tests of bad input)."""
        self._enqueue(queue, envelope, ttl_ms)

    def can_talk(self, sender: str, recipient: str) -> bool:
        """Whether the current partition lets ``sender`` reach ``recipient``."""
        if sender in self._isolated or recipient in self._isolated:
            return sender == recipient
        return self._groups.get(sender, -1) == self._groups.get(recipient, -1)

    # -- delivery ----------------------------------------------------------------------
    def route(self, sender: str, recipient: str, envelope: Envelope, ttl_ms: int | None) -> None:
        """Carry one envelope from ``sender`` to ``recipient``'s inbox, applying faults."""
        if not self.can_talk(sender, recipient):
            self.stats["partitioned"] += 1
            return
        rng = self.random
        if self.drop_rate and rng.random() < self.drop_rate:
            self.stats["dropped"] += 1
            return
        copies = 2 if self.duplicate_rate and rng.random() < self.duplicate_rate else 1
        queue = inbox_queue(envelope.cluster or "", recipient)
        loop = asyncio.get_running_loop()
        for _ in range(copies):
            delay = rng.uniform(*self.delay) if self.delay[1] > 0 else 0.0
            if self.reorder_rate and rng.random() < self.reorder_rate:
                delay += rng.uniform(0.0, self.reorder_delay)
            if delay > 0:
                loop.call_later(delay, self._enqueue, queue, envelope, ttl_ms)
            else:
                loop.call_soon(self._enqueue, queue, envelope, ttl_ms)

    def declare(self, queue: str, max_length: int) -> _Inbox:
        """Create a queue if it does not exist (like an AMQP queue declaration)."""
        inbox = self._inboxes.get(queue)
        if inbox is None:
            inbox = self._inboxes[queue] = _Inbox(max_length=max_length)
        return inbox

    def delete(self, queue: str) -> None:
        """Delete a queue and whatever waits in it."""
        self._inboxes.pop(queue, None)

    def _enqueue(self, queue: str, envelope: Envelope, ttl_ms: int | None) -> None:
        waiter = self._replies.pop(queue, None)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(envelope)
            return
        inbox = self._inboxes.get(queue)
        if inbox is None:
            self.stats["unroutable"] += 1  # like the default exchange: no queue, no message
            return
        if inbox.consumer is not None:
            inbox.consumer.deliver(envelope)
            return
        expires = math.inf if ttl_ms is None else asyncio.get_running_loop().time() + ttl_ms / 1000
        inbox.backlog.append((expires, envelope))
        if len(inbox.backlog) > inbox.max_length:
            inbox.backlog.popleft()  # x-overflow: drop-head
            self.stats["overflow"] += 1

    def drain(self, inbox: _Inbox) -> None:
        """Deliver an inbox's unexpired backlog to its (new) consumer."""
        now = asyncio.get_running_loop().time()
        while inbox.backlog and inbox.consumer is not None:
            expires, envelope = inbox.backlog.popleft()
            if expires < now:
                self.stats["expired"] += 1  # the broker discards expired messages unseen
                continue
            inbox.consumer.deliver(envelope)

    def expect_reply(self, address: str | None = None) -> tuple[str, asyncio.Future[Envelope]]:
        """A one-shot reply address (a new one, or ``address`` again) and the future its
        next reply resolves."""
        address = address or f"memory.reply.{next(self._reply_ids)}"
        future: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._replies[address] = future
        return address, future

    def reply_addresses(self) -> list[str]:
        """The reply addresses clients wait on now (where a test forges a reply)."""
        return list(self._replies)

    def forget_reply(self, address: str) -> None:
        """Stop waiting on a reply address (timeout or close)."""
        self._replies.pop(address, None)


class MemoryTransport:
    """One node's endpoint on a :class:`MemoryNetwork`; implements the Transport port."""

    def __init__(
        self,
        network: MemoryNetwork,
        node_id: str,
        cluster: str,
        *,
        key: ClusterKey | None,
        cluster_id: str,
        message_ttl_ms: int,
        max_message_bytes: int,
        inbox_max_length: int,
    ) -> None:
        self.network = network  # the broker twin this endpoint lives on
        self.node_id = node_id  # whose inbox this transport consumes
        self.cluster = cluster  # messages of other clusters are dropped
        self.key = key  # signs outbound, required of inbound; None: insecure
        self.queue = inbox_queue(cluster, node_id)  # this node's inbox name
        self.message_ttl_ms = message_ttl_ms  # per-message expiration of outbound messages
        self.max_message_bytes = max_message_bytes  # size limit, both directions
        self.inbox_max_length = inbox_max_length  # drop-head bound of the inbox
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
        self._inbox: _Inbox | None = None  # set by start()
        self._started = False  # start() ran and stop() did not

    @property
    def cluster_id(self) -> str:
        """The cluster's id, signed into every message; set it before :meth:`start`."""
        return self._endpoint.cluster_id

    @cluster_id.setter
    def cluster_id(self, cluster_id: str) -> None:
        self._endpoint.cluster_id = cluster_id

    async def start(
        self, on_message: MessageHandler, on_request: RequestHandler | None = None
    ) -> None:
        """Declare the inbox and start consuming it."""
        self._endpoint.check_startable(self.queue)
        self._dispatcher.bind(on_message, on_request)
        self._inbox = self.network.declare(self.queue, self.inbox_max_length)
        self._started = True
        self._consume()

    def send(self, messages: Sequence[Message]) -> None:
        """Hand messages to the network; never raises."""
        endpoint = self._endpoint
        for message in messages:
            if not self._started:
                endpoint.drop_send("stopped", message)
                continue
            envelope = endpoint.envelope(message)
            if envelope is None:
                continue
            self.stats.sent += 1
            self.network.route(self.node_id, message.recipient, envelope, self.message_ttl_ms)

    async def stop(self) -> None:
        """Stop consuming; the inbox stays (like the AMQP queue) for a restart. Idempotent."""
        self._started = False
        if self._inbox is not None and self._inbox.consumer is self:
            self._inbox.consumer = None
        await self._dispatcher.close()

    def deliver(self, envelope: Envelope) -> None:
        """Called by the network for each envelope reaching this node's inbox."""
        self._dispatcher.dispatch(envelope)

    def _consume(self) -> None:
        assert self._inbox is not None
        self._inbox.consumer = self
        self.network.drain(self._inbox)

    def _send_reply(self, reply_to: str, envelope: Envelope) -> None:
        self.network.inject(reply_to, envelope)


class MemoryRequestClient:
    """Client-facing requests over a :class:`MemoryNetwork`; implements RequestClient."""

    def __init__(
        self, network: MemoryNetwork, cluster: str, *, timeout: float, key: ClusterKey | None
    ) -> None:
        self.network = network  # where the node inboxes live
        self.cluster = cluster  # requests are addressed to this cluster's node inboxes
        self.timeout = timeout  # default seconds to wait for an answer
        self.key = key  # signs requests, required of replies; None: insecure
        self.dropped: Counter[str] = Counter()  # replies dropped, by DropReason value
        self._ids = itertools.count(1)

    async def request(
        self, node_id: str, kind: str, body: bytes = b"", *, timeout: float | None = None
    ) -> bytes:
        """Ask ``node_id`` and return its reply body."""
        address, future = self.network.expect_reply()
        envelope = Envelope(
            body=body,
            type=kind,
            cluster=self.cluster,
            reply_to=address,
            correlation_id=f"client-{next(self._ids)}",
        )
        cluster_id = self.network.id_of(self.cluster)
        if self.key is not None:
            envelope = self.key.sign(envelope, sender="", recipient=node_id, cluster_id=cluster_id)
        self.network.inject(inbox_queue(self.cluster, node_id), envelope)
        try:
            async with asyncio.timeout(timeout or self.timeout):
                while True:
                    reply = await future
                    try:
                        check_reply(
                            reply,
                            self.key,
                            cluster=self.cluster,
                            node_id=node_id,
                            cluster_id=cluster_id,
                        )
                        break
                    except InvalidEnvelope as exc:
                        # Not an answer: wait on for the node's own reply.
                        self.dropped[exc.reason.value] += 1
                        _, future = self.network.expect_reply(address)
        except TimeoutError:
            raise RequestTimeout(f"no answer from node {node_id!r} to {kind!r}") from None
        finally:
            self.network.forget_reply(address)
        if reply.status != "ok":
            raise RequestFailed(reply.body.decode(errors="replace"))
        return reply.body

    async def close(self) -> None:
        """Nothing to release: requests hold no network resources beyond their future."""


class MemoryClusterIdentity:
    """The cluster identity of one node on a :class:`MemoryNetwork` (twin of
    :class:`raftmq.transport.identity.AmqpClusterIdentity`): the network holds each
    cluster name's bootstrap record; the rules are the broker's."""

    def __init__(self, network: MemoryNetwork, cluster: str, voters: tuple[str, ...]) -> None:
        self.network = network  # holds the records
        self.cluster = cluster  # the cluster name the record is for
        self.voters = tuple(sorted(voters))  # this node's voter set
        self.record: BootstrapRecord | None = None  # the record, once admitted

    async def admit(self, stored: str | None) -> str:
        """The cluster id this node runs with (see ``admit_record``)."""
        proposal = BootstrapRecord.make(stored or self.network.cluster_id, self.voters)
        record = self.network.records.setdefault(self.cluster, proposal)
        cluster_id = admit_record(record, stored, self.voters, self.cluster)
        self.record = record
        return cluster_id
