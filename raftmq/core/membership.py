"""Membership: the configuration in the log, and single-server changes (thesis ch. 4).

A configuration (:class:`~raftmq.core.types.Membership`: voters and learners) is data in
the log: a ``CONFIG`` entry holds the whole new configuration, and every server uses the
latest configuration in its log, committed or not (§4.1). A truncated configuration
entry takes its configuration away again, so each core keeps the configuration entries
of its log that may still be truncated (:attr:`RaftState.config_history`).

Changes are single-server: each adds or removes one voter (or adds, promotes or removes
a learner, which changes no majority). Any two majorities of configurations that differ
by one voter overlap, so two leaders of one term cannot be elected by the old and the
new configuration. Two rules keep that true under leader changes (docs/core.md,
"Membership changes"):

* a leader proposes a change only while no configuration entry of its log is
  uncommitted (one change at a time, so consecutive configurations differ by one);
* a leader proposes a change only once an entry of its own term is committed (the fix
  to the bug Ongaro found in single-server changes, raft-dev 2015): otherwise a leader
  elected by the old configuration could commit a change that conflicts with one an
  earlier leader of another configuration already replicated.

A leader that removes itself keeps leading until the change commits (it does not count
itself in majorities meanwhile) and then steps down; a server outside the voters never
campaigns. Learners get the log like voters and count in no majority.

Incarnations (a lost disk). Raft's votes and acknowledgements are promises about what a
server's storage holds; a server that comes back with an empty (or another) database
under a member's id would break them: it votes again in a term it voted in, and the
leader would count entries it no longer holds. So each database has an incarnation id
(made with it, :attr:`~raftmq.core.types.InitialState.incarnation`), the messages that
carry such promises (vote requests and answers, append and snapshot answers) carry it,
and the configuration pins each member's (:attr:`Membership.incarnations`). A message
from a member whose incarnation is not its pin is dropped before anything reads it --
no term moves, no vote or acknowledgement counts -- and counted. A leader pins, in one
configuration entry (no voter changes: majorities stay the same), every member not
pinned yet whose database acknowledged the configuration in force. An operator
replaces such a member with a :attr:`ChangeKind.REPLACE` change (it becomes a learner
pinned to its new database, catches up, and is promoted): a single-server change like a
removal. A member lost before every member holds its pin is not caught (the pin is made
about one heartbeat after the member acknowledged the configuration; docs/core.md has
the argument).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from raftmq.core.messages import MAX_VOTERS
from raftmq.core.progress import Progress
from raftmq.core.state import RaftState
from raftmq.core.types import (
    INCARNATION_PATTERN,
    NODE_ID_PATTERN,
    Entry,
    EntryKind,
    Membership,
    Role,
)
from raftmq.errors import ConfigError

log = logging.getLogger("raftmq.core.membership")


def membership(
    voters: Iterable[str],
    learners: Iterable[str] = (),
    incarnations: Iterable[tuple[str, str]] = (),
) -> Membership:
    """A validated Membership (sorted; :class:`ConfigError` naming what is wrong)."""
    v, ln = tuple(sorted(voters)), tuple(sorted(learners))
    pins = tuple(sorted(incarnations))
    if not v:
        raise ConfigError("a configuration needs at least one voter")
    if len(set(v)) != len(v) or len(set(ln)) != len(ln):
        raise ConfigError("a configuration names a member twice")
    if set(v) & set(ln):
        raise ConfigError("a member is both voter and learner")
    if len(v) + len(ln) > MAX_VOTERS:
        raise ConfigError(f"a configuration has at most {MAX_VOTERS} members")
    for node in (*v, *ln):
        if not re.fullmatch(NODE_ID_PATTERN, node):
            raise ConfigError(f"member id {node!r} does not match {NODE_ID_PATTERN}")
    pinned = [node for node, _ in pins]
    if len(set(pinned)) != len(pinned) or not set(pinned) <= {*v, *ln}:
        raise ConfigError("incarnations name a member twice or a non-member")
    for _, incarnation in pins:
        if not isinstance(incarnation, str) or not re.fullmatch(INCARNATION_PATTERN, incarnation):
            raise ConfigError(f"incarnation {incarnation!r} does not match {INCARNATION_PATTERN}")
    return Membership(v, ln, pins)


def encode(m: Membership) -> bytes:
    """The data of a CONFIG entry (``incarnations`` only when some member is pinned:
    what versions before them wrote)."""
    raw: dict[str, object] = {"voters": list(m.voters), "learners": list(m.learners)}
    if m.incarnations:
        raw["incarnations"] = dict(m.incarnations)
    return json.dumps(raw).encode()


def decode(data: bytes) -> Membership:
    """A CONFIG entry's membership, or :class:`ConfigError`."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"configuration entry is not JSON: {exc}") from None
    if not isinstance(raw, dict) or set(raw) - {"incarnations"} != {"voters", "learners"}:
        raise ConfigError("configuration entry must hold voters, learners (and incarnations)")
    voters, learners, pins = raw["voters"], raw["learners"], raw.get("incarnations", {})
    if not isinstance(voters, list) or not isinstance(learners, list):
        raise ConfigError("voters and learners must be lists")
    if not all(isinstance(n, str) for n in (*voters, *learners)):
        raise ConfigError("member ids must be strings")
    if not isinstance(pins, dict):
        raise ConfigError("incarnations must map member ids to incarnation ids")
    return membership(voters, learners, pins.items())


class ChangeKind(StrEnum):
    """What a :class:`ConfChange` does."""

    ADD_LEARNER = "add_learner"  # a new member that receives the log without voting
    ADD_VOTER = "add_voter"  # a new voter, or a learner promoted
    REMOVE = "remove"  # a voter or learner leaves
    # A member whose database was lost becomes a learner pinned to its new database
    # (``incarnation``; unpinned when None: pinned when it first answers), to be
    # promoted once it caught up.
    REPLACE = "replace"


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One single-server change."""

    kind: ChangeKind
    node_id: str
    incarnation: str | None = None  # REPLACE: the member's new database, when known

    def applied_to(self, m: Membership) -> Membership:
        """The configuration after this change, or :class:`ConfigError` when it does not
        apply to ``m`` (adding a member twice, removing a non-member, the last voter)."""
        node, voters, learners = self.node_id, set(m.voters), set(m.learners)
        pins = dict(m.incarnations)
        kind = self.kind
        if kind is ChangeKind.ADD_LEARNER:
            if node in voters or node in learners:
                raise ConfigError(f"{node} is already a member")
            learners.add(node)
        elif kind is ChangeKind.ADD_VOTER:
            if node in voters:
                raise ConfigError(f"{node} is already a voter")
            learners.discard(node)
            voters.add(node)
        else:  # REMOVE, or REPLACE: removed, and back as a learner of its new database
            if node not in voters and node not in learners:
                raise ConfigError(f"{node} is not a member")
            if voters == {node}:
                raise ConfigError(f"{node} is the last voter")
            voters.discard(node)
            learners.discard(node)
            pins.pop(node, None)
            if kind is ChangeKind.REPLACE:
                learners.add(node)
                if self.incarnation:
                    pins[node] = self.incarnation
        return membership(voters, learners, pins.items())


# --------------------------------------------------------------------- state upkeep


def start(s: RaftState, base: Membership, base_index: int, entries: Sequence[Entry]) -> None:
    """Set the configuration a core starts with: ``base`` (a snapshot's at
    ``base_index``, or the seed at 0) followed by the log's configuration entries."""
    s.config_history = [(base_index, base)]
    s.members = base
    _appended(s, [e for e in entries if e.index > base_index], log_bad=True)
    _use(s, *s.config_history[-1])


def appended(s: RaftState, entries: Sequence[Entry]) -> None:
    """Entries were appended to the log: a configuration among them takes effect now."""
    if _appended(s, entries, log_bad=True):
        _use(s, *s.config_history[-1])


def _appended(s: RaftState, entries: Sequence[Entry], *, log_bad: bool) -> bool:
    changed = False
    for ent in entries:
        if ent.kind != EntryKind.CONFIG:
            continue
        try:
            m = decode(ent.data)
        except ConfigError as exc:
            if log_bad:
                log.error("%s: configuration entry %s ignored: %s", s.id, ent.index, exc)
            continue
        s.config_history.append((ent.index, m))
        changed = True
    return changed


def truncated(s: RaftState, index: int) -> None:
    """The log lost its entries from ``index``: so did the configurations among them."""
    history = s.config_history
    if history[-1][0] < index:
        return
    while len(history) > 1 and history[-1][0] >= index:
        history.pop()
    _use(s, *history[-1])


def installed(s: RaftState, index: int, m: Membership) -> None:
    """A snapshot at ``index`` with configuration ``m`` replaced the whole log."""
    s.config_history = [(index, m)]
    _use(s, index, m)


def compacted(s: RaftState, first_index: int) -> None:
    """The log starts at ``first_index``: forget configurations older than the one in
    force at ``first_index - 1`` (a snapshot there records it)."""
    history = s.config_history
    keep = 0
    for i, (idx, _) in enumerate(history):
        if idx <= first_index - 1:
            keep = i
    del history[:keep]


def at(s: RaftState, index: int) -> Membership:
    """The configuration in force at ``index`` (>= first_index - 1) of the log."""
    found = s.config_history[0][1]
    for idx, m in s.config_history:
        if idx <= index:
            found = m
    return found


def may_campaign(s: RaftState) -> bool:
    """Whether this node may stand for election: as a voter of the configuration in
    force, or as a voter of the one before it while that one is not committed here.

    The second case is a leader's removal that did not commit before it crashed: it
    may be the only voter that holds the change (its removal reached nobody else of the
    new configuration), and the new configuration's voters may not elect anyone without
    it. It counts the votes of the configuration in force (its own only if it is in
    it), like any other candidate, so majorities overlap as they must; once elected it
    commits the change and steps down (:func:`step_down_if_removed`).
    """
    if s.id in s.members.voters:
        return True
    history = s.config_history
    return pending(s) and len(history) > 1 and s.id in history[-2][1].voters


def own_database_pinned(s: RaftState) -> bool:
    """False when the configuration in force pins this node's id to another database
    (its own was lost): its status says so. It still campaigns and votes as its log
    allows: the others drop what it sends while they pin the old database, and a node
    that catches up after a replacement holds the old pin until it reaches the new one
    -- refusing votes meanwhile could leave a cluster without a majority."""
    pin = s.pins.get(s.id)
    return pin is None or pin == s.incarnation


def admits(s: RaftState, sender: str, incarnation: str) -> bool:
    """Whether a message from ``sender`` telling ``incarnation`` may be read: it comes
    from the database the configuration pins for ``sender`` (or ``sender`` is not
    pinned). Records what was heard; a stranger's message is counted and dropped, and a
    leader forgets what it knew of that member's log (it no longer holds it). A sender
    not pinned yet is admitted; when it answers from another database than it last did,
    a leader forgets what it knew of its log all the same."""
    pin = s.pins.get(sender)
    if pin is None:
        if incarnation and s.heard.get(sender) != incarnation:
            if sender in s.heard:
                _forget_log_of(s, sender)
            s.heard[sender] = incarnation
        return True
    if pin == incarnation:
        if s.strangers:
            s.strangers.pop(sender, None)  # its own database answers again
        return True
    s.strangers_dropped += 1
    if s.strangers.get(sender) != incarnation:
        s.strangers[sender] = incarnation
        log.warning(
            "%s: %s answers from database %s, but member %s is database %s: not counted "
            "(if its disk was replaced: raftmq members replace %s)",
            s.id,
            sender,
            incarnation or "(none told)",
            sender,
            pin,
            sender,
        )
        _forget_log_of(s, sender)
    return False


def _forget_log_of(s: RaftState, peer: str) -> None:
    """On a leader: ``peer`` answers from another database, so nothing it acknowledged
    is known to be held any more; probe it from the end of our log, match 0."""
    if s.role is Role.LEADER and peer in s.progress:
        s.progress[peer] = Progress(s.raft_log.last_index + 1)


def heard_holding(s: RaftState, peer: str, incarnation: str, match: int) -> None:
    """A leader heard ``peer``'s database ``incarnation`` acknowledge its log up to
    ``match``: when that covers the configuration in force, that database holds it and
    is the one to pin (an answer from before -- a departing member's, a message late
    from a database since lost -- is never taken for it)."""
    if incarnation and match >= s.config_history[-1][0]:
        s.seen[peer] = incarnation


def pins_due(s: RaftState) -> Membership | None:
    """On a leader that may change the configuration now: the configuration in force
    with every member pinned that is not yet and whose database acknowledged it (this
    node included), or None when there is nothing to pin."""
    if pending(s) or s.transferee is not None or s.raft_log.term(s.commit) != s.term:
        return None
    new = {}
    for node in s.members.members:
        if node in s.pins:
            continue
        heard = s.incarnation if node == s.id else s.seen.get(node, "")
        if heard:
            new[node] = heard
    if not new:
        return None
    m = s.members
    return Membership(m.voters, m.learners, tuple(sorted((*m.incarnations, *new.items()))))


def pending(s: RaftState) -> bool:
    """True while the log holds a configuration entry that is not committed."""
    return s.config_history[-1][0] > s.commit


def step_down_if_removed(s: RaftState) -> None:
    """A leader that a committed configuration removed from the voters steps down
    (thesis §4.2.2); as a non-voter it never campaigns again. Called by RaftCore after
    each input, never in the middle of the leader's own handling of one."""
    if s.role is Role.LEADER and not pending(s) and s.id not in s.members.voters:
        log.info("%s: removed from the voters; stepping down in term %s", s.id, s.term)
        s.become_follower(s.term, None)


def _use(s: RaftState, index: int, m: Membership) -> None:
    """Make ``m`` (the configuration entry at ``index``) the configuration in force:
    peers, majority and, on a leader, one Progress per other member (a new one probes
    from the end of our log). A member it removes keeps its Progress as *departing*:
    it is sent the log, counted nowhere, until it holds this configuration committed
    (:func:`forget_departed`), so that it learns it was removed."""
    old_pins, s.members, s.pins = s.pins, m, m.pins()
    s.strangers = {n: inc for n, inc in s.strangers.items() if s.pins.get(n, inc) != inc}
    s.seen.clear()  # a pin is taken from a database that holds this configuration
    s.others = tuple(sorted(m.members - {s.id}))
    s.voter_peers = tuple(v for v in m.voters if v != s.id)
    s.quorum = len(m.voters) // 2 + 1
    if s.role is Role.LEADER:
        for peer in s.progress:
            if peer not in m.members:
                s.departing.setdefault(peer, index)
        for peer in s.others:
            s.departing.pop(peer, None)
            pin = s.pins.get(peer)
            if peer not in s.progress or (pin is not None and old_pins.get(peer, pin) != pin):
                # new, or pinned to another database (replaced): what it held is gone
                s.progress[peer] = Progress(s.raft_log.last_index + 1)


def forget_departed(s: RaftState) -> None:
    """Drop the Progress of departing members that hold the configuration that removed
    them, committed (the heartbeat just sent told them the commit index)."""
    for peer, index in list(s.departing.items()):
        pr = s.progress.get(peer)
        if pr is None or (s.commit >= index and pr.match >= index):
            s.progress.pop(peer, None)
            del s.departing[peer]


def quorum_value(s: RaftState, values: dict[str, int], own: int) -> int:
    """The highest value a majority of the voters holds, from each voter peer's value
    and this node's ``own`` (counted only while it is a voter); 0 when no majority
    holds any (impossible while this node counts)."""
    held = sorted(
        [values.get(peer, 0) for peer in s.voter_peers]
        + ([own] if s.id in s.members.voters else []),
        reverse=True,
    )
    return held[s.quorum - 1] if len(held) >= s.quorum else 0
