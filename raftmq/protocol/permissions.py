"""The broker permission layout of a cluster: what each kind of account may configure,
write and read (docs/protocol.md, "Broker permissions").

RabbitMQ grants per vhost three regular expressions per user, matched against queue and
exchange names: *configure* (declare, delete), *write* (publish to an exchange, bind a
queue) and *read* (consume, get, purge, bind from an exchange). Publishing through the
default exchange needs write on ``amq.default``, which reaches every queue of the vhost;
so only nodes get it, and producers and subscribers publish through the cluster's named
exchanges (``raftmq.C.writes``, ``raftmq.C.replay``, ``raftmq.C.positions``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from raftmq.errors import ConfigError

_CLUSTER = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class Role(StrEnum):
    """The kinds of broker account of a cluster."""

    NODE = "node"  # raftmq nodes and operator commands (status, write, transfer-leadership)
    PRODUCER = "producer"  # publishes writes, reads its receipts
    SUBSCRIBER = "subscriber"  # reads committed messages, asks for replays, keeps positions


@dataclass(frozen=True, slots=True)
class Grant:
    """The three permission patterns of one role (RabbitMQ ``set_permissions``)."""

    role: Role
    configure: str  # names it may declare and delete
    write: str  # exchanges it may publish to, queues it may bind
    read: str  # queues it may consume, exchanges it may bind from


def layout(cluster: str) -> tuple[Grant, Grant, Grant]:
    """The grants of the node, producer and subscriber roles of ``cluster``."""
    if not _CLUSTER.match(cluster):
        raise ConfigError(f"cluster name {cluster!r} must match {_CLUSTER.pattern}")
    own = rf"raftmq\.{cluster}\."  # every name of the cluster starts with this
    return (
        Grant(
            Role.NODE,
            configure=rf"^{own}",
            # amq.default: Raft traffic to inboxes, receipts and replay answers to reply_to
            write=rf"^({own}|amq\.default$)",
            read=rf"^({own}|amq\.rabbitmq\.reply-to)",
        ),
        Grant(
            Role.PRODUCER,
            configure=rf"^{own}reply\.",  # its own receipt queues
            write=rf"^{own}writes$",  # the writes exchange, nothing else
            read=rf"^{own}reply\.",
        ),
        Grant(
            Role.SUBSCRIBER,
            configure=rf"^{own}(sub|replay-reply)\.",  # its subscription and reply queues
            # its own queues (to bind them), replay requests and positions
            write=rf"^{own}(sub\.|replay-reply\.|replay$|positions$)",
            read=rf"^{own}(sub\.|replay-reply\.|committed$|positions$)",
        ),
    )
