"""The wire protocol, pure (no I/O): broker names and headers (names), Raft messages in
AMQP envelopes (codec), requests and receipts, the watermark entry, the record a
write carries (record)."""
