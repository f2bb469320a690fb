"""Authenticated node traffic: the cluster key and the MAC every node message carries.

Every Raft message, every client request to a node inbox and every reply to such a
request carries an HMAC-SHA256 (the standard library's ``hmac``) computed with the
cluster key, in the AMQP ``message_id`` property. ``message_id`` is a short string that
node traffic had no other use for: decoding it costs pamqp about a microsecond per
message, a header table about fifteen (measured; see the codec module docstring).

The MAC input is versioned, so that a later version can add fields without ambiguity;
version 2 (version 1 lacked the cluster id) is::

    b"raftmq-mac/2" + lengths + type + cluster + cluster_id + sender + recipient
      + reply_to + correlation_id + status + body

where each field is its UTF-8 bytes (nothing when absent) and ``lengths`` holds the eight
byte lengths as signed 32-bit big-endian integers, -1 for an absent field (so an absent
field differs from an empty one, and no field can run into the next). ``cluster_id`` is
the id the cluster got when it was bootstrapped (:mod:`raftmq.protocol.bootstrap`): a
database of another bootstrap under the same cluster name signs with another id.
``sender`` and ``recipient`` are the node ids
the receiver knows before it reads the body: a message to a node inbox (a Raft message or
a request) has ``sender=""`` and ``recipient=`` that node; a reply to a client has
``sender=`` the node that answers and ``recipient=""``. A Raft message also names its
sender and recipient in its JSON body, which the MAC covers. The property value is
``"v2."``, the cluster id, ``"."`` and the 64 hexadecimal digits of the 32-byte MAC: the
cluster id travels in clear too, so that a receiver tells a message of another cluster
id (dropped as ``other_cluster_id``) from a forged or altered one (``bad_mac``).

One property is signed as less than it travels: RabbitMQ rewrites a ``reply_to`` of
``amq.rabbitmq.reply-to`` (direct reply-to, what request clients use) into that address
plus a suffix naming the client's channel, after the client signed it. Such an address is
signed as ``amq.rabbitmq.reply-to``: whoever could rewrite it in transit could only learn
an answer, never change the request.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from raftmq.errors import ConfigError, DropReason, InvalidEnvelope
from raftmq.protocol.codec import Envelope

MIN_KEY_BYTES = 16
"""A cluster key shorter than this is a configuration error."""

MAC_VERSION = 2
"""The version of the MAC input this code writes (and the only one it accepts)."""

_PREFIX = f"v{MAC_VERSION}."  # starts the message_id of every signed message
_TAG = f"raftmq-mac/{MAC_VERSION}".encode()  # starts the MAC input of this version
_LENGTHS = struct.Struct(">8i")  # the byte lengths of the eight fields, -1 when absent
_MAX_SHOWN = 64  # characters of a hostile cluster id quoted in a drop's detail
_DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"  # the broker appends ".<channel>" in transit


def _signed_reply_to(reply_to: str | None) -> str | None:
    if reply_to is not None and reply_to.startswith(_DIRECT_REPLY_TO + "."):
        return _DIRECT_REPLY_TO
    return reply_to


def _looks_signed(mac: str | None) -> bool:
    """Whether ``mac`` has the shape of a raftmq MAC of any version ("v<digits>.")."""
    if not mac or mac[0] != "v":
        return False
    version, dot, _ = mac[1:].partition(".")
    return bool(dot) and version.isdigit()


class ClusterKey:
    """The secret every member of a cluster (and every operator command) shares.

    The key never appears in ``repr`` or ``str``: nothing that logs a setting or an
    object can leak it.
    """

    __slots__ = ("_keyed",)

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError(
                f"the cluster key is {len(key)} bytes long; at least {MIN_KEY_BYTES} are needed"
            )
        # The HMAC state after the key: copied per message, which saves hashing the
        # key's inner and outer blocks every time (measured: half the cost of a MAC).
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    @classmethod
    def from_text(cls, text: str) -> ClusterKey:
        """The key of a key file's or variable's text (surrounding whitespace ignored)."""
        return cls(text.strip().encode())

    def __repr__(self) -> str:
        return "ClusterKey(<hidden>)"

    def mac(self, envelope: Envelope, *, sender: str, recipient: str, cluster_id: str) -> str:
        """The ``message_id`` value that signs ``envelope`` (see the module docstring)."""
        fields = [
            None if text is None else text.encode("utf-8", "surrogatepass")
            for text in (
                envelope.type,
                envelope.cluster,
                cluster_id,
                sender,
                recipient,
                _signed_reply_to(envelope.reply_to),
                envelope.correlation_id,
                envelope.status,
            )
        ]
        signer = self._keyed.copy()
        signer.update(
            _TAG
            + _LENGTHS.pack(*[-1 if raw is None else len(raw) for raw in fields])
            + b"".join([raw for raw in fields if raw])
        )
        signer.update(envelope.body)
        return f"{_PREFIX}{cluster_id}.{signer.hexdigest()}"

    def sign(self, envelope: Envelope, *, sender: str, recipient: str, cluster_id: str) -> Envelope:
        """``envelope`` with its MAC set."""
        e = envelope  # built positionally: dataclasses.replace costs more than the MAC
        mac = self.mac(e, sender=sender, recipient=recipient, cluster_id=cluster_id)
        return Envelope(e.body, e.type, e.cluster, e.reply_to, e.correlation_id, e.status, mac)

    def verify(self, envelope: Envelope, *, sender: str, recipient: str, cluster_id: str) -> None:
        """Raise :class:`InvalidEnvelope` (``unsigned``, ``other_cluster_id`` or
        ``bad_mac``) unless ``envelope`` was signed with this key for exactly these
        properties, body, node ids and cluster id."""
        given = envelope.mac
        if not _looks_signed(given):
            # aiormq gives every message without one a random message_id: not a MAC.
            raise InvalidEnvelope(DropReason.UNSIGNED, "no MAC in message_id")
        assert given is not None  # _looks_signed is False for None
        if given.startswith(_PREFIX):
            claimed, dot, _ = given[len(_PREFIX) :].partition(".")
            if dot and claimed != cluster_id:
                # Unproved (a forger may write anything here) but never acted on: dropped.
                raise InvalidEnvelope(
                    DropReason.OTHER_CLUSTER_ID,
                    f"cluster id {claimed[:_MAX_SHOWN]!r}, this cluster's is {cluster_id!r}",
                )
        expected = self.mac(envelope, sender=sender, recipient=recipient, cluster_id=cluster_id)
        # Constant time: the comparison must not tell a forger how much of a guess matched.
        if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")):
            raise InvalidEnvelope(DropReason.BAD_MAC, "MAC does not match (wrong key or altered)")


def check_reply(
    envelope: Envelope, key: ClusterKey | None, *, cluster: str, node_id: str, cluster_id: str
) -> None:
    """Raise :class:`InvalidEnvelope` unless ``envelope`` is a reply of node ``node_id`` of
    ``cluster`` with ``cluster_id`` (signed with ``key``, when the client has one): what a
    request client checks before it hands a reply to its caller."""
    if envelope.cluster != cluster:
        raise InvalidEnvelope(
            DropReason.WRONG_CLUSTER, f"reply of cluster {envelope.cluster!r}, expected {cluster!r}"
        )
    if key is not None:
        key.verify(envelope, sender=node_id, recipient="", cluster_id=cluster_id)
