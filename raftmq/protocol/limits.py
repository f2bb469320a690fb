"""The bounds every accepted write must respect, whatever path it came by (docs/protocol.md
§5): what the session table, the log and an AMQP frame can hold.

Pure checks, no I/O: the write rules (:mod:`raftmq.services.write_rules`) apply them to a
write before it is proposed, so nothing that was accepted can fail later when it is
applied, stored, fanned out or replayed.
"""

from __future__ import annotations

INT64_MIN = -(1 << 63)  # the smallest value of a BIGINT column and of an AMQP long-long
INT64_MAX = (1 << 63) - 1  # the largest one

MAX_SESSION_KEY_CHARS = 200
"""Characters of the session table's key column (``producer_id`` in storage/schema.py)."""

MID_PREFIX = "mid:"
"""A write with a ``message_id`` and no producer id is the session ``mid:<message_id>``."""

MAX_MESSAGE_ID_CHARS = MAX_SESSION_KEY_CHARS - len(MID_PREFIX)
"""A longer ``message_id`` would make a session key the table cannot hold."""

MAX_SHORT_STRING = 255
"""Bytes of an AMQP short string: ``content_type``, ``message_id``, header names."""

MAX_FIELD_NAME = 128
"""Bytes of a header (field table) name: AMQP 0-9-1 allows 128, and pamqp -- the encoder
of aio-pika, used by replay answers and dead letters -- cuts longer names to 128 bytes,
while fan-out's own encoder would keep them: a longer name would make a replayed message
differ from the live one."""

FRAME_MAX = 131_072
"""RabbitMQ's default ``frame_max``: the content header of a committed message (its
properties and headers) must fit one frame of this size."""

MAX_REASON_CHARS = 500
"""A dead letter's ``raftmq-reason`` is cut to this many characters."""


def utf8_ok(text: str) -> bool:
    """True when ``text`` encodes as UTF-8 (no lone surrogate), so every AMQP peer and
    every JSON reader can take it."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def short_string_ok(text: str) -> bool:
    """True when ``text`` is a valid AMQP short string (UTF-8, at most 255 bytes)."""
    try:
        return len(text.encode()) <= MAX_SHORT_STRING
    except UnicodeEncodeError:
        return False


def field_name_ok(name: str) -> bool:
    """True when ``name`` is a valid AMQP header name (UTF-8, at most 128 bytes)."""
    try:
        return len(name.encode()) <= MAX_FIELD_NAME
    except UnicodeEncodeError:
        return False


def int64_ok(value: int) -> bool:
    """True when ``value`` fits a signed 64-bit integer (a BIGINT, an AMQP long-long)."""
    return INT64_MIN <= value <= INT64_MAX


def session_key_ok(key: str) -> bool:
    """True when ``key`` fits the session table's key column on every database."""
    # Postgres text cannot hold NUL.
    return len(key) <= MAX_SESSION_KEY_CHARS and "\x00" not in key and utf8_ok(key)


def cut_reason(reason: str) -> str:
    """``reason`` cut to :data:`MAX_REASON_CHARS`, with lone surrogates replaced."""
    text = reason[:MAX_REASON_CHARS]
    return text.encode(errors="replace").decode()


H_UNDECODABLE = "raftmq-undecodable"
"""Header a node's AMQP layer puts in place of properties it could not decode (the
error); a write carrying it is dead-lettered (``malformed_properties``)."""

H_TRIMMED = "raftmq-trimmed"
"""Header of a dead letter whose original properties did not fit one frame or could not
be encoded again: says what was left out."""
