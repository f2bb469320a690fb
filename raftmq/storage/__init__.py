"""Storage port and adapters (memory, SQL)."""
