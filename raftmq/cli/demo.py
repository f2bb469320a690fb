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
from raftmq.client.producer import Producer
from raftmq.client.subscriber import Subscriber
from raftmq.testing.localcluster import LocalCluster, wait_applied, wait_for_leader

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


class _Traffic:
    """A producer publishing ``order-<n>`` steadily and a subscriber reading the committed
    stream from the earliest index, both running while the demo kills the leader."""

    def __init__(self, amqp_url: str, cluster: str) -> None:
        self.producer = Producer(amqp_url, cluster)
        self.subscriber = Subscriber(amqp_url, cluster, start="earliest")
        self.acked: dict[int, str] = {}  # index -> body of every committed publish
        self.received: list[tuple[int, str]] = []  # what the subscriber saw, in order
        self.slowest = (0.0, "")  # longest wait for a commit receipt, and for which body
        self._next = 0

    async def publish(self, count: int, pace: float = 0.02) -> None:
        for _ in range(count):
            body = f"order-{self._next}"
            self._next += 1
            started = time.monotonic()
            receipt = await self.producer.publish(body.encode(), content_type="text/plain")
            waited = time.monotonic() - started
            if waited > self.slowest[0]:
                self.slowest = (waited, body)
            assert receipt.index is not None
            self.acked[receipt.index] = body
            await asyncio.sleep(pace)

    async def subscribe(self) -> None:
        async for message in self.subscriber:
            self.received.append((message.index, message.body.decode()))

    async def wait_received(self, index: int, timeout: float = 60.0) -> None:
        async with asyncio.timeout(timeout):
            while not self.received or self.received[-1][0] < index:  # noqa: ASYNC110
                await asyncio.sleep(0.05)


async def _scenario(cluster: LocalCluster, writes: int) -> int:
    _say(
        f"Starting a 3-node raftmq cluster {cluster.cluster!r} (SQLite files in {cluster.workdir})"
    )
    cluster.start_all()
    traffic = _Traffic(cluster.amqp_url, cluster.cluster)
    async with cluster.admin() as admin, traffic.producer, traffic.subscriber:
        started = time.monotonic()
        leader = await wait_for_leader(admin, timeout=30)
        _say(
            f"\n1. {leader.node_id} was elected leader of term {leader.term} "
            f"after {time.monotonic() - started:.2f} s"
        )
        await _print_status(admin)
        reader = asyncio.create_task(traffic.subscribe())

        _say(f"\n2. A producer publishes {writes} messages to raftmq.{cluster.cluster}.writes;")
        _say(f"   a subscriber reads raftmq.{cluster.cluster}.committed from the earliest index")
        await traffic.publish(writes)
        await traffic.wait_received(max(traffic.acked))
        first, last = min(traffic.acked), max(traffic.acked)
        _say(f"    {writes} messages committed at indexes {first}..{last}")
        if last - first + 1 > writes:
            other = last - first + 1 - writes
            _say(f"    ({other} indexes among them hold the leader's fan-out progress)")
        _say("    the subscriber got:")
        for index, body in traffic.received[:3]:
            _say(f"      index {index:>4}  {body}")
        _say(f"      ... {len(traffic.received)} messages in all")
        await _print_status(admin)

        old = leader.node_id
        _say(f"\n3. Killing the leader {old} with SIGKILL while the producer keeps publishing")
        publishing = asyncio.create_task(traffic.publish(writes))
        await asyncio.sleep(0.2)
        cluster.kill(old)
        killed_at = time.monotonic()
        new = await wait_for_leader(admin, timeout=30, exclude={old})
        _say(
            f"    {new.node_id} took over in term {new.term} "
            f"after {time.monotonic() - killed_at:.2f} s"
        )
        await publishing
        waited, body = traffic.slowest
        _say(f"    all {2 * writes} publishes committed; longest wait {waited:.2f} s ({body})")
        await _print_status(admin)

        _say(f"\n4. Restarting {old}: it catches up from the new leader")
        cluster.start(old)
        await wait_applied(admin, NODES, max(traffic.acked), timeout=60)
        await traffic.wait_received(max(traffic.acked))
        await _print_status(admin)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)

    _say("\n5. Checking")
    expected = sorted(traffic.acked.items())
    got = traffic.received
    ok = got == expected
    verdict = "exactly the acknowledged publishes" if ok else "MISMATCH with the acknowledged"
    _say(f"    subscriber: {len(got)} messages in index order, {verdict}")
    for node_id in NODES:
        applied = [(line.index, line.body.decode()) for line in cluster.read_applied(node_id)]
        same = applied == expected
        ok = ok and same
        _say(
            f"    {node_id}: {len(applied)} writes applied, "
            f"{'identical, once each, in index order' if same else 'MISMATCH'}"
        )
    if ok:
        _say(
            f"\nNothing lost, nothing twice: {len(expected)} acknowledged messages, applied in "
            "the same order on all 3 nodes and delivered once, in order, to the subscriber."
        )
    return 0 if ok else 1
