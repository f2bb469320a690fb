"""The core's log view: term runs for the whole log, entries for a window (memory rule)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from raftmq.core import Entry, InitialState
from raftmq.core.log import RaftLog
from tests.core.harness import entry


def test_term_runs_answer_terms_outside_the_window() -> None:
    """A restarted node knows term(i) for every index from the runs alone (§5.3 checks)."""
    log = RaftLog(
        InitialState(last_index=10, term_runs=((1, 1), (4, 3), (8, 5)), tail=(entry(10, 5),))
    )
    assert [log.term(i) for i in range(0, 12)] == [0, 1, 1, 1, 3, 3, 3, 3, 5, 5, 5, 0]
    assert log.window_start == 10
    assert log.entry(9) is None and log.entry(10) == entry(10, 5)
    assert (log.last_index_of_term(3), log.last_index_of_term(5), log.last_index_of_term(2)) == (
        7,
        10,
        0,
    )
    assert log.first_index_of_run(6) == 4
    assert log.is_up_to_date(5, 10) and not log.is_up_to_date(5, 9) and log.is_up_to_date(6, 1)


def test_slice_cuts_by_bytes_after_trim() -> None:
    """Batches are cut by payload bytes (at least one entry), also after the window moved."""
    log = RaftLog(InitialState())
    log.append([entry(i, 1, b"x" * i) for i in range(1, 21)])
    log.trim_before(6)
    assert log.window_start == 6
    assert [e.index for e in log.slice(6, 20, 6 + 7 + 8)] == [6, 7, 8]
    assert [e.index for e in log.slice(6, 20, 1)] == [6]
    assert [e.index for e in log.slice(10, 12, None)] == [10, 11, 12]
    log.truncate_from(9)
    log.append([entry(9, 2, b"y"), entry(10, 2, b"z" * 50)])
    assert [e.index for e in log.slice(7, 10, 7 + 8 + 1)] == [7, 8, 9]
    assert log.runs() == ((1, 1), (9, 2))


ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 5), st.integers(0, 2)),
        st.tuples(st.just("truncate"), st.integers(1, 40), st.just(0)),
        st.tuples(st.just("trim"), st.integers(1, 40), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_log_matches_a_plain_list(operations: list[tuple[str, int, int]]) -> None:
    """Runs + window always agree with a plain list of every entry ever kept."""
    log = RaftLog(InitialState())
    model: list[Entry] = []
    window_start = 1  # expected first in-memory index
    for kind, a, b in operations:
        if kind == "append":
            term = (model[-1].term if model else 1) + b
            new = [entry(len(model) + k + 1, term, b"d" * k) for k in range(a)]
            log.append(new)
            model.extend(new)
        elif kind == "truncate":
            if a <= len(model):
                window_start = min(window_start, a)
            log.truncate_from(a)
            del model[a - 1 :]
        else:
            log.trim_before(a)
            window_start = max(window_start, min(a, len(model) + 1))
        assert log.last_index == len(model)
        assert [log.term(i) for i in range(1, len(model) + 1)] == [e.term for e in model]
        assert log.window_start == window_start
        for e in model[log.window_start - 1 :]:
            assert log.entry(e.index) == e
        if log.window_start <= log.last_index:
            lo = log.window_start
            got = log.slice(lo, log.last_index, 3)
            assert got and got[0].index == lo
            assert len(got) == 1 or sum(len(e.data) for e in got) <= 3
