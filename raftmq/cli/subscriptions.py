"""`raftmq subscriptions list|delete`: the named subscriptions of a cluster on the broker
(docs/operations.md "Subscriptions").

AMQP 0-9-1 cannot list queues, so ``list`` asks ``rabbitmqctl list_queues`` (as
``raftmq permissions apply`` runs it: ``--rabbitmqctl`` / ``RAFTMQ_RABBITMQCTL``) for the
queues ``raftmq.C.sub.NAME``, their depth, consumers and bounds; it reads each position
over AMQP (a get put back at once, as the Subscriber loads it: nothing is consumed). The
lag needs the cluster's commit index, which only the nodes know: with ``--nodes`` it is
asked from them (as ``raftmq status`` does), otherwise the lag column stays empty.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import unquote, urlsplit

import typer

from raftmq.cli.keys import KeyFileOpt, operator_key
from raftmq.cli.options import AmqpOpt, ClusterOpt, brokers, fail
from raftmq.cli.permissions import RabbitmqctlOpt, _Rabbitmqctl
from raftmq.node.settings import DEFAULT_AMQP_URL
from raftmq.protocol import names

if TYPE_CHECKING:
    from raftmq._amqp.connect import Brokers
    from raftmq.protocol.auth import ClusterKey

subscriptions_app = typer.Typer(
    help="Named subscriptions of a cluster: list them, delete one.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

VhostOpt = Annotated[
    str | None,
    typer.Option("--vhost", "-p", help="RabbitMQ virtual host [that of --amqp-url]."),
]
NodesOpt = Annotated[
    str,
    typer.Option(
        "--nodes",
        envvar="RAFTMQ_NODES",
        help="Comma-separated node ids to ask for the commit index (for the lag).",
    ),
]


@dataclass(slots=True)
class Subscription:
    """One named subscription, as listed."""

    name: str  # the subscription name
    queue: str  # raftmq.C.sub.NAME
    position: int | None  # last index processed (None: none stored, or no position queue)
    lag: int | None  # commit index - position (None: either unknown)
    depth: int  # messages in the queue: ready + unacknowledged
    ready: int  # messages ready
    unacked: int  # messages delivered, not acknowledged
    consumers: int  # subscribers consuming it now
    max_length: int | None  # x-max-length (None: unbounded)
    max_length_bytes: int | None  # x-max-length-bytes (None: unbounded)
    expires: float | None  # x-expires in seconds (None: never)


def vhost_of(amqp_url: str) -> str:
    """The virtual host of the first URL of ``--amqp-url`` ("/" when it names none)."""
    first = amqp_url.split(",")[0].strip()
    return unquote(urlsplit(first).path[1:]) or "/"


def listed(cluster: str, rows: list[dict[str, Any]]) -> tuple[list[Subscription], set[str]]:
    """The named subscriptions of ``cluster`` among rabbitmqctl's JSON rows (positions and
    lags not yet known), by name; and the position queues that exist."""
    queues = {str(row.get("name")) for row in rows}
    found: list[Subscription] = []
    for row in rows:
        name = names.subscription_of(cluster, str(row.get("name")))
        if name is None:
            continue
        arguments = {str(a[0]): a[-1] for a in row.get("arguments") or [] if len(a) >= 2}
        expires = arguments.get("x-expires")
        ready = int(row.get("messages_ready") or 0)
        unacked = int(row.get("messages_unacknowledged") or 0)
        found.append(
            Subscription(
                name=name,
                queue=str(row["name"]),
                position=None,
                lag=None,
                depth=ready + unacked,
                ready=ready,
                unacked=unacked,
                consumers=int(row.get("consumers") or 0),
                max_length=arguments.get("x-max-length"),
                max_length_bytes=arguments.get("x-max-length-bytes"),
                expires=None if expires is None else int(expires) / 1000,
            )
        )
    found.sort(key=lambda s: s.name)
    positions = queues & {names.position_queue(cluster, s.name) for s in found}
    return found, positions


@subscriptions_app.command("list")
def list_subscriptions(
    cluster: ClusterOpt = "raftmq",
    amqp_url: AmqpOpt = DEFAULT_AMQP_URL,
    vhost: VhostOpt = None,
    nodes: NodesOpt = "",
    cluster_key_file: KeyFileOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each node.")] = 2.0,
    rabbitmqctl: RabbitmqctlOpt = "rabbitmqctl",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the named subscriptions: name, position, lag, depth, consumers."""
    ctl = _Rabbitmqctl(rabbitmqctl)
    columns = ["name", "messages_ready", "messages_unacknowledged", "consumers", "arguments"]
    vhost = vhost or vhost_of(amqp_url)
    out = ctl.run(["list_queues", "-p", vhost, "--formatter", "json", *columns])
    found, positions = listed(cluster, json.loads(out or "[]"))
    node_ids = [n.strip() for n in nodes.split(",") if n.strip()]
    key = operator_key(cluster_key_file) if node_ids else None
    url = brokers(amqp_url)
    commit = asyncio.run(_read(url, cluster, found, positions, node_ids, timeout, key))
    for sub in found:
        if commit is not None and sub.position is not None:
            sub.lag = max(0, commit - sub.position)
    if as_json:
        typer.echo(json.dumps({"commit": commit, "subscriptions": [asdict(s) for s in found]}))
    else:
        typer.echo(f"{'name':<24} {'position':>10} {'lag':>10} {'depth':>10} {'consumers':>9}")
        for s in found:
            typer.echo(
                f"{s.name:<24} {_cell(s.position):>10} {_cell(s.lag):>10} {s.depth:>10} "
                f"{s.consumers:>9}"
            )
    if not found:
        typer.secho(f"no named subscription of cluster {cluster!r} on vhost {vhost!r}", err=True)
    elif not node_ids:
        typer.secho("lag: name the nodes with --nodes to show it (their commit index)", err=True)
    elif commit is None:
        typer.secho("lag: no node answered (see `raftmq status`)", err=True)


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


async def _read(
    url: Brokers,
    cluster: str,
    found: list[Subscription],
    positions: set[str],
    nodes: list[str],
    timeout: float,
    key: ClusterKey | None,
) -> int | None:
    """Fill in the positions of ``found``; return the highest commit index ``nodes``
    answered with (None: no node named, or none answered)."""
    from raftmq._amqp.connect import Connector
    from raftmq.client.admin import AdminClient
    from raftmq.client.progress import Progress

    if found:
        connection = await Connector(url).connect()
        try:
            for sub in found:
                queue_name = names.position_queue(cluster, sub.name)
                if queue_name not in positions:
                    continue
                channel = await connection.channel()  # an expired queue closes its channel
                try:
                    queue = await channel.get_queue(queue_name, ensure=False)
                    sub.position = await Progress(channel, queue).load()
                except Exception:  # gone since the listing: no position to show
                    sub.position = None
                finally:
                    if not channel.is_closed:
                        await channel.close()
        finally:
            await connection.close()
    if not nodes:
        return None
    async with AdminClient.connect(url, cluster, nodes, key=key) as admin:
        statuses = await admin.statuses(timeout=timeout)
    commits = [status.commit for status in statuses.values() if status is not None]
    return max(commits) if commits else None


@subscriptions_app.command("delete")
def delete_subscription(
    name: Annotated[str, typer.Argument(help="The subscription name.")],
    cluster: ClusterOpt = "raftmq",
    amqp_url: AmqpOpt = DEFAULT_AMQP_URL,
    force: Annotated[
        bool, typer.Option("--force", help="Delete it even while a subscriber consumes it.")
    ] = False,
) -> None:
    """Delete a named subscription's queue and position (a new subscriber of that name
    starts again per its --from)."""
    if not re.fullmatch(names.SUBSCRIPTION_NAME, name):
        raise fail(f"{name!r} is not a subscription name ({names.SUBSCRIPTION_NAME})")
    consumers = asyncio.run(_delete(brokers(amqp_url), cluster, name, force))
    if consumers is None:
        raise fail(
            f"no subscription {name!r} in cluster {cluster!r} (neither "
            f"{names.subscription_queue(cluster, name)} nor its position queue exists; "
            f"`raftmq subscriptions list --cluster {cluster}` shows those that do)"
        )
    if consumers and not force:
        raise fail(
            f"subscription {name!r} of cluster {cluster!r} has {consumers} consumer(s): stop "
            "them first (a running subscriber declares its queue again), or pass --force"
        )
    typer.echo(f"deleted subscription {name} of cluster {cluster}")


async def _delete(url: Brokers, cluster: str, name: str, force: bool) -> int | None:
    """Delete the subscription's queues unless a subscriber consumes them (and not
    ``force``); return its consumers (None: it does not exist, nothing was done)."""
    from aio_pika.exceptions import ChannelNotFoundEntity

    from raftmq._amqp.connect import Connector
    from raftmq.client.subscriber import Subscriber

    connection = await Connector(url).connect()
    try:
        exists, consumers = False, 0
        for queue in (names.subscription_queue(cluster, name), names.position_queue(cluster, name)):
            channel = await connection.channel()  # a missing queue closes its channel
            try:
                declared = await channel.declare_queue(queue, passive=True)
            except ChannelNotFoundEntity:
                continue
            finally:
                if not channel.is_closed:
                    await channel.close()
            exists = True
            consumers += declared.declaration_result.consumer_count or 0
    finally:
        await connection.close()
    if not exists:
        return None
    if consumers == 0 or force:
        await Subscriber.delete_subscription(url, cluster, name)
    return consumers
