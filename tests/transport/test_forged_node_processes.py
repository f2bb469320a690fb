"""Forged node traffic against three real ``raftmq node`` processes on the broker: a client
with a broker account but without the cluster key publishes Raft messages straight to the
node inboxes (``raftmq.C.node.N``). Every one is dropped and counted in ``status``; nothing
is appended or applied, the leader and term stay, and the cluster commits as before."""

from __future__ import annotations

import aio_pika
import pytest

from raftmq.core.messages import AppendEntries, AppendEntriesReply, Message, TimeoutNow
from raftmq.core.types import Entry
from raftmq.protocol.auth import ClusterKey
from raftmq.protocol.codec import encode
from raftmq.protocol.names import inbox_queue
from raftmq.protocol.record import Record
from raftmq.testing.localcluster import wait_applied, wait_for_leader
from tests.conftest import ClusterFactory

pytestmark = pytest.mark.integration

FORGED = Record(body=b"forged", content_type="text/plain")
ROGUE_KEY = ClusterKey(b"a key that is not the cluster's")


def _forgeries(leader: str, follower: str, term: int, last: int) -> list[Message]:
    def append(at_term: int) -> AppendEntries:
        return AppendEntries(
            term=at_term,
            sender=leader,
            recipient=follower,
            prev_log_index=last,
            prev_log_term=term,
            entries=(Entry(index=last + 1, term=at_term, data=FORGED.encode()),),
            leader_commit=last + 1,
        )

    return [
        append(term + 1),  # a new "leader" at a higher term
        append(term),  # a second leader in the current term
        AppendEntriesReply(
            term=term, sender=follower, recipient=leader, success=True, match_index=10**9
        ),
        TimeoutNow(term=term, sender=leader, recipient=follower),
    ]


async def test_forged_raft_messages_are_dropped_counted_and_never_applied(
    local_cluster: ClusterFactory, amqp_url: str
) -> None:
    cluster = local_cluster()
    cluster.start_all()
    async with cluster.admin() as admin:
        leader = await wait_for_leader(admin, timeout=30)
        first = await admin.write(Record(body=b"first"))
        await wait_applied(admin, cluster.node_ids, first.index, timeout=30)
        follower = next(n for n in cluster.node_ids if n != leader.node_id)
        status = await admin.status(leader.node_id)
        cluster_id = status.cluster_id or ""
        forgeries = _forgeries(leader.node_id, follower, status.term, status.last_index)
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            for message in forgeries:
                envelope = encode(message, cluster.cluster, correlation_id="forged-1")
                rogue = ROGUE_KEY.mac(
                    envelope, sender="", recipient=message.recipient, cluster_id=cluster_id
                )
                for mac in (None, rogue):
                    await channel.default_exchange.publish(
                        aio_pika.Message(
                            envelope.body,
                            type=envelope.type,
                            app_id=cluster.cluster,
                            correlation_id=envelope.correlation_id,
                            message_id=mac,
                        ),
                        routing_key=inbox_queue(cluster.cluster, message.recipient),
                    )
        second = await admin.write(Record(body=b"second"))  # behind the forgeries
        await wait_applied(admin, cluster.node_ids, second.index, timeout=30)
        statuses = await admin.statuses()
    dropped = {n: s.transport["dropped"] for n, s in statuses.items() if s}
    assert dropped[leader.node_id] == {"unsigned": 1, "bad_mac": 1}  # the forged reply
    assert dropped[follower] == {"unsigned": 3, "bad_mac": 3}  # two appends, a TimeoutNow
    assert all(
        s and s.term == leader.term and s.leader_id == leader.node_id for s in statuses.values()
    )
    for node_id in cluster.node_ids:
        bodies = [(line.index, line.body) for line in cluster.read_applied(node_id)]
        assert bodies == [(first.index, b"first"), (second.index, b"second")], node_id
