"""What a subscriber receives: the committed message model, its parsing from an AMQP
delivery (live or replayed), and the queue names of named subscriptions.

Wire format: docs/protocol.md sections 6 and 7 (headers ``raftmq-index``, ``raftmq-term``,
``raftmq-prev-index``; the body and properties are the producer's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raftmq._amqp.delivery import Delivered, properties
from raftmq.errors import MalformedMessage
from raftmq.protocol import names
from raftmq.protocol.record import HeaderValue

__all__ = ["CommittedMessage", "parse_delivered"]

_PLAIN = frozenset((str, int, float, bool))  # header value types kept as they are
_MAX_INDEX = (1 << 63) - 1  # indexes and terms are int64 on the wire and in storage


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


def _number(raw: dict[str, Any], name: str, lowest: int) -> int:
    """Header ``name`` as an int in [lowest, 2^63 - 1]; MalformedMessage otherwise (a
    float, bool, text or table is refused, not coerced: only a node's int is trusted)."""
    value = raw.get(name)
    if type(value) is not int or not lowest <= value <= _MAX_INDEX:
        raise MalformedMessage(f"{name} is not an int >= {lowest}: {value!r:.40}")
    return value


def parse_delivered(delivered: Delivered) -> tuple[CommittedMessage, int]:
    """A committed (or replayed) raw delivery as (CommittedMessage, prev_index).
    The decoded header table becomes the message's headers as it is when every value
    already is a str/int/float/bool (the common case): nobody else holds it.

    Raises MalformedMessage when ``raftmq-index`` or ``raftmq-term`` is missing or not an
    int >= 1, or ``raftmq-prev-index`` (0 when absent) is not an int below the index."""
    props = properties(delivered)
    raw: dict[str, Any] = props.headers if isinstance(props.headers, dict) else {}
    index = _number(raw, names.H_INDEX, 1)
    term = _number(raw, names.H_TERM, 1)
    prev = _number(raw, names.H_PREV_INDEX, 0) if names.H_PREV_INDEX in raw else 0
    if prev >= index:
        raise MalformedMessage(f"{names.H_PREV_INDEX} {prev} is not below the index {index}")
    headers: dict[str, HeaderValue] = raw
    for value in raw.values():
        if type(value) not in _PLAIN:
            headers = _narrowed(raw)
            break
    committed = CommittedMessage(
        index=index,
        term=term,
        body=delivered.body,
        headers=headers,
        content_type=props.content_type,
        message_id=props.message_id,
    )
    return committed, prev
