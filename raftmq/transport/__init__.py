"""Transport port and adapters (memory, AMQP)."""
