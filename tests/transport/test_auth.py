"""The MAC of node traffic (protocol.auth): what it covers, and what it refuses."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from raftmq.errors import ConfigError, DropReason, InvalidEnvelope
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
    assert (signed(REQUEST).mac or "").startswith(f"v2.{CLUSTER_ID}.")


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


@pytest.mark.parametrize("mac", ["v1.", "v1.\udcff\u00e9", "v2." + "A" * 43, "v1." + "A" * 43])
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
