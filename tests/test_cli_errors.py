"""Every expected failure of a `raftmq` command, run as the process an operator runs
(``python -m raftmq ...``): a short message naming what failed and what to do, exit code
1 (130 after Ctrl-C), no traceback, and no password or cluster key on the screen.

Broker-down cases use 127.0.0.1:1, where nothing listens."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest

from raftmq.protocol import names
from raftmq.testing.localcluster import wait_for_leader
from tests.conftest import ClusterFactory

PASSWORD = "pw" + secrets.token_hex(8)  # in every URL below: it must never be printed
KEY = secrets.token_hex(24)  # a cluster key: likewise
DOWN_BROKER = f"amqp://raftmq:{PASSWORD}@127.0.0.1:1/"
DOWN_POSTGRES = f"postgresql+asyncpg://postgres:{PASSWORD}@127.0.0.1:1/test"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTMQ_")}
    env.update(extra)
    return env


async def _raftmq(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "raftmq",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env or _env(),
        cwd=cwd,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode()


def _clean(code: int, out: str, expected: int = 1) -> None:
    """The shape of every expected failure: its exit code, no traceback, no secret."""
    assert code == expected, out
    assert "Traceback" not in out, out
    assert PASSWORD not in out and KEY not in out, out


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["publish", "hello", "--amqp-url", DOWN_BROKER], "127.0.0.1:1"),
        (["subscribe", "--amqp-url", DOWN_BROKER], "127.0.0.1:1"),
        (["status", "--nodes", "n1", "--amqp-url", DOWN_BROKER], "127.0.0.1:1"),
        (["write", "x", "--nodes", "n1", "--amqp-url", DOWN_BROKER], "127.0.0.1:1"),
        (["transfer-leadership", "--to", "n1", "--amqp-url", DOWN_BROKER], "127.0.0.1:1"),
        (["members", "add", "n4", "--nodes", "n1", "--amqp-url", DOWN_BROKER], "127.0.0.1:1"),
        (["members", "list", "--amqp-url", DOWN_BROKER], "give --nodes"),
        (["members", "replace", "n3", "--nodes", "n1", "--amqp-url", DOWN_BROKER], "127.0.0.1:1"),
        (["db", "upgrade", "--database-url", "x.db"], "is not a URL"),
        (["db", "upgrade", "--database-url", f"mysql://u:{PASSWORD}@h/x"], "mysql:// are not"),
        (
            ["db", "current", "--database-url", f"postgresql+psycopg2://u:{PASSWORD}@h/x"],
            "async driver",
        ),
        (["db", "current", "--database-url", DOWN_POSTGRES], "database 127.0.0.1:1"),
        (["db", "upgrade", "--database-url", "sqlite:////nonexistent/dir/x.db"], "missing"),
    ],
    ids=[
        "publish-broker-down",
        "subscribe-broker-down",
        "status-broker-down",
        "write-broker-down",
        "transfer-broker-down",
        "members-broker-down",
        "members-no-nodes",
        "members-replace-broker-down",
        "db-not-a-url",
        "db-mysql",
        "db-sync-driver",
        "db-postgres-down",
        "db-sqlite-no-folder",
    ],
)
async def test_one_line_error_without_traceback_or_secret(args: list[str], says: str) -> None:
    code, out = await _raftmq(*args)
    _clean(code, out)
    assert out.startswith("error: ") and says in out, out
    assert len(out.splitlines()) == 1, out  # one line: nothing of the libraries' logs


@pytest.mark.parametrize(
    ("toml", "args", "says"),
    [
        (None, ["--amqp-url", DOWN_BROKER], "broker 127.0.0.1:1"),
        (None, ["--database-url", DOWN_POSTGRES], "database 127.0.0.1:1"),
        (None, ["--database-url", f"mysql://root:{PASSWORD}@db/raft"], "mysql:// are not"),
        (None, ["--database-url", "x.db"], "is not a URL"),
        ('node_id = "n1\n', [], "is not valid TOML"),
        # A misspelt key holding the key itself: named, its value never shown.
        (f'cluster_kye = "{KEY}"\n', [], "cluster_kye: Extra inputs are not permitted"),
    ],
    ids=["broker-down", "postgres-down", "mysql", "not-a-url", "bad-toml", "toml-typo-secret"],
)
async def test_node_fails_clearly(
    tmp_path: Path, toml: str | None, args: list[str], says: str
) -> None:
    node = ["node", "--node-id", "n1", "--single-node", "--data-dir", str(tmp_path)]
    if toml is not None:
        config = tmp_path / "node.toml"
        config.write_text(toml)
        node += ["--config", str(config)]
    env = _env(RAFTMQ_CLUSTER_KEY=KEY, RAFTMQ_AMQP_URL=DOWN_BROKER)
    code, out = await _raftmq(*node, *args, env=env)
    _clean(code, out)
    last = out.splitlines()[-1]  # after the node's own log lines, if it got to start
    assert last.startswith("error: ") and says in last, out


async def test_status_json_fails_when_no_node_answers(amqp_url: str, cluster_name: str) -> None:
    """`status --json` used to print nulls and exit 0: a script took that for health.
    (Without a key the client asks without reading the cluster's bootstrap record.)"""
    args = ["status", "--json", "--cluster", cluster_name, "--amqp-url", amqp_url]
    code, out = await _raftmq(*args, "--nodes", "n1,n2", "--timeout", "0.3")
    _clean(code, out)
    first, *rest = out.splitlines()
    assert json.loads(first) == {"n1": None, "n2": None}
    assert len(rest) == 1 and rest[0].startswith("error: no node answered"), out


async def test_status_of_a_cluster_never_started_names_it(amqp_url: str, cluster_name: str) -> None:
    """And creates nothing: looking up the record of a cluster that does not exist used
    to leave its bootstrap queues behind."""
    env = _env(RAFTMQ_CLUSTER_KEY=KEY)
    args = ["status", "--cluster", cluster_name, "--amqp-url", amqp_url, "--nodes", "n1"]
    code, out = await _raftmq(*args, env=env)
    _clean(code, out)
    assert out.startswith(f"error: cluster '{cluster_name}' was never bootstrapped"), out
    connection = await aio_pika.connect(amqp_url)
    try:
        for queue in (
            names.bootstrap_queue(cluster_name),
            names.bootstrap_lock_queue(cluster_name),
        ):
            channel = await connection.channel()
            with pytest.raises(aio_pika.exceptions.ChannelClosed):  # 404: not created
                await channel.declare_queue(queue, passive=True)
    finally:
        await connection.close()


async def test_publish_refuses_an_unknown_cluster_and_creates_nothing(
    amqp_url: str, cluster_name: str
) -> None:
    """A misspelt --cluster used to exit 0 and leave a new durable writes queue behind."""
    code, out = await _raftmq("publish", "x", "--cluster", cluster_name, "--amqp-url", amqp_url)
    _clean(code, out)
    assert f"no cluster '{cluster_name}'" in out and "check --cluster" in out, out
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        with pytest.raises(aio_pika.exceptions.ChannelClosed):  # 404: it was not created
            await channel.declare_queue(names.writes_queue(cluster_name), passive=True)
    finally:
        await connection.close()


async def test_publish_refuses_a_malformed_cluster_name() -> None:
    code, out = await _raftmq("publish", "x", "--cluster", "orders.eu", "--amqp-url", DOWN_BROKER)
    _clean(code, out, expected=2)  # a usage error: nothing was tried
    assert "'orders.eu' is not a cluster name" in out, out


@pytest.fixture
async def writes_queue_without_consumer(amqp_url: str, cluster_name: str) -> AsyncIterator[str]:
    """The writes path of a cluster whose nodes are all down; deleted afterwards."""
    from raftmq._amqp import topology

    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await topology.declare_writes(channel, cluster_name)
        yield cluster_name
        await topology.delete_all(channel, cluster_name)
    finally:
        await connection.close()


async def test_publish_warns_when_nobody_consumes_the_writes_queue(
    amqp_url: str, writes_queue_without_consumer: str
) -> None:
    cluster = writes_queue_without_consumer
    code, out = await _raftmq("publish", "x", "--cluster", cluster, "--amqp-url", amqp_url)
    _clean(code, out, expected=0)  # published: it waits in the queue for a leader
    assert f"warning: nobody consumes raftmq.{cluster}.writes" in out, out


@pytest.mark.integration
async def test_ctrl_c_during_publish_wait_says_what_committed(
    local_cluster: ClusterFactory,
) -> None:
    """Ctrl-C in `publish --wait` used to print 1,394 lines of "Task exception was never
    retrieved"; it says what was committed and exits 130, even while stdin stays open."""
    cluster = local_cluster(["n1"])
    cluster.start_all()
    async with cluster.admin() as admin:
        await wait_for_leader(admin, timeout=30)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "raftmq", "publish", "--wait", "-",
        "--cluster", cluster.cluster, "--amqp-url", cluster.amqp_url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(b"one\ntwo\nthree\n")
        await process.stdin.drain()
        printed = [
            (await asyncio.wait_for(process.stdout.readline(), 30)).decode() for _ in range(3)
        ]
        assert all(line.startswith("index=") for line in printed), printed
        last_index = printed[-1].split()[0].removeprefix("index=")
        process.send_signal(signal.SIGINT)  # stdin is still open: the read must not block it
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = out.decode() + err.decode()
    _clean(process.returncode or 0, text, expected=130)
    assert "never retrieved" not in text, text
    assert f"interrupted: 3 of 3 messages committed (last index {last_index})" in text, text


async def test_version_and_help_without_bool_metavars() -> None:
    code, out = await _raftmq("--version")
    assert code == 0 and out.startswith("raftmq "), out
    for command in (["node"], ["status"], ["publish"], ["db", "upgrade"], ["permissions", "apply"]):
        code, out = await _raftmq(*command, "--help")
        assert code == 0 and "<bool>" not in out, out
