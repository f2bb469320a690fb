"""What applications import to talk to a running cluster."""

from raftmq.client.admin import AdminClient
from raftmq.client.committed import CommittedMessage
from raftmq.client.producer import Producer
from raftmq.client.subscriber import Subscriber
from raftmq.protocol.receipts import Receipt

__all__ = ["AdminClient", "CommittedMessage", "Producer", "Receipt", "Subscriber"]
