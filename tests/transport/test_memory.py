"""The memory twin: the shared contract plus its fault-injection knobs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest

from raftmq.core.messages import AppendEntries, Message
from raftmq.protocol.auth import ClusterKey
from raftmq.protocol.codec import Envelope
from raftmq.protocol.names import inbox_queue
from raftmq.transport.memory import MemoryNetwork, MemoryRequestClient, MemoryTransport
from raftmq.transport.port import RequestClient

from .contract import TransportContract
from .helpers import CLUSTER_ID, KEY, OTHER_KEY, Inbox, append, wait_until


class MemoryHarness:
    """Harness over one MemoryNetwork; stops every endpoint at teardown."""

    def __init__(self, cluster: str, network: MemoryNetwork | None = None) -> None:
        self.cluster = cluster
        self.network = network or MemoryNetwork(seed=1)
        self.network.cluster_id = CLUSTER_ID  # what helpers.signed signs with
        self.transports: list[MemoryTransport] = []

    def transport(self, node_id: str, **options: Any) -> MemoryTransport:
        options.setdefault("key", KEY)
        transport = self.network.transport(node_id, self.cluster, **options)
        self.transports.append(transport)
        return transport

    async def inject(self, node_id: str, envelope: Envelope, ttl_ms: int | None = None) -> None:
        self.network.inject(inbox_queue(self.cluster, node_id), envelope, ttl_ms=ttl_ms)

    async def client(self, key: ClusterKey | None = KEY) -> RequestClient:
        return self.network.client(self.cluster, key=key)

    async def close(self) -> None:
        for transport in self.transports:
            await transport.stop()
            self.network.delete(transport.queue)


@pytest.fixture
async def harness(cluster_name: str) -> AsyncIterator[MemoryHarness]:
    harness = MemoryHarness(cluster_name)
    yield harness
    await harness.close()


class TestMemoryTransport(TransportContract):
    """The contract against the in-memory twin."""


def _commits(inbox: Inbox) -> list[int]:
    return [m.leader_commit for m in inbox.messages if isinstance(m, AppendEntries)]


async def _pair(harness: MemoryHarness, **options: int) -> tuple[MemoryTransport, Inbox]:
    inbox = Inbox()
    sender = harness.transport("a", **options)
    await sender.start(Inbox())
    await harness.transport("b").start(inbox)
    return sender, inbox


async def test_drop_rate_one_loses_everything(harness: MemoryHarness) -> None:
    harness.network.drop_rate = 1.0
    sender, inbox = await _pair(harness)
    sender.send([append("a", "b", i) for i in range(20)])
    await wait_until(lambda: harness.network.stats["dropped"] == 20, what="20 drops")
    assert len(inbox) == 0


async def test_duplicate_rate_one_delivers_twice(harness: MemoryHarness) -> None:
    harness.network.duplicate_rate = 1.0
    sender, inbox = await _pair(harness)
    sender.send([append("a", "b", i) for i in range(5)])
    await wait_until(lambda: len(inbox) == 10, what="duplicates")
    assert sorted(_commits(inbox)) == sorted(list(range(5)) * 2)


async def test_delay_holds_messages_back(harness: MemoryHarness) -> None:
    harness.network.delay = (0.05, 0.05)
    sender, inbox = await _pair(harness)
    loop = asyncio.get_running_loop()
    sent_at = loop.time()
    sender.send([append("a", "b", 1)])
    await wait_until(lambda: len(inbox) == 1, what="delayed delivery")
    assert loop.time() - sent_at >= 0.045


async def test_reorder_loses_nothing(harness: MemoryHarness) -> None:
    harness.network.reorder_rate = 0.5
    harness.network.reorder_delay = 0.01
    sender, inbox = await _pair(harness)
    sender.send([append("a", "b", i) for i in range(100)])
    await wait_until(lambda: len(inbox) == 100, what="all reordered messages")
    assert sorted(_commits(inbox)) == list(range(100))
    assert _commits(inbox) != list(range(100))


async def _lossy_run(seed: int, cluster: str) -> list[int]:
    harness = MemoryHarness(cluster, MemoryNetwork(seed=seed, drop_rate=0.5))
    try:
        sender, inbox = await _pair(harness)
        sender.send([append("a", "b", i) for i in range(100)])
        await wait_until(lambda: len(inbox) + harness.network.stats["dropped"] == 100)
        return _commits(inbox)
    finally:
        await harness.close()


async def test_same_seed_same_faults(cluster_name: str) -> None:
    first = await _lossy_run(7, cluster_name)
    assert 0 < len(first) < 100
    assert await _lossy_run(7, cluster_name) == first
    assert await _lossy_run(8, cluster_name) != first


async def test_partition_and_heal(harness: MemoryHarness) -> None:
    inboxes = {node: Inbox() for node in ("a", "b", "c")}
    transports = {node: harness.transport(node) for node in inboxes}
    for node, transport in transports.items():
        await transport.start(inboxes[node])
    harness.network.partition(["a"], ["b", "c"])
    transports["a"].send([append("a", "b", 1)])
    transports["b"].send([append("b", "c", 2)])
    await wait_until(lambda: len(inboxes["c"]) == 1, what="delivery inside a group")
    assert len(inboxes["b"]) == 0
    assert harness.network.stats["partitioned"] == 1
    harness.network.heal()
    transports["a"].send([append("a", "b", 3)])
    await wait_until(lambda: len(inboxes["b"]) == 1, what="delivery after heal")
    harness.network.disconnect("c")
    transports["b"].send([append("b", "c", 4)])
    transports["b"].send([append("b", "a", 5)])
    await wait_until(lambda: len(inboxes["a"]) == 1, what="delivery to a connected node")
    assert len(inboxes["c"]) == 1
    harness.network.connect("c")
    transports["b"].send([append("b", "c", 6)])
    await wait_until(lambda: len(inboxes["c"]) == 2, what="delivery after connect")


async def test_unconsumed_inbox_overflow_drops_the_oldest(harness: MemoryHarness) -> None:
    sender = harness.transport("a")
    await sender.start(Inbox())
    stopped = harness.transport("b", inbox_max_length=5)
    await stopped.start(Inbox())
    await stopped.stop()  # the inbox stays, bounded, with nobody consuming it
    sender.send([append("a", "b", i) for i in range(10)])
    await wait_until(lambda: harness.network.stats["overflow"] == 5, what="overflow")
    inbox = Inbox()
    await harness.transport("b").start(inbox)
    assert _commits(inbox) == [5, 6, 7, 8, 9]


async def test_oversized_send_is_dropped_at_the_sender(harness: MemoryHarness) -> None:
    sender, inbox = await _pair(harness, max_message_bytes=512)
    sender.send([append("a", "b", 1, data=b"x" * 1024), append("a", "b", 2)])
    await wait_until(lambda: len(inbox) == 1, what="the small message")
    assert sender.stats.send_dropped["oversized"] == 1
    assert _commits(inbox) == [2]


async def test_handler_exception_does_not_break_the_transport(harness: MemoryHarness) -> None:
    seen: list[Message] = []

    def flaky(message: Message) -> None:
        seen.append(message)
        if len(seen) == 1:
            raise RuntimeError("handler bug")

    sender = harness.transport("a")
    await sender.start(Inbox())
    await harness.transport("b").start(flaky)
    sender.send([append("a", "b", 1), append("a", "b", 2)])
    await wait_until(lambda: len(seen) == 2, what="second message after a failing handler")


async def test_client_is_a_request_client(harness: MemoryHarness) -> None:
    client = await harness.client()
    assert isinstance(client, MemoryRequestClient)
    assert isinstance(client, RequestClient)
    await client.close()


def _dropped(client: RequestClient, count: int) -> bool:
    return client.dropped["bad_mac"] == count


async def test_client_drops_a_forged_reply_and_takes_the_nodes_own(
    harness: MemoryHarness,
) -> None:
    release = asyncio.Event()

    async def serve(kind: str, body: bytes) -> bytes:
        await release.wait()
        return b"genuine"

    await harness.transport("b").start(Inbox(), serve)
    client = await harness.client()
    request = asyncio.create_task(client.request("b", "status"))
    await wait_until(lambda: bool(harness.network.reply_addresses()), what="request sent")
    (address,) = harness.network.reply_addresses()
    forged = Envelope(b"forged", "reply", harness.cluster, correlation_id="client-1", status="ok")
    for count, key in enumerate((OTHER_KEY, KEY), 1):  # another key; ours, as if from c
        harness.network.inject(
            address, key.sign(forged, sender="c", recipient="", cluster_id=CLUSTER_ID)
        )
        await wait_until(partial(_dropped, client, count), what="reply dropped")
    release.set()
    assert await request == b"genuine"
