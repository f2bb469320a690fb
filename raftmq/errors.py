"""The public exception tree, documented in one place.

::

    RaftMQError
    ├── ConfigError            invalid settings or core configuration
    ├── NotLeader              a write reached a follower (carries the leader hint)
    ├── WriteRejected          a write was refused, or lost its place to a new leader
    ├── StorageError           the database failed or is unusable
    │   ├── StoreMismatch      a foreign database (other node/cluster, unknown schema)
    │   └── StorageRefused     a save the store refuses whatever the retries
    ├── TransportError         the broker failed or refused
    │   ├── RequestFailed      a node answered a client request with an error
    │   └── RequestTimeout     no answer to a client request in time
    ├── MalformedMessage       bytes that do not decode into a valid message
    │   └── InvalidEnvelope    an inbound Raft message or request dropped (``reason``)
    ├── NodeStopped            the node is stopped or stopping
    ├── ClientNotOpen          a client used before it was started or after it was closed
    └── Compacted              replay asked for entries retention already deleted
"""

from __future__ import annotations

from enum import StrEnum


class RaftMQError(Exception):
    """Base of every error raised by raftmq."""


class ConfigError(RaftMQError, ValueError):
    """Settings or core configuration are invalid."""


class ConfigPending(ConfigError):
    """A membership change cannot be made yet (another one, or the leader's first entry
    of its term, is not committed): ask again shortly."""


class NotLeader(RaftMQError):
    """This node is not the leader; ``leader_hint`` is the known leader's id, if any."""

    def __init__(self, leader_hint: str | None, message: str | None = None) -> None:
        self.leader_hint = leader_hint
        super().__init__(message or f"not the leader (leader hint: {leader_hint or 'unknown'})")


class WriteRejected(RaftMQError):
    """A write was refused, or lost its place in the log before it committed."""


class StorageError(RaftMQError):
    """The database failed or cannot be used."""


class StoreMismatch(StorageError):
    """The database belongs to another node or cluster, is not a raftmq database,
    or has a schema this code does not know. Nothing was changed."""


class StorageRefused(StorageError):
    """A save the store refuses because of what the batch holds and what is stored (a term
    going backwards, a log that does not continue, a value no column can hold): nothing
    was written, and retrying the same batch cannot succeed."""


class TransportError(RaftMQError):
    """The broker connection failed or the broker refused an operation."""


class RequestFailed(TransportError):
    """The node answered a client-facing request with an error (the message says which)."""


class RequestTimeout(TransportError):
    """No answer to a client-facing request within its timeout (node down or unknown)."""


class MalformedMessage(RaftMQError):
    """Bytes that do not decode into a valid raftmq message."""


class NodeStopped(RaftMQError):
    """The node is stopped or stopping."""


class ClientNotOpen(RaftMQError):
    """A Producer, Subscriber or AdminClient was used before it was started (``async with``
    or ``start()``) or after it was closed."""


class Compacted(RaftMQError):
    """A subscriber asked for entries the cluster no longer holds: retention (or a
    snapshot) compacted everything before ``first_available``. ``wanted`` is the first
    index that was asked for; the entries ``wanted .. first_available - 1`` are gone.
    Resume from ``first_available`` (``Subscriber(start=exc.first_available)``) or let the
    subscription skip such gaps (``on_compacted="skip"``)."""

    def __init__(self, wanted: int, first_available: int) -> None:
        super().__init__(
            f"entries {wanted}..{first_available - 1} were compacted by the cluster's "
            f"retention; the first available index is {first_available}"
        )
        self.wanted = wanted  # the first index asked for
        self.first_available = first_available  # the oldest index the cluster still holds


class DropReason(StrEnum):
    """Why an inbound envelope was dropped (the keys of the per-reason counters)."""

    OVERSIZED = "oversized"  # body larger than the size limit
    GARBAGE = "garbage"  # body is not JSON
    UNKNOWN_TYPE = "unknown_type"  # AMQP type is neither a Raft message nor a servable request
    WRONG_CLUSTER = "wrong_cluster"  # app_id missing or names another cluster
    INVALID_FIELDS = "invalid_fields"  # JSON that is not a valid message (missing/wrong fields)
    TYPE_MISMATCH = "type_mismatch"  # AMQP type property disagrees with the body's type
    WRONG_RECIPIENT = "wrong_recipient"  # message addressed to another node
    UNSIGNED = "unsigned"  # node traffic without a MAC (the cluster key is required)
    BAD_MAC = "bad_mac"  # a MAC that does not match: another key, or altered after signing
    OTHER_CLUSTER_ID = "other_cluster_id"  # signed for another bootstrap of the cluster name


class InvalidEnvelope(MalformedMessage):
    """An inbound envelope that is dropped; ``reason`` says why."""

    def __init__(self, reason: DropReason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}")
