"""The queue commands of ``raftmq``: ``publish`` to the writes queue, ``subscribe`` to
committed messages (registered on the app in :mod:`raftmq.cli.app`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from raftmq.cli.options import AmqpOpt, ClusterOpt, fail
from raftmq.errors import RaftMQError
from raftmq.node.settings import DEFAULT_AMQP_URL


def publish(
    body: Annotated[
        str, typer.Argument(help="The message body; '-' publishes one message per stdin line.")
    ] = "-",
    cluster: ClusterOpt = "raftmq",
    amqp_url: AmqpOpt = DEFAULT_AMQP_URL,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for each commit and print index and term.")
    ] = False,
    content_type: Annotated[str, typer.Option(help="Content type of the body.")] = "text/plain",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each message.")] = 30.0,
) -> None:
    """Publish messages to the cluster's writes queue (no need to know the leader)."""
    lines = (line.rstrip("\n") for line in sys.stdin) if body == "-" else iter([body])
    try:
        asyncio.run(_publish(amqp_url, cluster, lines, wait, content_type, timeout))
    except (RaftMQError, TimeoutError) as exc:
        raise fail(str(exc) or type(exc).__name__) from None


async def _publish(
    url: str,
    cluster: str,
    lines: Iterator[str],
    wait: bool,
    content_type: str,
    timeout: float,
) -> None:
    from raftmq.client.producer import Producer
    from raftmq.protocol.receipts import Receipt

    async with Producer(url, cluster) as producer:
        # Publishes run concurrently (they batch) but are printed in input order.
        pending: list[asyncio.Task[Receipt]] = []

        async def drain(limit: int) -> None:
            while len(pending) > limit:
                receipt = await pending.pop(0)
                if wait:
                    duplicate = " duplicate" if receipt.duplicate else ""
                    typer.echo(f"index={receipt.index} term={receipt.term}{duplicate}")

        for text in lines:
            pending.append(
                asyncio.create_task(
                    producer.publish(
                        text.encode(),
                        content_type=content_type,
                        wait_commit=wait,
                        timeout=timeout,
                    )
                )
            )
            await drain(producer.max_batch)
        await drain(0)


def subscribe(
    cluster: ClusterOpt = "raftmq",
    amqp_url: AmqpOpt = DEFAULT_AMQP_URL,
    start: Annotated[
        str, typer.Option("--from", help="latest, earliest, or a log index to start at.")
    ] = "latest",
    name: Annotated[
        str | None, typer.Option("--name", help="Durable subscription that resumes later.")
    ] = None,
) -> None:
    """Print committed messages (index, term, body per line) until Ctrl-C."""
    position: Any
    if start in ("latest", "earliest"):
        position = start
    elif start.isdigit() and int(start) >= 1:
        position = int(start)
    else:
        raise fail(f"--from must be latest, earliest or an index >= 1, not {start!r}")
    try:
        asyncio.run(_subscribe(amqp_url, cluster, position, name))
    except RaftMQError as exc:
        raise fail(str(exc)) from None


async def _subscribe(url: str, cluster: str, start: Any, name: str | None) -> None:
    from raftmq.client.subscriber import Subscriber

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Subscriber(url, cluster, start=start, name=name) as subscriber:
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while True:
                following = asyncio.ensure_future(anext(subscriber))
                await asyncio.wait({following, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not following.done():
                    # Ctrl-C: the message being waited for was not printed, so not processed.
                    following.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await following
                    return
                message = following.result()
                try:
                    text = message.body.decode()
                except UnicodeDecodeError:
                    text = "base64:" + base64.b64encode(message.body).decode()
                typer.echo(f"{message.index}\t{message.term}\t{text}")
        finally:
            stopping.cancel()
