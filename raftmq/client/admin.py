"""Client-facing requests to a cluster's nodes over AMQP: status, and writes routed to the
leader (following NotLeader hints). Nodes serve only requests signed with the cluster key,
so an AdminClient of a secured cluster needs that key (producers and subscribers do not)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from types import TracebackType

from raftmq._amqp.connect import BrokersLike
from raftmq.errors import ConfigError, NotLeader, RequestFailed, TransportError, WriteRejected
from raftmq.protocol.auth import ClusterKey
from raftmq.protocol.receipts import Commit
from raftmq.protocol.record import Record
from raftmq.protocol.requests import NodeStatus, WriteReply
from raftmq.transport.port import RequestClient
from raftmq.transport.rpc import RpcClient

logger = logging.getLogger("raftmq.client.admin")
# Refusals of a members request that a later attempt may not get: another leader, no
# commit in the leader's term yet, another change pending, a change overwritten.
_RETRIED_REFUSALS = (
    "NotLeader",
    "ConfigError: no entry of this leader's term",
    "ConfigError: a configuration change is not committed yet",
    "ConfigPending",
    "WriteRejected",
    "NodeStopped",
    "TimeoutError",
)
# What the leader says to a change that is in place already (asked again after a lost
# answer: the first attempt committed).
_ALREADY_DONE = ("is already a member", "is already a voter", "is not a member")


class AdminClient:
    """Ask nodes of one cluster for their status and send them writes.

    ``nodes`` is the list of node ids to try; statuses also reveal the voter set, so
    one reachable node id is enough.
    """

    def __init__(
        self, requests: RequestClient, nodes: Sequence[str], *, attempt_timeout: float = 3.0
    ) -> None:
        self.requests = requests  # the request/reply channel (RpcClient over AMQP)
        self.nodes = list(nodes)  # node ids known to belong to the cluster
        self.attempt_timeout = attempt_timeout  # seconds one node gets to answer a write
        self._leader: str | None = None  # last leader seen, tried first

    @classmethod
    def connect(
        cls,
        amqp_url: BrokersLike,
        cluster: str,
        nodes: Sequence[str],
        *,
        key: ClusterKey | None = None,
        bootstrap_wait: float = 0.0,
    ) -> AdminClient:
        """An AdminClient over AMQP (enter it with ``async with``); ``key`` signs the
        requests and checks the replies (None only for a cluster of ``--insecure`` nodes)
        with the cluster id of the cluster's bootstrap record, which entering reads
        (waiting up to ``bootstrap_wait`` seconds for nodes that are starting)."""
        return cls(RpcClient(amqp_url, cluster, key=key, bootstrap_wait=bootstrap_wait), nodes)

    async def __aenter__(self) -> AdminClient:
        if isinstance(self.requests, RpcClient):
            await self.requests.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.requests.close()

    async def status(self, node_id: str, *, timeout: float = 2.0) -> NodeStatus:
        """One node's status; raises TransportError when it does not answer."""
        body = await self.requests.request(node_id, "status", timeout=timeout)
        return NodeStatus.model_validate_json(body)

    async def statuses(self, *, timeout: float = 2.0) -> dict[str, NodeStatus | None]:
        """Status of every known node (None for a node that did not answer in time).

        Voters named by any answering node are asked too.
        """
        results: dict[str, NodeStatus | None] = {}
        pending = list(dict.fromkeys(self.nodes))
        while pending:
            answers = await asyncio.gather(
                *(self.status(n, timeout=timeout) for n in pending), return_exceptions=True
            )
            for node_id, answer in zip(pending, answers, strict=True):
                results[node_id] = answer if isinstance(answer, NodeStatus) else None
            voters = {v for s in results.values() if s is not None for v in s.voters}
            pending = sorted(voters - results.keys())
        return results

    async def find_leader(self, *, timeout: float = 2.0) -> str | None:
        """The leader of the highest term among answering nodes, if any."""
        answering = [s for s in (await self.statuses(timeout=timeout)).values() if s]
        leaders = [s for s in answering if s.role.value == "leader"]
        if not leaders:
            return None
        return max(leaders, key=lambda s: s.term).node_id

    async def transfer_leadership(self, to: str, *, timeout: float = 10.0) -> NodeStatus:
        """Ask the current leader to hand leadership to ``to``; wait until ``to`` leads."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            leader = await self.find_leader(timeout=1.0)
            if leader == to:
                return await self.status(to)
            if leader is not None:
                try:
                    await self.requests.request(leader, "transfer", to.encode(), timeout=1.0)
                except TransportError as exc:
                    logger.debug("transfer request to %s failed: %s", leader, exc)
            if loop.time() >= deadline:
                raise TimeoutError(f"{to} did not become leader within {timeout} s")
            await asyncio.sleep(0.1)

    async def members(self, *, timeout: float = 10.0) -> NodeStatus:
        """The leader's status: its ``voters`` and ``learners`` are the configuration
        in force, ``followers`` each member's match index and lag. Waits for a leader
        (an election after a change, for one); NotLeader when none answered in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            leader = await self.find_leader(timeout=1.0)
            if leader is not None:
                with contextlib.suppress(TransportError):
                    return await self.status(leader, timeout=2.0)
            if loop.time() >= deadline:
                raise NotLeader(None, f"no leader answered within {timeout} s")
            await asyncio.sleep(0.1)

    async def change_membership(
        self, change: str, node_id: str, *, timeout: float = 30.0
    ) -> NodeStatus:
        """Ask the leader for one membership change -- ``change`` is ``add_learner``,
        ``add_voter`` (also promotes a learner), ``remove`` or ``replace`` (a lost
        database: see :meth:`replace`) -- and wait until it
        committed; returns the leader's status then (``voters``, ``learners``). Follows
        leader changes and asks again while the leader cannot change yet (its term's
        first entry, or another change, not committed). ConfigError when the change does
        not apply (the reason from the leader), TimeoutError."""
        body = json.dumps({"change": change, "node_id": node_id}).encode()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = "no leader answered"
        asked = False  # a request was sent: an earlier attempt may have committed it
        while loop.time() < deadline:
            leader = await self.find_leader(timeout=1.0)
            if leader is not None:
                wait = max(0.1, deadline - loop.time())
                try:
                    reply = await self.requests.request(leader, "members", body, timeout=wait)
                    return NodeStatus.model_validate_json(reply)
                except RequestFailed as exc:
                    last = str(exc)
                    if not last.startswith(_RETRIED_REFUSALS):
                        if asked and any(done in last for done in _ALREADY_DONE):
                            return await self.members()  # an earlier attempt made it
                        raise ConfigError(last.partition(": ")[2] or last) from None
                    asked = True
                except TransportError as exc:
                    last = str(exc)
                    asked = True
            logger.debug("membership change not made yet: %s", last)
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{change} {node_id} not committed within {timeout} s ({last})")

    async def replace(
        self, node_id: str, *, timeout: float = 120.0, promote: bool = True
    ) -> NodeStatus:
        """Replace a member whose database was lost (raftmq.core.membership,
        "Incarnations"): the leader makes it a learner pinned to the database it answers
        from now (or to the next one it hears), then, with ``promote``, this waits until
        that learner caught up -- from the log or a snapshot -- and makes it a voter again
        if it was one. Returns the leader's status at the end; TimeoutError (saying what
        is left to do) when the new node did not catch up in time, e.g. is not running."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        before = await self.members(timeout=timeout)
        was_voter = node_id in before.voters
        status = await self.change_membership("replace", node_id, timeout=timeout)
        if not (promote and was_voter):
            return status
        while True:
            status = await self.members(timeout=max(1.0, deadline - loop.time()))
            follower = (status.followers or {}).get(node_id)
            pinned = node_id in status.incarnations and node_id not in status.strangers
            if node_id in status.voters:
                return status  # promoted (by another operator, or an earlier attempt)
            if pinned and follower is not None and follower.match >= status.commit:
                break
            if loop.time() >= deadline:
                where = f"match {follower.match} of {status.commit}" if follower else "silent"
                raise TimeoutError(
                    f"{node_id} is a learner now but did not catch up within {timeout} s "
                    f"({where}): start it (an empty database is fine), then "
                    f"`raftmq members promote {node_id}`"
                )
            await asyncio.sleep(0.2)
        return await self.change_membership(
            "add_voter", node_id, timeout=max(1.0, deadline - loop.time())
        )

    async def write(self, record: Record, *, timeout: float = 10.0) -> Commit:
        """Send ``record`` to the leader and wait for its commit.

        Follows NotLeader hints and retries while no leader is known, until ``timeout``.
        A retry after a lost answer may append the write twice (producer sessions give
        exactly-once). Raises NotLeader when no leader took the write in time.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        target = self._leader or (self.nodes[0] if self.nodes else None)
        last_error = "no node known"
        while loop.time() < deadline:
            if target is None:
                target = await self.find_leader(timeout=1.0)
                if target is None:
                    last_error = "no leader elected"
                    await asyncio.sleep(0.1)
                    continue
            remaining = min(self.attempt_timeout, max(0.1, deadline - loop.time()))
            try:
                body = await self.requests.request(
                    target, "write", record.encode(), timeout=remaining
                )
            except TransportError as exc:
                last_error = f"{target}: {exc}"
                target = None
                continue
            reply = WriteReply.model_validate_json(body)
            if reply.ok and reply.index is not None and reply.term is not None:
                self._leader = target
                return Commit(reply.index, reply.term)
            if reply.error != "not_leader":
                raise WriteRejected(f"{target}: {reply.error}: {reply.detail}")
            last_error = f"{target} is not the leader"
            target = reply.leader_hint
            if target is None:
                await asyncio.sleep(0.1)
        raise NotLeader(None, f"write did not reach a leader: {last_error}")
