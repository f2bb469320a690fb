"""The wire envelope: how one Raft message or client request looks on the network.

An :class:`Envelope` is the broker-independent view of an AMQP message: the body
(the message as JSON), the AMQP ``type`` property (the message type), the
cluster name (the AMQP ``app_id`` property) and the request/reply properties.
Properties are kept few on purpose: encoding and decoding them is a large part of
the per-message CPU cost in pamqp (a header table costs more than the JSON body).
Node traffic is signed: the MAC travels in ``message_id``, the one short-string property
node traffic had no use for (:mod:`raftmq.protocol.auth`). Both transports (memory and
AMQP) decode inbound envelopes here, so bad input is judged by one set of rules. Every
rejection raises :class:`InvalidEnvelope`, a :class:`~raftmq.errors.MalformedMessage`
carrying a machine-readable ``reason``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from raftmq.core.messages import (
    MESSAGE_ADAPTER,
    AppendEntries,
    AppendEntriesReply,
    InstallSnapshot,
    InstallSnapshotReply,
    Message,
    ReadIndexReply,
    ReadIndexRequest,
    RequestVote,
    RequestVoteReply,
    TimeoutNow,
)
from raftmq.errors import DropReason, InvalidEnvelope

DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
"""Inbound bodies larger than this are dropped as ``oversized``."""

RAFT_MESSAGE_TYPES: frozenset[str] = frozenset(
    model.model_fields["type"].default
    for model in (
        RequestVote,
        RequestVoteReply,
        AppendEntries,
        AppendEntriesReply,
        TimeoutNow,
        InstallSnapshot,
        InstallSnapshotReply,
        ReadIndexRequest,
        ReadIndexReply,
    )
)
"""The AMQP ``type`` values of Raft messages; any other type is a client request kind."""

REPLY_TO_REQUEST: dict[str, str] = {
    RequestVoteReply.model_fields["type"].default: RequestVote.model_fields["type"].default,
    AppendEntriesReply.model_fields["type"].default: AppendEntries.model_fields["type"].default,
    InstallSnapshotReply.model_fields["type"].default: InstallSnapshot.model_fields["type"].default,
    ReadIndexReply.model_fields["type"].default: ReadIndexRequest.model_fields["type"].default,
}
"""Raft reply type -> the request type it answers (to carry the request's correlation_id)."""

SNAPSHOT_CHUNK_OVERHEAD = 64 * 1024
"""Bytes an InstallSnapshot body holds besides its chunk's base64 (fields and up to 255
voter ids of 64 characters: about 17 KiB), rounded up."""


def snapshot_chunk_body_bytes(chunk_bytes: int) -> int:
    """The largest body of an InstallSnapshot carrying ``chunk_bytes`` of state: the chunk
    travels as base64 (4 bytes per 3) in JSON. A transport whose ``max_message_bytes`` is
    below it drops such chunks as ``oversized``, so a node checks its configuration."""
    return 4 * ((chunk_bytes + 2) // 3) + SNAPSHOT_CHUNK_OVERHEAD


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message as it travels (broker-independent view of the AMQP properties)."""

    body: bytes  # JSON of the message, or an opaque request/reply body
    type: str | None  # AMQP `type`: a Raft message type or a client request kind
    cluster: str | None  # AMQP `app_id`: the cluster name; None when absent
    reply_to: str | None = None  # queue the answer goes to (requests only)
    correlation_id: str | None = None  # pairs a reply with its request
    status: str | None = None  # `raftmq-status` header on client-facing replies
    mac: str | None = None  # AMQP `message_id`: the MAC of node traffic (protocol.auth)


def encode(
    message: Message,
    cluster: str,
    *,
    reply_to: str | None = None,
    correlation_id: str | None = None,
) -> Envelope:
    """Wrap a Raft message for the wire."""
    return Envelope(
        body=encode_body(message),
        type=message.type,
        cluster=cluster,
        reply_to=reply_to,
        correlation_id=correlation_id,
    )


def encode_body(message: Message) -> bytes:
    """The body of a Raft message on the wire (its JSON)."""
    return MESSAGE_ADAPTER.dump_json(message)


def check_envelope(envelope: Envelope, *, cluster: str, max_bytes: int) -> None:
    """Checks shared by Raft messages and client requests: size first (cheap), then cluster."""
    if len(envelope.body) > max_bytes:
        raise InvalidEnvelope(
            DropReason.OVERSIZED, f"{len(envelope.body)} bytes > limit {max_bytes}"
        )
    if envelope.cluster != cluster:
        raise InvalidEnvelope(
            DropReason.WRONG_CLUSTER, f"cluster {envelope.cluster!r}, expected {cluster!r}"
        )


def decode(envelope: Envelope, *, cluster: str, recipient: str, max_bytes: int) -> Message:
    """Decode an inbound Raft message, or raise :class:`InvalidEnvelope` saying why not."""
    check_envelope(envelope, cluster=cluster, max_bytes=max_bytes)
    return decode_checked(envelope, recipient=recipient)


def decode_checked(envelope: Envelope, *, recipient: str) -> Message:
    """:func:`decode` of an envelope that already passed :func:`check_envelope` (and, on a
    cluster with a key, :meth:`~raftmq.protocol.auth.ClusterKey.verify`)."""
    if envelope.type not in RAFT_MESSAGE_TYPES:
        raise InvalidEnvelope(DropReason.UNKNOWN_TYPE, f"type {envelope.type!r}")
    try:
        message = MESSAGE_ADAPTER.validate_json(envelope.body)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):
            raise InvalidEnvelope(DropReason.GARBAGE, "body is not JSON") from None
        raise InvalidEnvelope(
            DropReason.INVALID_FIELDS, f"{exc.error_count()} validation error(s)"
        ) from None
    if message.type != envelope.type:
        raise InvalidEnvelope(
            DropReason.TYPE_MISMATCH, f"property {envelope.type!r}, body {message.type!r}"
        )
    if message.recipient != recipient:
        raise InvalidEnvelope(
            DropReason.WRONG_RECIPIENT, f"recipient {message.recipient!r}, this is {recipient!r}"
        )
    return message
