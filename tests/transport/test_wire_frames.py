"""The hand-written AMQP frames (raftmq._amqp.wire.message_frames) decode with pamqp to
exactly the properties and body they were given."""

from __future__ import annotations

import pytest
from pamqp import frame as amqp_frame
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from raftmq._amqp.wire import field_table, message_frames, publish_frame


def _decode(data: bytes) -> list[object]:
    frames: list[object] = []
    while data:
        consumed, _channel, frame = amqp_frame.unmarshal(data)
        frames.append(frame)
        data = data[consumed:]
    return frames


@pytest.mark.parametrize("size", [0, 5, 100, 250])
def test_frames_carry_every_property_and_split_the_body(size: int) -> None:
    body = bytes(range(256))[:size] * 1
    data = message_frames(
        7,
        publish_frame(7, "ex", "rk"),
        64,
        body,
        headers=field_table({"s": "é", "i": -5, "f": 1.5, "t": True, "n": 2**40}),
        content_type="text/plain",
        correlation_id="c1",
        reply_to="q",
        message_id="m1",
        message_type="raftmq.batch",
        expiration="1500",
        app_id="cluster-a",
    )
    frames = _decode(data)
    publish, header, *chunks = frames
    assert isinstance(publish, Basic.Publish)
    assert (publish.exchange, publish.routing_key) == ("ex", "rk")
    assert isinstance(header, ContentHeader) and header.body_size == size
    props = header.properties
    assert props.content_type == "text/plain" and props.delivery_mode == 2
    assert props.correlation_id == "c1" and props.reply_to == "q"
    assert props.message_id == "m1" and props.message_type == "raftmq.batch"
    assert props.expiration == "1500" and props.app_id == "cluster-a"
    assert props.headers == {"s": "é", "i": -5, "f": 1.5, "t": True, "n": 2**40}
    assert all(isinstance(c, ContentBody) and len(c.value) <= 64 for c in chunks)
    assert b"".join(c.value for c in chunks) == body  # type: ignore[attr-defined]


def test_minimal_frames_are_transient_without_properties() -> None:
    _, header = _decode(message_frames(1, publish_frame(1, "", "q"), 1000, b"", persistent=False))
    assert isinstance(header, ContentHeader)
    props = header.properties
    assert props.delivery_mode == 1 and props.headers is None and props.content_type is None
