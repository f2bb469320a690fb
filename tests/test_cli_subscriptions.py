"""`raftmq subscriptions list|delete`, run as the process an operator runs (``python -m
raftmq ...``) against a one-node cluster: the list shows each named subscription's stored
position, depth, consumers, bounds and (with --nodes) lag, and not anonymous ones; delete
refuses a subscription in use and one that does not exist, and removes both queues of one
that does. Failures are one line, exit 1, no traceback, no password."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys

import pytest

from raftmq.client import Producer, Subscriber
from raftmq.protocol.names import position_queue, subscription_queue
from raftmq.testing.localcluster import wait_for_leader
from tests.conftest import ClusterFactory
from tests.test_cli_errors import DOWN_BROKER, PASSWORD, _clean, _env

needs_rabbitmqctl = pytest.mark.skipif(
    shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl (and a local broker)"
)


async def _raftmq(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``python -m raftmq ARGS``."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "raftmq", *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or _env(),
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def _queues() -> set[str]:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", "list_queues", "name", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return set(out.decode().split())


@needs_rabbitmqctl
@pytest.mark.integration
async def test_list_and_delete_named_subscriptions(local_cluster: ClusterFactory) -> None:
    cluster = local_cluster(["n1"])
    cluster.start_all()
    async with cluster.admin() as admin:
        await wait_for_leader(admin, timeout=30)
    c, url = cluster.cluster, cluster.amqp_url
    common = ("--cluster", c, "--amqp-url", url)
    name = "reader"
    try:
        async with Subscriber(url, c, name=name) as sub:
            async with Producer(url, c) as producer:
                receipts = [await producer.publish(b"w%d" % k, wait_commit=True) for k in range(5)]
            indexes = [r.index for r in receipts]
            async for message in sub:
                if message.index == indexes[2]:
                    break  # 3 processed (at close), 2 left in the queue
        async with Subscriber(url, c):  # an anonymous one, listed nowhere
            code, out, err = await _raftmq(
                "subscriptions", "list", *common, "--nodes", "n1", "--json",
                "--cluster-key-file", str(cluster.key_file),
            )  # fmt: skip
        _clean(code, out + err, expected=0)
        listed = json.loads(out)
        [row] = listed["subscriptions"]
        assert listed["commit"] is not None and listed["commit"] >= indexes[-1]
        assert row["name"] == name and row["queue"] == subscription_queue(c, name)
        assert (row["position"], row["depth"], row["consumers"]) == (indexes[2], 2, 0)
        assert row["lag"] == listed["commit"] - indexes[2]
        assert (row["max_length"], row["expires"]) == (100_000, 7 * 24 * 3600)

        code, out, err = await _raftmq("subscriptions", "list", *common)
        _clean(code, out + err, expected=0)
        header, line = out.splitlines()
        assert header.split() == ["name", "position", "lag", "depth", "consumers"]
        assert line.split() == [name, str(indexes[2]), "-", "2", "0"]
        assert "--nodes" in err  # says why the lag is empty

        async with Subscriber(url, c, name=name):
            code, out, err = await _raftmq("subscriptions", "delete", name, *common)
        _clean(code, out + err)
        assert "has 1 consumer(s)" in err and "--force" in err, err
        assert subscription_queue(c, name) in await _queues()

        code, out, err = await _raftmq("subscriptions", "delete", name, *common)
        _clean(code, out + err, expected=0)
        assert out.strip() == f"deleted subscription {name} of cluster {c}"
        assert not {subscription_queue(c, name), position_queue(c, name)} & await _queues()

        code, out, err = await _raftmq("subscriptions", "delete", name, *common)
        _clean(code, out + err)
        assert err.startswith(f"error: no subscription '{name}' in cluster '{c}'"), err
    finally:
        await Subscriber.delete_subscription(url, c, name)


MISSING_CTL = {"RAFTMQ_RABBITMQCTL": "/nonexistent/ctl"}


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["list", "--amqp-url", DOWN_BROKER], MISSING_CTL, "'/nonexistent/ctl' not found"),
        (["list", "--rabbitmqctl", "false"], {}, "rabbitmqctl list_queues -p / "),
        (["delete", "a.b"], {}, "'a.b' is not a subscription name"),
        (["delete", "gone", "--amqp-url", DOWN_BROKER], {}, "127.0.0.1:1"),
    ],
    ids=["rabbitmqctl-from-env-missing", "rabbitmqctl-fails", "bad-name", "broker-down"],
)
async def test_failures_are_one_line_without_traceback_or_secret(
    args: list[str], env: dict[str, str], says: str
) -> None:
    code, out, err = await _raftmq("subscriptions", *args, env=_env(**env))
    _clean(code, out + err)
    assert err.startswith("error: ") and says in err, err
    assert len(err.splitlines()) == 1 and out == "", (out, err)
    assert PASSWORD not in err
