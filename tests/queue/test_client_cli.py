"""`raftmq publish` and `raftmq subscribe` as processes, against a protocol test double."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest

from tests.queue.conftest import ProtocolNode

pytestmark = pytest.mark.integration


async def test_publish_lines_then_subscribe_from_earliest(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode
) -> None:
    common = ["--cluster", cluster_name, "--amqp-url", amqp_url]
    publisher = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "raftmq", "publish", *common, "--wait", "-",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(publisher.communicate(b"alpha\nbeta\ngamma\n"), 60)
    assert publisher.returncode == 0, err.decode()
    assert out.decode().splitlines() == ["index=1 term=1", "index=2 term=1", "index=3 term=1"]

    subscriber = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "raftmq", "subscribe", *common, "--from", "earliest",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert subscriber.stdout is not None
    lines = [(await asyncio.wait_for(subscriber.stdout.readline(), 30)).decode() for _ in range(3)]
    assert lines == ["1\t1\talpha\n", "2\t1\tbeta\n", "3\t1\tgamma\n"]
    subscriber.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(subscriber.communicate(), 30)
    assert subscriber.returncode == 0, err.decode()
    assert b"Traceback" not in err


async def test_subscribe_takes_the_queue_bounds_and_refuses_other_ones(
    amqp_url: str, cluster_name: str, protocol_node: ProtocolNode
) -> None:
    """--max-length and friends are the Subscriber's bounds: a named subscription created
    with other bounds is refused with what to do, not a broker error."""
    from raftmq.client import Subscriber

    name = "bounded"
    try:
        async with Subscriber(amqp_url, cluster_name, name=name, max_length=5):
            pass
        common = ["--cluster", cluster_name, "--amqp-url", amqp_url, "--name", name]
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "raftmq", "subscribe", *common, "--max-length", "7",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 1, err.decode()
        assert b"Traceback" not in err and b"subscriptions delete" in err, err.decode()
    finally:
        await Subscriber.delete_subscription(amqp_url, cluster_name, name)
