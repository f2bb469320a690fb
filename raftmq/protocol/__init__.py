"""The wire protocol, pure (no I/O): broker names and headers (names), the record a
write carries (record)."""
