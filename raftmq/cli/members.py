"""`raftmq members list|add|promote|remove|replace`: the cluster's configuration and
single-server changes to it (docs/operations.md "Change the members"; the rules in docs/core.md,
"Membership changes"). Each change goes to the leader, waits until it committed, and
prints the configuration then in force."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from raftmq.cli.keys import KeyFileOpt, hint, operator_key
from raftmq.cli.options import AmqpOpt, ClusterOpt, brokers, fail
from raftmq.errors import RaftMQError
from raftmq.node.settings import DEFAULT_AMQP_URL

if TYPE_CHECKING:
    from raftmq._amqp.connect import Brokers
    from raftmq.protocol.auth import ClusterKey
    from raftmq.protocol.requests import NodeStatus

members_app = typer.Typer(
    help="The cluster's members: list them, add, promote, remove or replace one.",
    no_args_is_help=True,
)

NodesOpt = Annotated[
    str,
    typer.Option(
        "--nodes",
        envvar="RAFTMQ_NODES",
        help="Comma-separated node ids to ask (any member that answers will do).",
    ),
]
NodeArg = Annotated[str, typer.Argument(help="The node's id.")]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds to wait for the change to commit.")]


def _show(status: NodeStatus) -> None:
    typer.echo(f"leader:   {status.node_id} (term {status.term}, commit {status.commit})")
    typer.echo(f"voters:   {','.join(status.voters)}")
    typer.echo(f"learners: {','.join(status.learners) or '-'}")
    for peer, incarnation in sorted(status.strangers.items()):
        pinned = status.incarnations.get(peer, "?")
        typer.echo(
            f"  {peer}: answers from database {incarnation or '(none told)'}, not its own "
            f"({pinned}): not counted; `raftmq members replace {peer}` if its disk was lost"
        )
    for peer, progress in (status.followers or {}).items():
        typer.echo(f"  {peer}: match {progress.match}, lag {progress.lag}, {progress.state}")


async def _run(
    url: Brokers,
    cluster: str,
    nodes: list[str],
    key: ClusterKey | None,
    change: str | None,
    node_id: str,
    timeout: float,
) -> NodeStatus:
    from raftmq.client.admin import AdminClient

    async with AdminClient.connect(url, cluster, nodes, key=key) as admin:
        if change is None:
            return await admin.members()
        if change == "replace":
            return await admin.replace(node_id, timeout=timeout)
        return await admin.change_membership(change, node_id, timeout=timeout)


def _do(
    change: str | None,
    node_id: str,
    cluster: str,
    nodes: str,
    amqp_url: str,
    timeout: float,
    cluster_key_file: Path | None,
) -> None:
    node_ids = [n.strip() for n in nodes.split(",") if n.strip()]
    if not node_ids:
        raise fail("give --nodes: the ids of the cluster's nodes (any that answer will do)")
    key = operator_key(cluster_key_file)
    try:
        status = asyncio.run(
            _run(brokers(amqp_url), cluster, node_ids, key, change, node_id, timeout)
        )
    except (RaftMQError, TimeoutError) as exc:
        raise fail((str(exc) or type(exc).__name__) + hint(key)) from None
    _show(status)


@members_app.command("list")
def list_members(
    cluster: ClusterOpt = "raftmq",
    nodes: NodesOpt = "",
    amqp_url: AmqpOpt = DEFAULT_AMQP_URL,
    cluster_key_file: KeyFileOpt = None,
) -> None:
    """The configuration in force (from the leader) and each member's lag."""
    _do(None, "", cluster, nodes, amqp_url, 5.0, cluster_key_file)


@members_app.command("add")
def add(
    node_id: NodeArg,
    learner: Annotated[
        bool, typer.Option("--learner", help="Add it without a vote (promote it later).")
    ] = False,
    cluster: ClusterOpt = "raftmq",
    nodes: NodesOpt = "",
    amqp_url: AmqpOpt = DEFAULT_AMQP_URL,
    timeout: TimeoutOpt = 30.0,
    cluster_key_file: KeyFileOpt = None,
) -> None:
    """Add a node (started with --join) as a voter, or as a learner."""
    change = "add_learner" if learner else "add_voter"
    _do(change, node_id, cluster, nodes, amqp_url, timeout, cluster_key_file)


@members_app.command("promote")
def promote(
    node_id: NodeArg,
    cluster: ClusterOpt = "raftmq",
    nodes: NodesOpt = "",
    amqp_url: AmqpOpt = DEFAULT_AMQP_URL,
    timeout: TimeoutOpt = 30.0,
    cluster_key_file: KeyFileOpt = None,
) -> None:
    """Make a learner a voter (once it caught up: see `members list`)."""
    _do("add_voter", node_id, cluster, nodes, amqp_url, timeout, cluster_key_file)


@members_app.command("remove")
def remove(
    node_id: NodeArg,
    cluster: ClusterOpt = "raftmq",
    nodes: NodesOpt = "",
    amqp_url: AmqpOpt = DEFAULT_AMQP_URL,
    timeout: TimeoutOpt = 30.0,
    cluster_key_file: KeyFileOpt = None,
) -> None:
    """Remove a voter or learner (the leader too: it hands over once the change commits)."""
    _do("remove", node_id, cluster, nodes, amqp_url, timeout, cluster_key_file)


@members_app.command("replace")
def replace(
    node_id: NodeArg,
    cluster: ClusterOpt = "raftmq",
    nodes: NodesOpt = "",
    amqp_url: AmqpOpt = DEFAULT_AMQP_URL,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the new database to catch up.")
    ] = 120.0,
    cluster_key_file: KeyFileOpt = None,
) -> None:
    """Replace a member whose database was lost: it becomes a learner pinned to its new
    database, catches up, and (a voter before) is promoted again."""
    _do("replace", node_id, cluster, nodes, amqp_url, timeout, cluster_key_file)
