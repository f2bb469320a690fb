"""The MAC of node traffic (protocol.auth): what it covers, and what it refuses."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest

from raftmq.errors import ConfigError, DropReason, InvalidEnvelope
from raftmq.node.settings import cluster_key_from
from raftmq.protocol.auth import ClusterKey, check_reply
from raftmq.protocol.codec import Envelope, encode

from .helpers import CLUSTER_ID, KEY, OTHER_KEY, append, signed, vote

REQUEST = encode(vote("a", "b"), "c1", reply_to="raftmq.c1.node.a", correlation_id="a-7")


def _reason(envelope: Envelope, *, recipient: str = "b") -> DropReason:
    with pytest.raises(InvalidEnvelope) as caught:
        KEY.verify(envelope, sender="", recipient=recipient, cluster_id=CLUSTER_ID)
    return caught.value.reason


def test_a_signed_envelope_verifies() -> None:
    KEY.verify(signed(REQUEST), sender="", recipient="b", cluster_id=CLUSTER_ID)
    assert (signed(REQUEST).mac or "").startswith(f"v3.{CLUSTER_ID}.")


@pytest.mark.parametrize(
    "change",
    [
        {"type": "timeout_now"},
        {"cluster": "c2"},
        {"reply_to": "raftmq.c1.node.evil"},
        {"correlation_id": "a-8"},
        {"status": "ok"},
        {"body": encode(append("a", "b", 9), "c1").body},
    ],
    ids=lambda change: next(iter(change)),
)
def test_any_property_or_body_changed_after_signing_is_detected(change: dict[str, Any]) -> None:
    assert _reason(dataclasses.replace(signed(REQUEST), **change)) is DropReason.BAD_MAC


def test_the_mac_binds_the_recipient_and_the_direction() -> None:
    """A message signed for b's inbox does not verify at c, nor as a reply of b."""
    assert _reason(signed(REQUEST), recipient="c") is DropReason.BAD_MAC
    with pytest.raises(InvalidEnvelope) as caught:
        check_reply(signed(REQUEST), KEY, cluster="c1", node_id="b", cluster_id=CLUSTER_ID)
    assert caught.value.reason is DropReason.BAD_MAC


def test_another_key_is_a_bad_mac() -> None:
    assert _reason(signed(REQUEST, key=OTHER_KEY)) is DropReason.BAD_MAC


@pytest.mark.parametrize("mac", [None, "", "0f3c9e1b2a4d4e6f8a9b0c1d2e3f4a5b", "v.x", "vx.y"])
def test_no_mac_is_unsigned(mac: str | None) -> None:
    """Absent, empty, or a message id of another client (aiormq sets a random one)."""
    assert _reason(dataclasses.replace(REQUEST, mac=mac)) is DropReason.UNSIGNED


@pytest.mark.parametrize(
    "mac", ["v1.", "v1.\udcff\u00e9", "v3." + "A" * 43, "v2." + "A" * 43, "v1." + "A" * 43]
)
def test_a_wrong_or_unknown_version_mac_is_bad(mac: str) -> None:
    assert _reason(dataclasses.replace(REQUEST, mac=mac)) is DropReason.BAD_MAC


def test_reply_of_another_cluster_is_refused_before_its_mac() -> None:
    reply = KEY.sign(
        Envelope(b"{}", "reply", "c2", correlation_id="x"),
        sender="b",
        recipient="",
        cluster_id=CLUSTER_ID,
    )
    with pytest.raises(InvalidEnvelope) as caught:
        check_reply(reply, KEY, cluster="c1", node_id="b", cluster_id=CLUSTER_ID)
    assert caught.value.reason is DropReason.WRONG_CLUSTER
    check_reply(reply, KEY, cluster="c2", node_id="b", cluster_id=CLUSTER_ID)


def test_another_cluster_id_is_told_apart_from_a_bad_mac() -> None:
    """A message signed with the key for another bootstrap of the cluster name is dropped
    as other_cluster_id (the id travels in clear); an id altered in transit is a bad MAC."""
    other = signed(REQUEST, cluster_id="0" * 32)
    assert _reason(other) is DropReason.OTHER_CLUSTER_ID
    KEY.verify(other, sender="", recipient="b", cluster_id="0" * 32)  # valid in its own cluster
    assert other.mac is not None
    relabelled = dataclasses.replace(other, mac=other.mac.replace("0" * 32, CLUSTER_ID))
    assert _reason(relabelled) is DropReason.BAD_MAC


def test_short_keys_are_a_config_error_and_keys_never_print(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(ConfigError, match="at least 16"):
        ClusterKey.from_text("  fifteen-bytes!  \n")
    key = ClusterKey.from_text("a-secret-of-more-than-16-bytes\n")
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("raftmq.test").info("key %s %r", key, key)
    assert "a-secret" not in caplog.text + repr(key) + str(key)


def test_a_direct_reply_to_address_is_signed_as_the_broker_receives_it() -> None:
    """The broker appends the client's channel to amq.rabbitmq.reply-to after signing."""
    request = Envelope(b"", "status", "c1", reply_to="amq.rabbitmq.reply-to", correlation_id="x")
    arrived = dataclasses.replace(signed(request), reply_to="amq.rabbitmq.reply-to.g1h2AA==")
    KEY.verify(arrived, sender="", recipient="b", cluster_id=CLUSTER_ID)
    assert _reason(dataclasses.replace(arrived, reply_to="raftmq.c1.node.a")) is DropReason.BAD_MAC


def _documented_mac(key: bytes, fields: list[str | None], body: bytes) -> str:
    """docs/protocol.md section 11, written out independently of protocol.auth."""
    data = b"raftmq-mac/3"
    for text in fields:
        if text is None:
            data += (-1).to_bytes(4, "big", signed=True)
        else:
            raw = text.encode()
            data += len(raw).to_bytes(4, "big", signed=True) + raw
    if len(key) > 64:
        key = hashlib.blake2b(key, digest_size=64).digest()
    return hashlib.blake2b(data + body, key=key, digest_size=16).hexdigest()


@pytest.mark.parametrize("raw_key", [b"k" * 16, b"a 64-byte key...." * 4, b"longer than 64 " * 9])
def test_the_mac_is_the_documented_one(raw_key: bytes) -> None:
    """The wire format other implementations must reproduce, including the direct
    reply-to address signed without the suffix the broker adds, and a key over 64 bytes."""
    key = ClusterKey(raw_key)
    envelope = Envelope(
        b'{"x": 1}', "status", "c1", "amq.rabbitmq.reply-to.g1h2", "r-1", None, None
    )
    mac = key.sign(envelope, sender="", recipient="n2", cluster_id=CLUSTER_ID).mac
    fields = ["status", "c1", CLUSTER_ID, "", "n2", "amq.rabbitmq.reply-to", "r-1", None]
    assert mac == f"v3.{CLUSTER_ID}.{_documented_mac(raw_key, fields, envelope.body)}"


def test_a_mac_of_an_earlier_version_is_bad_not_another_cluster() -> None:
    """A v2 (HMAC-SHA256) message from a node of an older release: refused as bad_mac."""
    v2 = dataclasses.replace(signed(REQUEST), mac="v2.ffff." + "0" * 64)
    assert _reason(v2) is DropReason.BAD_MAC


def test_many_odd_types_do_not_grow_the_key_without_bound() -> None:
    """A stranger sending every message with another type: the kept MAC states stay few,
    and signing still verifies."""
    key = ClusterKey(b"k" * 16)
    for n in range(2000):
        envelope = Envelope(b"{}", f"type-{n}", "c1")
        key.verify(
            key.sign(envelope, sender="", recipient="b", cluster_id=CLUSTER_ID),
            sender="",
            recipient="b",
            cluster_id=CLUSTER_ID,
        )
    assert len(key._prefixed) <= 256


def test_a_key_file_of_raw_random_bytes_is_a_key(tmp_path: Path) -> None:
    """The README's `head -c 32 /dev/urandom > cluster.key` made a file that is not UTF-8:
    reading it as text refused to start every node. Raw bytes are the key as they are;
    a text file's surrounding whitespace is not part of it."""
    raw = bytes(range(0x80, 0xA0))  # 32 bytes that are not UTF-8
    (tmp_path / "raw.key").write_bytes(raw)
    (tmp_path / "text.key").write_text("  a key typed as text, 32 bytes.\n")
    from_raw = cluster_key_from(None, tmp_path / "raw.key")
    assert from_raw is not None
    envelope = Envelope(b"{}", "status", "c1")
    signed_raw = from_raw.sign(envelope, sender="", recipient="b", cluster_id=CLUSTER_ID)
    ClusterKey(raw).verify(signed_raw, sender="", recipient="b", cluster_id=CLUSTER_ID)
    from_text = cluster_key_from(None, tmp_path / "text.key")
    assert from_text is not None
    signed_text = from_text.sign(envelope, sender="", recipient="b", cluster_id=CLUSTER_ID)
    ClusterKey(b"a key typed as text, 32 bytes.").verify(
        signed_text, sender="", recipient="b", cluster_id=CLUSTER_ID
    )
