"""The payload of a fan-out watermark entry: a NORMAL log entry that carries the highest
index fan-out has published, so that every node persists it and a new leader resumes
fan-out after it (docs/protocol.md). It starts with a byte no JSON Record starts with, so
it is never mistaken for a write."""

from __future__ import annotations

WATERMARK_MAGIC = b"\xffraftmq-watermark:"  # payload prefix of a watermark entry


def encode_watermark(index: int) -> bytes:
    """The payload of a watermark entry carrying ``index``."""
    return WATERMARK_MAGIC + str(index).encode()


def decode_watermark(payload: bytes) -> int | None:
    """The index carried by a watermark entry payload, or None when it is not one."""
    if not payload.startswith(WATERMARK_MAGIC):
        return None
    try:
        return int(payload[len(WATERMARK_MAGIC) :])
    except ValueError:
        return None
