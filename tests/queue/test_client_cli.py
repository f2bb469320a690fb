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
