"""The bootstrap record of a cluster: the one message on the broker that says a cluster of
that name exists, which id it got when it was bootstrapped, and its voters then.

It lives in the durable queue ``raftmq.C.bootstrap`` (at most one message; a second
publish is refused by the broker), so two processes that bootstrap the same cluster name
at once end up with one record, and a node that starts later (with an empty database, or
with a database of another bootstrap) finds out before it speaks for the cluster.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass

from raftmq.errors import ConfigError, MalformedMessage, StoreMismatch

VERSION = 1
MAX_RECORD_BYTES = 64 * 1024  # a record is a few hundred bytes; anything larger is forged
_CLUSTER_ID = re.compile(r"^[0-9a-f]{32}$")
_NODE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def new_cluster_id() -> str:
    """A fresh cluster id: 128 random bits, hex."""
    return secrets.token_hex(16)


def is_cluster_id(text: str) -> bool:
    """True when ``text`` has the shape of a cluster id."""
    return bool(_CLUSTER_ID.match(text))


@dataclass(frozen=True, slots=True)
class BootstrapRecord:
    """Who bootstrapped the cluster. Invariant: ``voters`` is sorted and non-empty."""

    cluster_id: str  # made once, when the cluster was bootstrapped
    voters: tuple[str, ...]  # the voter set it was bootstrapped with

    def encode(self) -> bytes:
        """The record as the bootstrap queue holds it (compact JSON)."""
        body = {"v": VERSION, "cluster_id": self.cluster_id, "voters": list(self.voters)}
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def make(cls, cluster_id: str, voters: tuple[str, ...] | list[str]) -> BootstrapRecord:
        """A record with its fields checked and the voters sorted."""
        record = cls(cluster_id, tuple(sorted(voters)))
        record._check()
        return record

    @classmethod
    def decode(cls, data: bytes) -> BootstrapRecord:
        """Parse a record from the broker (hostile bytes): MalformedMessage when it is not one."""
        if len(data) > MAX_RECORD_BYTES:
            raise MalformedMessage(f"bootstrap record of {len(data)} bytes")
        try:
            body = json.loads(data)
        except ValueError as exc:
            raise MalformedMessage(f"bootstrap record is not JSON: {exc}") from None
        if not isinstance(body, dict) or body.get("v") != VERSION:
            raise MalformedMessage("bootstrap record of an unknown version")
        cluster_id, voters = body.get("cluster_id"), body.get("voters")
        if not isinstance(cluster_id, str) or not isinstance(voters, list):
            raise MalformedMessage("bootstrap record without cluster_id and voters")
        if not all(isinstance(voter, str) for voter in voters):
            raise MalformedMessage("bootstrap record with a voter that is not a string")
        return cls.make(cluster_id, voters)

    def _check(self) -> None:
        if not is_cluster_id(self.cluster_id):
            raise MalformedMessage(f"bad cluster id {self.cluster_id!r}")
        if not self.voters or len(set(self.voters)) != len(self.voters):
            raise MalformedMessage(f"bad voter set {list(self.voters)!r}")
        if not all(_NODE_ID.match(voter) for voter in self.voters):
            raise MalformedMessage(f"bad voter id in {list(self.voters)!r}")


def admit_record(
    record: BootstrapRecord, stored: str | None, voters: tuple[str, ...], cluster: str
) -> str:
    """The cluster id a node runs with, given the cluster's bootstrap ``record``, the id
    its database holds (``stored``, None when empty) and its voter set; the same rules on
    the broker and on the memory network.

    Raises StoreMismatch when the database belongs to another bootstrap of the cluster
    name, ConfigError when the node's voters differ from the record's. A node with an
    empty database adopts the record's id: it never makes a second cluster of the name.
    """
    if stored is not None and stored != record.cluster_id:
        raise StoreMismatch(
            f"this database belongs to cluster id {stored}; the broker's cluster {cluster!r} "
            f"is {record.cluster_id} (voters {','.join(record.voters)}): it was bootstrapped "
            "again after the database was written, and the database's entries are not part "
            "of it. Nothing was changed. Move the database away to join the broker's "
            "cluster with an empty one, or run it under another cluster name"
        )
    mine = tuple(sorted(voters))
    if mine != record.voters:
        raise ConfigError(
            f"this node's voters {','.join(mine)} differ from the voters cluster {cluster!r} "
            f"(id {record.cluster_id}) was bootstrapped with: {','.join(record.voters)}. "
            "Fix --peers (or peers in the config file) to name the same voters on every node"
        )
    return record.cluster_id
