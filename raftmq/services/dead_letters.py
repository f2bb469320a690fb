"""Dead letters that always fit: a refused write goes to ``raftmq.C.dead`` with its body,
properties and headers plus ``raftmq-reason`` (docs/protocol.md §5), in one frame.

The write was refused, so its properties are suspect: they may not encode again (a value
pamqp cannot write back, text that is not UTF-8) or, with the reason added, no longer fit
one frame. Then what does not fit is left out, in steps (all headers, the plain headers
a record keeps, none; properties that are not short strings) and ``raftmq-trimmed`` says
what was left out. The body always goes: it is split in frames.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange

from raftmq._amqp.guard import header_frame_size
from raftmq.protocol.limits import (
    FRAME_MAX,
    H_TRIMMED,
    cut_reason,
    field_name_ok,
    short_string_ok,
)
from raftmq.protocol.names import H_PRODUCER, H_REASON, H_SEQ
from raftmq.services.write_rules import header_problem, kept_headers

logger = logging.getLogger("raftmq.services.dead_letters")

_LAST_RESORT_REASON = 200  # characters of the reason kept when nothing else fits
_SLACK = 64  # bytes for what the client library adds (aiormq's random message_id)


def _plain_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The headers a record keeps that can travel, plus valid session headers."""
    plain: dict[str, Any] = {
        key: value
        for key, value in kept_headers(headers).items()
        if header_problem(key, value) is None
    }
    for name in (H_PRODUCER, H_SEQ):
        value = headers.get(name)
        if isinstance(value, str | int) and header_problem(name, value) is None:
            plain[name] = value
    return plain


def fit_dead_letter(
    reason: str,
    body_size: int,
    headers: Mapping[str, Any],
    properties: Mapping[str, str | None],
    frame_max: int = FRAME_MAX,
) -> tuple[dict[str, Any], dict[str, str | None]]:
    """The headers (with ``raftmq-reason``) and properties of a dead letter whose content
    header fits one frame of ``frame_max`` bytes; what had to be left out is named in
    ``raftmq-trimmed``."""
    reason = cut_reason(reason)
    props = dict(properties)
    notes = []
    for name, value in properties.items():
        if value is not None and not short_string_ok(value):
            props[name] = None
            notes.append(name)
    # pamqp would cut a name over 128 bytes: such headers go as the plain ones, without it.
    names_ok = all(isinstance(key, str) and field_name_ok(key) for key in headers)
    steps: tuple[tuple[str | None, Mapping[str, Any]], ...] = (
        *(((None, headers),) if names_ok else ()),
        ("headers not plain text, numbers or booleans", _plain_headers(headers)),
        ("all headers", {}),
    )
    for note, kept in steps:
        trimmed = notes if note is None else [*notes, note]
        table = {**kept, H_REASON: reason}
        if trimmed:
            table[H_TRIMMED] = "left out: " + ", ".join(trimmed)
        size = header_frame_size(table, body_size=body_size, **props)
        if size is not None and size + _SLACK <= frame_max:
            return table, props
    # Only a frame_max below a few hundred bytes gets here: keep the reason, short.
    last = {H_REASON: reason[:_LAST_RESORT_REASON], H_TRIMMED: "left out: all properties"}
    return last, dict.fromkeys(properties)


class DeadLetters:
    """Publishes refused writes to the dead exchange (persistent, confirmed)."""

    def __init__(self, exchange: AbstractExchange, frame_max: int = FRAME_MAX) -> None:
        self.exchange = exchange  # the cluster's dead exchange, on a confirm channel
        self.frame_max = frame_max  # the connection's frame size

    async def publish(
        self,
        reason: str,
        body: bytes,
        headers: Mapping[str, Any],
        *,
        content_type: str | None,
        message_id: str | None,
        correlation_id: str | None,
        content_encoding: str | None = None,
        reply_to: str | None = None,
    ) -> None:
        """Publish one dead letter: ``body``, ``headers`` plus ``raftmq-reason`` and the
        properties, or as much of them as fits one frame."""
        table, props = fit_dead_letter(
            reason,
            len(body),
            headers,
            {
                "content_type": content_type,
                "content_encoding": content_encoding,
                "message_id": message_id,
                "correlation_id": correlation_id,
                "reply_to": reply_to,
            },
            self.frame_max,
        )
        letter = aio_pika.Message(
            body,
            headers=table,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            **props,  # type: ignore[arg-type]
        )
        await self.exchange.publish(letter, routing_key="", mandatory=False)
