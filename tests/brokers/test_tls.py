"""TLS to the broker, for real: a private RabbitMQ node whose only listener is TLS
(``listeners.tcp = none``), with a certificate from a trustme CA, that requires a client
certificate (``verify_peer``, ``fail_if_no_peer_cert``). A raftmq node reaches it through
the TLS settings (``RAFTMQ_AMQP_CA_FILE``, ``..._CERT_FILE``, ``..._KEY_FILE``), the admin
client and the producer through aiormq's URL query (``?cafile=&certfile=&keyfile=``), the
subscriber through :class:`raftmq._amqp.connect.TlsFiles`: every way a user can give them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from raftmq._amqp.connect import Brokers, TlsFiles
from raftmq.client import Producer, Subscriber
from raftmq.testing.localcluster import LocalCluster, wait_for_leader
from raftmq.testing.private_rabbitmq import (
    PrivateNode,
    PrivateRabbitMQ,
    ServerTls,
    connection_name,
)
from tests.brokers.conftest import require_private_nodes

pytestmark = pytest.mark.integration

CLIENT_CN = "raftmq-test-client"


@dataclass(frozen=True)
class TlsBroker:
    """The private TLS node, the client's files, and files of a CA nobody trusts."""

    brokers: PrivateRabbitMQ
    node: PrivateNode
    client: TlsFiles  # the right CA, a client certificate it signed, its key
    stranger: TlsFiles  # another CA (and a client certificate of it)

    @property
    def query_url(self) -> str:
        """The node's URL with the client's files in aiormq's query parameters."""
        assert self.client.ca_file and self.client.cert_file and self.client.key_file
        return (
            f"{self.node.url}?cafile={self.client.ca_file}&certfile={self.client.cert_file}"
            f"&keyfile={self.client.key_file}"
        )


def _issue(ca: trustme.CA, folder: Path, prefix: str) -> TlsFiles:
    """The CA's certificate, and a client certificate and key it issued, as files."""
    folder.mkdir(parents=True, exist_ok=True)
    client = ca.issue_cert(CLIENT_CN, common_name=CLIENT_CN)
    files = TlsFiles(
        folder / f"{prefix}-ca.pem", folder / f"{prefix}-client.pem", folder / f"{prefix}-key.pem"
    )
    assert files.ca_file and files.cert_file and files.key_file
    ca.cert_pem.write_to_path(str(files.ca_file))
    client.cert_chain_pems[0].write_to_path(str(files.cert_file))
    client.private_key_pem.write_to_path(str(files.key_file))
    return files


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    """One private TLS node for the module (booted once: ~5-20 s), stopped and deleted
    afterwards whatever the tests did."""
    require_private_nodes()
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    server_cert, server_key = folder / "server.pem", folder / "server-key.pem"
    server.cert_chain_pems[0].write_to_path(str(server_cert))
    server.private_key_pem.write_to_path(str(server_key))
    client = _issue(ca, folder, "right")
    stranger = _issue(trustme.CA(), folder, "stranger")
    assert client.ca_file is not None
    with PrivateRabbitMQ("rmqtls") as brokers:
        (node,) = brokers.start(1, tls=ServerTls(client.ca_file, server_cert, server_key))
        yield TlsBroker(brokers, node, client, stranger)


def _tls_connections(broker: TlsBroker) -> list[list[str]]:
    """``[name, ssl, peer_cert_subject]`` of every connection the TLS node serves."""
    listing = broker.brokers.ctl(
        broker.node,
        "list_connections",
        "--no-table-headers",
        "client_properties",
        "ssl",
        "peer_cert_subject",
    )
    return [
        [connection_name(row), *row.rsplit("\t", 2)[-2:]]
        for row in listing.splitlines()
        if row.strip()
    ]


async def test_a_cluster_commits_and_a_subscriber_reads_over_amqps(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    """A 1-node raftmq cluster on the TLS-only broker (TLS settings) commits a producer's
    write (URL query) and a subscriber (TlsFiles) receives it; every connection the broker
    serves is TLS with the client certificate."""
    client = tls_broker.client
    name = f"tls{uuid.uuid4().hex[:8]}"
    cluster = LocalCluster(
        name,
        ["n1"],
        tmp_path,
        amqp_url=tls_broker.query_url,  # the admin client's
        extra_env={
            "RAFTMQ_AMQP_URL": tls_broker.node.url,  # the node's: plain amqps:// ...
            "RAFTMQ_AMQP_CA_FILE": str(client.ca_file),  # ... and the TLS settings
            "RAFTMQ_AMQP_CERT_FILE": str(client.cert_file),
            "RAFTMQ_AMQP_KEY_FILE": str(client.key_file),
        },
    )
    cluster.start_all()
    try:
        async with cluster.admin() as admin:
            await wait_for_leader(admin, timeout=60)
        subscriber_brokers = Brokers.of(tls_broker.node.url, client)
        async with (
            Subscriber(subscriber_brokers, name, start="earliest") as subscriber,
            Producer(tls_broker.query_url, name) as producer,
        ):
            receipt = await producer.publish(b"over tls", timeout=30)
            assert receipt.index is not None
            async with asyncio.timeout(30):
                message = await anext(subscriber)
            assert (message.index, message.body) == (receipt.index, b"over tls")
            connections = _tls_connections(tls_broker)
        names = {row[0] for row in connections}
        assert {
            f"raftmq:{name}:n1",
            f"raftmq-ingest:{name}:n1",
            f"raftmq-fanout:{name}:n1",
        } <= names
        assert {f"raftmq-producer:{name}", f"raftmq-subscriber:{name}"} <= names
        for row in connections:
            assert row[1] == "true", row
            assert f"CN={CLIENT_CN}" in row[2], row
        assert not cluster.crashed()
    finally:
        cluster.stop_all()


async def test_a_wrong_ca_is_refused_with_a_clear_error(tls_broker: TlsBroker) -> None:
    """A client that trusts another CA fails the handshake with a ConnectionError naming
    TLS, the broker and the reason; one without a client certificate is refused by the
    broker."""
    stranger = TlsFiles(
        tls_broker.stranger.ca_file, tls_broker.client.cert_file, tls_broker.client.key_file
    )
    with pytest.raises(ConnectionError) as refused:
        async with Producer(Brokers.of(tls_broker.node.url, stranger), "nobody"):
            pass
    text = str(refused.value)
    assert f"TLS with the broker at 127.0.0.1:{tls_broker.node.port} failed" in text
    assert "certificate verify failed" in text
    assert "CA file" in text
    no_cert = TlsFiles(tls_broker.client.ca_file)
    with pytest.raises(ConnectionError):
        async with Producer(Brokers.of(tls_broker.node.url, no_cert), "nobody"):
            pass


def test_a_node_with_a_wrong_ca_exits_with_a_clear_error(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    """`raftmq node` with the TLS settings of another CA exits 1 with one short line
    naming TLS, the broker and the reason, and no traceback."""
    stranger = tls_broker.stranger
    env = dict(os.environ)
    env.update(
        {
            "RAFTMQ_CLUSTER": f"tls{uuid.uuid4().hex[:8]}",
            "RAFTMQ_NODE_ID": "n1",
            "RAFTMQ_SINGLE_NODE": "true",
            "RAFTMQ_INSECURE": "true",
            "RAFTMQ_DATA_DIR": str(tmp_path),
            "RAFTMQ_AMQP_URL": tls_broker.node.url,
            "RAFTMQ_AMQP_CA_FILE": str(stranger.ca_file),
            "RAFTMQ_AMQP_CERT_FILE": str(stranger.cert_file),
            "RAFTMQ_AMQP_KEY_FILE": str(stranger.key_file),
        }
    )
    for inherited in ("RAFTMQ_CLUSTER_KEY", "RAFTMQ_CLUSTER_KEY_FILE", "RAFTMQ_PEERS"):
        env.pop(inherited, None)
    done = subprocess.run(
        [sys.executable, "-m", "raftmq", "node"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert f"TLS with the broker at 127.0.0.1:{tls_broker.node.port} failed" in done.stderr
    assert "certificate verify failed" in done.stderr
