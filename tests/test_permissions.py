"""The broker permission layout (`raftmq permissions`) on the real broker, in a vhost and
with users of its own that the test creates and deletes.

What it shows: with the layout applied, the broker itself refuses a producer account's
forged Raft RPC (a publish to a node inbox), forged committed message and forged
subscription position, and a subscriber account's forged committed message; while the
cluster runs on the node account and a Producer on the producer account gets its writes
committed.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import aio_pika
import aiormq
import pytest

from raftmq._amqp import topology
from raftmq.client.producer import Producer
from raftmq.client.subscriber import Subscriber
from raftmq.errors import ConfigError
from raftmq.protocol import names
from raftmq.protocol.permissions import Role, layout
from raftmq.testing.localcluster import LocalCluster
from tests.conftest import NODE_TICK

RABBITMQCTL = "rabbitmqctl"


def _ctl(*args: str) -> None:
    subprocess.run([RABBITMQCTL, "-q", *args], check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Accounts:
    """A vhost with the three accounts of cluster ``cluster`` (URLs with credentials)."""

    cluster: str
    vhost: str
    node_url: str
    producer_url: str
    subscriber_url: str


@pytest.fixture
def accounts(amqp_url: str) -> Iterator[Accounts]:
    """A fresh vhost and three users with the layout applied by `raftmq permissions apply`;
    all deleted afterwards."""
    if subprocess.run(["which", RABBITMQCTL], capture_output=True).returncode != 0:
        pytest.skip("rabbitmqctl is not available")
    tag = uuid.uuid4().hex[:8]
    cluster, vhost = f"p{tag}", f"raftmq-test-{tag}"
    users = {role: f"raftmq-test-{tag}-{role}" for role in ("node", "producer", "subscriber")}
    passwords = {role: uuid.uuid4().hex for role in users}
    _ctl("add_vhost", vhost)
    try:
        env = dict(os.environ)
        env.update({f"RAFTMQ_{role.upper()}_PASSWORD": pw for role, pw in passwords.items()})
        done = subprocess.run(
            [sys.executable, "-m", "raftmq", "permissions", "apply", "--cluster", cluster,
             "--vhost", vhost, "--node-user", users["node"], "--producer-user",
             users["producer"], "--subscriber-user", users["subscriber"]],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        for password in passwords.values():
            assert password not in done.stdout + done.stderr
        parts = urlsplit(amqp_url)
        host = f"{parts.hostname}:{parts.port or 5672}"

        def url(role: str) -> str:
            return f"amqp://{users[role]}:{passwords[role]}@{host}/{quote(vhost, safe='')}"

        yield Accounts(cluster, vhost, url("node"), url("producer"), url("subscriber"))
    finally:
        for user in users.values():
            subprocess.run([RABBITMQCTL, "-q", "delete_user", user], capture_output=True)
        _ctl("delete_vhost", vhost)


async def _refused(url: str, exchange: str, routing_key: str) -> str:
    """Publish one message with confirms; return the broker's refusal (fails if none)."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        target = (
            channel.default_exchange
            if exchange == ""
            else await channel.get_exchange(exchange, ensure=False)
        )
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as refused:
            await target.publish(aio_pika.Message(b'{"forged": true}'), routing_key)
            await asyncio.wait_for(channel.close(), 5)
        return str(refused.value)
    finally:
        await connection.close()


@pytest.fixture
async def declared(accounts: Accounts) -> AsyncIterator[Accounts]:
    """The cluster's shared objects, the inbox of a node "n9" (not one the cluster runs)
    and a position queue, declared by the node account."""
    connection = await aio_pika.connect(accounts.node_url)
    try:
        channel = await connection.channel()
        await topology.declare_all(channel, accounts.cluster)
        await channel.declare_queue(names.inbox_queue(accounts.cluster, "n9"), auto_delete=True)
        await channel.declare_queue(
            names.position_queue(accounts.cluster, "billing"), durable=True, auto_delete=True
        )
        yield accounts
    finally:
        await connection.close()


async def test_producer_account_cannot_forge_rpc_committed_or_position(
    declared: Accounts,
) -> None:
    c = declared.cluster
    url = declared.producer_url
    for exchange, key in [
        ("", names.inbox_queue(c, "n9")),  # a forged Raft RPC to a node inbox
        ("", names.position_queue(c, "billing")),  # a forged subscription position
        (names.committed_exchange(c), ""),  # a forged committed message
        (names.positions_exchange(c), "billing"),
        (names.replay_exchange(c), ""),
    ]:
        reason = await _refused(url, exchange, key)
        assert "ACCESS_REFUSED" in reason, (exchange, key, reason)


async def test_producer_account_cannot_consume_the_writes_queue(declared: Accounts) -> None:
    connection = await aio_pika.connect(declared.producer_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(names.writes_queue(declared.cluster), passive=True)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await queue.consume(_ignore)
    finally:
        await connection.close()


async def test_a_node_on_a_producer_account_is_refused_with_a_config_error(
    accounts: Accounts,
) -> None:
    """A node started with the wrong account fails at start with what to fix, instead of
    running without the objects its clients publish to."""
    connection = await aio_pika.connect(accounts.producer_url)
    try:
        with pytest.raises(ConfigError, match="configure permission"):
            await topology.declare_shared(connection, accounts.cluster)
    finally:
        await connection.close()


async def test_subscriber_account_reads_committed_but_cannot_forge_it(
    declared: Accounts,
) -> None:
    c = declared.cluster
    for exchange, key in [
        (names.committed_exchange(c), ""),
        (names.writes_exchange(c), ""),
        ("", names.inbox_queue(c, "n9")),
    ]:
        reason = await _refused(declared.subscriber_url, exchange, key)
        assert "ACCESS_REFUSED" in reason, (exchange, key, reason)
    # What it is for: its own queue, bound to the committed exchange, receives what the
    # node account publishes there.
    subscriber = await aio_pika.connect(declared.subscriber_url)
    node = await aio_pika.connect(declared.node_url)
    try:
        channel = await subscriber.channel()
        queue = await channel.declare_queue(
            names.anonymous_subscription_queue(c, "t"), exclusive=True
        )
        await queue.bind(names.committed_exchange(c))
        node_channel = await node.channel(publisher_confirms=True)
        committed = await node_channel.get_exchange(names.committed_exchange(c), ensure=False)
        await committed.publish(aio_pika.Message(b"real"), "")
        async with asyncio.timeout(10):
            while (message := await queue.get(fail=False)) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert message.body == b"real"
        await message.ack()
    finally:
        await subscriber.close()
        await node.close()


async def test_cluster_runs_on_the_node_account_and_commits_a_restricted_producer(
    declared: Accounts, tmp_path: Path
) -> None:
    cluster = LocalCluster(
        declared.cluster,
        ["n1", "n2", "n3"],
        tmp_path / "cluster",
        amqp_url=declared.node_url,
        tick_interval=NODE_TICK,
    )
    try:
        cluster.start_all()
        async with Producer(declared.producer_url, declared.cluster) as producer:
            receipts = [await producer.publish(b"w%d" % k, timeout=60) for k in range(3)]
            assert all(r.index is not None for r in receipts)
            # A named subscription from earliest on the subscriber account: replay
            # requests and positions go through the exchanges that account may write to.
            async with Subscriber(
                declared.subscriber_url, declared.cluster, name="ledger", start="earliest"
            ) as subscriber:
                # A replay answered by a node that has not applied w0-w2 yet ends empty;
                # the next live message's prev-index then shows the gap, filled by replay.
                receipts.append(await producer.publish(b"w3", timeout=60))
                got = []
                async with asyncio.timeout(60):
                    async for message in subscriber:
                        got.append(message.body)
                        if len(got) == 4:
                            break
        assert got == [b"w0", b"w1", b"w2", b"w3"]
        async with Subscriber(declared.subscriber_url, declared.cluster, name="ledger") as resumed:
            assert resumed.last_index == receipts[-1].index  # the stored position
    finally:
        cluster.stop_all()
        await cluster.delete_queues()


async def _ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    """A consumer callback for a consume the broker must refuse."""


def test_layout_grants_each_role_only_its_names() -> None:
    """The patterns, read as RabbitMQ reads them (a regex search from the start): which
    names each role may write to and read from."""
    c = "orders"
    grants = {grant.role: grant for grant in layout(c)}
    every = {
        "default": "amq.default",
        "inbox": names.inbox_queue(c, "n1"),
        "writes": names.writes_exchange(c),
        "committed": names.committed_exchange(c),
        "replay": names.replay_exchange(c),
        "positions": names.positions_exchange(c),
        "position queue": names.position_queue(c, "billing"),
        "subscription": names.subscription_queue(c, "billing"),
        "receipts": names.producer_reply_queue(c, "p1", "x"),
        "other cluster": names.writes_exchange("orders2"),
    }

    def allowed(pattern: str) -> set[str]:
        return {label for label, name in every.items() if re.match(pattern, name)}

    assert allowed(grants[Role.PRODUCER].write) == {"writes"}
    assert allowed(grants[Role.PRODUCER].read) == {"receipts"}
    assert allowed(grants[Role.SUBSCRIBER].write) == {
        "replay",
        "positions",
        "position queue",
        "subscription",
    }
    assert allowed(grants[Role.SUBSCRIBER].read) == {
        "committed",
        "positions",
        "position queue",
        "subscription",
    }
    assert allowed(grants[Role.NODE].write) == set(every) - {"other cluster"}


def test_layout_refuses_a_cluster_name_that_is_not_a_name() -> None:
    with pytest.raises(ConfigError):
        layout("a.*")


def test_permissions_print_names_no_password() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "raftmq", "permissions", "print", "--cluster", "orders"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "set_permissions -p / raftmq-producer" in done.stdout
    assert '"$RAFTMQ_PRODUCER_PASSWORD"' in done.stdout
