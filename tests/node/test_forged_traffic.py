"""Forged node traffic on the in-memory network: Raft messages and requests that anyone
with a broker account could publish to a node inbox, without the cluster key (unsigned)
or with another key. Each is dropped and counted; nothing is appended, applied or served,
and the cluster goes on as if it never came."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from raftmq.core.messages import AppendEntries, AppendEntriesReply, Message, TimeoutNow
from raftmq.core.types import Entry
from raftmq.errors import RequestTimeout
from raftmq.node.node import Node
from raftmq.protocol.auth import ClusterKey
from raftmq.protocol.codec import encode
from raftmq.protocol.names import inbox_queue
from raftmq.protocol.record import Record
from tests.node.memory_cluster import Item, MemoryCluster

FORGED = Record(body=Item(n=666).model_dump_json().encode(), content_type="application/json")
ROGUE_KEY = ClusterKey(b"a key that is not the cluster's")


@pytest.fixture
async def cluster() -> AsyncIterator[MemoryCluster]:
    c = MemoryCluster()
    await c.start_all()
    yield c
    await c.stop_all()


def _forgeries(leader: Node[Item], follower: str) -> list[Message]:
    """The messages a forger sends: entries at a higher and at the same term, a reply
    claiming the follower holds a billion entries, and a TimeoutNow."""
    status = leader.status()
    term, last = status.term, status.last_index

    def append(at_term: int) -> AppendEntries:
        return AppendEntries(
            term=at_term,
            sender=leader.node_id,
            recipient=follower,
            prev_log_index=last,
            prev_log_term=term,
            entries=(Entry(index=last + 1, term=at_term, data=FORGED.encode()),),
            leader_commit=last + 1,
        )

    return [
        append(term + 1),
        append(term),
        AppendEntriesReply(
            term=term, sender=follower, recipient=leader.node_id, success=True, match_index=10**9
        ),
        TimeoutNow(term=term, sender=leader.node_id, recipient=follower),
    ]


def _dropped(node: Node[Item]) -> dict[str, int]:
    dropped: dict[str, int] = node.status().transport["dropped"]
    return dropped


async def test_forged_raft_messages_and_requests_are_dropped_and_counted(
    cluster: MemoryCluster,
) -> None:
    leader = await cluster.leader()
    first = await leader.write(Item(n=1))
    await cluster.wait_applied(first.index)
    follower = next(i for i in cluster.ids if i != leader.node_id)
    term = leader.status().term

    for message in _forgeries(leader, follower):
        queue = inbox_queue("mem", message.recipient)
        envelope = encode(message, "mem", correlation_id="forged-1")
        cluster.network.inject(queue, envelope)  # unsigned
        cluster.network.inject(
            queue,
            ROGUE_KEY.sign(
                envelope,
                sender="",
                recipient=message.recipient,
                cluster_id=cluster.network.cluster_id,
            ),
        )
    for key in (None, ROGUE_KEY):
        rogue = cluster.network.client("mem", key=key)
        for kind, body in (("write", FORGED.encode()), ("transfer", follower.encode())):
            with pytest.raises(RequestTimeout):
                await rogue.request(leader.node_id, kind, body, timeout=0.2)
        with pytest.raises(RequestTimeout):
            await rogue.request(follower, "status", timeout=0.2)

    # Leader: the forged reply twice, write and transfer from two clients; follower: two
    # AppendEntries and a TimeoutNow twice, and the two status requests.
    assert _dropped(leader) == {"unsigned": 3, "bad_mac": 3}
    assert _dropped(cluster.nodes[follower]) == {"unsigned": 4, "bad_mac": 4}
    second = await leader.write(Item(n=2))  # the cluster commits as before
    await cluster.wait_applied(second.index)
    assert all(n.status().term == term for n in cluster.nodes.values())
    assert (await cluster.leader()) is leader
    for applied in cluster.applied.values():
        assert applied == [(first.index, 1), (second.index, 2)]
