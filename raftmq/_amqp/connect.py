"""Every broker connection raftmq opens is made here: one URL or several, plain or TLS.

**Brokers.** A node or client is given one broker URL or several: the nodes of one
RabbitMQ cluster, as a comma-separated string (``amqp://u:p@rmq1/,amqp://u:p@rmq2/``; a
comma inside a URL is written ``%2C``), a sequence of URLs, or a :class:`Brokers`. One
URL behaves as it always did.

**TLS.** ``amqps://`` URLs. The CA, the client certificate and its key are given either as
files of :class:`TlsFiles` (the node settings ``amqp_ca_file``, ``amqp_cert_file``,
``amqp_key_file``), which make one ``ssl.SSLContext`` for every URL, or in each URL's query
as aiormq reads them (``?cafile=...&certfile=...&keyfile=...``); not both.
:meth:`Brokers.check` refuses, with a ConfigError, a file that does not exist, TLS files
without any ``amqps://`` URL, and a URL that is not ``amqp://`` or ``amqps://``. A server
certificate the CA did not sign ends the attempt with a ConnectionError saying so.

**Failover.** :class:`Connector` keeps a cursor in the list: :meth:`Connector.connect`
tries the URLs in order from the one after the URL it last connected to, and returns the
first connection made (raising the last error when none could be made). So a first
connect skips broker nodes that are down, and every reconnect (the transport's
supervisor, a leader service's retry, the replay server's loop) goes to the next node:
the one it was connected to has most likely just gone away. Any node of a RabbitMQ
cluster serves every queue (quorum queues survive the loss of a minority of nodes).

Clients (:class:`raftmq.client.Producer`, :class:`raftmq.client.Subscriber`) use
aio-pika's ``RobustConnection``: its robust channels, queues and consumers are declared
again after a reconnect, which the clients rely on. Its reconnection reuses its one URL,
and aio-pika 10.2 has no supported way to give it several (aio-pika issue #141 asks for
it since 2018; pull request #680 proposed a round-robin class and was closed unmerged).
Our own reconnection loop would have to redo what the robust channels restore, so
:meth:`Connector.connect_robust` instead subclasses ``RobustConnection`` and overrides the
one method that makes a connection attempt (``RobustConnection.__connect_transport``, a
private name): each attempt goes through the Connector's URLs as above, and the robust
machinery restores the channels on whichever node answered. The private name is checked
by ``tests/brokers/test_connect.py`` (a canary), and the failover by a private RabbitMQ
cluster in ``tests/brokers/test_broker_failover.py``; both pin the behaviour of
aio-pika 10.2 / aiormq 7.2.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractRobustConnection
from aio_pika.robust_connection import RobustConnection
from yarl import URL

from raftmq.errors import ConfigError

logger = logging.getLogger("raftmq.amqp.connect")

_SCHEMES = ("amqp", "amqps")
_QUERY_TLS = ("cafile", "certfile", "keyfile")  # aiormq's TLS files in a URL's query
# RobustConnection's one connection attempt (a private name; see the module docstring).
ROBUST_ATTEMPT = "_RobustConnection__connect_transport"


def split_urls(value: str) -> tuple[str, ...]:
    """The URLs of a comma-separated string (blanks around each ignored)."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def masked(url: str) -> str:
    """``url`` as it may be logged: the password replaced by ``***``."""
    try:
        parsed = URL(url)
    except ValueError:
        return "<invalid URL>"
    return str(parsed.with_password("***")) if parsed.password else url


def endpoint(url: str) -> str:
    """``host:port`` of an AMQP URL (the scheme's default port when it names none)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.hostname or 'localhost'}:{port or (5671 if parts.scheme == 'amqps' else 5672)}"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files for ``amqps://``: the CA that signed the brokers' certificates, and this
    side's certificate and key (for brokers that require one, ``fail_if_no_peer_cert``)."""

    ca_file: Path | None = None  # CA bundle; None: the system's trusted CAs
    cert_file: Path | None = None  # client certificate (chain); with key_file
    key_file: Path | None = None  # its private key; None: in cert_file

    def check(self) -> None:
        """Raise ConfigError when a named file does not exist or is not readable."""
        if self.key_file is not None and self.cert_file is None:
            raise ConfigError("amqp_key_file is set without amqp_cert_file")
        for setting, path in (
            ("amqp_ca_file", self.ca_file),
            ("amqp_cert_file", self.cert_file),
            ("amqp_key_file", self.key_file),
        ):
            if path is not None:
                _check_file(setting, path)

    def context(self) -> ssl.SSLContext:
        """A client context that verifies the broker's certificate and host name."""
        try:
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH,
                cafile=str(self.ca_file) if self.ca_file is not None else None,
            )
            if self.cert_file is not None:
                key = str(self.key_file) if self.key_file is not None else None
                context.load_cert_chain(str(self.cert_file), key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the TLS files {self._names()}: {exc}") from None
        return context

    def _names(self) -> str:
        return ", ".join(str(p) for p in (self.ca_file, self.cert_file, self.key_file) if p)


def _check_file(what: str, path: Path | str) -> None:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what}: the file {path} does not exist")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Brokers:
    """The broker URLs of a node or client (nodes of one RabbitMQ cluster, tried in
    order) and the TLS files for ``amqps://`` ones. Invariant: at least one URL."""

    urls: tuple[str, ...]  # tried in this order, from the one after the last used
    tls: TlsFiles | None = None  # files for every amqps:// URL; None: the URLs' own query

    @classmethod
    def of(cls, value: BrokersLike, tls: TlsFiles | None = None) -> Brokers:
        """Brokers from a comma-separated string, a sequence of URLs, or Brokers (then
        ``tls`` replaces theirs when given)."""
        if isinstance(value, Brokers):
            return value if tls is None else cls(value.urls, tls)
        urls = split_urls(value) if isinstance(value, str) else tuple(value)
        if not urls:
            raise ConfigError("no broker URL given")
        return cls(urls, tls if tls is not None and tls != TlsFiles() else None)

    def check(self) -> None:
        """Raise ConfigError for what cannot work (see the module docstring)."""
        secure = False
        for url in self.urls:
            parts = urlsplit(url)
            if parts.scheme not in _SCHEMES:
                raise ConfigError(f"the broker URL {masked(url)} is not an amqp:// or amqps:// URL")
            secure = secure or parts.scheme == "amqps"
            query = parse_qs(parts.query)
            for name in _QUERY_TLS:
                for path in query.get(name, []):
                    if self.tls is not None:
                        raise ConfigError(
                            f"the broker URL {masked(url)} names {name} and the TLS file "
                            "settings are set too: give the files one way"
                        )
                    _check_file(f"{name} of {masked(url)}", path)
        if self.tls is not None:
            if not secure:
                raise ConfigError(
                    "TLS files are set (amqp_ca_file, amqp_cert_file, amqp_key_file) but no "
                    "broker URL is amqps://"
                )
            self.tls.check()

    def display(self) -> str:
        """The URLs as they may be logged (passwords masked), comma-separated."""
        return ",".join(masked(url) for url in self.urls)


BrokersLike = str | Sequence[str] | Brokers
"""What every ``amqp_url`` parameter takes: see :meth:`Brokers.of`."""


class Connector:
    """Opens connections to the first reachable broker of ``brokers``, starting after the
    one it connected to last (see the module docstring). One per component that
    reconnects on its own: the cursor is its history."""

    def __init__(self, brokers: BrokersLike, *, name: str | None = None) -> None:
        self.brokers = Brokers.of(brokers)  # the URLs and TLS files
        self.name = name  # connection_name shown by `rabbitmqctl list_connections`
        self.last_url: str | None = None  # the URL of the latest connection made
        # Invariant: 0 <= _next < len(urls); the URL the next attempt starts with.
        self._next = 0
        self._context: ssl.SSLContext | None = None  # made once from brokers.tls

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.brokers.tls is None:
            return None
        if self._context is None:
            self._context = self.brokers.tls.context()
        return self._context

    def _kwargs(self, url: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        parts = urlsplit(url)
        if self.name is not None and "name" not in parse_qs(parts.query):
            # A URL's own ?name= (aiormq's connection name) wins.
            kwargs["client_properties"] = {"connection_name": self.name}
        if parts.scheme == "amqps":
            context = self._ssl_context()
            if context is not None:
                kwargs["ssl_context"] = context
        return kwargs

    async def _each(self, attempt: Callable[[str], Awaitable[None]]) -> None:
        """Run ``attempt`` on each URL from the cursor on until one returns; raise the
        last error when every one failed."""
        urls = self.brokers.urls
        start = self._next
        error: BaseException | None = None
        for step in range(len(urls)):
            position = (start + step) % len(urls)
            url = urls[position]
            try:
                await attempt(url)
            except (TimeoutError, *aio_pika.exceptions.CONNECTION_EXCEPTIONS) as exc:
                tls = _ssl_cause(exc)
                error = exc if tls is None else _tls_error(url, tls)
            else:
                self._next = (position + 1) % len(urls)
                self.last_url = url
                if len(urls) > 1:
                    logger.info("%s: connected to %s", self.name or "raftmq", masked(url))
                return
            if len(urls) > 1:
                logger.warning(
                    "%s: cannot connect to %s: %s", self.name or "raftmq", masked(url), error
                )
        # Every URL failed: the next round starts where this one did.
        assert error is not None
        raise error

    async def connect(self, *, timeout: float | None = None) -> AbstractConnection:
        """A connection to the first broker that accepts one (see the class docstring)."""
        made: list[AbstractConnection] = []

        async def attempt(url: str) -> None:
            made.append(await aio_pika.connect(url, timeout=timeout, **self._kwargs(url)))

        await self._each(attempt)
        return made[0]

    async def connect_robust(self, *, timeout: float | None = None) -> AbstractRobustConnection:
        """An aio-pika robust connection whose every (re)connection attempt goes through
        this Connector's URLs (see the module docstring); raises like :meth:`connect`
        when no broker accepts the first one."""
        first = self.brokers.urls[self._next]
        connection = _FailoverConnection(URL(first), connector=self, **self._kwargs(first))
        await connection.connect(timeout=timeout)
        return connection


class _FailoverConnection(RobustConnection):
    """A RobustConnection that makes each connection attempt on the next broker of its
    Connector (see the module docstring for why this overrides a private method)."""

    def __init__(self, url: URL, *, connector: Connector, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._connector = connector  # the URLs and the cursor

    async def _RobustConnection__connect_transport(self) -> None:
        attempt_on: Callable[[], Awaitable[None]] = getattr(super(), ROBUST_ATTEMPT)
        connector = self._connector

        async def attempt(url: str) -> None:
            self.url = URL(url)
            # Every URL's own TLS files: the ssl context of the settings, when given.
            self.kwargs["context"] = connector._kwargs(url).get("ssl_context")
            await attempt_on()

        await connector._each(attempt)


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind ``exc`` (aiormq raises AMQPConnectionError from it), if any."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None or isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _tls_error(url: str, exc: ssl.SSLError) -> ConnectionError:
    """A ConnectionError (what callers already handle) that says TLS failed, and why."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = f"certificate verify failed: {exc.verify_message}"
        hint = " (is the CA file the one that signed the broker's certificate?)"
    else:
        reason, hint = str(exc.reason or exc), ""
    error = ConnectionError(f"TLS with the broker at {endpoint(url)} failed: {reason}{hint}")
    error.__cause__ = exc
    return error
