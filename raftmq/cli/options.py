"""The options and the error exit that the commands of ``raftmq`` (:mod:`raftmq.cli.app`,
:mod:`raftmq.cli.queue`) share."""

from __future__ import annotations

from typing import Annotated

import typer

ClusterOpt = Annotated[
    str, typer.Option("--cluster", envvar="RAFTMQ_CLUSTER", help="Cluster name.")
]
AmqpOpt = Annotated[str, typer.Option("--amqp-url", envvar="RAFTMQ_AMQP_URL", help="RabbitMQ URL.")]


def fail(message: str) -> typer.Exit:
    """Print ``message`` as an error on stderr; the exit (code 1) for the caller to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)
