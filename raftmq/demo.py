"""``raftmq demo``: three local nodes on SQLite, writes, a leader killed, nothing lost."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

from raftmq.client.admin import AdminClient
from raftmq.localcluster import LocalCluster, wait_applied, wait_for_leader
from raftmq.record import Record

NODES = ["n1", "n2", "n3"]
DEMO_TIMEOUT = 180.0  # the demo never hangs: it gives up after this many seconds

NO_BROKER = """\
No RabbitMQ broker answers at {url}, and no Docker engine is available to start one.
raftmq uses RabbitMQ as its network, so the demo needs a broker. Start one and run
`make demo` again: on Debian/Ubuntu `sudo apt-get install rabbitmq-server` then
`sudo rabbitmq-server -detached`; with Docker `docker run -d -p 5672:5672 rabbitmq:3`;
or point the demo at another broker with RAFTMQ_AMQP_URL=amqp://user:pass@host:5672/."""


def _say(text: str = "") -> None:
    print(text, flush=True)


def _broker_reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 1.0):
            return True
    except OSError:
        return False


def _docker_broker(stack: ExitStack) -> str | None:
    try:
        import docker  # type: ignore[import-untyped,import-not-found,unused-ignore]

        docker.from_env().ping()
        from testcontainers.rabbitmq import RabbitMqContainer
    except Exception:
        return None
    _say("No local broker: starting RabbitMQ in a container (testcontainers)...")
    container = stack.enter_context(RabbitMqContainer("rabbitmq:3.13"))
    host = container.get_container_host_ip()
    return f"amqp://guest:guest@{host}:{container.get_exposed_port(5672)}/"


async def run_demo(amqp_url: str, writes: int) -> int:
    """Run the whole demo; return the process exit code (0 when everything checked out)."""
    with ExitStack() as stack:
        if not _broker_reachable(amqp_url):
            docker_url = _docker_broker(stack)
            if docker_url is None:
                _say(NO_BROKER.format(url=amqp_url))
                return 2
            amqp_url = docker_url
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="raftmq-demo-")))
        cluster = LocalCluster(f"demo-{uuid.uuid4().hex[:6]}", NODES, workdir, amqp_url=amqp_url)
        stack.callback(cluster.stop_all)
        scenario = asyncio.create_task(_scenario(cluster, writes))
        watchdog = asyncio.create_task(cluster.watch())
        done, _ = await asyncio.wait(
            {scenario, watchdog}, timeout=DEMO_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        for task in (scenario, watchdog):
            task.cancel()
        await asyncio.gather(scenario, watchdog, return_exceptions=True)
        cluster.stop_all()
        with contextlib.suppress(Exception):
            await cluster.delete_queues()
        if scenario in done and scenario.exception() is None:
            return scenario.result()
        if scenario in done:
            _say(f"\nThe demo failed: {scenario.exception()!r}")
            for node_id in NODES:
                tail = cluster.log_file(node_id).read_text(errors="replace")[-1500:]
                _say(f"--- {node_id}\n{tail}")
        if watchdog in done:
            _say("\nA node exited unexpectedly; the end of its log:")
            for node_id, tail in cluster.crashed().items():
                _say(f"--- {node_id}\n{tail}")
        else:
            _say(f"\nThe demo did not finish within {DEMO_TIMEOUT:.0f} s.")
        return 1
    return 1


async def _print_status(admin: AdminClient) -> None:
    statuses = await admin.statuses(timeout=1.0)
    _say(f"    {'node':<6}{'role':<11}{'term':>5}{'commit':>8}{'applied':>9}")
    for node_id in sorted(statuses):
        s = statuses[node_id]
        if s is None:
            _say(f"    {node_id:<6}{'(down)':<11}")
        else:
            _say(f"    {node_id:<6}{s.role.value:<11}{s.term:>5}{s.commit:>8}{s.applied:>9}")


async def _write_some(admin: AdminClient, first: int, count: int) -> dict[int, str]:
    acked: dict[int, str] = {}
    for i in range(first, first + count):
        body = f"order-{i}"
        commit = await admin.write(Record(body=body.encode(), content_type="text/plain"))
        acked[commit.index] = body
    _say(f"    {count} writes committed, indexes {min(acked)}..{max(acked)}")
    return acked


async def _scenario(cluster: LocalCluster, writes: int) -> int:
    _say(
        f"Starting a 3-node raftmq cluster {cluster.cluster!r} (SQLite files in {cluster.workdir})"
    )
    cluster.start_all()
    async with cluster.admin() as admin:
        started = time.monotonic()
        leader = await wait_for_leader(admin, timeout=30)
        _say(
            f"\n1. {leader.node_id} was elected leader of term {leader.term} "
            f"after {time.monotonic() - started:.2f} s"
        )
        await _print_status(admin)

        _say(f"\n2. Writing {writes} messages through the leader")
        acked = await _write_some(admin, 0, writes)
        await wait_applied(admin, NODES, max(acked), timeout=60)
        _say("    applied on every node:")
        await _print_status(admin)

        old = leader.node_id
        _say(f"\n3. Killing the leader {old} with SIGKILL")
        cluster.kill(old)
        killed_at = time.monotonic()
        new = await wait_for_leader(admin, timeout=30, exclude={old})
        _say(
            f"    {new.node_id} took over in term {new.term} "
            f"after {time.monotonic() - killed_at:.2f} s"
        )
        await _print_status(admin)

        _say(f"\n4. Writing {writes} more messages through the new leader")
        acked.update(await _write_some(admin, writes, writes))

        _say(f"\n5. Restarting {old}: it catches up from the new leader")
        cluster.start(old)
        await wait_applied(admin, NODES, max(acked), timeout=60)
        await _print_status(admin)

    _say("\n6. Checking every node's applied log")
    logs = {
        n: [(line.index, line.body.decode()) for line in cluster.read_applied(n)] for n in NODES
    }
    expected = sorted(acked.items())
    ok = True
    for node_id, applied in logs.items():
        indexes = [index for index, _ in applied]
        same = sorted(set(applied)) == expected and indexes == sorted(set(indexes))
        ok = ok and same
        _say(
            f"    {node_id}: {len(applied)} writes applied, "
            f"{'identical to the acknowledged writes' if same else 'MISMATCH'}"
        )
    if ok:
        _say(
            f"\nNothing lost: {len(expected)} acknowledged writes, applied once each, "
            "in the same order, on all 3 nodes."
        )
    return 0 if ok else 1
