"""TransportContract: one behaviour suite, run against the memory twin and RabbitMQ.

Subclasses provide a ``harness`` fixture (see helpers.Harness) that stops every
transport and deletes every queue it created when the test ends.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from raftmq.core.messages import MESSAGE_ADAPTER, AppendEntries, Message, RequestVote
from raftmq.errors import DropReason, RequestFailed, RequestTimeout
from raftmq.protocol.codec import Envelope, encode
from raftmq.transport.port import Transport

from .helpers import (
    OTHER_KEY,
    Harness,
    Inbox,
    append,
    signed,
    started,
    vote,
    vote_reply,
    wait_until,
)

_VALID_BODY = MESSAGE_ADAPTER.dump_json(append("a", "b", 7))


def _bad_envelopes(cluster: str) -> dict[str, Envelope]:
    """One bad envelope per drop reason, all addressed to node "b" of ``cluster`` and, but
    for the unsigned and the wrongly signed ones, signed with the cluster key and id."""
    unsigned = {
        DropReason.UNSIGNED: Envelope(_VALID_BODY, "append_entries", cluster),
        DropReason.BAD_MAC: signed(Envelope(_VALID_BODY, "append_entries", cluster), key=OTHER_KEY),
        # The cluster's key, but another bootstrap of the cluster name (a stale node).
        DropReason.OTHER_CLUSTER_ID: signed(
            Envelope(_VALID_BODY, "append_entries", cluster), cluster_id="0" * 32
        ),
    }
    return unsigned | {
        reason: signed(envelope) for reason, envelope in _signed_bad_envelopes(cluster).items()
    }


def _signed_bad_envelopes(cluster: str) -> dict[str, Envelope]:
    missing_fields = json.dumps({"type": "append_entries", "term": 1}).encode()
    return {
        DropReason.GARBAGE: Envelope(b"\x00\xffnot json", "append_entries", cluster),
        DropReason.UNKNOWN_TYPE: Envelope(_VALID_BODY, "bogus_type", cluster),
        DropReason.WRONG_CLUSTER: Envelope(_VALID_BODY, "append_entries", cluster + "-other"),
        DropReason.INVALID_FIELDS: Envelope(missing_fields, "append_entries", cluster),
        DropReason.TYPE_MISMATCH: Envelope(_VALID_BODY, "request_vote", cluster),
        DropReason.WRONG_RECIPIENT: Envelope(
            MESSAGE_ADAPTER.dump_json(append("a", "zz", 1)), "append_entries", cluster
        ),
        DropReason.OVERSIZED: Envelope(b"x" * 4096, "append_entries", cluster),
    }


class TransportContract:
    """Behaviour every Transport adapter must have."""

    async def test_is_a_transport(self, harness: Harness) -> None:
        transport = harness.transport("a")
        assert isinstance(transport, Transport)
        assert transport.node_id == "a"
        assert transport.cluster == harness.cluster

    async def test_message_arrives_intact(self, harness: Harness) -> None:
        inbox = Inbox()
        a = await started(harness, "a")
        b = await started(harness, "b", inbox)
        message = append("a", "b", 3, data=b"\x00\x01payload\xff")
        a.send([message])
        await wait_until(lambda: len(inbox) == 1, what="delivery")
        assert inbox.messages == [message]
        assert (a.stats.sent, b.stats.received) == (1, 1)

    async def test_many_messages_arrive_in_order(self, harness: Harness) -> None:
        inbox = Inbox()
        a = await started(harness, "a")
        await started(harness, "b", inbox)
        a.send([append("a", "b", i) for i in range(500)])
        await wait_until(lambda: len(inbox) == 500, what="500 deliveries")
        assert [m.leader_commit for m in inbox.messages if isinstance(m, AppendEntries)] == list(
            range(500)
        )

    async def test_reply_reaches_the_requester(self, harness: Harness) -> None:
        a_inbox = Inbox()
        a = await started(harness, "a", a_inbox)
        b = harness.transport("b")

        def answer(message: Message) -> None:
            if isinstance(message, RequestVote):
                b.send([vote_reply(message)])

        await b.start(answer)
        a.send([vote("a", "b")])
        await wait_until(lambda: len(a_inbox) == 1, what="vote reply")
        assert a_inbox.messages == [vote_reply(vote("a", "b"))]

    async def test_send_to_unknown_peer_is_harmless(self, harness: Harness) -> None:
        inbox = Inbox()
        a = await started(harness, "a")
        await started(harness, "b", inbox)
        a.send([append("a", "nobody", 1), append("a", "b", 2)])
        await wait_until(lambda: len(inbox) == 1, what="delivery after a lost one")

    async def test_queue_survives_a_node_restart(self, harness: Harness) -> None:
        old_inbox, c_inbox = Inbox(), Inbox()
        a = await started(harness, "a")
        b = await started(harness, "b", old_inbox)
        await started(harness, "c", c_inbox)
        await b.stop()
        # The probe to c leaves after the messages to b on the same connection: once it
        # arrived, b's messages wait in b's inbox.
        a.send([append("a", "b", i) for i in range(10)] + [append("a", "c", 0)])
        await wait_until(lambda: len(c_inbox) == 1, what="probe delivery to c")
        assert len(old_inbox) == 0
        inbox = Inbox()
        await started(harness, "b", inbox)
        await wait_until(lambda: len(inbox) == 10, what="messages sent while b was down")
        assert [m.leader_commit for m in inbox.messages if isinstance(m, AppendEntries)] == list(
            range(10)
        )

    async def test_expired_messages_never_arrive(self, harness: Harness) -> None:
        c_inbox = Inbox()
        a = await started(harness, "a", message_ttl_ms=150)
        await (await started(harness, "b")).stop()  # b's inbox exists, nobody consumes it
        await started(harness, "c", c_inbox)
        a.send([append("a", "b", i) for i in range(5)] + [append("a", "c", 0)])
        await wait_until(lambda: len(c_inbox) == 1, what="probe delivery to c")
        await asyncio.sleep(0.35)  # the TTL itself must elapse: time is the condition here
        inbox = Inbox()
        b = await started(harness, "b", inbox)
        a.send([append("a", "b", 99)])
        await wait_until(lambda: len(inbox) >= 1, what="fresh message")
        assert [m.leader_commit for m in inbox.messages if isinstance(m, AppendEntries)] == [99]
        assert b.stats.received == 1

    async def test_duplicates_are_delivered_and_counted(self, harness: Harness) -> None:
        inbox = Inbox()
        b = await started(harness, "b", inbox)
        envelope = signed(encode(append("a", "b", 5), harness.cluster))
        await harness.inject("b", envelope)
        await harness.inject("b", envelope)
        await wait_until(lambda: len(inbox) == 2, what="both copies")
        assert inbox.messages[0] == inbox.messages[1]
        assert b.stats.received == 2
        assert not b.stats.dropped

    @pytest.mark.parametrize("reason", list(DropReason))
    async def test_bad_input_is_dropped_counted_and_logged_once(
        self, harness: Harness, reason: DropReason, caplog: pytest.LogCaptureFixture
    ) -> None:
        inbox = Inbox()
        a = await started(harness, "a")
        b = await started(harness, "b", inbox, max_message_bytes=1024)
        bad = _bad_envelopes(harness.cluster)[reason]
        with caplog.at_level(logging.WARNING, logger="raftmq.transport"):
            for _ in range(3):
                await harness.inject("b", bad)
            a.send([append("a", "b", 42)])  # the node keeps working behind the bad input
            await wait_until(lambda: len(inbox) == 1, what="valid message after bad ones")
        assert b.stats.dropped == {reason.value: 3}
        assert b.stats.received == 1
        warnings = [r for r in caplog.records if reason.value in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in caplog.records]

    async def test_client_request_is_served(self, harness: Harness) -> None:
        async def serve(kind: str, body: bytes) -> bytes:
            if kind != "status":
                raise LookupError(f"unknown request kind {kind}")
            return b"status of b: " + body

        b = await started(harness, "b", on_request=serve)
        client = await harness.client()
        replies = await asyncio.gather(
            *(client.request("b", "status", str(i).encode()) for i in range(20))
        )
        assert replies == [f"status of b: {i}".encode() for i in range(20)]
        with pytest.raises(RequestFailed, match="unknown request kind nope"):
            await client.request("b", "nope")
        assert b.stats.requests_served == 21

    async def test_request_to_absent_node_times_out(self, harness: Harness) -> None:
        client = await harness.client()
        with pytest.raises(RequestTimeout):
            await client.request("ghost", "status", timeout=0.2)

    async def test_request_without_handler_is_dropped(self, harness: Harness) -> None:
        b = await started(harness, "b")
        client = await harness.client()
        with pytest.raises(RequestTimeout):
            await client.request("b", "status", timeout=0.3)
        assert b.stats.dropped == {DropReason.UNKNOWN_TYPE.value: 1}

    async def test_unsigned_and_foreign_requests_are_not_served(self, harness: Harness) -> None:
        served: list[str] = []

        async def serve(kind: str, body: bytes) -> bytes:
            served.append(kind)
            return b"{}"

        b = await started(harness, "b", on_request=serve)
        for key in (None, OTHER_KEY):  # no key, another cluster's key
            forger = await harness.client(key=key)
            for kind in ("status", "write", "transfer"):
                with pytest.raises(RequestTimeout):
                    await forger.request("b", kind, b"n1", timeout=0.2)
        assert (served, b.stats.requests_served) == ([], 0)
        assert b.stats.dropped == {DropReason.UNSIGNED.value: 3, DropReason.BAD_MAC.value: 3}
        assert await (await harness.client()).request("b", "status") == b"{}"

    async def test_client_drops_an_unsigned_reply(self, harness: Harness) -> None:
        async def serve(kind: str, body: bytes) -> bytes:
            return b"forged status"

        await started(harness, "b", on_request=serve, key=None)  # an --insecure node
        client = await harness.client()
        with pytest.raises(RequestTimeout):
            await client.request("b", "status", timeout=0.3)
        assert client.dropped == {DropReason.UNSIGNED.value: 1}

    async def test_stop_is_idempotent_and_later_sends_are_counted(self, harness: Harness) -> None:
        a = await started(harness, "a")
        await a.stop()
        await a.stop()
        a.send([append("a", "b", 1)])
        assert a.stats.send_dropped["stopped"] == 1
        assert a.stats.sent == 0
