"""What applications import to talk to a running cluster."""

from raftmq.client.admin import AdminClient
from raftmq.client.committed import CommittedMessage
from raftmq.client.producer import Producer
from raftmq.client.receipts import Receipt
from raftmq.client.subscriber import Subscriber

__all__ = ["AdminClient", "CommittedMessage", "Producer", "Receipt", "Subscriber"]
