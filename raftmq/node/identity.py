"""Opening a node's database under its cluster identity: the id of the bootstrap of the
cluster name this database belongs to (:class:`raftmq.node.types.ClusterIdentity`).

The order matters: the id is settled before the node reads its state, before its
transport consumes or sends anything, so a database of another bootstrap (or a node with
another voter set) never speaks for the cluster; when the check refuses, nothing was
written and the database is closed again.
"""

from __future__ import annotations

import logging
from typing import Any

from raftmq.node.types import ClusterIdentity
from raftmq.storage.port import Storage
from raftmq.transport.port import Transport

__all__ = ["ClusterIdentity", "identity_status", "open_admitted"]

logger = logging.getLogger("raftmq.node.identity")


async def open_admitted(
    storage: Storage, identity: ClusterIdentity | None, transport: Transport
) -> str:
    """Open ``storage``, have ``identity`` admit its cluster id, save the id in a database
    that had none and hand it to ``transport``; return it. Without an identity (tests on
    a memory network) the transport's id is used and the database is left as it is.
    Raises what ``admit`` raises, with the database closed."""
    await storage.open()
    if identity is None:
        return transport.cluster_id
    try:
        stored = await storage.cluster_id()
        cluster_id = await identity.admit(stored)
        if stored is None:
            await storage.save_cluster_id(cluster_id)
            logger.info(
                "%s: joined cluster %s with id %s", storage.node_id, storage.cluster, cluster_id
            )
    except BaseException:
        await storage.close()
        raise
    transport.cluster_id = cluster_id
    return cluster_id


def identity_status(identity: ClusterIdentity | None, transport: Transport) -> dict[str, Any]:
    """The ``status`` fields of a node's identity: its cluster id and the voters the
    cluster was bootstrapped with (a peer list that differs is refused at start)."""
    record = identity.record if identity is not None else None
    return {
        "cluster_id": transport.cluster_id or None,
        "bootstrap_voters": None if record is None else list(record.voters),
    }
