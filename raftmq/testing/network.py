"""The simulated network: an in-memory, seeded, fault-injecting message bus.

Every message handed to :meth:`Network.send` is either dropped or scheduled for
delivery ``delay`` ticks later (``delay`` drawn from :attr:`Network.delay_ticks`),
possibly duplicated and possibly held back so that later messages overtake it.
Connectivity (disconnected nodes, partitions) is checked both when a message is
sent and when it would be delivered, like a real network where a cable is pulled
while packets are in flight. All randomness comes from the ``random.Random``
passed in, so a seed fixes the whole run.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from raftmq.core.messages import Message

Tap = Callable[[Message], None]
"""A callback seeing every message handed to the network (before any fault)."""


def _check_rate(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be within [0, 1], got {value!r}")
    return float(value)


class Network:
    """Delivers messages between simulated nodes, with configurable faults.

    The fault knobs may be changed at any time; they apply to messages sent afterwards:

    * ``drop_rate``: probability that a message is lost;
    * ``delay_ticks``: ``(lo, hi)`` inclusive range of ticks a message travels
      (``(0, 0)``, the default, delivers within the tick it was sent in);
    * ``duplicate_rate``: probability that a message is delivered twice (each copy
      with its own delay);
    * ``reorder``: probability that a message is held back by 1..(hi + 2) extra ticks;
      when non-zero, messages due in the same round are also delivered in random order.
    """

    def __init__(self, node_ids: Sequence[str], rng: random.Random) -> None:
        self._rng = rng  # the simulation's only source of randomness
        self._nodes = tuple(node_ids)  # every node id, in a fixed order
        self._drop_rate = 0.0  # see class docstring
        self._delay_ticks = (0, 0)  # see class docstring; 0 <= lo <= hi
        self._duplicate_rate = 0.0  # see class docstring
        self._reorder = 0.0  # see class docstring
        self._disconnected: dict[str, None] = {}  # ordered set of cut-off node ids
        self._group: dict[str, int] = {}  # partition group per node; empty = no partition
        self._queue: list[tuple[int, int, Message]] = []  # heap of (due tick, seq, message)
        self._seq = 0  # tie-breaker: FIFO among messages due at the same tick
        self.sent: Counter[str] = Counter()  # messages handed to the network, by type
        self.delivered: Counter[str] = Counter()  # messages handed to a recipient, by type
        self.dropped: Counter[str] = Counter()  # messages lost (faults, cuts, crashes), by type
        self.duplicated: Counter[str] = Counter()  # extra copies scheduled, by type
        self.taps: list[Tap] = []  # observers of every sent message

    # -- fault knobs ---------------------------------------------------------------
    @property
    def drop_rate(self) -> float:
        """Probability in [0, 1] that a sent message is lost."""
        return self._drop_rate

    @drop_rate.setter
    def drop_rate(self, value: float) -> None:
        self._drop_rate = _check_rate("drop_rate", value)

    @property
    def delay_ticks(self) -> tuple[int, int]:
        """Inclusive ``(lo, hi)`` range of ticks a message travels."""
        return self._delay_ticks

    @delay_ticks.setter
    def delay_ticks(self, value: tuple[int, int]) -> None:
        lo, hi = value
        if not 0 <= lo <= hi:
            raise ValueError(f"delay_ticks must satisfy 0 <= lo <= hi, got {value!r}")
        self._delay_ticks = (int(lo), int(hi))

    @property
    def duplicate_rate(self) -> float:
        """Probability in [0, 1] that a sent message is delivered twice."""
        return self._duplicate_rate

    @duplicate_rate.setter
    def duplicate_rate(self, value: float) -> None:
        self._duplicate_rate = _check_rate("duplicate_rate", value)

    @property
    def reorder(self) -> float:
        """Probability in [0, 1] that a message is held back so later ones overtake it."""
        return self._reorder

    @reorder.setter
    def reorder(self, value: float) -> None:
        self._reorder = _check_rate("reorder", value)

    def reliable(self) -> None:
        """Turn every fault knob off (no drops, delays, duplicates or reordering)."""
        self._drop_rate = 0.0
        self._delay_ticks = (0, 0)
        self._duplicate_rate = 0.0
        self._reorder = 0.0

    # -- connectivity ---------------------------------------------------------------
    def disconnect(self, node_id: str) -> None:
        """Cut ``node_id`` off: nothing it sends or is sent arrives until :meth:`connect`."""
        self._require(node_id)
        self._disconnected[node_id] = None

    def connect(self, node_id: str) -> None:
        """Undo :meth:`disconnect` (partitions set by :meth:`partition` still apply)."""
        self._require(node_id)
        self._disconnected.pop(node_id, None)

    def partition(self, *groups: Iterable[str]) -> None:
        """Split the nodes into ``groups`` that cannot reach each other.

        Replaces any earlier partition. A node named in no group is isolated alone.
        """
        self._group = {}
        for number, group in enumerate(groups):
            for node_id in group:
                self._require(node_id)
                if node_id in self._group:
                    raise ValueError(f"node {node_id!r} is in more than one group")
                self._group[node_id] = number
        for number, node_id in enumerate(self._nodes, start=len(groups)):
            self._group.setdefault(node_id, number)

    def heal(self) -> None:
        """Remove every partition and reconnect every disconnected node."""
        self._group = {}
        self._disconnected = {}

    def is_connected(self, node_id: str) -> bool:
        """True unless ``node_id`` was disconnected (partitions do not count)."""
        return node_id not in self._disconnected

    def can_reach(self, sender: str, recipient: str) -> bool:
        """True when a message from ``sender`` to ``recipient`` would get through now."""
        if sender in self._disconnected or recipient in self._disconnected:
            return False
        return not self._group or self._group.get(sender) == self._group.get(recipient)

    # -- traffic --------------------------------------------------------------------
    def send(self, msg: Message, now: int) -> None:
        """Hand ``msg`` to the network at tick ``now``; faults are applied here."""
        kind = msg.type
        self.sent[kind] += 1
        for tap in self.taps:
            tap(msg)
        if not self.can_reach(msg.sender, msg.recipient) or (
            self._drop_rate and self._rng.random() < self._drop_rate
        ):
            self.dropped[kind] += 1
            return
        self._schedule(msg, now)
        if self._duplicate_rate and self._rng.random() < self._duplicate_rate:
            self.duplicated[kind] += 1
            self._schedule(msg, now)

    def _schedule(self, msg: Message, now: int) -> None:
        lo, hi = self._delay_ticks
        delay = lo if lo == hi else self._rng.randint(lo, hi)
        if self._reorder and self._rng.random() < self._reorder:
            delay += self._rng.randint(1, hi + 2)
        self._seq += 1
        heapq.heappush(self._queue, (now + delay, self._seq, msg))

    def pop_due(self, now: int) -> list[Message]:
        """Remove and return the messages due at or before ``now`` that can still get through."""
        queue = self._queue
        due: list[Message] = []
        while queue and queue[0][0] <= now:
            msg = heapq.heappop(queue)[2]
            if self.can_reach(msg.sender, msg.recipient):
                due.append(msg)
            else:
                self.dropped[msg.type] += 1
        if self._reorder and len(due) > 1:
            self._rng.shuffle(due)
        for msg in due:
            self.delivered[msg.type] += 1
        return due

    def discard(self, node_id: str, *, sent_by_it: bool = True) -> int:
        """Drop every undelivered message to ``node_id`` (it crashed) and, unless
        ``sent_by_it`` is False, every one from it; return how many."""

        def lost_with_it(msg: Message) -> bool:
            return msg.recipient == node_id or (sent_by_it and msg.sender == node_id)

        kept = [item for item in self._queue if not lost_with_it(item[2])]
        lost = len(self._queue) - len(kept)
        for item in self._queue:
            if lost_with_it(item[2]):
                self.dropped[item[2].type] += 1
        heapq.heapify(kept)
        self._queue = kept
        return lost

    def pending(self, node_id: str) -> int:
        """Number of undelivered messages to or from ``node_id``."""
        return sum(1 for item in self._queue if node_id in (item[2].sender, item[2].recipient))

    @property
    def in_flight(self) -> int:
        """Number of messages scheduled but not yet delivered."""
        return len(self._queue)

    def total_sent(self) -> int:
        """All messages handed to the network so far, of every type."""
        return sum(self.sent.values())

    def _require(self, node_id: str) -> None:
        if node_id not in self._nodes:
            raise KeyError(f"unknown node {node_id!r}")
