"""What a subscriber receives: the committed message model, its parsing from an AMQP
delivery (live or replayed), and the queue names of named subscriptions.

Wire format: docs/protocol.md sections 6 and 7 (headers ``raftmq-index``, ``raftmq-term``,
``raftmq-prev-index``; the body and properties are the producer's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raftmq._amqp.delivery import Delivered, properties
from raftmq.protocol import names
from raftmq.protocol.record import HeaderValue

__all__ = ["CommittedMessage", "parse_delivered"]

_PLAIN = frozenset((str, int, float, bool))  # header value types kept as they are


@dataclass(frozen=True, slots=True)
class CommittedMessage:
    """One committed write. Invariant: index > 0 and index is unique in the log."""

    index: int  # log index (strictly increasing along one Subscriber)
    term: int  # term of the entry
    body: bytes  # the producer's body, byte for byte
    headers: dict[str, HeaderValue]  # producer headers plus the raftmq-* headers
    content_type: str | None  # the producer's content type
    message_id: str | None  # the producer's message id


def _narrowed(raw: dict[str, Any]) -> dict[str, HeaderValue]:
    """The str/int/float/bool values of a header table (bytes decoded as text)."""
    headers: dict[str, HeaderValue] = {}
    for key, value in raw.items():
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        if isinstance(value, str | int | float | bool):
            headers[key] = value
    return headers


def parse_delivered(delivered: Delivered) -> tuple[CommittedMessage, int]:
    """A committed (or replayed) raw delivery as (CommittedMessage, prev_index).
    The decoded header table becomes the message's headers as it is when every value
    already is a str/int/float/bool (the common case): nobody else holds it."""
    props = properties(delivered)
    raw: dict[str, Any] = props.headers if props.headers is not None else {}
    headers: dict[str, HeaderValue] = raw
    for value in raw.values():
        if type(value) not in _PLAIN:
            headers = _narrowed(raw)
            break
    committed = CommittedMessage(
        index=int(raw[names.H_INDEX]),
        term=int(raw[names.H_TERM]),
        body=delivered.body,
        headers=headers,
        content_type=props.content_type,
        message_id=props.message_id,
    )
    return committed, int(raw.get(names.H_PREV_INDEX, 0))
