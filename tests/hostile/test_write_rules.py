"""The write rules against hostile writes, without a broker: one regression test per
finding, and the hostile-write generator against the rules and the committed-message
encoder (every accepted write encodes, fits one frame and decodes back byte-exact; every
refused one has a reason and a dead letter that fits)."""

from __future__ import annotations

import os
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from pamqp import frame as pamqp_frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from raftmq._amqp.guard import header_frame_size, install_header_guard
from raftmq._amqp.wire import field_table, publish_frame
from raftmq.core.types import Entry
from raftmq.errors import WriteRejected
from raftmq.protocol import names
from raftmq.protocol.limits import FRAME_MAX, H_TRIMMED, H_UNDECODABLE
from raftmq.protocol.record import Record
from raftmq.services.dead_letters import fit_dead_letter
from raftmq.services.fanout import committed_frames, committed_headers
from raftmq.services.write_rules import (
    BadWrite,
    WriteRules,
    committed_header_bound,
    committed_header_size,
)
from tests.hostile.writes import HostileWrite, encode_record, expected_headers, hostile_writes

RULES = WriteRules(max_write_bytes=1 << 20)


def _reason(call: Any) -> str:
    with pytest.raises(BadWrite) as caught:
        call()
    return caught.value.reason


def test_a_seq_beyond_int64_is_refused_before_it_reaches_the_sessions() -> None:
    headers = {names.H_PRODUCER: "p", names.H_SEQ: "9" * 30}
    assert _reason(lambda: RULES.from_properties(b"x", headers, None, None)).startswith(
        "invalid_seq"
    )


def test_a_producer_id_that_is_not_utf8_is_refused() -> None:
    headers = {names.H_PRODUCER: "\ud800", names.H_SEQ: 1}
    assert _reason(lambda: RULES.from_properties(b"x", headers, None, None)).startswith(
        "invalid_producer"
    )


def test_a_message_id_too_long_for_the_session_column_is_refused() -> None:
    reason = _reason(lambda: RULES.from_properties(b"x", {}, None, "m" * 255))
    assert reason.startswith("invalid_property: message_id too long")
    # With a producer id the session key is the producer's: the message id only travels.
    headers = {names.H_PRODUCER: "p", names.H_SEQ: 1}
    assert RULES.from_properties(b"x", headers, None, "m" * 255)[0].message_id == "m" * 255


@pytest.mark.parametrize(
    ("meta", "reason"),
    [
        ({"h": {"n": 2**70}}, "invalid_header"),
        ({"ct": "\ud800"}, "invalid_property"),
        ({"h": {"\udc80": "v"}}, "invalid_header"),
        ({"h": {"k" * 300: 1}}, "invalid_header"),
        ({"pid": "p", "seq": 2**63 - 1}, "invalid_seq"),
    ],
)
def test_a_batch_record_the_fanout_could_not_encode_is_refused(
    meta: dict[str, Any], reason: str
) -> None:
    assert _reason(lambda: RULES.from_batch(encode_record(meta, b"x"))).startswith(reason)


def test_headers_that_fit_a_frame_alone_but_not_with_raftmqs_are_refused() -> None:
    # Size the header so that the write's own content header fits frame_max, but the
    # committed message (with index, term, prev-index) does not.
    own = header_frame_size({"big": "x"})
    assert own is not None
    big = "x" * (FRAME_MAX - own - 20)
    assert (header_frame_size({"big": big}) or 0) <= FRAME_MAX
    reason = _reason(lambda: RULES.from_properties(b"x", {"big": big}, None, None))
    assert reason.startswith("too_large: committed headers")


def test_the_write_request_goes_through_the_same_rules() -> None:
    with pytest.raises(WriteRejected, match="invalid_producer"):
        RULES.admit(Record(body=b"x", producer_id="raftmq:dup:abc", seq=1))
    assert RULES.admit(Record(body=b"x", producer_id="p", seq=1)).producer_id == "p"


def test_a_dead_letter_of_huge_or_unencodable_headers_still_fits_one_frame() -> None:
    huge = {f"h{k}": "v" * 1000 for k in range(1200)}  # 1.2 MB of headers
    table, props = fit_dead_letter("too_large: x", 10, huge, {"content_type": "t"})
    assert table[names.H_REASON] == "too_large: x" and table[H_TRIMMED]
    assert props["content_type"] == "t"
    assert (
        header_frame_size(table, content_type=props["content_type"]) or FRAME_MAX + 1
    ) <= FRAME_MAX
    bad = {"\udc80": 1, "ok": 2**70, "fine": "yes"}
    table, props = fit_dead_letter("r", 0, bad, {"content_type": "\ud800", "message_id": "m"})
    assert table["fine"] == "yes" and "\udc80" not in table
    assert props == {"content_type": None, "message_id": "m"}
    assert "content_type" in table[H_TRIMMED]


def _header_frame(table: bytes) -> bytes:
    payload = struct.pack(">HHQH", 60, 0, 3, 1 << 13) + table
    return struct.pack(">BHI", 2, 1, len(payload)) + payload + b"\xce"


def test_a_header_name_that_is_not_utf8_decodes_as_a_marked_header() -> None:
    install_header_guard()
    table = b"\x02\xff\xfe" + b"t\x01"
    raw = _header_frame(struct.pack(">I", len(table)) + table)
    _, _, header = pamqp_frame.unmarshal(raw)
    assert isinstance(header, ContentHeader) and header.body_size == 3
    headers = header.properties.headers or {}
    assert H_UNDECODABLE in headers
    reason = _reason(lambda: RULES.from_properties(b"abc", headers, None, None))
    assert reason.startswith("malformed_properties")


def _committed(record: Record, index: int = 7) -> tuple[bytes, Any]:
    """Encode ``record``'s committed message with the fan-out's code; decode it back."""
    entry = Entry(index=index, term=3)
    headers = field_table(committed_headers(entry, record, index - 1))
    wire = committed_frames(1, publish_frame(1, "raftmq.C.committed", ""), 4096, record, headers)
    at, frames = 0, []
    while at < len(wire):
        used, _, value = pamqp_frame.unmarshal(wire[at:])
        frames.append(value)
        at += used
    header = frames[1]
    body = b"".join(f.value for f in frames[2:] if isinstance(f, ContentBody))
    assert isinstance(header, ContentHeader)
    assert len(wire) - len(body) - 8 * (len(frames) - 2) <= FRAME_MAX
    return body, header.properties


def _same(a: Any, b: Any) -> bool:
    """Equal, where a NaN header value counts as equal to a NaN (NaN != NaN in Python)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(repr(a[k]) == repr(b[k]) for k in a)
    return repr(a) == repr(b)


def _check_accepted(
    record: Record, body: bytes, headers: dict[str, Any], ct: Any, mid: Any
) -> None:
    got_body, props = _committed(record)
    assert got_body == body
    assert props.content_type == (ct or None)  # an empty content type travels as none
    assert props.message_id == (mid or None)
    got = dict(props.headers)
    assert got.pop(names.H_INDEX) == 7 and got.pop(names.H_PREV_INDEX) == 6
    assert got.pop(names.H_TERM) == 3
    if record.producer_id is not None:
        assert got.pop(names.H_PRODUCER) == record.producer_id
        assert got.pop(names.H_SEQ) == record.seq
    assert _same(got, headers)


def _check_refused(
    reason: str, body: bytes, headers: dict[str, Any], props: dict[str, Any]
) -> None:
    word = reason.partition(":")[0]
    assert word and " " not in word
    table, kept = fit_dead_letter(reason, len(body), headers, props)
    size = header_frame_size(
        table,
        body_size=len(body),
        content_type=kept.get("content_type"),
        message_id=kept.get("message_id"),
    )
    assert (size or FRAME_MAX + 1) <= FRAME_MAX


@settings(
    max_examples=int(os.environ.get("RAFTMQ_FUZZ_EXAMPLES", "150")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(hostile_writes)
def test_every_hostile_write_is_accepted_byte_exact_or_refused_with_a_reason(
    write: HostileWrite,
) -> None:
    if write.batch is None:
        try:
            record, payload = RULES.from_properties(
                write.body, write.headers, write.content_type, write.message_id
            )
        except BadWrite as exc:
            props = {"content_type": write.content_type, "message_id": write.message_id}
            _check_refused(exc.reason, write.body, write.headers, props)
            return
        assert _same(Record.decode(payload), record)
        _check_accepted(
            record,
            write.body,
            expected_headers(write.headers),
            write.content_type,
            write.message_id,
        )
        return
    for raw in write.batch:
        try:
            record, payload = RULES.from_batch(raw)
        except BadWrite as exc:
            _check_refused(exc.reason, raw, {}, {})
            continue
        assert _same(Record.decode(payload), record)
        source = Record.decode(raw)
        _check_accepted(
            record,
            source.body,
            expected_headers(source.headers),
            source.content_type,
            source.message_id,
        )


@settings(
    max_examples=int(os.environ.get("RAFTMQ_FUZZ_EXAMPLES", "150")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(hostile_writes)
def test_the_frame_bound_is_never_below_the_encoded_header(write: HostileWrite) -> None:
    """The rules skip encoding the committed header when the arithmetic bound fits a
    frame: the bound must never be below what fan-out's encoder produces."""
    if write.batch is not None:
        return
    try:
        record, _ = RULES.from_properties(
            write.body, write.headers, write.content_type, write.message_id
        )
    except BadWrite:
        return
    assert committed_header_bound(record) >= committed_header_size(record)


def test_a_header_name_over_128_bytes_is_refused_so_replay_and_fanout_agree() -> None:
    """Finding: fan-out's own encoder kept header names of 129-255 bytes, but replay answers
    and dead letters go through pamqp, which cuts them to 128 bytes -- a replayed message
    differed from the live one. AMQP allows 128 bytes; longer is refused at the door."""
    import pamqp.decode
    import pamqp.encode

    name = "h" * 128
    record, _ = RULES.from_batch(encode_record({"h": {name: 1}}, b"x"))
    # 128 bytes travel the same through both encoders
    assert pamqp.decode.field_table(pamqp.encode.field_table({name: 1}))[1] == {name: 1}
    assert pamqp.decode.field_table(field_table({name: 1}))[1] == {name: 1}
    assert record.headers == {name: 1}
    for longer in ("h" * 129, "é" * 65):  # 129 and 130 bytes
        assert _reason(lambda n=longer: RULES.from_batch(encode_record({"h": {n: 1}}, b"x")))
        reason = _reason(lambda n=longer: RULES.from_properties(b"x", {n: "v"}, None, None))
        assert reason.startswith("invalid_header: name")


def test_a_dead_letter_leaves_a_long_header_name_out_instead_of_cutting_it() -> None:
    long_name, kept = "n" * 200, {"ok": 1}
    table, _ = fit_dead_letter("invalid_header", 1, {long_name: "v", **kept}, {})
    assert long_name not in table and not any(key.startswith("n" * 128) for key in table)
    assert table["ok"] == 1 and "headers not plain" in table[H_TRIMMED]
    assert all(len(key.encode()) <= 128 for key in table)
