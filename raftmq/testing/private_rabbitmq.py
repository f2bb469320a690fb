"""Private RabbitMQ nodes beside the machine's shared broker, for tests that need a TLS
listener or a RabbitMQ cluster (tests/brokers/). Nothing here is needed in production.

Each node runs ``rabbitmq-server -detached`` (as user ``rabbitmq``, which the package's
wrapper switches to) with its own node name, ports, config file and directories, all under
one temporary folder; the shared broker (``rabbit@localhost``) is never addressed: every
``rabbitmqctl`` call names a node of this set with ``-n``, and a name of the shared broker
is refused. :meth:`PrivateRabbitMQ.close` stops every node it started (``rabbitmqctl stop``
with the pid file, then SIGKILL of that pid if it is still there) and deletes the folder;
use it as a context manager so that this happens whatever the test did.

A node boots in 15-20 s here: start the nodes of a set together (:meth:`start`), once per
test module.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

SHARED_NODE = "rabbit@localhost"  # the machine's broker: never touched from here
PORT_RANGE = (25700, 29999)  # where private nodes' ports are looked for (checked free)
BOOT_TIMEOUT = 90.0  # seconds a node may take to boot (await_startup)


def available() -> bool:
    """True when this machine can run private nodes (the server and rabbitmqctl exist,
    and we may switch to user rabbitmq: root)."""
    return (
        shutil.which("rabbitmq-server") is not None
        and shutil.which("rabbitmqctl") is not None
        and os.geteuid() == 0
    )


def free_port(taken: set[int]) -> int:
    """A port of PORT_RANGE that nobody listens on (checked by binding it) and that is not
    in ``taken``; added to ``taken``."""
    for _ in range(200):
        port = random.randint(*PORT_RANGE)
        if port in taken:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RuntimeError(f"no free port in {PORT_RANGE}")


@dataclass(frozen=True, slots=True)
class ServerTls:
    """The broker side of TLS: its CA bundle (to verify clients), certificate and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_client_cert: bool = True  # fail_if_no_peer_cert


@dataclass(frozen=True, slots=True)
class PrivateNode:
    """One private RabbitMQ node."""

    name: str  # Erlang node name, e.g. rmq3f2a1b-1@localhost
    port: int  # its one AMQP listener (TLS when tls is set), on 127.0.0.1
    dist_port: int  # Erlang distribution port
    base: Path  # its config, data, log and pid files
    tls: ServerTls | None  # None: plain AMQP

    @property
    def url(self) -> str:
        """The guest URL of this node (amqps:// when it listens with TLS)."""
        scheme = "amqps" if self.tls else "amqp"
        return f"{scheme}://guest:guest@127.0.0.1:{self.port}/"

    @property
    def pid_file(self) -> Path:
        """Written by the server once it runs."""
        return self.base / "rabbit.pid"


class PrivateRabbitMQ:
    """A set of private RabbitMQ nodes (see the module docstring). Use ``with``."""

    def __init__(self, prefix: str = "rmq") -> None:
        # A short unique prefix: two test runs on one machine never share a node name.
        self.prefix = f"{prefix}{uuid.uuid4().hex[:6]}"
        self.root = Path(tempfile.mkdtemp(prefix=f"raftmq-{self.prefix}-"))
        self.root.chmod(0o755)  # user rabbitmq must traverse it
        self.nodes: list[PrivateNode] = []  # every node started, in order
        self._ports: set[int] = set()

    def __enter__(self) -> PrivateRabbitMQ:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- starting ----------------------------------------------------------------------
    def start(self, count: int = 1, *, tls: ServerTls | None = None) -> list[PrivateNode]:
        """Start ``count`` nodes together and wait until each has booted."""
        nodes = [self._launch(tls) for _ in range(count)]
        for node in nodes:
            self._wait_booted(node)
        return nodes

    def _wait_booted(self, node: PrivateNode) -> None:
        # `wait <pid file>` waits for the pid file (a detached node registers with epmd
        # a moment after it starts), then for the application.
        self.ctl(node, "wait", "--timeout", str(int(BOOT_TIMEOUT)), str(node.pid_file))
        self.ctl(node, "await_startup", "--timeout", str(int(BOOT_TIMEOUT)))

    def start_cluster(self, count: int = 3) -> list[PrivateNode]:
        """Start ``count`` nodes and join the others to the first: one RabbitMQ cluster."""
        nodes = self.start(count)
        for node in nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", nodes[0].name)
            self.ctl(node, "start_app")
            self.ctl(node, "await_startup", "--timeout", str(int(BOOT_TIMEOUT)))
        return nodes

    def _launch(self, tls: ServerTls | None) -> PrivateNode:
        index = len(self.nodes) + 1
        name = f"{self.prefix}-{index}@localhost"
        base = self.root / f"node{index}"
        for folder in (base, base / "mnesia", base / "log", base / "plugins-expand"):
            folder.mkdir(parents=True, exist_ok=True)
        if tls is not None:  # copies user rabbitmq can read, wherever the originals are
            (base / "tls").mkdir()
            tls = ServerTls(
                Path(shutil.copy(tls.ca_file, base / "tls" / "ca.pem")),
                Path(shutil.copy(tls.cert_file, base / "tls" / "cert.pem")),
                Path(shutil.copy(tls.key_file, base / "tls" / "key.pem")),
                require_client_cert=tls.require_client_cert,
            )
        node = PrivateNode(name, free_port(self._ports), free_port(self._ports), base, tls)
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq.conf").write_text(_config(node))
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(base)], check=True)
        base.chmod(0o755)
        env = dict(os.environ)
        env.update(
            {
                "RABBITMQ_NODENAME": name,
                "RABBITMQ_DIST_PORT": str(node.dist_port),
                "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),  # without ".conf"
                "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
                "RABBITMQ_LOG_BASE": str(base / "log"),
                "RABBITMQ_PID_FILE": str(node.pid_file),
                "RABBITMQ_FEATURE_FLAGS_FILE": str(base / "feature_flags"),
                "RABBITMQ_PLUGINS_EXPAND_DIR": str(base / "plugins-expand"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            }
        )
        env.pop("RABBITMQ_NODE_PORT", None)  # the config file's listener is the only one
        self.nodes.append(node)  # before it runs: close() must stop it whatever happens
        subprocess.run(
            ["rabbitmq-server", "-detached"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        return node

    # -- operating ---------------------------------------------------------------------
    def ctl(self, node: PrivateNode, *args: str, timeout: float = 120.0) -> str:
        """``rabbitmqctl -n <node> args``; its output. Raises on failure."""
        if node.name == SHARED_NODE or node not in self.nodes:
            raise ValueError(f"{node.name} is not a private node of this set")
        done = subprocess.run(
            ["rabbitmqctl", "-q", "-n", node.name, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl -n {node.name} {' '.join(args)}: {done.stderr or done.stdout}"
            )
        return done.stdout

    def stop_app(self, node: PrivateNode) -> None:
        """Stop the RabbitMQ application on ``node`` (its clients lose their connections;
        the Erlang node stays up)."""
        self.ctl(node, "stop_app")

    def start_app(self, node: PrivateNode) -> None:
        """Start the application again and wait until it serves."""
        self.ctl(node, "start_app")
        self.ctl(node, "await_startup", "--timeout", str(int(BOOT_TIMEOUT)))

    def connection_names(self, node: PrivateNode) -> list[str]:
        """The ``connection_name`` of every client connection ``node`` serves."""
        listing = self.ctl(node, "list_connections", "--no-table-headers", "client_properties")
        return [connection_name(row) for row in listing.splitlines() if row.strip()]

    # -- stopping ----------------------------------------------------------------------
    def close(self) -> None:
        """Stop every node of the set and delete the folder (always: call it in finally)."""
        for node in reversed(self.nodes):
            self._stop(node)
        self.nodes.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def _stop(self, node: PrivateNode) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            subprocess.run(
                ["rabbitmqctl", "-q", "-n", node.name, "stop", str(node.pid_file)],
                capture_output=True,
                timeout=60,
            )
        pid = _read_pid(node.pid_file)
        if pid is not None and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)


def connection_name(row: str) -> str:
    """The ``connection_name`` client property in a row of ``rabbitmqctl list_connections
    client_properties`` ("" when it has none)."""
    found = re.search(r'"connection_name","([^"]*)"', row)
    return found.group(1) if found else ""


def _config(node: PrivateNode) -> str:
    lines = ["loopback_users = none", "log.console = false", "log.file.level = warning"]
    if node.tls is None:
        lines.append(f"listeners.tcp.local = 127.0.0.1:{node.port}")
    else:
        lines += [
            "listeners.tcp = none",
            f"listeners.ssl.local = 127.0.0.1:{node.port}",
            f"ssl_options.cacertfile = {node.tls.ca_file}",
            f"ssl_options.certfile = {node.tls.cert_file}",
            f"ssl_options.keyfile = {node.tls.key_file}",
            "ssl_options.verify = verify_peer",
            f"ssl_options.fail_if_no_peer_cert = {str(node.tls.require_client_cert).lower()}",
        ]
    return "\n".join(lines) + "\n"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie of ours would count as alive; the server's parent is not this process.
    return True


@contextlib.contextmanager
def private_rabbitmq(prefix: str = "rmq") -> Iterator[PrivateRabbitMQ]:
    """A :class:`PrivateRabbitMQ` that is closed however the block ends."""
    brokers = PrivateRabbitMQ(prefix)
    try:
        yield brokers
    finally:
        brokers.close()


def urls(nodes: Sequence[PrivateNode], first: int = 0) -> str:
    """The URLs of ``nodes`` comma-separated, starting with ``nodes[first]`` (the order a
    raftmq node or client tries them in)."""
    ordered = [*nodes[first:], *nodes[:first]]
    return ",".join(node.url for node in ordered)
