"""Storage port and adapters (memory, SQL).

* :class:`~raftmq.storage.port.Storage` -- the Protocol a node needs;
* :class:`~raftmq.storage.memory.MemoryStorage` -- the in-memory twin;
* :class:`~raftmq.storage.sql.SqlStorage` -- SQLite / Postgres through SQLAlchemy (import
  ``raftmq.storage.sql`` explicitly; it pulls in SQLAlchemy and alembic);
* :mod:`raftmq.storage.migrate` -- ``upgrade(url)``, ``current(url)`` for ``raftmq db``.
"""

from raftmq.storage.memory import MemoryStorage
from raftmq.storage.port import ClientSession, PersistBatch, Snapshot, Storage

__all__ = ["ClientSession", "MemoryStorage", "PersistBatch", "Snapshot", "Storage"]
