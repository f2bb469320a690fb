"""Logging of the ``raftmq`` command: text or JSON lines on stderr, secrets masked, and on
a node every line stamped with the node's id, term and role.

Library code only logs (``logging.getLogger("raftmq.<module>")``); this module is where
the handlers are configured. The role, term and leader come from the node's role observer
(:meth:`raftmq.node.types.ServiceHost.on_role_change`): the state the node's loop last
reported, so a line that announces a change (``leader in term 2``) still shows the state
before it. aiormq and aio-pika narrate every frame at DEBUG, so their loggers stay
at WARNING unless ``--log-level-libs`` asks otherwise; ``--log-level DEBUG`` is then about
raftmq's own decisions.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from raftmq.cli.errors import mask
from raftmq.core.types import SoftState
from raftmq.errors import ConfigError

LIBRARY_LOGGERS = ("aiormq", "aio_pika", "asyncpg", "sqlalchemy", "alembic")
"""Third-party loggers kept at ``--log-level-libs`` (WARNING by default)."""

TEXT_FORMAT = "%(asctime)s %(levelname)-5s %(node_context)s%(name)s: %(message)s"

# The attributes every LogRecord has: what is left on a record is an ``extra=`` field.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "node_context",
    "node_id",
    "term",
    "role",
    "leader",
}


_OURS = "raftmq_cli_handler"  # marks the handler configure() installed


class LogFormat(StrEnum):
    """The formats of ``--log-format``."""

    TEXT = "text"
    JSON = "json"


class NodeContext(logging.Filter):
    """Stamps every record with a node's id, term, role and known leader (``None`` until
    the node has told them). A filter on the handler, so that every logger's lines get
    it, raftmq's and the libraries' alike."""

    def __init__(self) -> None:
        super().__init__()
        self.node_id: str | None = None  # None: not a node process (no stamp at all)
        self.term: int | None = None  # the node's current term, once known
        self.role: str | None = None  # follower, candidate, leader, ...
        self.leader: str | None = None  # the known leader of the term

    def observe(self, soft: SoftState) -> None:
        """The role observer: called by the node's loop on every role or term change."""
        self.term, self.role, self.leader = soft.term, soft.role.value, soft.leader_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.node_id = self.node_id
        record.term = self.term
        record.role = self.role
        record.leader = self.leader
        if self.node_id is None:
            record.node_context = ""
        else:
            term = "-" if self.term is None else self.term
            record.node_context = f"[{self.node_id} t{term} {self.role or 'starting'}] "
        return True


class MaskedText(logging.Formatter):
    """The text format, with URL passwords and known secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


class JsonLines(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the node's id, term and
    role when it is a node, ``extra=`` fields, and the exception when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        node_id = getattr(record, "node_id", None)
        if node_id is not None:
            line.update(
                node_id=node_id,
                term=getattr(record, "term", None),
                role=getattr(record, "role", None),
                leader=getattr(record, "leader", None),
            )
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and key not in line:
                line[key] = value if isinstance(value, str | int | float | bool) else repr(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return mask(json.dumps(line, default=repr))


def configure(
    level: str | int,
    log_format: LogFormat = LogFormat.TEXT,
    *,
    libs_level: str | int = logging.WARNING,
    context: NodeContext | None = None,
) -> NodeContext:
    """Send every log line to stderr in ``log_format`` at ``level`` (libraries at
    ``libs_level``); return the filter that stamps the node context on each line."""
    context = context or NodeContext()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(context)
    handler.setFormatter(JsonLines() if log_format is LogFormat.JSON else MaskedText(TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)  # configured again (in-process tests): one handler of ours
    setattr(handler, _OURS, True)
    root.addHandler(handler)
    root.setLevel(_level(level))
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(_level(libs_level))
    return context


def _level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise ConfigError(f"unknown log level {level!r}: DEBUG, INFO, WARNING or ERROR")
    return value
