"""The replay server is bounded (docs/protocol.md §7): a ``from`` beyond the log is answered
at once without reading storage, answers go only to a requester's own reply address, an
answer is capped in entries, bytes and range, and a requester that asks too often is
throttled without holding up the others.

A real single-node Node (in-memory storage and transport) holds the log; the ReplayServer
under test answers on the real broker."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from raftmq._amqp import topology
from raftmq.core.config import RaftConfig
from raftmq.core.types import Entry
from raftmq.node.node import Node
from raftmq.node.retention import Retention
from raftmq.node.types import ServiceHost
from raftmq.protocol import names
from raftmq.protocol.record import Record
from raftmq.services.replay import ReplayServer
from raftmq.storage.memory import MemoryStorage
from raftmq.transport.memory import MemoryNetwork
from tests.node.memory_cluster import Item

pytestmark = pytest.mark.integration


class CountingHost:
    """A node's ServiceHost that counts the log entries the replay server reads."""

    def __init__(self, host: ServiceHost) -> None:
        self._host = host
        self.reads = 0  # committed_entries calls
        self.entries_read = 0  # entries they returned

    def __getattr__(self, name: str) -> Any:
        return getattr(self._host, name)

    async def committed_entries(
        self, lo: int, hi: int, max_bytes: int | None = None
    ) -> list[Entry]:
        self.reads += 1
        if max_bytes is None:
            entries = await self._host.committed_entries(lo, hi)
        else:
            entries = await self._host.committed_entries(lo, hi, max_bytes)
        self.entries_read += len(entries)
        return list(entries)


@dataclass
class Answers:
    """Replies on one reply queue, by correlation id."""

    queue: AbstractQueue
    by_id: dict[str | None, list[AbstractIncomingMessage]] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> Answers:
        async def on_message(message: AbstractIncomingMessage) -> None:
            self.by_id.setdefault(message.correlation_id, []).append(message)
            self.arrived.set()

        await self.queue.consume(on_message, no_ack=True)
        return self

    def finished(self, correlation_id: str) -> bool:
        """An end marker or an error reply arrived for ``correlation_id``."""
        return any(
            names.H_REPLAY_END in (m.headers or {}) or names.H_STATUS in (m.headers or {})
            for m in self.by_id.get(correlation_id, [])
        )

    async def wait(self, correlation_ids: list[str], timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while not all(self.finished(c) for c in correlation_ids):
                self.arrived.clear()
                await self.arrived.wait()

    def entries(self, correlation_id: str) -> list[int]:
        messages = self.by_id.get(correlation_id, [])
        return [cast(int, (m.headers or {})[names.H_INDEX]) for m in messages[:-1]]

    def end(self, correlation_id: str) -> Any:
        return (self.by_id[correlation_id][-1].headers or {}).get(names.H_REPLAY_END)


@dataclass
class Replay:
    """A running ReplayServer beside a one-node cluster holding ``written`` writes."""

    node: Node[Item]
    host: CountingHost
    server: ReplayServer
    channel: AbstractChannel
    written: int  # writes in the log (indexes 2..written + 1: index 1 is the NOOP)
    cluster: str  # cluster name

    async def requester(self) -> Answers:
        name = names.replay_reply_queue(self.cluster, uuid.uuid4().hex)
        queue = await self.channel.declare_queue(name, exclusive=True, auto_delete=True)
        return await Answers(queue).start()

    async def ask(self, reply_to: str, body: dict[str, Any] | bytes) -> str:
        correlation_id = uuid.uuid4().hex
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        await self.channel.default_exchange.publish(
            aio_pika.Message(raw, reply_to=reply_to, correlation_id=correlation_id),
            routing_key=names.replay_queue(self.cluster),
        )
        return correlation_id

    def counter(self, name: str) -> int:
        return self.node.status().counters.get(name, 0)


async def _started(
    amqp_url: str,
    cluster: str,
    bodies: list[bytes],
    retention: Retention | None = None,
    **limits: Any,
) -> AsyncIterator[Replay]:
    """A one-node cluster holding ``bodies`` (compacted per ``retention``, keeping 10
    trailing entries) and a ReplayServer with ``limits``."""
    node = Node(
        config=RaftConfig(node_id="a", voters=("a",), trailing_entries=10),
        retention=retention,
        storage=MemoryStorage(cluster=cluster, node_id="a"),
        transport=MemoryNetwork(seed=1).transport("a", cluster),
        model=Item,
        tick_interval=0.01,
        seed=1,
    )
    host = node.service_host
    leads = asyncio.Event()

    def on_role(_: object) -> None:
        if node.is_leader:
            leads.set()

    host.on_role_change(on_role)
    await node.start()
    connection = await aio_pika.connect(amqp_url)
    server: ReplayServer | None = None
    try:
        async with asyncio.timeout(10):
            await leads.wait()
        await asyncio.gather(*(host.submit_payload(Record(body=b).encode()) for b in bodies))
        counting = CountingHost(host)
        server = ReplayServer(cast(ServiceHost, counting), amqp_url, **limits)
        channel = await connection.channel(publisher_confirms=True)
        await topology.declare_all(channel, cluster)
        await server.start()
        yield Replay(node, counting, server, channel, len(bodies), cluster)
    finally:
        if server is not None:
            await server.stop()
        cleanup = await connection.channel()
        await topology.delete_all(cleanup, cluster)
        await connection.close()
        await node.stop()


@pytest.fixture
async def replay(amqp_url: str, cluster_name: str) -> AsyncIterator[Replay]:
    """Replay of 300 writes of 100 bytes, bounded to 100 entries / 5,000 bytes / 250
    indexes per answer and 5 requests (10 at once) per second per requester."""
    bodies = [b"%03d" % k + b"x" * 97 for k in range(300)]
    limits = {"max_entries": 100, "max_bytes": 5_000, "max_range": 250, "rate": 5, "burst": 10}
    async for started in _started(amqp_url, cluster_name, bodies, None, **limits):
        yield started


async def test_from_beyond_the_log_is_answered_at_once_without_reading(
    replay: Replay,
) -> None:
    """A ``from`` above the applied index (once: a backward scan without end) gets an end
    marker claiming nothing and costs no storage read; one beyond int64 gets an error."""
    answers = await replay.requester()
    far = [replay.written + 10, 10**12, (1 << 63) - 2]
    asked = [await replay.ask(answers.queue.name, {"from": f, "max": 10}) for f in far]
    huge = await replay.ask(answers.queue.name, {"from": 1 << 70})
    await answers.wait([*asked, huge])
    assert [answers.end(c) for c in asked] == [f - 1 for f in far]
    assert all(answers.entries(c) == [] for c in asked)
    assert replay.host.reads == 0
    [error] = answers.by_id[huge]
    assert error.headers == {names.H_STATUS: "error"}
    assert json.loads(error.body)["reason"].startswith("bad replay request")
    assert replay.counter("replay_answered") == len(far)


async def test_answers_never_go_to_the_writes_queue_an_inbox_or_another_cluster(
    replay: Replay, cluster_name: str
) -> None:
    """A ``reply_to`` naming the writes queue (where an answer would be appended again), a
    node inbox, a subscription, another cluster's reply queue, a server-named queue or
    nothing is refused and counted: nothing is published there."""
    channel = replay.channel
    targets = [
        names.writes_queue(cluster_name),
        names.inbox_queue(cluster_name, "a"),
        names.subscription_queue(cluster_name, "victim"),
        names.replay_reply_queue("other" + cluster_name, "x"),
    ]
    queues = [await topology.declare_writes(channel, cluster_name)]
    for name in targets[1:]:  # exclusive: gone with the test's connection
        queues.append(await channel.declare_queue(name, exclusive=True))
    server_named = await channel.declare_queue(exclusive=True)
    queues.append(server_named)
    for reply_to in [*targets, server_named.name, ""]:
        await replay.ask(reply_to, {"from": 1, "max": 1000})
    answers = await replay.requester()  # served after the refused ones: they are done
    await answers.wait([await replay.ask(answers.queue.name, {"from": 1, "max": 5})])
    for queue in queues:
        declared = await channel.declare_queue(queue.name, passive=True)
        assert declared.declaration_result.message_count == 0, queue.name
    assert replay.counter("replay_refused") == len(targets) + 2
    assert replay.host.reads == 1  # only the allowed request read the log


async def test_an_answer_is_capped_in_entries_bytes_and_range(replay: Replay) -> None:
    """Whatever ``max`` and ``to`` ask: at most max_entries messages, max_bytes of bodies,
    max_range indexes; the end marker says how far it covered, to ask again from there."""
    answers = await replay.requester()
    by_entries = await replay.ask(answers.queue.name, {"from": 1, "to": None, "max": 10**9})
    await answers.wait([by_entries])
    first = answers.entries(by_entries)
    assert len(first) == 50  # 5,000 bytes of 100-byte bodies, under the 100 entries
    assert answers.end(by_entries) == first[-1]
    replay.server.max_bytes = 1 << 20
    by_count = await replay.ask(answers.queue.name, {"from": 1, "max": 10**9})
    await answers.wait([by_count])
    assert len(answers.entries(by_count)) == 100
    replay.server.max_entries = 10**6
    by_range = await replay.ask(answers.queue.name, {"from": 1, "to": 10**9, "max": 10**9})
    await answers.wait([by_range])
    assert answers.end(by_range) == 250 and max(answers.entries(by_range)) <= 250
    assert replay.host.entries_read <= 3 * 250  # each answer read at most its range


async def test_a_requester_asking_too_often_is_throttled_and_others_are_served(
    replay: Replay,
) -> None:
    """100 requests at once from one reply_to: a burst of them are answered, the rest
    get a ``throttled`` error at the cost of one small message; another requester asking
    meanwhile gets its full answer."""
    replay.server.throttle.rate = 0.5  # a burst of 10, then one every 2 s: load-proof
    greedy, other = await replay.requester(), await replay.requester()
    began = time.monotonic()
    flood = [await replay.ask(greedy.queue.name, {"from": 1, "max": 100}) for _ in range(100)]
    polite = await replay.ask(other.queue.name, {"from": 1, "max": 100})
    await other.wait([polite])
    await greedy.wait(flood, timeout=60)
    elapsed = time.monotonic() - began
    assert len(other.entries(polite)) == 50
    answered = [c for c in flood if names.H_REPLAY_END in (greedy.by_id[c][-1].headers or {})]
    throttled = [c for c in flood if c not in answered]
    assert 10 <= len(answered) <= 10 + 0.5 * elapsed + 1
    for correlation_id in throttled:
        [reply] = greedy.by_id[correlation_id]
        assert json.loads(reply.body)["reason"].startswith("throttled")
    assert replay.counter("replay_throttled") == len(throttled)
