"""A member that is not the leader forging Raft messages into a simulated cluster.

Every forged message is built as a dict and decoded with ``MESSAGE_ADAPTER``, exactly
what the transport does with a body off the broker: what fails validation (a term of
2^63 - 1, an index past 2^63 - 1) is a counted drop and never reaches a core. What
passes is handed to the simulated network under the forger's name.

The forger lies about what it may ask for, never about its own log or database: a vote
request carries the forger's real last entry and every message its real incarnation, as
its own core would (Raft is not Byzantine
fault tolerant; a member lying about its log can break safety whatever the rules on
transfers). Kinds of forgery (thesis §3.10, §9.6, §5.3, §5.1):

* TimeoutNow to any node, with or without a transferee, in its current term;
* transfer vote requests for the recipient's term + 1;
* AppendEntriesReply acks and rejections naming indexes far past any log;
* granted vote and pre-vote replies for terms nobody asked for;
* any of these at the highest valid term, and at 2^63 - 1 (rejected at decode).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from pydantic import ValidationError

from raftmq.core.messages import MESSAGE_ADAPTER
from raftmq.core.types import MAX_TERM
from raftmq.testing import Simulation

KINDS = ("timeout_now", "transfer_vote", "ack", "reject", "grant", "max_term", "overflow")


class Adversary:
    """Forges messages from non-leader members of ``sim``; counts what it did."""

    def __init__(self, sim: Simulation, rng: random.Random) -> None:
        self.sim = sim
        self.rng = rng  # the schedule's own stream, so a seed fixes the attack too
        self.sent: Counter[str] = Counter()  # forged messages handed to the network, by kind
        self.rejected: Counter[str] = Counter()  # forged messages that failed validation

    def strike(self, count: int) -> None:
        """Forge ``count`` messages now."""
        for _ in range(count):
            kind = self.rng.choice(KINDS)
            body = self._forge(kind)
            if body is None:
                continue
            try:
                msg = MESSAGE_ADAPTER.validate_python(body)
            except ValidationError:
                self.rejected[kind] += 1
                continue
            self.sent[kind] += 1
            self.sim.network.send(msg, self.sim.now)

    def _forge(self, kind: str) -> dict[str, Any] | None:
        sim, rng = self.sim, self.rng
        leader = sim.leader()
        members = [n for n in sim.node_ids if n != leader]
        forger = rng.choice(members)
        targets = [n for n in sim.node_ids if n != forger]
        target = leader if leader is not None and rng.random() < 0.5 else rng.choice(targets)
        term = sim.term(target)
        base = {"sender": forger, "recipient": target}
        if kind == "timeout_now":
            transferee = rng.choice([None, forger, *targets])
            return {**base, "type": "timeout_now", "term": term, "transferee": transferee}
        # The forger is a member's own process: what it sends tells its own database.
        base["incarnation"] = sim.incarnation(forger)
        if kind == "transfer_vote":
            record = sim.persisted[forger]
            return {
                **base,
                "type": "request_vote",
                "term": term + 1,
                "last_log_index": record.last_index,
                "last_log_term": record.log[-1].term if record.log else record.prev_term,
                "transfer": True,
                "pre_vote": rng.random() < 0.2,
            }
        if kind in ("ack", "reject"):
            # An ack just past the target's log stops being past it once the leader has
            # appended and sent more before the (delayed) ack arrives: then it is a lie about
            # the forger's own log, which no Raft survives. Acks name only far indexes.
            near = sim.last_index(target) + rng.randint(1, 50)
            far = rng.choice([10**9, 2**62, 10**9 if kind == "ack" else near])
            return {
                **base,
                "type": "append_entries_reply",
                "term": term,
                "success": kind == "ack",
                "match_index": far if kind == "ack" else 0,
                "reject_index": far if kind == "reject" else 0,
                "conflict_index": far,
                "conflict_term": rng.randint(0, term + 3),
            }
        if kind == "grant":
            pre_vote = rng.random() < 0.5
            return {
                **base,
                "type": "request_vote_reply",
                "term": term + rng.randint(2, 9),
                "granted": True,
                "pre_vote": pre_vote,
            }
        high = MAX_TERM if kind == "max_term" else 2**63 - 1
        shape = rng.choice(["timeout_now", "grant", "ack", "transfer_vote"])
        if shape == "transfer_vote":
            if kind == "max_term":
                return None  # an honest-looking vote at the top term would exhaust terms
            return {
                **base,
                "type": "request_vote",
                "term": high,
                "last_log_index": 0,
                "last_log_term": 0,
                "transfer": True,
            }
        if shape == "timeout_now":
            del base["incarnation"]
            return {**base, "type": "timeout_now", "term": high}
        if shape == "grant":
            return {**base, "type": "request_vote_reply", "term": high, "granted": True}
        return {
            **base,
            "type": "append_entries_reply",
            "term": high,
            "success": True,
            "match_index": 1,
        }
