"""Storage port and adapters (memory, SQL).

* :class:`~raftmq.storage.port.Storage` -- the Protocol a node needs;
* :class:`~raftmq.storage.memory.MemoryStorage` -- the in-memory twin;
* :class:`~raftmq.storage.sql.SqlStorage` -- SQLite / Postgres through SQLAlchemy (import
  ``raftmq.storage.sql`` explicitly; it pulls in SQLAlchemy and alembic);
* :mod:`raftmq.storage.retention` -- the arithmetic of ``Storage.retention_point``;
* :mod:`raftmq.storage.migrate` -- ``upgrade(url)``, ``current(url)`` for ``raftmq db``.
"""

from raftmq.storage.memory import MemoryStorage
from raftmq.storage.port import ClientSession, LogExtent, PersistBatch, Snapshot, Storage

__all__ = ["ClientSession", "LogExtent", "MemoryStorage", "PersistBatch", "Snapshot", "Storage"]
