"""Authenticated node traffic: the cluster key and the MAC every node message carries.

Every Raft message, every client request to a node inbox and every reply to such a
request carries a MAC computed with the cluster key, in the AMQP ``message_id`` property.
``message_id`` is a short string that node traffic had no other use for: decoding it
costs pamqp about a microsecond per message, a header table about fifteen (measured; see
the codec module docstring).

The MAC is keyed BLAKE2b (the standard library's ``hashlib.blake2b``, a MAC by design:
RFC 7693 section 2.5) with a 16-byte tag. It replaced HMAC-SHA256 (version 2), which cost
almost twice as much per message (measured in benchmarks/transport.py). A key longer than
BLAKE2b's 64 bytes is first hashed to 64 (as HMAC does with a key longer than its block).

The MAC input is versioned, so that a later version can add fields without ambiguity;
version 3 is::

    b"raftmq-mac/3" + type + cluster + cluster_id + sender + recipient + reply_to
      + correlation_id + status + body

where each of the eight fields is its byte length as a signed 32-bit big-endian integer
followed by its UTF-8 bytes (just -1 when absent, so that an absent field differs from an
empty one, and no field can run into the next). Each field is written right before its
bytes so that the state after the first six, which are the same for all the Raft traffic
between two nodes, can be kept and copied (:class:`ClusterKey`). ``cluster_id`` is the id
the cluster got when it was bootstrapped (:mod:`raftmq.protocol.bootstrap`): a database of
another bootstrap under the same cluster name signs with another id. ``sender`` and
``recipient`` are the node ids the receiver knows before it reads the body: a message to a
node inbox (a Raft message or a request) has ``sender=""`` and ``recipient=`` that node; a
reply to a client has ``sender=`` the node that answers and ``recipient=""``. A Raft
message also names its sender and recipient in its JSON body, which the MAC covers. The
property value is ``"v3."``, the cluster id, ``"."`` and the 32 hexadecimal digits of the
16-byte MAC: the cluster id travels in clear too, so that a receiver tells a message of
another cluster id (dropped as ``other_cluster_id``) from a forged or altered one
(``bad_mac``).

One property is signed as less than it travels: RabbitMQ rewrites a ``reply_to`` of
``amq.rabbitmq.reply-to`` (direct reply-to, what request clients use) into that address
plus a suffix naming the client's channel, after the client signed it. Such an address is
signed as ``amq.rabbitmq.reply-to``: whoever could rewrite it in transit could only learn
an answer, never change the request.
"""

from __future__ import annotations

import hashlib
import hmac

from raftmq.errors import ConfigError, DropReason, InvalidEnvelope
from raftmq.protocol.codec import Envelope

MIN_KEY_BYTES = 16
"""A cluster key shorter than this is a configuration error."""

MAC_VERSION = 3
"""The version of the MAC input this code writes (and the only one it accepts)."""

_PREFIX = f"v{MAC_VERSION}."  # starts the message_id of every signed message
_TAG = f"raftmq-mac/{MAC_VERSION}".encode()  # starts the MAC input of this version
_ABSENT = b"\xff\xff\xff\xff"  # the length -1: a field that is absent
_TAG_BYTES = 16  # bytes of the MAC (32 hexadecimal digits)
_MAX_BLAKE2B_KEY = 64  # bytes; a longer cluster key is hashed to this length first
_MAX_SHOWN = 64  # characters of a hostile cluster id quoted in a drop's detail
_DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"  # the broker appends ".<channel>" in transit
_DIRECT_REPLY_TO_DOT = _DIRECT_REPLY_TO + "."
_PREFIX_CACHE = 256  # field tuples whose MAC state ClusterKey keeps, at most


def _field(text: str | None) -> bytes:
    """One field of the MAC input: its length (-1: absent), then its UTF-8 bytes."""
    if text is None:
        return _ABSENT
    raw = text.encode("utf-8", "surrogatepass")
    return len(raw).to_bytes(4, "big") + raw


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

    __slots__ = ("_keyed", "_prefixed")

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError(
                f"the cluster key is {len(key)} bytes long; at least {MIN_KEY_BYTES} are needed"
            )
        if len(key) > _MAX_BLAKE2B_KEY:
            key = hashlib.blake2b(key, digest_size=_MAX_BLAKE2B_KEY).digest()
        # The MAC state after the key and the tag: copied per message.
        self._keyed = hashlib.blake2b(_TAG, key=key, digest_size=_TAG_BYTES)
        # The state after the first six fields, per six-tuple of Raft traffic (type,
        # cluster, cluster id, sender, recipient, reply_to: a few per pair of nodes), so
        # that a message hashes only its correlation id, status and body.
        self._prefixed: dict[tuple[str | None, ...], hashlib.blake2b] = {}

    @classmethod
    def from_text(cls, text: str) -> ClusterKey:
        """The key of a key file's or variable's text (surrounding whitespace ignored)."""
        return cls(text.strip().encode())

    @classmethod
    def from_file_bytes(cls, data: bytes) -> ClusterKey:
        """The key of a key file: its text (surrounding whitespace ignored) when it is
        UTF-8, else its bytes as they are (``head -c 32 /dev/urandom > cluster.key``)."""
        try:
            text = data.decode()
        except UnicodeDecodeError:
            return cls(data)
        return cls.from_text(text)

    def __repr__(self) -> str:
        return "ClusterKey(<hidden>)"

    def mac(self, envelope: Envelope, *, sender: str, recipient: str, cluster_id: str) -> str:
        """The ``message_id`` value that signs ``envelope`` (see the module docstring)."""
        tag = self._envelope_tag(envelope, sender, recipient, cluster_id)
        return f"{_PREFIX}{cluster_id}.{tag}"

    def sign(self, envelope: Envelope, *, sender: str, recipient: str, cluster_id: str) -> Envelope:
        """``envelope`` with its MAC set."""
        e = envelope
        return self.signed(
            e.body, e.type, e.cluster, e.reply_to, e.correlation_id, e.status,
            sender=sender, recipient=recipient, cluster_id=cluster_id,
        )  # fmt: skip

    def signed(
        self,
        body: bytes,
        type_: str | None,
        cluster: str | None,
        reply_to: str | None,
        correlation_id: str | None,
        status: str | None,
        *,
        sender: str,
        recipient: str,
        cluster_id: str,
    ) -> Envelope:
        """The signed envelope of these properties and body, built once (what a sender
        of many messages calls: an envelope costs about a third of a MAC to build)."""
        tag = self._tag(
            body, type_, cluster, reply_to, correlation_id, status, sender, recipient, cluster_id
        )
        mac = f"{_PREFIX}{cluster_id}.{tag}"
        return Envelope(body, type_, cluster, reply_to, correlation_id, status, mac)

    def _envelope_tag(self, e: Envelope, sender: str, recipient: str, cluster_id: str) -> str:
        return self._tag(
            e.body, e.type, e.cluster, e.reply_to, e.correlation_id, e.status,
            sender, recipient, cluster_id,
        )  # fmt: skip

    def _tag(
        self,
        body: bytes,
        type_: str | None,
        cluster: str | None,
        reply_to: str | None,
        correlation_id: str | None,
        status: str | None,
        sender: str,
        recipient: str,
        cluster_id: str,
    ) -> str:
        """The MAC of these fields and body, in hexadecimal."""
        if reply_to is not None and reply_to.startswith(_DIRECT_REPLY_TO_DOT):
            reply_to = _DIRECT_REPLY_TO
        head = (type_, cluster, cluster_id, sender, recipient, reply_to)
        state = self._prefixed.get(head)
        if state is None:
            state = self._keyed.copy()
            state.update(b"".join([_field(text) for text in head]))
            if len(self._prefixed) >= _PREFIX_CACHE:  # a stranger's odd types only churn it
                self._prefixed.clear()
            self._prefixed[head] = state
        signer = state.copy()
        signer.update(
            (_ABSENT if correlation_id is None else _field(correlation_id))
            + (_ABSENT if status is None else _field(status))
        )
        signer.update(body)
        return signer.hexdigest()

    def verify(self, envelope: Envelope, *, sender: str, recipient: str, cluster_id: str) -> None:
        """Raise :class:`InvalidEnvelope` (``unsigned``, ``other_cluster_id`` or
        ``bad_mac``) unless ``envelope`` was signed with this key for exactly these
        properties, body, node ids and cluster id."""
        given = envelope.mac
        if given is None or not given.startswith(_PREFIX):
            if not _looks_signed(given):
                # aiormq gives every message without one a random message_id: not a MAC.
                raise InvalidEnvelope(DropReason.UNSIGNED, "no MAC in message_id")
            raise InvalidEnvelope(DropReason.BAD_MAC, "MAC of another version")
        claimed, dot, tag = given[len(_PREFIX) :].partition(".")
        if not dot:
            raise InvalidEnvelope(DropReason.BAD_MAC, "MAC without a cluster id")
        if claimed != cluster_id:
            # Unproved (a forger may write anything here) but never acted on: dropped.
            raise InvalidEnvelope(
                DropReason.OTHER_CLUSTER_ID,
                f"cluster id {claimed[:_MAX_SHOWN]!r}, this cluster's is {cluster_id!r}",
            )
        expected = self._envelope_tag(envelope, sender, recipient, cluster_id)
        # Constant time: the comparison must not tell a forger how much of a guess matched
        # (compare_digest takes str only when it is ASCII).
        if not (tag.isascii() and hmac.compare_digest(expected, tag)):
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
