"""``python -m raftmq`` is the ``raftmq`` command."""

from raftmq.cli import main

main()
