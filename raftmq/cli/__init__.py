"""The `raftmq` command line: app (node, status, write, transfer-leadership, db), queue
(publish, subscribe), options shared by commands, and the demo."""

from raftmq.cli.app import app, main

__all__ = ["app", "main"]
