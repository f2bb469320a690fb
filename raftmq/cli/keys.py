"""The cluster key of operator commands (``status``, ``write``, ``transfer-leadership``):
the same file or variable as the node settings, so that their requests are signed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from raftmq.cli.options import fail
from raftmq.errors import ConfigError
from raftmq.node.settings import cluster_key_from
from raftmq.protocol.auth import ClusterKey

KeyFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--cluster-key-file",
        envvar="RAFTMQ_CLUSTER_KEY_FILE",
        help="File holding the cluster key the nodes sign with (or RAFTMQ_CLUSTER_KEY).",
    ),
]

NO_KEY_HINT = (
    " (no cluster key given: nodes with a key ignore unsigned requests; "
    "use --cluster-key-file or RAFTMQ_CLUSTER_KEY_FILE)"
)


def operator_key(key_file: Path | None) -> ClusterKey | None:
    """The key of an operator command: the node settings' file or variable (None: none)."""
    try:
        return cluster_key_from(os.environ.get("RAFTMQ_CLUSTER_KEY") or None, key_file)
    except ConfigError as exc:
        raise fail(str(exc)) from None


def hint(key: ClusterKey | None) -> str:
    """What to add to a failed command's error: why a keyless request may go unanswered."""
    return NO_KEY_HINT if key is None else ""
