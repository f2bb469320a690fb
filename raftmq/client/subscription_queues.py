"""The queues of a named subscription, bounded (docs/protocol.md §1, docs/operations.md
"Subscriptions").

An abandoned named subscription used to keep every committed message forever (one held
114,309 messages, about 200 MB of broker memory). Its queue now has a length bound, a
byte bound and an expiry:

- ``x-max-length`` / ``x-max-length-bytes`` with ``x-overflow=drop-head``: the broker
  drops the oldest ready messages. Nothing is lost to the application: the next message's
  ``raftmq-prev-index`` is then above the subscriber's last index, a gap it fills from
  replay (§6), in order, once.
- ``x-expires`` on both queues: the broker deletes a queue nobody consumed, declared or
  read for that long. The position queue has no consumer, so a running Subscriber
  redeclares it every ``keep_alive`` seconds, and it expires ``keep_alive`` seconds later
  than the subscription queue: a position never vanishes before the queue it describes
  (a queue without its position would start again per ``start`` with its old messages).

RabbitMQ refuses to redeclare a queue with other arguments (PRECONDITION_FAILED closes the
channel), so the arguments are tried on a channel of their own first. A subscription
created before queues had bounds is unbounded; the default Subscriber still opens it,
unbounded, with a warning (:func:`declare_arguments`): the defaults apply to new queues.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, TypeAlias

from aio_pika.abc import AbstractConnection
from aio_pika.exceptions import ChannelPreconditionFailed

from raftmq.errors import ConfigError
from raftmq.protocol.names import position_queue, subscription_queue

__all__ = [
    "DEFAULT_EXPIRES",
    "DEFAULT_MAX_LENGTH",
    "DEFAULT_MAX_LENGTH_BYTES",
    "Bounds",
    "declare_arguments",
]

FieldTable: TypeAlias = dict[str, Any]  # a queue's x-arguments (pamqp's, without pamqp)

logger = logging.getLogger("raftmq.client.subscription_queues")

# 100,000 messages held about 175 MB of broker memory in the measurement (small
# bodies: headers dominate); a subscriber further behind replays the rest from the nodes.
DEFAULT_MAX_LENGTH = 100_000  # ready messages a named subscription queue holds at most
DEFAULT_MAX_LENGTH_BYTES = 256 * 1024 * 1024  # bytes of bodies it holds at most
# Long enough for a stopped consumer to come back after a long weekend; after it, the
# subscription is gone and starts again per ``start`` (set None to keep it forever).
DEFAULT_EXPIRES = 7 * 24 * 3600.0  # seconds unused before the broker deletes it

_KEEP_ALIVE_MAX = 3600.0  # seconds: the longest pause between position queue redeclares


@dataclass(frozen=True, slots=True)
class Bounds:
    """The bounds of a named subscription's queues (None: no such bound)."""

    max_length: int | None = DEFAULT_MAX_LENGTH  # ready messages; >= 1
    max_length_bytes: int | None = DEFAULT_MAX_LENGTH_BYTES  # bytes of bodies; >= 1
    expires: float | None = DEFAULT_EXPIRES  # seconds unused; whole milliseconds, > 0

    def check(self) -> None:
        """Raise ConfigError for a bound the broker would refuse."""
        lengths = (("max_length", self.max_length), ("max_length_bytes", self.max_length_bytes))
        for what, value in lengths:
            if value is not None and not 1 <= value < 1 << 63:
                raise ConfigError(f"{what} must be >= 1 (or None: unbounded), not {value!r}")
        if self.expires is not None and not 0.001 <= self.expires < (1 << 31) / 1000:
            raise ConfigError(
                f"expires must be at least 0.001 seconds (or None: never), not {self.expires!r}"
            )

    def describe(self) -> str:
        """The bounds as a reader would set them: ``max_length=..., ...``."""
        return (
            f"max_length={self.max_length}, max_length_bytes={self.max_length_bytes}, "
            f"expires={self.expires}"
        )

    @property
    def keep_alive(self) -> float | None:
        """Seconds between redeclares of the position queue while subscribed (None: it
        does not expire)."""
        return None if self.expires is None else min(self.expires / 4, _KEEP_ALIVE_MAX)

    def queue_arguments(self) -> FieldTable:
        """The arguments of the subscription queue ``raftmq.C.sub.NAME``."""
        arguments: FieldTable = {}
        if self.max_length is not None:
            arguments["x-max-length"] = self.max_length
        if self.max_length_bytes is not None:
            arguments["x-max-length-bytes"] = self.max_length_bytes
        if arguments:
            arguments["x-overflow"] = "drop-head"  # the default, stated: a gap, never a nack
        if self.expires is not None:
            arguments["x-expires"] = _milliseconds(self.expires)
        return arguments

    def position_arguments(self) -> FieldTable:
        """The arguments of the position queue ``raftmq.C.sub.NAME.position``: it expires
        one keep-alive later than the subscription queue, never before it."""
        arguments: FieldTable = {"x-max-length": 1}
        if self.expires is not None and self.keep_alive is not None:
            arguments["x-expires"] = _milliseconds(self.expires + self.keep_alive)
        return arguments


UNBOUNDED = Bounds(None, None, None)
"""The queues of a subscription made before raftmq bounded them."""


_UNBOUNDED_POSITION = UNBOUNDED.position_arguments()  # {"x-max-length": 1}


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


async def declare_arguments(
    connection: AbstractConnection, cluster: str, name: str, bounds: Bounds
) -> tuple[FieldTable, FieldTable]:
    """The arguments the queues of subscription ``name`` can be declared with (subscription
    queue, position queue), having declared each: ``bounds``' for a new queue or one that
    has them; an unbounded one's when ``bounds`` are the defaults (made before bounds
    existed: opened as it is, with a warning). Any other mismatch raises ConfigError.

    Defaults that also open the old unbounded queues, rather than a passive declare first
    (which cannot tell a queue's arguments): a new queue always gets its bounds, and the
    arguments kept for aio-pika's redeclare after a reconnect are ones the queue has."""
    queues = (
        (subscription_queue(cluster, name), bounds.queue_arguments(), UNBOUNDED.queue_arguments()),
        (position_queue(cluster, name), bounds.position_arguments(), _UNBOUNDED_POSITION),
    )
    chosen: list[FieldTable] = []
    for queue, wanted, unbounded in queues:
        refused = await _declare(connection, queue, wanted)
        if refused is None:
            chosen.append(wanted)
        elif bounds == Bounds() and await _declare(connection, queue, unbounded) is None:
            logger.warning(
                "subscription %s of cluster %s has no bounds (%s was made before raftmq "
                "bounded subscription queues); to bound it, delete it with `raftmq "
                "subscriptions delete %s --cluster %s` (its position is lost)",
                name, cluster, queue, name, cluster,
            )  # fmt: skip
            chosen.append(unbounded)
        else:
            raise ConfigError(
                f"subscription {name!r} of cluster {cluster!r} exists with other bounds than "
                f"asked ({bounds.describe()}): delete it with `raftmq subscriptions delete "
                f"{name} --cluster {cluster}` (its position is lost), or open it with the "
                f"bounds it was made with (the broker said: {refused})"
            )
    return chosen[0], chosen[1]


async def _declare(connection: AbstractConnection, queue: str, arguments: FieldTable) -> str | None:
    """Declare durable ``queue`` with ``arguments`` on a channel of its own (a refusal closes
    the channel); None when it worked, else the broker's reason."""
    channel = await connection.channel()
    try:
        await channel.declare_queue(queue, durable=True, arguments=arguments)
    except ChannelPreconditionFailed as exc:
        return str(exc.args[0] if exc.args else exc)
    finally:
        if not channel.is_closed:
            await channel.close()
    return None
