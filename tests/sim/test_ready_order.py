"""The Ready order (raftmq.node.driver), rule by rule, on hand-built Readies.

The node loop and the simulator both run these plans, so what is pinned here is what
production does and what the safety search explores.
"""

from __future__ import annotations

from raftmq.core.messages import AppendEntries, AppendEntriesReply, Message, RequestVoteReply
from raftmq.core.ready import Ready
from raftmq.core.types import Entry, HardState
from raftmq.node.driver import Advance, Apply, Persist, ReadyDriver, Send, Step
from raftmq.storage.port import PersistBatch

DURABLE = (3, "n1")  # the (term, vote) the drivers below start from


def _ready(
    *,
    hard: HardState | None = None,
    truncate_from: int | None = None,
    entries: tuple[Entry, ...] = (),
    messages: tuple[Message, ...] = (),
    committed: tuple[Entry, ...] = (),
) -> Ready:
    return Ready(hard, truncate_from, entries, messages, committed, (), None)


def _entries(lo: int, hi: int, term: int = 3) -> tuple[Entry, ...]:
    return tuple(Entry(index=i, term=term, data=b"%d" % i) for i in range(lo, hi + 1))


def _append(to: str, first: int = 5) -> AppendEntries:
    return AppendEntries(
        term=3,
        sender="n1",
        recipient=to,
        prev_log_index=first - 1,
        prev_log_term=3,
        entries=_entries(first, first),
        leader_commit=2,
    )


REPLY = AppendEntriesReply(term=3, sender="n2", recipient="n1", success=True, match_index=5)
VOTE = RequestVoteReply(term=4, sender="n2", recipient="n3", granted=True)


def _kinds(steps: list[Step]) -> list[str]:
    return [type(step).__name__ for step in steps]


def test_leader_sends_append_entries_before_its_save_and_the_rest_after() -> None:
    """Thesis §10.2.1: with term and vote durable, AppendEntries leave before the leader's
    own log write; every other message waits for the save."""
    append_n2, append_n3 = _append("n2"), _append("n3")
    ready = _ready(entries=_entries(5, 5), messages=(append_n2, REPLY, append_n3))
    steps = ReadyDriver(DURABLE).plan(ready)
    assert steps == [
        Send([append_n2, append_n3]),
        Persist(PersistBatch(entries=_entries(5, 5))),
        Send([REPLY]),
        Advance(),
    ]


def test_a_new_vote_holds_every_message_until_the_save() -> None:
    """§5.1: a vote (or a new term) must be durable before anything leaves, AppendEntries
    included."""
    hard = HardState(term=4, voted_for="n3", commit=2)
    append = _append("n2")
    steps = ReadyDriver(DURABLE).plan(_ready(hard=hard, messages=(append, VOTE)))
    assert steps == [Persist(PersistBatch(hard_state=hard)), Send([append, VOTE]), Advance()]


def test_a_truncating_ready_sends_nothing_before_its_save() -> None:
    """A follower replacing a conflicting suffix (§5.3) replies only once it is saved."""
    entries = _entries(4, 5, term=4)
    ready = _ready(truncate_from=4, entries=entries, messages=(_append("n2"), REPLY))
    steps = ReadyDriver(DURABLE).plan(ready)
    assert _kinds(steps) == ["Persist", "Send", "Advance"]
    assert steps[0] == Persist(PersistBatch(truncate_from=4, entries=entries))


def test_committed_entries_before_the_new_ones_are_applied_before_the_save() -> None:
    """Entries committed below the Ready's new entries are durable already: they are
    applied first and their bookkeeping rides with this save."""
    ready = _ready(entries=_entries(5, 6), committed=_entries(3, 4), messages=(REPLY,))
    steps = ReadyDriver(DURABLE).plan(ready)
    assert steps == [
        Apply(_entries(3, 4), None),
        Persist(PersistBatch(entries=_entries(5, 6))),
        Send([REPLY]),
        Advance(),
    ]


def test_committed_entries_among_the_new_ones_are_applied_after_the_save() -> None:
    """A follower's commit may cover entries of this very Ready: they are applied only
    once saved (only durable entries are applied)."""
    ready = _ready(entries=_entries(5, 6), committed=_entries(4, 5), messages=(REPLY,))
    steps = ReadyDriver(DURABLE).plan(ready)
    assert _kinds(steps) == ["Persist", "Send", "Apply", "Advance"]


def test_a_truncating_ready_applies_after_the_save() -> None:
    """With a truncation in the Ready, nothing is applied before the save."""
    ready = _ready(truncate_from=7, entries=_entries(7, 7, 4), committed=_entries(3, 4))
    assert _kinds(ReadyDriver(DURABLE).plan(ready)) == ["Persist", "Apply", "Advance"]


def test_a_commit_only_hard_state_is_deferred_with_the_applied_entries() -> None:
    """Figure 2: commit is volatile. A hard state changing only the commit index is not
    saved on its own; it rides with the bookkeeping of the entries it commits."""
    hard = HardState(term=3, voted_for="n1", commit=4)
    ready = _ready(hard=hard, committed=_entries(3, 4), messages=(_append("n2"),))
    steps = ReadyDriver(DURABLE).plan(ready)
    assert steps == [Send([_append("n2")]), Apply(_entries(3, 4), hard), Advance()]


def test_a_hard_state_with_a_new_term_is_saved_even_with_committed_entries() -> None:
    """Only a commit-only hard state is deferred; a new term is saved before anything
    leaves, and the applied entries' bookkeeping carries no hard state."""
    hard = HardState(term=4, voted_for=None, commit=4)
    ready = _ready(hard=hard, committed=_entries(3, 4), messages=(VOTE,))
    steps = ReadyDriver(DURABLE).plan(ready)
    assert steps == [
        Apply(_entries(3, 4), None),
        Persist(PersistBatch(hard_state=hard)),
        Send([VOTE]),
        Advance(),
    ]


def test_a_commit_change_without_entries_to_apply_is_saved() -> None:
    """Nothing to apply, nothing to ride with: the hard state is saved as it is."""
    hard = HardState(term=3, voted_for="n1", commit=4)
    steps = ReadyDriver(DURABLE).plan(_ready(hard=hard))
    assert steps == [Persist(PersistBatch(hard_state=hard)), Advance()]


def test_deferred_bookkeeping_rides_with_the_next_save_and_only_with_a_save() -> None:
    """What was deferred goes in front of the next batch that writes something, and the
    vote it holds becomes the durable one; a Ready without a save leaves it deferred."""
    driver = ReadyDriver(DURABLE)
    commit = HardState(term=3, voted_for="n1", commit=4)
    driver.defer(PersistBatch(hard_state=commit, applied=4))
    assert _kinds(driver.plan(_ready(messages=(REPLY,)))) == ["Send", "Advance"]
    assert driver.deferred == PersistBatch(hard_state=commit, applied=4)
    vote = HardState(term=5, voted_for="n2", commit=4)
    (persist,) = [s for s in driver.plan(_ready(hard=vote)) if isinstance(s, Persist)]
    assert driver.to_save(persist) == PersistBatch(hard_state=vote, applied=4)
    assert driver.deferred is None and driver.durable_vote == (5, "n2")
    # the vote is durable now: the next AppendEntries may leave before the save
    steps = driver.plan(_ready(entries=_entries(5, 5), messages=(_append("n2"),)))
    assert _kinds(steps) == ["Send", "Persist", "Advance"]


def test_take_deferred_hands_over_the_bookkeeping_once() -> None:
    """The loop's idle flush (and its stop) take the deferred batch; then nothing is left."""
    driver = ReadyDriver(DURABLE)
    assert driver.take_deferred() is None
    driver.defer(PersistBatch(applied=3))
    driver.defer(PersistBatch(applied=5, fanout_watermark=2))
    assert driver.take_deferred() == PersistBatch(applied=5, fanout_watermark=2)
    assert driver.take_deferred() is None
