"""What applications import to talk to a running cluster."""

from raftmq.client.admin import AdminClient
from raftmq.client.producer import Producer, Receipt
from raftmq.client.subscriber import CommittedMessage, Subscriber

__all__ = ["AdminClient", "CommittedMessage", "Producer", "Receipt", "Subscriber"]
