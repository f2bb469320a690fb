"""The ``raftmq`` command (typer). Configures logging; everything else lives in the library.

The queue commands (``publish``, ``subscribe``) are in :mod:`raftmq.cli.queue`, the options
the commands share in :mod:`raftmq.cli.options`, the one error handler of every command in
:mod:`raftmq.cli.errors`, the log formats in :mod:`raftmq.cli.logs`.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import importlib.metadata
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import RootModel

from raftmq.cli import logs
from raftmq.cli.errors import (
    BROKER,
    DATABASE,
    HandledGroup,
    add_key_file_secret,
    add_secret,
    check_database_url,
    mask,
    note,
)
from raftmq.cli.keys import NO_KEY_HINT, KeyFileOpt, hint, operator_key
from raftmq.cli.members import members_app
from raftmq.cli.options import AmqpOpt, ClusterOpt, DbUrlOpt, brokers, fail
from raftmq.cli.permissions import permissions_app
from raftmq.cli.queue import publish, subscribe
from raftmq.cli.subscriptions import subscriptions_app
from raftmq.errors import RaftMQError
from raftmq.node.settings import DEFAULT_AMQP_URL, NodeSettings, unknown_variables
from raftmq.protocol.auth import ClusterKey
from raftmq.protocol.record import Record

if TYPE_CHECKING:
    from raftmq._amqp.connect import Brokers

# Plain help (rich_markup_mode=None): typer's rich panels print a `<bool>` type beside
# every flag.
app = typer.Typer(
    help="raftmq: Raft consensus over RabbitMQ.",
    no_args_is_help=True,
    add_completion=False,
    cls=HandledGroup,
    rich_markup_mode=None,
)
db_app = typer.Typer(
    help="Database schema: upgrade and inspect.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(db_app, name="db")
app.add_typer(permissions_app, name="permissions")
app.add_typer(subscriptions_app, name="subscriptions")
app.add_typer(members_app, name="members")

logger = logging.getLogger("raftmq.cli.app")

NodesOpt = Annotated[
    str,
    typer.Option(
        "--nodes",
        envvar="RAFTMQ_NODES",
        help="Comma-separated node ids to ask (one reachable node reveals the others).",
    ),
]


class AnyJson(RootModel[Any]):
    """The value type of a node run from the CLI (it keeps records as bytes)."""


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"raftmq {importlib.metadata.version('raftmq')}")
        raise typer.Exit()


@app.callback()
def _main(
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    # A command's failure is reported by the error handler: the libraries' own account of
    # it (aiormq logs a refused connection at ERROR) would only repeat it. `node` and `demo`
    # configure their own logging.
    logs.configure(logging.WARNING, libs_level=logging.CRITICAL)


def _split(nodes: str) -> list[str]:
    return [n.strip() for n in nodes.split(",") if n.strip()]


def _settings_epilog() -> str:
    """Every node setting, for `raftmq node --help`: most have no flag of their own."""
    names = ", ".join(NodeSettings.model_fields)
    return (
        f"Every setting is a TOML key of --config and a RAFTMQ_<KEY> variable (upper case): "
        f"{names}. What each means, its type and default: docs/settings.md."
    )


@app.command(epilog=_settings_epilog())
def node(
    ctx: typer.Context,
    cluster: Annotated[str | None, typer.Option(help="Cluster name [RAFTMQ_CLUSTER].")] = None,
    node_id: Annotated[str | None, typer.Option(help="This node's id [RAFTMQ_NODE_ID].")] = None,
    peers: Annotated[
        str | None, typer.Option(help="Other voters, comma-separated [RAFTMQ_PEERS].")
    ] = None,
    amqp_url: Annotated[str | None, typer.Option(help="RabbitMQ URL [RAFTMQ_AMQP_URL].")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="SQLAlchemy URL [RAFTMQ_DATABASE_URL].")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder of the default SQLite file [RAFTMQ_DATA_DIR].")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML settings file [RAFTMQ_CONFIG].")] = None,
    cluster_key_file: Annotated[
        Path | None, typer.Option(help="The cluster key file [RAFTMQ_CLUSTER_KEY_FILE].")
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure", help="Run without a cluster key: anyone on the broker can forge traffic."
        ),
    ] = False,
    single_node: Annotated[
        bool, typer.Option("--single-node", help="No peers: a cluster of this node alone.")
    ] = False,
    join: Annotated[
        bool,
        typer.Option(
            "--join",
            help="Start outside the cluster (--peers: its bootstrap voters) and wait for "
            "`raftmq members add`.",
        ),
    ] = False,
    applied_log: Annotated[
        Path | None, typer.Option(help="Append every applied write to this JSON-lines file.")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve /metrics, /healthz and /readyz here [RAFTMQ_METRICS_PORT]."),
    ] = None,
    metrics_host: Annotated[
        str | None,
        typer.Option(help="Address of the metrics port (127.0.0.1) [RAFTMQ_METRICS_HOST]."),
    ] = None,
    log_level: Annotated[
        str, typer.Option(envvar="RAFTMQ_LOG_LEVEL", help="DEBUG, INFO, WARNING or ERROR.")
    ] = "INFO",
    log_format: Annotated[
        logs.LogFormat,
        typer.Option(envvar="RAFTMQ_LOG_FORMAT", help="text, or json: one object per line."),
    ] = logs.LogFormat.TEXT,
    log_level_libs: Annotated[
        str, typer.Option(help="Level of aiormq, aio-pika, SQLAlchemy and alembic logs.")
    ] = "WARNING",
) -> None:
    """Run one node until SIGTERM or Ctrl-C (graceful stop)."""
    context = logs.configure(log_level, log_format, libs_level=log_level_libs)
    for line in unknown_variables(os.environ):  # a typo, most likely: say so first
        logger.warning("%s: it is ignored", line)
    if config is not None:
        os.environ["RAFTMQ_CONFIG"] = str(config)
    overrides: dict[str, Any] = {
        key: value
        for key, value in {
            "cluster": cluster,
            "node_id": node_id,
            "peers": peers,
            "amqp_url": amqp_url,
            "database_url": database_url,
            "data_dir": data_dir,
            "cluster_key_file": cluster_key_file,
            "insecure": insecure or None,
            "single_node": single_node or None,
            "join": join or None,
            "metrics_port": metrics_port,
            "metrics_host": metrics_host,
        }.items()
        if value is not None
    }
    # Errors are reported by the one handler (raftmq.cli.errors), with these masked.
    settings = NodeSettings(**overrides)
    add_key_file_secret(settings.cluster_key_file)
    if settings.cluster_key is not None:
        add_secret(settings.cluster_key.get_secret_value())
    note(ctx, BROKER, settings.amqp_url)
    note(ctx, DATABASE, settings.resolved_database_url())
    settings.load_cluster_key()  # no key and no --insecure: refuse before connecting
    settings.check_voters()  # no peers and no --single-node: likewise
    check_database_url(settings.resolved_database_url())
    context.node_id = settings.node_id
    _run(_run_node(settings, applied_log, context), settings.event_loop)


def _run(main: Coroutine[Any, Any, None], event_loop: str) -> None:
    """Run ``main`` on uvloop (libuv's event loop: measured ~10% lower commit latency at
    500 writes/s here) or on asyncio's own loop."""
    if event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                main.close()
                raise fail("event_loop=uvloop but uvloop is not installed") from None
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


def _repair_applied_log(path: Path) -> int:
    """Cut a torn last line (a crash mid-write) and return the last index in the file."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        path.write_bytes(complete)
    lines = complete.splitlines()
    return int(json.loads(lines[-1])["index"]) if lines else 0


async def _run_node(
    settings: NodeSettings, applied_log: Path | None, context: logs.NodeContext
) -> None:
    from raftmq.runtime import build_node

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # A small local file, written line by line: blocking writes are fine here.
    last_written = _repair_applied_log(applied_log) if applied_log else 0
    sink = open(applied_log, "a", encoding="utf-8") if applied_log else None  # noqa: SIM115, ASYNC230

    def record_applied(index: int, term: int, record: Record) -> None:
        nonlocal last_written
        # After a crash the node may apply its last batch again (the on-commit contract);
        # the file already has those lines, so it stays exactly-once.
        if sink is None or index <= last_written:
            return
        last_written = index
        try:
            body = record.body.decode()
        except UnicodeDecodeError:
            body = "base64:" + base64.b64encode(record.body).decode()
        sink.write(json.dumps({"index": index, "term": term, "body": body}) + "\n")

    node = build_node(settings, AnyJson, on_record=record_applied)
    node.service_host.on_role_change(context.observe)  # every log line: id, term, role
    if sink is not None:
        # One flush per applied batch, before the node saves that batch's applied index:
        # a crash never leaves the file behind what the database says was applied.
        node.on_applied(lambda _entries: sink.flush(), first=True)
    try:
        async with node:
            if context.term is None:  # no change reported yet: the state it started in
                started = node.status()
                context.term, context.role = started.term, started.role.value
            # What exists now (modules, classes, the node) lives as long as the process:
            # moved out of the collector's reach, a full collection no longer walks it.
            # Measured: gen-2 pauses of 30-120 ms under load before, none above 3 ms after.
            gc.collect()
            gc.freeze()
            logger.info(
                "node %s of cluster %s running (voters %s)",
                settings.node_id,
                settings.cluster,
                ",".join(settings.voters),
            )
            stopped = asyncio.ensure_future(stop.wait())
            failed = asyncio.ensure_future(node.wait_failed())
            removed = asyncio.ensure_future(node.wait_removed())
            await asyncio.wait((stopped, failed, removed), return_when=asyncio.FIRST_COMPLETED)
            for waiting in (stopped, failed, removed):
                waiting.cancel()
            # After a loop failure, leaving this block makes node.stop() raise: exit code 1,
            # so that a supervisor restarts the process. A removed node exits with 0.
            why = "signal received" if stop.is_set() else "loop failed"
            if removed.done() and not removed.cancelled():
                why = "removed from the cluster"
            logger.info("stopping (%s)", why)
    finally:
        if sink is not None:
            sink.close()


@app.command()
def status(
    cluster: ClusterOpt = "raftmq",
    nodes: NodesOpt = "",
    amqp_url: AmqpOpt = DEFAULT_AMQP_URL,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each node.")] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    cluster_key_file: KeyFileOpt = None,
) -> None:
    """Ask every node of a cluster for its state and print a table."""
    node_ids = _split(nodes)
    if not node_ids:
        raise fail("name at least one node with --nodes (or RAFTMQ_NODES)")
    key = operator_key(cluster_key_file)
    statuses = asyncio.run(_statuses(brokers(amqp_url), cluster, node_ids, timeout, key))
    answered = any(s is not None for s in statuses.values())
    if as_json:
        # Masked: a node's loop_error may quote a database URL.
        dumped = {n: s.model_dump(mode="json") if s else None for n, s in statuses.items()}
        typer.echo(mask(json.dumps(dumped)))
        if not answered:
            raise fail("no node answered" + hint(key))
        return
    header = f"{'node':<12} {'role':<14} {'term':>6} {'commit':>8} {'applied':>8} {'contact':>8}"
    typer.echo(header)
    for node_id in sorted(statuses):
        s = statuses[node_id]
        if s is None:
            typer.echo(f"{node_id:<12} {'(no answer)':<14}")
            continue
        contact = "-" if s.last_contact is None else f"{s.last_contact:.2f}s"
        role = s.role.value + ("" if s.storage_ok else " (db!)") + ("" if s.loop_ok else " (dead)")
        typer.echo(
            f"{node_id:<12} {role:<14} {s.term:>6} {s.commit:>8} {s.applied:>8} {contact:>8}"
        )
    for node_id in sorted(statuses):
        s = statuses[node_id]
        if s is not None and s.followers:
            typer.echo(f"followers of {node_id} (last index {s.last_index}):")
            for peer, follower in s.followers.items():
                silent = "" if follower.active else ", silent"
                typer.echo(
                    f"  {peer:<12} match {follower.match:>8}  lag {follower.lag:>6}  "
                    f"({follower.state}{silent})"
                )
    if not answered:
        if key is None:
            typer.secho(NO_KEY_HINT.strip(" ()"), err=True)
        raise typer.Exit(code=1)


async def _statuses(
    url: Brokers, cluster: str, nodes: list[str], timeout: float, key: ClusterKey | None
) -> dict[str, Any]:
    from raftmq.client.admin import AdminClient

    async with AdminClient.connect(url, cluster, nodes, key=key) as admin:
        return dict(await admin.statuses(timeout=timeout))


@app.command()
def write(
    body: Annotated[str, typer.Argument(help="The write's body; '-' reads one write per line.")],
    cluster: ClusterOpt = "raftmq",
    nodes: NodesOpt = "",
    amqp_url: AmqpOpt = DEFAULT_AMQP_URL,
    content_type: Annotated[str, typer.Option(help="Content type of the body.")] = "text/plain",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each commit.")] = 10.0,
    cluster_key_file: KeyFileOpt = None,
) -> None:
    """Write through the current leader (found by asking the nodes); print index and term."""
    node_ids = _split(nodes)
    if not node_ids:
        raise fail("name at least one node with --nodes (or RAFTMQ_NODES)")
    key = operator_key(cluster_key_file)
    bodies = [line.rstrip("\n") for line in sys.stdin] if body == "-" else [body]
    try:
        asyncio.run(
            _write(brokers(amqp_url), cluster, node_ids, bodies, content_type, timeout, key)
        )
    except RaftMQError as exc:
        raise fail(str(exc) + hint(key)) from None


async def _write(
    url: Brokers,
    cluster: str,
    nodes: list[str],
    bodies: list[str],
    content_type: str,
    timeout: float,
    key: ClusterKey | None,
) -> None:
    from raftmq.client.admin import AdminClient

    async with AdminClient.connect(url, cluster, nodes, key=key) as admin:
        for text in bodies:
            commit = await admin.write(
                Record(body=text.encode(), content_type=content_type), timeout=timeout
            )
            typer.echo(f"index={commit.index} term={commit.term}")


@app.command("transfer-leadership")
def transfer_leadership(
    to: Annotated[str, typer.Option("--to", help="The node that should lead.")],
    cluster: ClusterOpt = "raftmq",
    nodes: NodesOpt = "",
    amqp_url: AmqpOpt = DEFAULT_AMQP_URL,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 10.0,
    cluster_key_file: KeyFileOpt = None,
) -> None:
    """Hand leadership to another node (before maintenance on the leader)."""
    node_ids = _split(nodes) or [to]
    key = operator_key(cluster_key_file)
    try:
        asyncio.run(_transfer(brokers(amqp_url), cluster, node_ids, to, timeout, key))
    except (RaftMQError, TimeoutError) as exc:
        raise fail((str(exc) or type(exc).__name__) + hint(key)) from None
    typer.echo(f"{to} leads")


async def _transfer(
    url: Brokers, cluster: str, nodes: list[str], to: str, timeout: float, key: ClusterKey | None
) -> None:
    from raftmq.client.admin import AdminClient

    async with AdminClient.connect(url, cluster, nodes, key=key) as admin:
        await admin.transfer_leadership(to, timeout=timeout)


def _database_url(
    ctx: typer.Context, database_url: str | None, cluster: str | None, node_id: str | None
) -> str:
    """The URL of the `db` commands (the node's default SQLite file without one), checked."""
    if not database_url:
        if not node_id:
            raise fail(
                "give --database-url, or --node-id (and --cluster) for the default SQLite file"
            )
        database_url = NodeSettings(
            node_id=node_id, cluster=cluster or "raftmq"
        ).resolved_database_url()
        note(ctx, DATABASE, database_url)
    check_database_url(database_url)
    return database_url


DbNodeOpt = Annotated[str | None, typer.Option("--node-id", envvar="RAFTMQ_NODE_ID")]
DbClusterOpt = Annotated[str | None, typer.Option("--cluster", envvar="RAFTMQ_CLUSTER")]


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context,
    database_url: DbUrlOpt = None,
    node_id: DbNodeOpt = None,
    cluster: DbClusterOpt = None,
) -> None:
    """Create or upgrade the schema to the newest revision."""
    from raftmq.storage import migrate

    url = _database_url(ctx, database_url, cluster, node_id)
    revision = asyncio.run(migrate.upgrade(url))
    typer.echo(f"at revision {revision}")


@db_app.command("current")
def db_current(
    ctx: typer.Context,
    database_url: DbUrlOpt = None,
    node_id: DbNodeOpt = None,
    cluster: DbClusterOpt = None,
) -> None:
    """Print the schema revision of a database ('none' when it has no raftmq schema)."""
    from raftmq.storage import migrate

    url = _database_url(ctx, database_url, cluster, node_id)
    revision = asyncio.run(migrate.current(url))
    head = migrate.head_revision()
    suffix = " (head)" if revision == head else f" (head is {head})"
    typer.echo(f"{revision or 'none'}{suffix}")


@app.command()
def demo(
    amqp_url: AmqpOpt = DEFAULT_AMQP_URL,
    writes: Annotated[int, typer.Option(help="Writes before and after the failover.")] = 20,
) -> None:
    """A local 3-node cluster on SQLite: writes, a leader failover, nothing lost."""
    from raftmq.cli.demo import run_demo

    logs.configure(logging.WARNING)
    code = asyncio.run(run_demo(amqp_url, writes))
    raise typer.Exit(code=code)


# Registered last: `raftmq --help` lists the commands in this order.
app.command()(publish)
app.command()(subscribe)


def main() -> None:
    """Console-script entry point."""
    app()
