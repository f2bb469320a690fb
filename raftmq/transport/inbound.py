"""What both transports do around a node's inbox: decode, count and dispatch inbound
envelopes; encode and correlate outbound messages (:class:`Endpoint` wires it together).

Raft messages go to the node's ``on_message``; client requests (a non-Raft AMQP
type carrying ``reply_to`` and ``correlation_id``) go to ``on_request`` and the
answer is handed back to the transport to publish. Everything else is dropped,
counted per reason and logged once per reason -- never raised into the node.

With a cluster key, every outbound envelope is signed and every inbound one must carry
a MAC of that key and of the cluster's id (:mod:`raftmq.protocol.auth`) before its body is
even parsed; without one (an ``--insecure`` node) nothing is signed or checked. A message
of another cluster id is logged once per sender: it means a node of another bootstrap of
the same cluster name is running, which an operator must hear about.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections import deque
from collections.abc import Callable

from raftmq.core.messages import Message
from raftmq.errors import DropReason, InvalidEnvelope, TransportError
from raftmq.protocol.auth import ClusterKey
from raftmq.protocol.codec import (
    RAFT_MESSAGE_TYPES,
    REPLY_TO_REQUEST,
    Envelope,
    check_envelope,
    decode_checked,
    encode_body,
)
from raftmq.transport.port import MessageHandler, RequestHandler, TransportStats

log = logging.getLogger("raftmq.transport")

ReplySender = Callable[[str, Envelope], None]
"""Publishes a client-facing reply envelope to the given ``reply_to`` address."""

_REQUEST_TYPES = frozenset(REPLY_TO_REQUEST.values())  # Raft messages that expect a reply
_MAX_CORRELATED_PEERS = 1024  # bound on remembered (peer, request type) keys
_MAX_CORRELATIONS_PER_KEY = 64  # bound on pipelined requests remembered per key
_MAX_FOREIGN_SENDERS = 256  # senders of another cluster id warned about (then debug only)


class OnceLogger:
    """Logs a warning the first time each reason occurs, then only at debug level."""

    def __init__(self) -> None:
        self._seen: set[str] = set()  # reasons already warned about

    def warn(self, reason: str, msg: str, *args: object) -> None:
        """Warn once per ``reason``; later occurrences go to debug."""
        if reason in self._seen:
            log.debug(msg, *args)
        else:
            self._seen.add(reason)
            log.warning(msg + " (further drops for this reason are logged at debug)", *args)


class Correlator:
    """Remembers request correlation ids so that Raft replies can carry them.

    The core builds replies without any wire context; replies to one peer come in
    the order its requests were stepped, so a bounded FIFO per (peer, type) suffices.
    """

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str], deque[str]] = {}  # (peer, request type) -> ids

    def remember(self, message: Message, correlation_id: str | None) -> None:
        """Record the correlation id of an inbound request."""
        if correlation_id is None or message.type not in REPLY_TO_REQUEST.values():
            return
        key = (message.sender, message.type)
        queue = self._pending.get(key)
        if queue is None:
            if len(self._pending) >= _MAX_CORRELATED_PEERS:
                self._pending.clear()  # forged sender ids must not grow memory without bound
            queue = self._pending[key] = deque(maxlen=_MAX_CORRELATIONS_PER_KEY)
        queue.append(correlation_id)

    def take(self, message: Message) -> str | None:
        """The correlation id an outbound reply should carry, if its request was seen."""
        request_type = REPLY_TO_REQUEST.get(message.type)
        if request_type is None:
            return None
        queue = self._pending.get((message.recipient, request_type))
        return queue.popleft() if queue else None


class InboundDispatcher:
    """Decodes inbound envelopes for one node and dispatches them."""

    def __init__(
        self,
        *,
        cluster: str,
        node_id: str,
        max_bytes: int,
        stats: TransportStats,
        correlator: Correlator,
        send_reply: ReplySender,
        key: ClusterKey | None,
        cluster_id: str,
    ) -> None:
        self.cluster = cluster  # messages of other clusters are dropped
        self.key = key  # inbound must be signed with it, replies are; None: insecure
        self.cluster_id = cluster_id  # signed into every message; "" until the node knows it
        self.node_id = node_id  # messages for other recipients are dropped
        self.max_bytes = max_bytes  # inbound size limit
        self.stats = stats  # shared with the owning transport
        self._correlator = correlator  # shared with the owning transport's send path
        self._send_reply = send_reply  # publishes a client-facing reply
        self._once = OnceLogger()
        self._foreign: set[tuple[str, str]] = set()  # (cluster id, sender) already warned of
        self._on_message: MessageHandler | None = None
        self._on_request: RequestHandler | None = None
        self._request_tasks: set[asyncio.Task[None]] = set()  # in-flight on_request calls

    def bind(self, on_message: MessageHandler, on_request: RequestHandler | None) -> None:
        """Install the node's handlers (called from ``Transport.start``)."""
        self._on_message = on_message
        self._on_request = on_request

    def dispatch(self, envelope: Envelope) -> None:
        """Handle one inbound envelope; never raises."""
        if envelope.type not in RAFT_MESSAGE_TYPES and envelope.reply_to is not None:
            self._serve_request(envelope)
            return
        try:
            self._admit(envelope)
            message = decode_checked(envelope, recipient=self.node_id)
        except InvalidEnvelope as exc:
            self._drop(exc, envelope)
            return
        self._correlator.remember(message, envelope.correlation_id)
        self.stats.received += 1
        if self._on_message is None:
            return
        try:
            self._on_message(message)
        except Exception:
            log.exception("on_message handler failed for %s from %s", message.type, message.sender)

    def _admit(self, envelope: Envelope) -> None:
        """Size, cluster, then the MAC: raise InvalidEnvelope unless all hold."""
        check_envelope(envelope, cluster=self.cluster, max_bytes=self.max_bytes)
        if self.key is not None:
            self.key.verify(envelope, sender="", recipient=self.node_id, cluster_id=self.cluster_id)

    def _drop(self, exc: InvalidEnvelope, envelope: Envelope) -> None:
        self.stats.dropped[exc.reason.value] += 1
        if exc.reason is DropReason.OTHER_CLUSTER_ID:
            self._warn_foreign(exc, envelope)
            return
        self._once.warn(
            exc.reason.value, "node %s dropped an inbound message: %s", self.node_id, exc
        )

    def _warn_foreign(self, exc: InvalidEnvelope, envelope: Envelope) -> None:
        """Warn once per (cluster id, sender): each names a process to stop or fix."""
        sender = "a request client"
        if envelope.type in RAFT_MESSAGE_TYPES:
            try:  # the body is size-checked; parsed only on this rare path
                named = json.loads(envelope.body).get("sender")
            except (ValueError, AttributeError):
                named = None
            sender = f"node {named[:64]!r}" if isinstance(named, str) else "an unnamed sender"
        seen = (exc.detail, sender)
        if seen in self._foreign or len(self._foreign) >= _MAX_FOREIGN_SENDERS:
            log.debug("node %s dropped a message of %s: %s", self.node_id, sender, exc)
            return
        self._foreign.add(seen)
        log.warning(
            "node %s dropped a message of %s signed for another bootstrap of cluster %s "
            "(other_cluster_id: %s): "
            "a node of an old or other cluster of this name is running; stop it, or give it "
            "its own cluster name (further drops from it are logged at debug)",
            self.node_id, sender, self.cluster, exc.detail,
        )  # fmt: skip

    def _serve_request(self, envelope: Envelope) -> None:
        try:
            self._admit(envelope)
            if self._on_request is None or envelope.type is None:
                raise InvalidEnvelope(
                    DropReason.UNKNOWN_TYPE, f"request kind {envelope.type!r} is not served"
                )
        except InvalidEnvelope as exc:
            self._drop(exc, envelope)
            return
        task = asyncio.get_running_loop().create_task(
            self._answer(self._on_request, envelope.type, envelope)
        )
        self._request_tasks.add(task)
        task.add_done_callback(self._request_tasks.discard)

    async def _answer(self, handler: RequestHandler, kind: str, envelope: Envelope) -> None:
        try:
            body, status = await handler(kind, envelope.body), "ok"
        except Exception as exc:
            log.debug("request %r failed on node %s: %s", kind, self.node_id, exc)
            body, status = f"{type(exc).__name__}: {exc}".encode(), "error"
        self.stats.requests_served += 1
        assert envelope.reply_to is not None  # only requests with reply_to reach here
        reply = Envelope(
            body=body,
            type="reply",
            cluster=self.cluster,
            correlation_id=envelope.correlation_id,
            status=status,
        )
        if self.key is not None:
            reply = self.key.sign(
                reply, sender=self.node_id, recipient="", cluster_id=self.cluster_id
            )
        self._send_reply(envelope.reply_to, reply)

    async def close(self) -> None:
        """Cancel requests still being served."""
        tasks = list(self._request_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Endpoint:
    """The part of one node's transport that does not depend on the network: counters,
    correlation ids, the inbound dispatcher and the outbound envelopes. Both adapters
    build one, so the memory twin handles messages exactly like the broker transport."""

    def __init__(
        self,
        *,
        cluster: str,
        node_id: str,
        queue: str,
        max_bytes: int,
        send_reply: ReplySender,
        key: ClusterKey | None,
        cluster_id: str = "",
    ) -> None:
        self.cluster = cluster  # the cluster name carried by every envelope
        self.key = key  # signs every outbound envelope; None: insecure (nothing signed)
        self.node_id = node_id  # whose inbox this is
        self.queue = queue  # this node's inbox: the reply_to of its Raft requests
        self.max_bytes = max_bytes  # size limit, both directions
        self.stats = TransportStats()  # the owning transport's counters
        self.once = OnceLogger()  # warns once per outbound drop reason
        self._correlator = Correlator()
        self.dispatcher = InboundDispatcher(
            cluster=cluster,
            node_id=node_id,
            max_bytes=max_bytes,
            stats=self.stats,
            correlator=self._correlator,
            send_reply=send_reply,
            key=key,
            cluster_id=cluster_id,
        )
        self._ids = itertools.count(1)  # numbers the correlation ids of Raft requests

    @property
    def cluster_id(self) -> str:
        """The cluster's id, signed into every message ("" until the node knows it)."""
        return self.dispatcher.cluster_id

    @cluster_id.setter
    def cluster_id(self, cluster_id: str) -> None:
        self.dispatcher.cluster_id = cluster_id

    def check_startable(self, name: str) -> None:
        """Raise TransportError when a signing transport does not know its cluster id."""
        if self.key is not None and not self.cluster_id:
            raise TransportError(f"{name}: the cluster id must be set before start")

    def envelope(self, message: Message) -> Envelope | None:
        """The envelope of an outbound Raft message, or None when it is too big to send
        (dropped and counted). A request carries this node's inbox as ``reply_to`` and a
        fresh correlation id; a reply carries the correlation id of its request."""
        reply_to = correlation_id = None
        if message.type in _REQUEST_TYPES:
            reply_to, correlation_id = self.queue, f"{self.node_id}-{next(self._ids)}"
        else:
            correlation_id = self._correlator.take(message)
        body = encode_body(message)
        if len(body) > self.max_bytes:
            self.drop_send("oversized", message)
            return None
        if self.key is None:
            return Envelope(body, message.type, self.cluster, reply_to, correlation_id)
        return self.key.signed(
            body, message.type, self.cluster, reply_to, correlation_id, None,
            sender="", recipient=message.recipient, cluster_id=self.cluster_id,
        )  # fmt: skip

    def drop_send(self, reason: str, message: Message) -> None:
        """Count an outbound message that is not sent, and warn once per ``reason``."""
        self.stats.send_dropped[reason] += 1
        self.once.warn(
            f"send-{reason}", "node %s dropped a %s to %s: %s",
            self.node_id, message.type, message.recipient, reason,
        )  # fmt: skip
