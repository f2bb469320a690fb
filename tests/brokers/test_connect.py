"""Broker URLs and TLS settings, checked before any connection (no broker needed), and
the aio-pika internal that client failover relies on (a canary)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import aio_pika
import pytest
from aio_pika.robust_connection import RobustConnection

from raftmq._amqp.connect import ROBUST_ATTEMPT, Brokers, Connector, TlsFiles, masked
from raftmq.errors import ConfigError
from raftmq.node.settings import NodeSettings
from raftmq.runtime import brokers


def _settings(**values: object) -> NodeSettings:
    return NodeSettings(node_id="n1", single_node=True, insecure=True, **values)  # type: ignore[arg-type]


def test_one_url_is_unchanged_and_several_are_split() -> None:
    one = "amqp://guest:guest@127.0.0.1:5672/"
    assert brokers(_settings(amqp_url=one)).urls == (one,)
    listed = brokers(_settings(amqp_url="amqp://a:5672/, amqp://b:5673/,"))
    assert listed.urls == ("amqp://a:5672/", "amqp://b:5673/")
    from_toml = _settings(amqp_url=["amqp://a/", "amqp://b/"])  # a TOML list
    assert brokers(from_toml).urls == ("amqp://a/", "amqp://b/")
    assert Brokers.of(["amqp://a/", "amqp://b/"]).display() == "amqp://a/,amqp://b/"
    assert masked("amqps://u:secret@h:5671/") == "amqps://u:***@h:5671/"


def test_missing_tls_files_and_impossible_combinations_are_config_errors(
    tmp_path: Path,
) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("not checked before connecting")
    tls_url = "amqps://guest:guest@rmq1:5671/"
    with pytest.raises(ConfigError, match=r"amqp_ca_file: the file .*nowhere.pem does not exist"):
        brokers(_settings(amqp_url=tls_url, amqp_ca_file=tmp_path / "nowhere.pem"))
    with pytest.raises(ConfigError, match="no broker URL is amqps://"):
        brokers(_settings(amqp_url="amqp://rmq1/", amqp_ca_file=pem))
    with pytest.raises(ConfigError, match="amqp_key_file is set without amqp_cert_file"):
        brokers(_settings(amqp_url=tls_url, amqp_key_file=pem))
    with pytest.raises(ConfigError, match=r"cafile of amqps://guest:\*\*\*@rmq1.* does not exist"):
        Brokers.of(f"{tls_url}?cafile={tmp_path / 'nowhere.pem'}").check()
    with pytest.raises(ConfigError, match="give the files one way"):
        Brokers.of(f"{tls_url}?cafile={pem}", TlsFiles(ca_file=pem)).check()
    with pytest.raises(ConfigError, match="not an amqp:// or amqps:// URL"):
        brokers(_settings(amqp_url="http://rmq1/"))
    assert brokers(_settings(amqp_url=tls_url, amqp_ca_file=pem)).tls == TlsFiles(pem)


def test_a_node_with_a_missing_ca_file_exits_before_connecting(tmp_path: Path) -> None:
    """`raftmq node` names the setting and the file, exits 1, no traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTMQ_")}
    env.update(
        RAFTMQ_NODE_ID="n1",
        RAFTMQ_SINGLE_NODE="true",
        RAFTMQ_INSECURE="true",
        RAFTMQ_DATA_DIR=str(tmp_path),
        RAFTMQ_AMQP_URL="amqps://guest:guest@127.0.0.1:1/",
        RAFTMQ_AMQP_CA_FILE=str(tmp_path / "missing-ca.pem"),
    )
    done = subprocess.run(
        [sys.executable, "-m", "raftmq", "node"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"amqp_ca_file: the file {tmp_path / 'missing-ca.pem'} does not exist" in done.stderr


@pytest.mark.integration
async def test_connect_tries_the_next_url_and_starts_after_the_last_used(
    amqp_url: str,
) -> None:
    """A URL nobody listens on is skipped at connect; the reconnect after a connection to
    the good URL starts with the URL after it (here the dead one again, then the good)."""
    dead = "amqp://guest:guest@127.0.0.1:1/"
    connector = Connector([dead, amqp_url], name="raftmq-test-connector")
    first = await connector.connect(timeout=5)
    await first.close()
    assert connector.last_url == amqp_url
    second = await connector.connect(timeout=5)
    await second.close()
    assert connector.last_url == amqp_url
    with pytest.raises(aio_pika.exceptions.CONNECTION_EXCEPTIONS):
        await Connector([dead, dead]).connect(timeout=5)


def test_aio_pika_still_has_the_robust_attempt_we_override() -> None:
    """Canary: client failover overrides RobustConnection's private connection attempt
    (raftmq/_amqp/connect.py); an aio-pika upgrade that renames it must fail here."""
    assert callable(getattr(RobustConnection, ROBUST_ATTEMPT, None))
    assert aio_pika.__version__.startswith("10."), aio_pika.__version__
