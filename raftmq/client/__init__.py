"""What applications import to talk to a running cluster."""

from raftmq.client.admin import AdminClient

__all__ = ["AdminClient"]
