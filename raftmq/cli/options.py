"""The options and the error exit that the commands of ``raftmq`` (:mod:`raftmq.cli.app`,
:mod:`raftmq.cli.queue`) share."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from raftmq.cli.errors import BROKER, DATABASE, fail, remember
from raftmq.node.settings import NodeSettings

__all__ = ["AmqpOpt", "ClusterOpt", "DbUrlOpt", "fail"]

# The node settings' own pattern for names (cluster and node ids), kept in one place.
NAME_PATTERN: str = next(
    meta.pattern
    for meta in NodeSettings.model_fields["cluster"].metadata
    if hasattr(meta, "pattern")
)


def _check_cluster(value: str) -> str:
    if not re.fullmatch(NAME_PATTERN, value):
        raise typer.BadParameter(
            f"{value!r} is not a cluster name (1-64 letters, digits, '_' or '-')"
        )
    return value


ClusterOpt = Annotated[
    str,
    typer.Option(
        "--cluster", envvar="RAFTMQ_CLUSTER", help="Cluster name.", callback=_check_cluster
    ),
]
AmqpOpt = Annotated[
    str,
    typer.Option(
        "--amqp-url", envvar="RAFTMQ_AMQP_URL", help="RabbitMQ URL.", callback=remember(BROKER)
    ),
]
DbUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="RAFTMQ_DATABASE_URL",
        help="SQLAlchemy URL.",
        callback=remember(DATABASE),
    ),
]
