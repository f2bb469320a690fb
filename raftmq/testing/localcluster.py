"""Run a cluster of ``raftmq node`` subprocesses on this machine (demo, tests, benchmarks).

Each node gets its own SQLite file, log file and applied log (JSON lines of every applied
write) under ``workdir/<node_id>/``. The cluster key is a random key file,
``workdir/cluster.key``, that every node and :meth:`LocalCluster.admin` use (unless the
cluster is ``insecure``). With ``metrics=True`` each node serves ``/metrics``,
``/healthz`` and ``/readyz`` on a spare port of its own, kept across its restarts
(:meth:`LocalCluster.metrics_url`). Nothing here is needed in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from raftmq.client.admin import AdminClient
from raftmq.protocol.auth import ClusterKey
from raftmq.protocol.requests import NodeStatus


@dataclass(frozen=True, slots=True)
class AppliedLine:
    """One line of a node's applied log."""

    index: int  # log index
    term: int  # entry term
    body: bytes  # the write's body


class LocalCluster:
    """Start, kill and inspect local node processes of one cluster."""

    def __init__(
        self,
        cluster: str,
        node_ids: list[str],
        workdir: Path,
        *,
        amqp_url: str,
        tick_interval: float = 0.05,
        extra_env: dict[str, str] | None = None,
        node_env: dict[str, dict[str, str]] | None = None,
        insecure: bool = False,
        metrics: bool = False,
    ) -> None:
        self.cluster = cluster  # cluster name (unique per test)
        self.node_ids = list(node_ids)  # every voter
        self.workdir = workdir  # per-node folders live here
        self.amqp_url = amqp_url  # broker URL
        self.tick_interval = tick_interval  # seconds per core tick
        self.extra_env = dict(extra_env or {})  # more RAFTMQ_* settings for every node
        self.node_env = dict(node_env or {})  # more settings for one node (e.g. its database)
        self.insecure = insecure  # nodes run --insecure, without a key file
        self.metrics = metrics  # nodes serve metrics and health (RAFTMQ_METRICS_PORT)
        self.metrics_ports: dict[str, int] = {}  # node -> its metrics port, once started
        self.processes: dict[str, subprocess.Popen[bytes]] = {}  # running nodes
        self.stopped: set[str] = set()  # nodes we killed or stopped on purpose
        self._logs: dict[str, IO[bytes]] = {}

    def node_dir(self, node_id: str) -> Path:
        """The folder of one node's files."""
        return self.workdir / node_id

    def applied_log(self, node_id: str) -> Path:
        """The JSON-lines file of the writes a node applied."""
        return self.node_dir(node_id) / "applied.jsonl"

    def log_file(self, node_id: str) -> Path:
        """The node's stdout/stderr."""
        return self.node_dir(node_id) / "node.log"

    @property
    def key_file(self) -> Path:
        """The cluster key file of every node (created on first use)."""
        path = self.workdir / "cluster.key"
        if not path.exists():
            self.workdir.mkdir(parents=True, exist_ok=True)
            # Created readable by its owner only, as an operator would keep it.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as stream:
                stream.write(secrets.token_hex(32) + "\n")
        return path

    def metrics_url(self, node_id: str, path: str = "/metrics") -> str:
        """The URL of ``path`` (``/metrics``, ``/healthz``, ``/readyz``) on a node of a
        cluster made with ``metrics=True`` (the node must have been started once)."""
        return f"http://127.0.0.1:{self.metrics_ports[node_id]}{path}"

    def key(self) -> ClusterKey | None:
        """The cluster key (None for an insecure cluster)."""
        return None if self.insecure else ClusterKey.from_text(self.key_file.read_text())

    def start(self, node_id: str) -> None:
        """Start (or restart) one node process."""
        if node_id in self.processes and self.processes[node_id].poll() is None:
            raise RuntimeError(f"node {node_id} is already running")
        folder = self.node_dir(node_id)
        folder.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            {
                "RAFTMQ_CLUSTER": self.cluster,
                "RAFTMQ_NODE_ID": node_id,
                "RAFTMQ_PEERS": ",".join(n for n in self.node_ids if n != node_id),
                # A cluster of one node says so: a node never runs alone by omission.
                "RAFTMQ_SINGLE_NODE": str(self.node_ids == [node_id]).lower(),
                "RAFTMQ_AMQP_URL": self.amqp_url,
                "RAFTMQ_DATA_DIR": str(folder),
                "RAFTMQ_TICK_INTERVAL": str(self.tick_interval),
                "PYTHONUNBUFFERED": "1",
            }
        )
        for inherited in ("RAFTMQ_CLUSTER_KEY", "RAFTMQ_CLUSTER_KEY_FILE", "RAFTMQ_INSECURE"):
            env.pop(inherited, None)  # the cluster's own key (or insecure) decides
        for inherited in ("RAFTMQ_METRICS_PORT", "RAFTMQ_METRICS_HOST"):
            env.pop(inherited, None)  # one port for every node could not work
        if self.metrics:
            port = self.metrics_ports.setdefault(node_id, spare_port())
            env["RAFTMQ_METRICS_PORT"] = str(port)
        if self.insecure:
            env["RAFTMQ_INSECURE"] = "true"
        else:
            env["RAFTMQ_CLUSTER_KEY_FILE"] = str(self.key_file)
        env.update(self.extra_env)
        env.update(self.node_env.get(node_id, {}))
        log = self._logs.get(node_id)
        if log is None:
            log = self._logs[node_id] = open(self.log_file(node_id), "ab")  # noqa: SIM115
        self.stopped.discard(node_id)
        self.processes[node_id] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "raftmq",
                "node",
                "--applied-log",
                str(self.applied_log(node_id)),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal does not hit the nodes
        )

    def start_all(self) -> None:
        """Start every node."""
        for node_id in self.node_ids:
            self.start(node_id)

    def running(self, node_id: str) -> bool:
        """True while the node's process is alive."""
        process = self.processes.get(node_id)
        return process is not None and process.poll() is None

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a node and wait for it to exit (SIGKILL: a crash)."""
        process = self.processes.get(node_id)
        if process is None or process.poll() is not None:
            return
        self.stopped.add(node_id)
        process.send_signal(sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    async def restart(
        self,
        node_id: str,
        admin: AdminClient,
        *,
        sig: int = signal.SIGTERM,
        timeout: float = 60.0,
    ) -> int | None:
        """Stop one node with ``sig`` (waiting for its exit off the event loop, so that
        clients on it keep running), start it again and wait until it follows a leader
        and applied what that leader had committed when it came back (a rolling
        restart's step); return the stopped process's exit code."""
        await asyncio.to_thread(self.kill, node_id, sig)
        process = self.processes.get(node_id)
        code = process.returncode if process is not None else None
        self.start(node_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        target: int | None = None
        while True:
            statuses = await admin.statuses(timeout=0.5)
            mine = statuses.get(node_id)
            leader = statuses.get(mine.leader_id) if mine and mine.leader_id else None
            if mine is not None and leader is not None:
                target = leader.commit if target is None else target
                if mine.applied >= target:
                    return code
            if loop.time() >= deadline:
                raise TimeoutError(f"{node_id} did not catch up within {timeout} s: {statuses}")
            await asyncio.sleep(0.05)

    def stop_all(self) -> None:
        """SIGTERM every node (graceful), SIGKILL what does not exit; close logs."""
        self.stopped.update(self.processes)
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self._logs.values():
            log.close()
        self._logs.clear()

    def crashed(self) -> dict[str, str]:
        """Nodes that exited without being told to, with the end of their log."""
        return {
            node_id: self.log_file(node_id).read_text(errors="replace")[-3000:]
            for node_id, process in self.processes.items()
            if process.poll() is not None and node_id not in self.stopped
        }

    async def watch(self, interval: float = 0.2) -> None:
        """Return as soon as a node exits unexpectedly (run beside a scenario)."""
        while not self.crashed():  # noqa: ASYNC110 - polling child processes, no event to wait on
            await asyncio.sleep(interval)

    async def delete_queues(self) -> None:
        """Delete the nodes' inbox queues and the cluster's shared objects (after stop_all), so
        nothing stays on the broker."""

        from raftmq._amqp import topology
        from raftmq._amqp.connect import Connector
        from raftmq.protocol.names import inbox_queue

        connection = await Connector(self.amqp_url).connect()  # one URL or several
        try:
            channel = await connection.channel()
            for node_id in self.node_ids:
                await channel.queue_delete(inbox_queue(self.cluster, node_id))
            await topology.delete_all(channel, self.cluster)  # writes, committed, dead, replay
        finally:
            await connection.close()

    def admin(self) -> AdminClient:
        """A client for status and writes (enter it with ``async with``)."""
        # Nodes started a moment ago may not have bootstrapped the cluster yet.
        return AdminClient.connect(
            self.amqp_url, self.cluster, self.node_ids, key=self.key(), bootstrap_wait=60.0
        )

    def read_applied(self, node_id: str) -> list[AppliedLine]:
        """Every write the node applied, in apply order (across its restarts)."""
        path = self.applied_log(node_id)
        if not path.exists():
            return []
        lines = []
        for raw in path.read_text().splitlines():
            if raw.strip():
                item = json.loads(raw)
                lines.append(AppliedLine(item["index"], item["term"], item["body"].encode()))
        return lines


def spare_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the system's pick for port 0)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def three_node_cluster(amqp_url: str) -> AsyncIterator[tuple[LocalCluster, str]]:
    """Nodes n1..n3 of a fresh cluster (unique name, SQLite files in a temporary folder):
    start them, wait for a leader, yield (the cluster, the leader's id); afterwards stop
    them and delete the cluster's queues (what the benchmarks run against)."""
    with tempfile.TemporaryDirectory(prefix="raftmq-cluster-") as tmp:
        name = f"local{uuid.uuid4().hex[:6]}"
        cluster = LocalCluster(name, ["n1", "n2", "n3"], Path(tmp), amqp_url=amqp_url)
        cluster.start_all()
        try:
            async with cluster.admin() as admin:
                leader = (await wait_for_leader(admin, timeout=60)).node_id
            yield cluster, leader
        finally:
            cluster.stop_all()
            await cluster.delete_queues()


async def wait_for_leader(
    admin: AdminClient, *, timeout: float, exclude: set[str] | frozenset[str] = frozenset()
) -> NodeStatus:
    """Poll statuses until one answering node (not in ``exclude``) leads; its status."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        statuses = await admin.statuses(timeout=0.25)  # a dead node costs one short wait
        leaders = [
            s
            for s in statuses.values()
            if s and s.role.value == "leader" and s.node_id not in exclude
        ]
        if leaders:
            return max(leaders, key=lambda s: s.term)
        if loop.time() >= deadline:
            raise TimeoutError(f"no leader within {timeout} s: {statuses}")
        await asyncio.sleep(0.05)


async def wait_answering(admin: AdminClient, node_ids: list[str], *, timeout: float = 30.0) -> None:
    """Poll statuses until every node in ``node_ids`` answers (its process is up)."""
    async with asyncio.timeout(timeout):
        while True:
            statuses = await admin.statuses(timeout=0.5)
            if all(statuses.get(n) is not None for n in node_ids):
                return


async def wait_applied(
    admin: AdminClient, node_ids: list[str], index: int, *, timeout: float
) -> None:
    """Poll statuses until every node in ``node_ids`` applied ``index``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        statuses = await admin.statuses(timeout=0.5)
        if all((s := statuses.get(n)) is not None and s.applied >= index for n in node_ids):
            return
        if loop.time() >= deadline:
            raise TimeoutError(f"index {index} not applied on {node_ids} within {timeout} s")
        await asyncio.sleep(0.05)
