"""``python -m raftmq`` is the ``raftmq`` command."""

from raftmq.cli.app import main

main()
