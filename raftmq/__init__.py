"""raftmq: Raft consensus over RabbitMQ."""

__version__ = "0.1.0"
