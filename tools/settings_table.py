"""Write docs/settings.md: one table of every node setting and every other ``RAFTMQ_*``
variable, made from :class:`raftmq.node.settings.NodeSettings` and ``OTHER_VARIABLES``.

    .venv/bin/python tools/settings_table.py           # rewrite docs/settings.md
    .venv/bin/python tools/settings_table.py --check   # exit 1 when it is out of date

tests/test_settings_doc.py fails when the committed file differs from what this writes,
so a new setting shows up in the docs with the commit that adds it.

A setting's meaning is its pydantic ``description`` when it has one, else the entry of
:data:`MEANINGS` below, else the comment beside (or above) the field in settings.py; a
setting with none of the three is an error.
"""

from __future__ import annotations

import argparse
import inspect
import io
import re
import sys
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from raftmq.node import settings as settings_module
from raftmq.node.settings import OTHER_VARIABLES, NodeSettings

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "settings.md"
ENV_PREFIX = "RAFTMQ_"

MEANINGS: dict[str, str] = {
    "retain_entries": "Retention: the log keeps the newest N entries for replay; older ones "
    "are compacted (with a snapshot) once the log is a tenth over. 0: no bound by count "
    "(docs/core.md, Retention).",
    "retain_bytes": "Retention: the log keeps the newest entries whose payloads total at "
    "most N bytes. 0: no bound by size.",
    "retain_age": "Retention: the log keeps the entries this node saved in the last N "
    "seconds (the newest always). 0: no bound by age.",
    "handover_timeout": "Seconds a leader told to stop (SIGTERM) waits for the most "
    "caught-up voter to take over before it stops anyway; unset: 3 longest election "
    "timeouts (3 s with the defaults); 0: stop without handing over (docs/core.md, "
    "Graceful handover).",
    "cluster": "The cluster's name; it names every queue and exchange of the cluster.",
    "node_id": "This node's id, unique in the cluster and fixed for the node's life.",
    "peers": "The other voters (`n2,n3` in the environment, a list in TOML); fixed at the "
    "cluster's first start.",
    "database_url": "SQLAlchemy URL of this node's own database (`sqlite:///...` or "
    "`postgresql://...`); unset: a SQLite file in `data_dir`.",
    "data_dir": "Folder of the default SQLite file `raftmq-<cluster>-<node_id>.db`.",
    "durability": "SQLite `synchronous=FULL` (every commit fsynced) or `NORMAL` (a power "
    "loss can lose the last commits).",
    "tick_interval": "Seconds per Raft tick; elections and heartbeats count in ticks.",
    "election_ticks": "Election timeout in ticks (randomized between this and twice this).",
    "heartbeat_ticks": "Leader heartbeat interval in ticks; smaller than `election_ticks`.",
    "max_batch_entries": "Most entries in one AppendEntries message.",
    "max_batch_bytes": "Most entry bytes in one AppendEntries message.",
    "max_inflight": "AppendEntries messages in flight to one follower, at most.",
    "max_cached_entries": "Applied entries kept in memory to send to followers; older ones "
    "are read from storage.",
    "max_message_bytes": "Larger inbound node messages are dropped (and counted).",
    "max_write_bytes": "Larger writes are refused (`WriteRejected`, or dead-lettered).",
    "write_timeout": "Seconds `node.write` waits for its commit before `TimeoutError`.",
    "allow_fault_injection": "Serve the `isolate` and `rejoin` requests of the chaos tests; "
    "never in production.",
    "queue_services": "Run the leader's queue services (ingest of the writes queue, fan-out "
    "to the committed exchange, replay) beside the node.",
    "session_expiry_entries": "A producer session idle for this many log entries expires "
    "(its duplicate detection is forgotten).",
    "max_session_gap": "Missing sequence numbers tolerated in one producer session.",
    "write_content_types": "Content types the writes queue accepts (comma-separated); empty: "
    "any. Others are dead-lettered.",
    "write_schema": "`module:Model` (pydantic) that every write must validate against, else "
    "it is dead-lettered; unset: no check.",
    "ingest_prefetch": "Unacknowledged writes the leader takes from the writes queue at once.",
    "event_loop": "`raftmq node` only: `auto` runs on uvloop when installed, `uvloop` "
    "requires it, `asyncio` the standard loop.",
    "cluster_key_file": "File of the cluster key (at least 16 bytes) that signs node "
    "traffic; the same on every node and for operator commands.",
    "cluster_key": "The cluster key itself, as text (tests); never logged.",
    "insecure": "Run without a cluster key: anyone on the broker can forge node traffic.",
    "single_node": "A cluster of this node alone, on purpose (no `peers`).",
    "join": "Start outside the cluster: `peers` are the voters it was bootstrapped with "
    "(this node among them when it comes back after its removal, e.g. with a new disk); "
    "it follows the leader once `raftmq members add` makes it a learner or voter.",
    "metrics_port": "`raftmq node` only: serve `/metrics`, `/healthz` and `/readyz` on this "
    "port; unset: off.",
    "metrics_host": "The address the metrics port listens on (`0.0.0.0` to be scraped from "
    "other hosts).",
}
"""The meaning of each setting (they have no pydantic descriptions yet); a setting missing
here is described by its comment in settings.py (``amqp_url`` on purpose: its comment is
kept up to date with it)."""

OTHER_MEANINGS: dict[str, str] = {
    "RAFTMQ_CONFIG": "The TOML settings file (`--config`); its keys are the settings above.",
    "RAFTMQ_NODES": "Operator commands (`status`, `write`, `transfer-leadership`): the "
    "nodes to ask (`--nodes`).",
    "RAFTMQ_RABBITMQCTL": "`raftmq permissions`: the rabbitmqctl command, with options such "
    "as `-n rabbit@host` (`--rabbitmqctl`).",
    "RAFTMQ_LOG_LEVEL": "`raftmq node`: DEBUG, INFO, WARNING or ERROR (`--log-level`).",
    "RAFTMQ_LOG_FORMAT": "`raftmq node`: `text` or `json`, one object per line (`--log-format`).",
    "RAFTMQ_NODE_PASSWORD": "`raftmq permissions apply`: the password of the node account.",
    "RAFTMQ_PRODUCER_PASSWORD": "`raftmq permissions apply`: the password of the producer account.",
    "RAFTMQ_SUBSCRIBER_PASSWORD": "`raftmq permissions apply`: the password of the "
    "subscriber account.",
    "RAFTMQ_TEST_AMQP_URL": "Tests: the RabbitMQ broker to use.",
    "RAFTMQ_TEST_DATABASE_URL": "Tests: the PostgreSQL server to make databases on.",
    "RAFTMQ_REQUIRE_SERVICES": "Tests: `1` makes a missing broker or database a failure, "
    "not a skip.",
    "RAFTMQ_HYPOTHESIS_PROFILE": "Tests: `fuzz` draws new examples each run; else the "
    "repeatable ones.",
    "RAFTMQ_FUZZ_EXAMPLES": "Tests: examples per fuzz test.",
    "RAFTMQ_SAFETY_SEEDS": "Tests: seeds of the randomized safety search.",
    "RAFTMQ_RETENTION_WRITES": "Tests: writes of the real-cluster retention test "
    "(`make retention-soak`: 200,000).",
    "RAFTMQ_SAFETY_SEED": "Tests: run the safety search on this one seed (to replay a failure).",
    "RAFTMQ_CRASH_SEED": "Tests: the seed of the SQLite crash loop.",
    "RAFTMQ_CRASH_KILLS": "Tests: SIGKILLs in the SQLite crash loop.",
}
"""The meaning of each of raftmq's other variables."""

_FIELD_LINE = re.compile(r"^    (\w+)\s*:[^=]")  # `    name: type = ...` in the class body
_VARIABLE_LINE = re.compile(r"^\s*\"(RAFTMQ_\w+)\",")  # a name in OTHER_VARIABLES


def _comments(source: str) -> dict[int, tuple[str, bool]]:
    """Line number (0-based) -> (its comment's text, whether the comment is the whole line)."""
    found: dict[int, tuple[str, bool]] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            alone = not token.line[: token.start[1]].strip()
            found[token.start[0] - 1] = (token.string.lstrip("#").strip(), alone)
    return found


def source_comments() -> tuple[dict[str, str], dict[str, str]]:
    """The comments of settings.py: field -> its comment (beside it, else the comment
    lines just above it), and variable -> the comment beside it in OTHER_VARIABLES."""
    fields: dict[str, str] = {}
    source = inspect.getsource(NodeSettings)
    comments = _comments(source)
    above: list[str] = []
    for number, line in enumerate(source.splitlines()):
        text, alone = comments.get(number, ("", False))
        if alone:
            above.append(text)
            continue
        if field := _FIELD_LINE.match(line):
            fields[field.group(1)] = text or " ".join(above)
        above = []
    variables: dict[str, str] = {}
    source = inspect.getsource(settings_module)
    comments = _comments(source)
    for number, line in enumerate(source.splitlines()):
        if (match := _VARIABLE_LINE.match(line)) and number in comments:
            variables[match.group(1)] = comments[number][0]
    return fields, variables


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith(".") else text + "."


def meaning(name: str, field: FieldInfo, comments: dict[str, str]) -> str:
    """A setting's meaning: description, else MEANINGS, else its source comment."""
    for text in (field.description, MEANINGS.get(name), comments.get(name)):
        if text:
            return _sentence(text)
    raise ValueError(
        f"setting {name} has no meaning: give it a pydantic description (Field(..., "
        "description=...)) or an entry in tools/settings_table.py MEANINGS"
    )


def type_name(annotation: Any) -> str:
    """A short, readable name of a field's type (``Literal`` values listed)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return type_name(typing.get_args(annotation)[0])
    if origin is Literal:
        return " or ".join(f'"{value}"' for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        parts = [type_name(arg) for arg in typing.get_args(annotation) if arg is not type(None)]
        return " or ".join(parts)
    if origin is list:
        return f"list of {type_name(typing.get_args(annotation)[0])}"
    if annotation is Path:
        return "path"
    if annotation is SecretStr:
        return "secret str"
    return getattr(annotation, "__name__", str(annotation))


def constraints(field: FieldInfo) -> str:
    """The field's bounds and pattern, as ``> 0``, ``<= 10``, ``pattern ...``."""
    parts: list[str] = []
    for item in field.metadata:
        for attribute, symbol in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if (bound := getattr(item, attribute, None)) is not None:
                parts.append(f"{symbol} {bound}")
        if (length := getattr(item, "min_length", None)) is not None:
            parts.append(f"at least {length} character{'s' if length > 1 else ''}")
        if (pattern := getattr(item, "pattern", None)) is not None:
            parts.append(f"`{pattern}`")
    return ", ".join(parts)


def default(field: FieldInfo) -> str:
    """The default as it would be written in TOML, or *required* / *unset*."""
    if field.is_required():
        return "*required*"
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    if value is None or value is PydanticUndefined:
        return "*unset*"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return "`[]`" if not value else f"`{value!r}`"
    if isinstance(value, str | Path):
        return f'`"{value}"`'
    return f"`{value:_}`" if isinstance(value, int) and value >= 10_000 else f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """The whole of docs/settings.md."""
    field_comments, variable_comments = source_comments()
    lines = [
        "# Settings",
        "",
        "<!-- Generated by tools/settings_table.py from raftmq/node/settings.py: do not edit;",
        "     run `.venv/bin/python tools/settings_table.py` after changing a setting. -->",
        "",
        "A node's settings come from (highest first) `raftmq node` options, `RAFTMQ_*`",
        "environment variables, a TOML file named by `RAFTMQ_CONFIG` (or `--config`) whose",
        "top-level keys are the setting names, then the defaults below. An unknown TOML key is",
        "an error; an unknown `RAFTMQ_*` variable is logged as a warning when a node starts.",
        "An embedded node takes the same settings as `NodeSettings(...)` arguments.",
        "",
        "## Node settings",
        "",
        "| Setting (TOML key) | Environment variable | Type | Default | Meaning |",
        "|---|---|---|---|---|",
    ]
    for name, field in NodeSettings.model_fields.items():
        kind = type_name(field.annotation)
        if bounds := constraints(field):
            kind = f"{kind}, {bounds}"
        lines.append(
            "| "
            + " | ".join(
                _cell(cell)
                for cell in (
                    f"`{name}`",
                    f"`{ENV_PREFIX}{name.upper()}`",
                    kind,
                    default(field),
                    meaning(name, field, field_comments),
                )
            )
            + " |"
        )
    lines += [
        "",
        "## Other variables",
        "",
        "Variables of the command line and of raftmq's own tests and benchmarks, not node",
        "settings (`OTHER_VARIABLES` in `raftmq/node/settings.py`).",
        "",
        "| Environment variable | Meaning |",
        "|---|---|",
    ]
    for variable in sorted(OTHER_VARIABLES):
        text = OTHER_MEANINGS.get(variable) or variable_comments.get(variable)
        if not text:
            raise ValueError(
                f"{variable} has no meaning: add it to tools/settings_table.py OTHER_MEANINGS"
            )
        lines.append(f"| `{variable}` | {_cell(_sentence(text))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Rewrite docs/settings.md, or with ``--check`` report whether it is up to date."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if it is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is out of date: run .venv/bin/python tools/settings_table.py")
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
