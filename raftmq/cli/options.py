"""The options and the error exit that the commands of ``raftmq`` (:mod:`raftmq.cli.app`,
:mod:`raftmq.cli.queue`) share."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from raftmq.cli.errors import BROKER, DATABASE, fail, remember
from raftmq.node.settings import NodeSettings

if TYPE_CHECKING:
    from raftmq._amqp.connect import Brokers

__all__ = ["AmqpOpt", "ClusterOpt", "DbUrlOpt", "brokers", "fail"]

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
        "--amqp-url",
        envvar="RAFTMQ_AMQP_URL",
        help="RabbitMQ URL, or several comma-separated (the nodes of a RabbitMQ cluster); "
        "TLS files for amqps:// from RAFTMQ_AMQP_CA_FILE, RAFTMQ_AMQP_CERT_FILE and "
        "RAFTMQ_AMQP_KEY_FILE, as for nodes.",
        callback=remember(BROKER),
    ),
]


def brokers(url: str) -> Brokers:
    """The brokers of a command's ``--amqp-url``, with the TLS files the node settings'
    variables name (``RAFTMQ_AMQP_CA_FILE``, ...), checked (ConfigError)."""
    from raftmq._amqp.connect import Brokers, TlsFiles

    def path(name: str) -> Path | None:
        value = os.environ.get(name)
        return Path(value) if value else None

    tls = TlsFiles(
        path("RAFTMQ_AMQP_CA_FILE"), path("RAFTMQ_AMQP_CERT_FILE"), path("RAFTMQ_AMQP_KEY_FILE")
    )
    amqp = Brokers.of(url, tls)
    amqp.check()
    return amqp


DbUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="RAFTMQ_DATABASE_URL",
        help="SQLAlchemy URL.",
        callback=remember(DATABASE),
    ),
]
