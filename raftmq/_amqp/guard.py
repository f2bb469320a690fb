"""Hostile properties at the frame level: decoding them without losing the connection, and
sizing what raftmq publishes so that it fits one frame.

pamqp raises on a content header it cannot decode (a header name that is not UTF-8, an
unknown field type, a length running past the frame); aiormq then closes the whole
connection, and the message goes back to its queue to do the same to the next consumer.
:func:`install_header_guard` makes such a header decode as properties holding only
:data:`~raftmq.protocol.limits.H_UNDECODABLE` (the error), with the body size intact, so
the message arrives, and its consumer can dead-letter or drop it.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from pamqp import exceptions as pamqp_exceptions
from pamqp import frame as pamqp_frame
from pamqp import header as pamqp_header
from pamqp.commands import Basic

from raftmq.protocol.limits import H_UNDECODABLE

_HEADER_PREFIX = struct.Struct(">HHQ")  # class id, weight, body size
_FRAME_OVERHEAD = 8  # frame type, channel, size, frame end
_original_unmarshal = pamqp_frame._unmarshal_header_frame


def _guarded_unmarshal(frame_data: bytes) -> pamqp_header.ContentHeader:
    try:
        return _original_unmarshal(frame_data)
    except pamqp_exceptions.UnmarshalingException as exc:
        if len(frame_data) < _HEADER_PREFIX.size:
            raise  # not even a body size: the frame is broken, not just its properties
        _class_id, weight, body_size = _HEADER_PREFIX.unpack_from(frame_data)
        detail = str(exc)[:200].encode(errors="replace").decode()
        return pamqp_header.ContentHeader(
            weight, body_size, Basic.Properties(headers={H_UNDECODABLE: detail})
        )


def install_header_guard() -> None:
    """Decode every content header through the guard (idempotent, process-wide)."""
    pamqp_frame._unmarshal_header_frame = _guarded_unmarshal


def header_frame_size(
    headers: Mapping[str, Any] | None,
    *,
    body_size: int = 0,
    content_type: str | None = None,
    content_encoding: str | None = None,
    message_id: str | None = None,
    correlation_id: str | None = None,
    reply_to: str | None = None,
) -> int | None:
    """Bytes of the content header frame pamqp (hence aio-pika) makes of these properties
    (persistent), or None when pamqp cannot encode them at all."""
    try:
        properties = Basic.Properties(
            headers=dict(headers) if headers else None,
            content_type=content_type,
            content_encoding=content_encoding,
            message_id=message_id,
            correlation_id=correlation_id,
            reply_to=reply_to,
            delivery_mode=2,
        )
        content = pamqp_header.ContentHeader(0, body_size, properties)
        return len(content.marshal()) + _FRAME_OVERHEAD
    except (TypeError, ValueError, struct.error, OverflowError, RecursionError):
        return None
