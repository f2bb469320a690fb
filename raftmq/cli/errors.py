"""The one error handler of every ``raftmq`` command, and the masking of secrets.

An expected failure (the broker or the database unreachable or refusing, a URL raftmq
cannot use, a settings mistake) ends a command with a short message on stderr that names
what it tried (``host:port``) and what to do, and exit code 1; Ctrl-C exits 130. Anything
else is a bug and keeps its traceback. Every message, and every log line
(:mod:`raftmq.cli.logs`), goes through :func:`mask` first: passwords in URLs and the
cluster key never reach a terminal or a log file.

The commands' URL options remember their value in the click context's ``meta`` (shared by
a command and its groups), so that the handler can say which broker or database failed.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import re
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import typer
from aio_pika import exceptions as amqp_errors
from pydantic import ValidationError
from sqlalchemy import exc as sql_errors
from sqlalchemy.engine import make_url
from typer.core import TyperGroup

from raftmq.errors import ConfigError, RaftMQError

if TYPE_CHECKING:
    from typer import _click  # typer vendors click: TyperGroup.invoke takes its Context

BROKER = "raftmq.broker_url"  # ctx.meta key: the AMQP URL of the command
DATABASE = "raftmq.database_url"  # ctx.meta key: the database URL of the command
INTERRUPTED = 130  # the exit code of a command stopped by Ctrl-C (128 + SIGINT)

_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:)[^\s@]*@")
_SECRET_VARIABLES = (
    "RAFTMQ_CLUSTER_KEY",
    "RAFTMQ_NODE_PASSWORD",
    "RAFTMQ_PRODUCER_PASSWORD",
    "RAFTMQ_SUBSCRIBER_PASSWORD",
)
_MIN_SECRET = 4  # shorter strings are not masked on their own (they would hit everywhere)
_secrets: set[str] = set()  # texts masked wherever they appear (never shrinks)

# Drivers raftmq's storage runs on (async ones): backend -> accepted driver names.
_DRIVERS = {"sqlite": ("aiosqlite",), "postgresql": ("asyncpg", "psycopg")}
_DATABASE_HINT = (
    "raftmq keeps its log in SQLite (sqlite+aiosqlite:///path/to/node.db) or PostgreSQL "
    "(postgresql+asyncpg://user@host:5432/dbname, the password in the URL or PGPASSWORD)"
)
_DATABASE_MODULES = ("asyncpg", "sqlalchemy", "aiosqlite", "sqlite3", "psycopg")


# ------------------------------------------------------------------------------ secrets


def add_secret(text: str | None) -> None:
    """Mask ``text`` (and its URL-encoded form) in everything printed from now on."""
    if text and len(text.strip()) >= _MIN_SECRET:
        _secrets.add(text.strip())


def add_url_secrets(url: str | None) -> None:
    """Mask the password of ``url`` even where it appears without the URL around it."""
    if not url:
        return
    try:
        password = urlsplit(url).password
    except ValueError:
        return
    if password:
        add_secret(password)
        add_secret(unquote(password))


def add_environment_secrets(environ: Mapping[str, str]) -> None:
    """Mask the cluster key and the account passwords raftmq's variables hold."""
    for name in _SECRET_VARIABLES:
        add_secret(environ.get(name))
    for name in ("RAFTMQ_AMQP_URL", "RAFTMQ_DATABASE_URL"):
        add_url_secrets(environ.get(name))
    key_file = environ.get("RAFTMQ_CLUSTER_KEY_FILE")
    if key_file:
        add_key_file_secret(Path(key_file))


def add_key_file_secret(path: Path | None) -> None:
    """Mask the key a cluster key file holds (an unreadable file is reported elsewhere)."""
    if path is None:
        return
    try:
        add_secret(path.read_text())
    except (OSError, UnicodeDecodeError):
        return


def mask(text: str) -> str:
    """``text`` with URL passwords and every known secret replaced by ``***``."""
    text = _URL_PASSWORD.sub(r"\g<head>***@", text)
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def safe_url(url: str) -> str:
    """``url`` as it may be printed: the password masked."""
    return mask(url)


def endpoint(url: str | None, default_port: int) -> str:
    """``host:port`` of ``url`` (the port it defaults to when the URL names none)."""
    if not url:
        return "?"
    try:
        parts = urlsplit(url)
        port = parts.port or default_port
    except ValueError:
        return mask(url)
    return f"{parts.hostname or 'localhost'}:{port}"


# ---------------------------------------------------------------------- the exit itself


def fail(message: str) -> typer.Exit:
    """Print ``message`` (masked) as an error on stderr; the exit (code 1) for the caller
    to raise."""
    typer.secho(f"error: {mask(message)}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


def remember(key: str) -> Callable[[typer.Context, Any], Any]:
    """An option callback that keeps the option's value in ``ctx.meta[key]`` (for the
    error handler) and masks its password from then on."""

    def callback(ctx: typer.Context, value: Any) -> Any:
        if isinstance(value, str) and value:
            ctx.meta[key] = value
            add_url_secrets(value)
        return value

    return callback


def note(ctx: typer.Context, key: str, url: str) -> None:
    """Remember the URL a command resolved otherwise (``raftmq node``'s settings)."""
    ctx.meta[key] = url
    add_url_secrets(url)


# -------------------------------------------------------------------- database URLs


def check_database_url(url: str) -> None:
    """Raise ConfigError unless raftmq can run on ``url`` (a SQLAlchemy URL of SQLite or
    PostgreSQL with an async driver that is installed)."""
    try:
        parsed = make_url(url)
    except sql_errors.ArgumentError:
        raise ConfigError(f"the database URL {url!r} is not a URL: {_DATABASE_HINT}") from None
    backend, _, driver = parsed.drivername.partition("+")
    backend = "postgresql" if backend == "postgres" else backend
    if backend not in _DRIVERS:
        raise ConfigError(
            f"database URLs of scheme {backend}:// are not supported: {_DATABASE_HINT}"
        )
    if driver and driver not in _DRIVERS[backend]:
        drivers = " or ".join(f"{backend}+{name}" for name in _DRIVERS[backend])
        raise ConfigError(
            f"the database driver {parsed.drivername} is not supported (raftmq needs an "
            f"async driver: {drivers})"
        )
    module = driver or _DRIVERS[backend][0]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"the database URL needs the {module} package, which is not installed "
            f"(pip install {module})"
        )


# ------------------------------------------------------------------------ the handler


def explain(exc: BaseException, meta: Mapping[str, Any]) -> str | None:
    """The message for an expected failure, or None for a bug (keeps its traceback)."""
    broker = meta.get(BROKER)
    database = meta.get(DATABASE)
    broker_hint = (
        f" (broker {endpoint(broker, 5672)}: is RabbitMQ running there, and are the user "
        "and password of --amqp-url / RAFTMQ_AMQP_URL right?)"
    )
    if isinstance(exc, ValidationError):
        return "invalid settings: " + "; ".join(_validation_lines(exc))
    if isinstance(exc, ConfigError):
        return str(exc)
    if isinstance(exc, amqp_errors.ProbableAuthenticationError):
        return (
            f"the broker at {endpoint(broker, 5672)} refused the login: check the user and "
            "password of --amqp-url (RAFTMQ_AMQP_URL)"
        )
    if isinstance(exc, amqp_errors.AMQPConnectionError | amqp_errors.AMQPChannelError):
        return f"cannot use the broker: {_reason(exc)}{broker_hint}"
    if isinstance(exc, RaftMQError):
        text = str(exc) or type(exc).__name__
        if "broker" in text and broker and endpoint(broker, 5672) not in text:
            text += broker_hint
        return text
    if _from_database(exc):
        where = ""
        if database:
            sqlite = database.startswith("sqlite")
            where = " " + (safe_url(database) if sqlite else endpoint(database, 5432))
        return (
            f"cannot use the database{where}: {_reason(exc)} (is it running, does the "
            "database exist, and are the user and password of --database-url / "
            "RAFTMQ_DATABASE_URL right?)"
        )
    if isinstance(exc, TimeoutError):
        return "timed out" + (broker_hint if broker else "")
    if isinstance(exc, ConnectionError | OSError):
        return f"{_reason(exc)}{broker_hint if broker else ''}"
    return None


def _validation_lines(exc: ValidationError) -> Iterable[str]:
    # Without the input values: a misspelt key could hold the cluster key or a password.
    for error in exc.errors(include_input=False, include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "settings"
        yield f"{field}: {error['msg']}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, sql_errors.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _from_database(exc: BaseException) -> bool:
    """True when ``exc`` is the database's (raised in a driver or SQLAlchemy)."""
    if isinstance(exc, sql_errors.SQLAlchemyError):
        return True
    for frame, _line in traceback.walk_tb(exc.__traceback__):
        module = frame.f_globals.get("__name__", "")
        if module.split(".")[0] in _DATABASE_MODULES:
            return True
    return False


class HandledGroup(TyperGroup):
    """A typer group whose commands share one error handler (see the module docstring)."""

    def invoke(self, ctx: _click.Context) -> Any:
        add_environment_secrets(os.environ)
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # exits and usage errors: typer reports them
        except KeyboardInterrupt:
            typer.secho("interrupted", err=True)
            raise typer.Exit(code=INTERRUPTED) from None
        except Exception as exc:
            message = explain(exc, ctx.meta)
            if message is None or getattr(exc, "errno", None) == errno.EPIPE:
                raise  # a bug keeps its traceback; typer quiets a closed pipe
            raise fail(message) from None
