"""Transport port and adapters (memory, AMQP).

``MemoryNetwork``/``MemoryTransport`` need no broker; ``AmqpTransport`` and
``RpcClient`` talk to RabbitMQ (imported lazily from their modules so that the
core and memory tests do not pay for aio-pika).
"""

from raftmq.errors import DropReason, InvalidEnvelope, RequestFailed, RequestTimeout
from raftmq.protocol.codec import Envelope
from raftmq.protocol.names import inbox_queue
from raftmq.transport.memory import MemoryNetwork, MemoryRequestClient, MemoryTransport
from raftmq.transport.port import (
    MessageHandler,
    RequestClient,
    RequestHandler,
    Transport,
    TransportStats,
)

__all__ = [
    "DropReason",
    "Envelope",
    "InvalidEnvelope",
    "MemoryNetwork",
    "MemoryRequestClient",
    "MemoryTransport",
    "MessageHandler",
    "RequestClient",
    "RequestFailed",
    "RequestHandler",
    "RequestTimeout",
    "Transport",
    "TransportStats",
    "inbox_queue",
]
