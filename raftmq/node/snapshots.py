"""The bytes of a node's snapshot: raftmq's own replicated state at an applied index, and
the embedded user's, in one deterministic document (docs/core.md, "Snapshots in the node").

Format (version 1): UTF-8 JSON, keys sorted, no spaces::

    {"applied": 1234, "fanout_watermark": 1200, "format": "raftmq-snapshot",
     "sessions": [[producer_id, last_seq, last_index, last_term, updated_index, floor,
                   [above...]], ...],
     "user": "<base64 of the user's snapshot() bytes>" | null, "version": 1}

``sessions`` are sorted by producer id and hold the duplicate marks (``raftmq:dup:<index>``)
beside the live client sessions; two nodes at the same applied index encode the same
bytes (the fan-out watermark excepted: a leader may hold a newer one than its log says,
which is only ever larger, never wrong).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from raftmq.errors import MalformedMessage
from raftmq.storage.port import ClientSession

__all__ = ["FORMAT", "VERSION", "NodeSnapshot"]

FORMAT = "raftmq-snapshot"
VERSION = 1


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """The state a node snapshot carries (see the module docstring)."""

    applied: int  # the applied index the state is at (the snapshot's index)
    fanout_watermark: int  # highest index known published on the committed exchange
    sessions: tuple[ClientSession, ...]  # sorted by producer id; duplicate marks included
    user: bytes | None  # the user's snapshot() bytes, None without hooks

    def encode(self) -> bytes:
        """The deterministic bytes of this state."""
        document = {
            "format": FORMAT,
            "version": VERSION,
            "applied": self.applied,
            "fanout_watermark": self.fanout_watermark,
            "sessions": [
                [
                    s.producer_id,
                    s.last_seq,
                    s.last_index,
                    s.last_term,
                    s.updated_index,
                    s.floor,
                    list(s.above),
                ]
                for s in self.sessions
            ],
            "user": None if self.user is None else base64.b64encode(self.user).decode("ascii"),
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> NodeSnapshot:
        """The state in ``data``; MalformedMessage when it is not a version-1 document."""
        try:
            document = json.loads(data)
            if document["format"] != FORMAT or document["version"] != VERSION:
                raise MalformedMessage(
                    f"snapshot format {document['format']!r} version {document['version']!r}"
                )
            sessions = tuple(
                ClientSession(
                    str(pid),
                    int(seq),
                    int(index),
                    int(term),
                    int(updated),
                    floor=int(floor),
                    above=tuple(int(a) for a in above),
                )
                for pid, seq, index, term, updated, floor, above in document["sessions"]
            )
            user = document["user"]
            return cls(
                applied=int(document["applied"]),
                fanout_watermark=int(document["fanout_watermark"]),
                sessions=sessions,
                user=None if user is None else base64.b64decode(user, validate=True),
            )
        except MalformedMessage:
            raise
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise MalformedMessage(f"not a raftmq snapshot: {exc!r}") from None
