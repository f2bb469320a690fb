"""The node side of client-facing requests on its inbox (`raftmq status`, `write`, ...);
their answers are defined in :mod:`raftmq.protocol.requests`.

Kinds: ``status`` (-> NodeStatus JSON), ``write`` (an encoded Record -> WriteReply JSON),
``transfer`` (a voter id: hand leadership to it), and, only with
``allow_fault_injection``, ``isolate`` / ``rejoin`` for chaos tests.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Protocol

from raftmq.core.membership import ChangeKind, ConfChange
from raftmq.core.types import NODE_ID_PATTERN, Membership
from raftmq.errors import MalformedMessage, NodeStopped, NotLeader, WriteRejected
from raftmq.protocol.receipts import Commit
from raftmq.protocol.record import Record
from raftmq.protocol.requests import NodeStatus, WriteReply

logger = logging.getLogger("raftmq.node.requests")


class RequestTarget(Protocol):
    """What the request server may use of its node (the node provides it)."""

    @property
    def node_id(self) -> str:
        """The node's id."""
        ...

    @property
    def voters(self) -> tuple[str, ...]:
        """The voter set."""
        ...

    @property
    def is_leader(self) -> bool:
        """True while the node leads."""
        ...

    @property
    def leader_id(self) -> str | None:
        """The known leader, if any."""
        ...

    @property
    def allow_fault_injection(self) -> bool:
        """Whether ``isolate`` / ``rejoin`` are served."""
        ...

    def status(self) -> NodeStatus:
        """The node's current state."""
        ...

    async def write_record(self, record: Record) -> Commit:
        """Replicate ``record`` through the node's write path."""
        ...

    async def change_membership(self, change: ConfChange) -> Membership:
        """Make one membership change (the leader only); returns once it committed."""
        ...

    async def transfer_leadership(self, to: str) -> None:
        """Hand leadership to ``to`` (leader only)."""
        ...

    def set_isolated(self, isolated: bool) -> None:
        """Fault injection: discard (or again step) inbound Raft messages."""
        ...


def parse_change(body: bytes) -> ConfChange:
    """The change a ``members`` request asks for: ``{"change": KIND, "node_id": ID}``
    (KIND one of add_learner, add_voter, remove, replace), or MalformedMessage."""
    try:
        raw = json.loads(body)
        if not isinstance(raw, dict) or set(raw) != {"change", "node_id"}:
            raise ValueError("expected exactly change and node_id")
        node_id = raw["node_id"]
        if not isinstance(node_id, str) or not re.fullmatch(NODE_ID_PATTERN, node_id):
            raise ValueError(f"node_id must match {NODE_ID_PATTERN}")
        return ConfChange(ChangeKind(raw["change"]), node_id)
    except (ValueError, TypeError, RecursionError) as exc:
        raise MalformedMessage(f"bad members request: {exc}") from None


class RequestServer:
    """The transport's ``on_request`` handler of one node."""

    def __init__(self, node: RequestTarget) -> None:
        self.node = node  # the node that answers

    async def __call__(self, kind: str, body: bytes) -> bytes:
        node = self.node
        if kind == "status":
            return node.status().model_dump_json().encode()
        if kind == "write":
            return (await self._write(body)).model_dump_json().encode()
        if kind == "transfer":
            target = body.decode(errors="replace")
            if target not in node.voters:
                raise MalformedMessage(f"transfer target {target!r} is not a voter")
            if not node.is_leader:
                raise NotLeader(node.leader_id)
            await node.transfer_leadership(target)
            return b"{}"
        if kind == "members":
            change = parse_change(body)
            if not node.is_leader:
                raise NotLeader(node.leader_id)
            await node.change_membership(change)
            return node.status().model_dump_json().encode()
        if kind in ("isolate", "rejoin") and node.allow_fault_injection:
            # Chaos testing: stop/restart consuming Raft traffic; sending goes on, as in a
            # one-way partition. Requests still reach the node (they are answered here).
            node.set_isolated(kind == "isolate")
            logger.warning("%s: fault injection: %s", node.node_id, kind)
            return b"{}"
        raise MalformedMessage(f"unknown request kind {kind!r}")

    async def _write(self, body: bytes) -> WriteReply:
        try:
            commit = await self.node.write_record(Record.decode(body))
        except NotLeader as exc:
            return WriteReply(ok=False, error="not_leader", leader_hint=exc.leader_hint)
        except (MalformedMessage, WriteRejected, NodeStopped, TimeoutError) as exc:
            return WriteReply(ok=False, error=type(exc).__name__, detail=str(exc))
        known = commit.index > 0  # 0: a duplicate whose original is no longer known
        return WriteReply(
            ok=True,
            index=commit.index if known else None,
            term=commit.term if known else None,
            duplicate=commit.duplicate,
        )
