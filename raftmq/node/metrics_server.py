"""The HTTP endpoints of a node: ``/metrics``, ``/healthz``, ``/readyz`` (docs/metrics.md).

``raftmq node`` runs one when ``metrics_port`` is set (:func:`raftmq.runtime.build_node`
adds it as the node's first service: it starts once the loop runs and stops last).

Why ``asyncio.start_server`` on the node's own event loop, not prometheus_client's
threaded server: only the node's loop task writes node state, without locks. Served on
that loop, a scrape reads the state between two loop turns -- consistent, with no thread
hop, no lock and no extra thread in the process. The price is that a scrape runs on the
loop (about a millisecond for ``/metrics``; figures in docs/metrics.md), and that the
HTTP side is ours. It is kept minimal and safe against hostile input: one request per
connection (``Connection: close``), GET and HEAD only, the request line and headers
bounded (8 KiB, 64 lines), a deadline of 5 s per connection, at most 16 connections at
once; anything else gets a short 4xx answer and the connection is closed. The exposition
itself is prometheus_client's (``choose_encoder``: the text format, or OpenMetrics when
the scraper asks for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from http import HTTPStatus
from typing import Any

from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from raftmq.errors import ConfigError
from raftmq.node.metrics import DEFAULT_MAX_APPLY_LAG, NodeCollector, liveness, readiness
from raftmq.node.node import Node

__all__ = ["MetricsServer", "bind_listener"]

logger = logging.getLogger("raftmq.node.metrics_server")

_MAX_HEAD_BYTES = 8192  # request line + headers
_MAX_HEADER_LINES = 64
_DEADLINE = 5.0  # seconds a connection may take, from accept to the last byte sent
_MAX_CONNECTIONS = 16  # served at once; more are closed at once
_TEXT = "text/plain; charset=utf-8"


class _Refused(Exception):
    """A request answered with an error status (and closed)."""

    def __init__(self, status: HTTPStatus, extra: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(status.phrase)
        self.status = status
        self.extra = extra  # more response headers


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (ConfigError when that is impossible: the
    port is taken, the host is not this machine's, ...)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigError(f"metrics_host {host!r} does not resolve: {exc}") from None
    listener = socket.socket(family, kind, proto)
    try:
        # A restarted node takes its port back although old connections linger in TIME_WAIT.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(64)
        listener.setblocking(False)
    except OSError as exc:
        listener.close()
        raise ConfigError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} (metrics_port, "
            "RAFTMQ_METRICS_PORT)"
        ) from None
    return listener


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` of ``node`` on a port of its event loop.

    The socket is bound at construction (so a taken port is a ConfigError before the node
    starts) and served from :meth:`start` to :meth:`stop` (the node's Service protocol).
    """

    def __init__(
        self,
        node: Node[Any],
        host: str,
        port: int,
        *,
        max_apply_lag: int = DEFAULT_MAX_APPLY_LAG,
        process_metrics: bool = True,
    ) -> None:
        self.node = node  # the node served
        self.collector = NodeCollector(node, max_apply_lag=max_apply_lag)
        self.registry = CollectorRegistry()  # this server's: the node (and the process)
        self.registry.register(self.collector)
        if process_metrics:  # the process is the node's: memory, CPU, fds, GC, Python
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self._listener = bind_listener(host, port)
        self.address: tuple[str, int] = self._listener.getsockname()[:2]  # bound host, port
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()  # connections being served

    async def start(self) -> None:
        """Serve (on the running loop, the node's)."""
        self.collector.bind(asyncio.get_running_loop())
        self._server = await asyncio.start_server(
            self._serve, sock=self._listener, limit=_MAX_HEAD_BYTES
        )
        host, port = self.address
        logger.info("%s: metrics and health on http://%s:%s/", self.node.node_id, host, port)

    async def stop(self) -> None:
        """Stop serving and close open connections; never raises."""
        server, self._server = self._server, None
        if server is None:
            self._listener.close()
            return
        server.close()
        for task in list(self._handlers):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._handlers) >= _MAX_CONNECTIONS or task is None:
            writer.close()
            return
        self._handlers.add(task)
        try:
            async with asyncio.timeout(_DEADLINE):
                response = await self._respond(reader)
                if response:
                    writer.write(response)
                    await writer.drain()
        except (TimeoutError, ConnectionError):
            pass  # a slow or vanished client: nothing to answer
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _respond(self, reader: asyncio.StreamReader) -> bytes:
        try:
            request = await _read_head(reader)
            if request is None:
                return b""  # closed before a request
            method, path, accept = request
            status, content_type, body = self._route(path, accept)
        except _Refused as refused:
            text = f"{refused.status.value} {refused.status.phrase}\n".encode()
            return _response(refused.status, _TEXT, text, head=False, extra=refused.extra)
        return _response(status, content_type, body, head=method == "HEAD")

    def _route(self, path: str, accept: str) -> tuple[HTTPStatus, str, bytes]:
        if path == "/metrics":
            encoder, content_type = choose_encoder(accept)
            return HTTPStatus.OK, content_type, encoder(self.registry)
        if path in ("/healthz", "/readyz"):
            snapshot = self.collector.snapshot()
            ok, reason = (
                liveness(snapshot)
                if path == "/healthz"
                else readiness(snapshot, self.collector.max_apply_lag)
            )
            status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
            return status, _TEXT, reason.encode() + b"\n"
        raise _Refused(HTTPStatus.NOT_FOUND)


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, str] | None:
    """``(method, path, accept)`` of the request on ``reader``; None at a clean EOF.
    Raises _Refused for anything but a small, well-formed GET or HEAD."""
    try:
        line = await reader.readline()
        if not line:
            return None
        size = len(line)
        accept = ""
        for _ in range(_MAX_HEADER_LINES):
            header = await reader.readline()
            size += len(header)
            if size > _MAX_HEAD_BYTES:
                raise _Refused(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
            if header in (b"\r\n", b"\n"):
                break
            if not header.endswith(b"\n"):  # EOF inside the head
                raise _Refused(HTTPStatus.BAD_REQUEST)
            name, _, value = header.decode("latin-1").partition(":")
            if name.strip().lower() == "accept":
                accept = value.strip()
        else:
            raise _Refused(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
    except ValueError:  # a line longer than the reader's limit
        raise _Refused(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE) from None
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _Refused(HTTPStatus.BAD_REQUEST)
    method, target, _ = parts
    if method not in ("GET", "HEAD"):
        raise _Refused(HTTPStatus.METHOD_NOT_ALLOWED, (("Allow", "GET, HEAD"),))
    return method, target.partition("?")[0], accept


def _response(
    status: HTTPStatus,
    content_type: str,
    body: bytes,
    *,
    head: bool,
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
        *(f"{name}: {value}" for name, value in extra),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body)
