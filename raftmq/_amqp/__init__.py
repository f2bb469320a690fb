"""The only package allowed below aio-pika's public API (aiormq and pamqp), pinned in
pyproject.toml to the versions it was written for and checked by tests/amqp/.

- :mod:`~raftmq._amqp.channel`: the raw channel under an aio-pika channel: getting it,
  consuming on it, watching the broker cancel consumers, waiting unless it closes.
- :mod:`~raftmq._amqp.delivery`: a delivered message: its properties, tag and ack.
- :mod:`~raftmq._amqp.wire`: hand-written frames and the fast publish paths (batched,
  confirmed, fire-and-forget).
- :mod:`~raftmq._amqp.topology`: the cluster's shared queues and exchanges (aio-pika).
"""
