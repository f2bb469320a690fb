"""The cluster identity of a node on the broker (:class:`raftmq.node.types.ClusterIdentity`):
the cluster's bootstrap record (:mod:`raftmq._amqp.bootstrap`) decides which cluster id a
node runs with, by the rules of :func:`raftmq.protocol.bootstrap.admit_record`.

A node with an empty database proposes a new id, one with a database proposes the id it
holds; of all proposals for a cluster name exactly one becomes the record, and every node
reads it back. So the first start of a cluster bootstraps it, a node with an empty
database joins it (never makes a second cluster of the name), a database of another
bootstrap is refused, and a broker that lost the record gets it back from the first
member that starts.
"""

from __future__ import annotations

import aio_pika

from raftmq._amqp import bootstrap, topology
from raftmq._amqp.connect import BrokersLike, Connector
from raftmq.errors import TransportError
from raftmq.protocol.bootstrap import BootstrapRecord, admit_record, new_cluster_id


class AmqpClusterIdentity:
    """Admits a node of ``cluster`` with ``voters`` through the bootstrap record on the
    broker at ``url``; one short connection per start."""

    def __init__(
        self,
        url: BrokersLike,
        cluster: str,
        voters: tuple[str, ...],
        *,
        timeout: float = 30.0,
        declare_shared: bool = False,
    ) -> None:
        self.cluster = cluster  # the cluster name the record is for
        # The broker URLs (the first that answers serves the record).
        self.connector = Connector(url, name=f"raftmq-bootstrap:{cluster}")
        self.voters = tuple(sorted(voters))  # this node's voter set
        self.timeout = timeout  # seconds to take the record's lock and read it
        self.declare_shared = declare_shared  # declare the shared objects once admitted
        self.record: BootstrapRecord | None = None  # the record, once admitted

    async def admit(self, stored: str | None) -> str:
        """The cluster id this node runs with (see the module docstring). Raises
        StoreMismatch or ConfigError (admit_record), MalformedMessage when the broker holds
        something that is not a record, TransportError when the broker cannot be reached,
        ConfigError when the account may not declare the shared objects."""
        proposal = BootstrapRecord.make(stored or new_cluster_id(), self.voters)
        try:
            connection = await self.connector.connect(timeout=self.timeout)
        except (TimeoutError, *aio_pika.exceptions.CONNECTION_EXCEPTIONS) as exc:
            raise TransportError(
                f"cannot connect to the broker to read the bootstrap record: {exc}"
            ) from None
        try:
            record = await bootstrap.claim(connection, self.cluster, proposal, self.timeout)
            cluster_id = admit_record(record, stored, self.voters, self.cluster)
            if self.declare_shared:
                await topology.declare_shared(connection, self.cluster)
        finally:
            await connection.close()
        self.record = record
        return cluster_id
