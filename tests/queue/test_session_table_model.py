"""SessionTable against a simple model (hypothesis): random orders and repeats of seqs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from raftmq.node.sessions import SessionTable
from raftmq.protocol.record import Record
from raftmq.storage.port import ClientSession


def _rec(seq: int, pid: str = "p") -> Record:
    return Record(body=b"x", content_type=None, producer_id=pid, seq=seq)


def _run(
    seqs: list[tuple[str, int]], max_gap: int, cut_every: int, restart_every: int
) -> list[bool]:
    """Apply ``seqs`` in order; return "applied" per write. Changes are taken every
    ``cut_every`` writes and, every ``restart_every`` writes, a fresh table is loaded from
    the rows taken so far (a node restart)."""
    table = SessionTable(max_gap=max_gap)
    rows: dict[str, ClientSession] = {}
    out: list[bool] = []
    for i, (pid, seq) in enumerate(seqs, start=1):
        out.append(table.apply(_rec(seq, pid), i, 1) is None)
        if i % cut_every == 0 or i % restart_every == 0:
            changed, _ = table.take_changes(i)
            rows.update({s.producer_id: s for s in changed})
        if i % restart_every == 0:
            table = SessionTable(max_gap=max_gap)
            table.load(rows.values())
    return out


writes = st.lists(
    st.tuples(st.sampled_from(["p", "q"]), st.integers(min_value=1, max_value=40)),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(writes)
def test_within_the_bound_every_distinct_seq_applies_exactly_once(
    seqs: list[tuple[str, int]],
) -> None:
    applied = _run(seqs, max_gap=100, cut_every=1, restart_every=10**9)
    model: set[tuple[str, int]] = set()
    for write, was_applied in zip(seqs, applied, strict=True):
        assert was_applied == (write not in model), write
        model.add(write)
    assert {w for w, a in zip(seqs, applied, strict=True) if a} == set(seqs)


@settings(max_examples=300, deadline=None)
@given(
    writes,
    st.integers(min_value=1, max_value=6),
    st.integers(min_value=1, max_value=7),
    st.integers(min_value=1, max_value=9),
)
def test_decisions_are_deterministic_and_never_apply_twice(
    seqs: list[tuple[str, int]], max_gap: int, cut_every: int, restart_every: int
) -> None:
    reference = _run(seqs, max_gap, cut_every=1, restart_every=10**9)
    # Batching of take_changes and restarts from the persisted rows change nothing.
    assert _run(seqs, max_gap, cut_every, restart_every) == reference
    applied = [w for w, a in zip(seqs, reference, strict=True) if a]
    assert len(applied) == len(set(applied))  # nothing applied twice
    table = SessionTable(max_gap=max_gap)
    for i, (pid, seq) in enumerate(seqs, start=1):
        table.apply(_rec(seq, pid), i, 1)
        session = table.session(pid)
        assert session is not None and len(session.above) <= max_gap
        assert session.floor + 1 not in session.above
        assert all(s > session.floor for s in session.above)
    # A seq is refused only when it was applied before or abandoned below the floor.
    seen: set[tuple[str, int]] = set()
    table = SessionTable(max_gap=max_gap)
    for i, ((pid, seq), was_applied) in enumerate(zip(seqs, reference, strict=True), start=1):
        before = table.session(pid)
        floor = before.floor if before is not None else 0
        if not was_applied:
            assert (pid, seq) in seen or seq <= floor
        table.apply(_rec(seq, pid), i, 1)
        seen.add((pid, seq))
