"""The core's view of the log: compact term runs for all of it, entries for a window.

A node with a million entries must not hold them all in memory, yet Raft needs
``term(i)`` for any ``i`` (consistency checks, up-to-date checks, fast
backtracking). Terms only change at a few indexes, so the whole log is described
by ascending ``(first index, term)`` runs; payloads are kept only for a suffix
(the *window*) and the rest is read from storage on demand.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import accumulate
from operator import attrgetter

from raftmq.core.types import Entry, InitialState
from raftmq.errors import ConfigError

_DATA = attrgetter("data")


class RaftLog:
    """Term runs for indexes first_index..last_index plus an in-memory entry window.

    Invariants: run starts strictly ascend and run terms strictly ascend; the first
    run starts at first_index when the log is non-empty; the window holds exactly
    the entries window_start..last_index; first_index - 1 <= last_index; ``prev_term``
    is the term of first_index - 1 (0 when first_index == 1) and no run's term is lower.
    """

    __slots__ = (
        "_cum",
        "_cum_base",
        "_ents",
        "_run_starts",
        "_run_terms",
        "first_index",
        "last_index",
        "prev_term",
    )

    def __init__(self, initial: InitialState) -> None:
        first = initial.first_index
        self.first_index = first  # first index held; entries before it are compacted
        self.last_index = initial.last_index  # last index held; first_index - 1 when empty
        self.prev_term = 0  # term of first_index - 1 (a snapshot's or a compacted entry's)
        self._run_starts: list[int] = []  # first index of each term run, ascending
        self._run_terms: list[int] = []  # term of each run, ascending
        self._ents: list[Entry] = list(initial.tail)  # the window, ending at last_index
        # Running payload byte totals parallel to _ents (cuts batches without a Python loop):
        # _cum[k] - _cum_base == bytes of _ents[0..k].
        self._cum_base = 0
        self._cum: list[int] = list(accumulate(map(len, map(_DATA, self._ents))))
        runs = initial.term_runs
        if not runs and self._ents:
            runs = _runs_of(self._ents)
        if first < 1 or self.last_index < first - 1:
            raise ConfigError(f"log bounds {first}..{self.last_index} are impossible")
        if first > 1:
            self.prev_term, runs = _boundary(initial, runs)
        for start, term in runs:
            if start > self.last_index:
                break
            if self._run_terms and term <= self._run_terms[-1]:
                raise ConfigError(f"term runs are not ascending: {initial.term_runs!r}")
            self._run_starts.append(start)
            self._run_terms.append(term)
        if self.last_index >= self.first_index and not self._run_starts:
            raise ConfigError("initial state has log entries but no term runs")
        if self._ents and self._ents[-1].index != self.last_index:
            raise ConfigError("initial tail does not end at last_index")

    @property
    def window_start(self) -> int:
        """First index whose entry is in memory (last_index + 1 when the window is empty)."""
        return self.last_index + 1 - len(self._ents)

    def last_term(self) -> int:
        """Term of the last entry (the snapshot's term when none follows it), 0 when empty."""
        return self._run_terms[-1] if self._run_terms else self.prev_term

    def term(self, index: int) -> int:
        """Term of the entry at ``index``: first_index - 1 has ``prev_term``; 0 for index 0,
        a compacted index before that, or an index past the log."""
        if index > self.last_index or index < self.first_index:
            return self.prev_term if index == self.first_index - 1 else 0
        starts = self._run_starts
        if index >= starts[-1]:
            return self._run_terms[-1]
        return self._run_terms[bisect_right(starts, index) - 1]

    def first_index_of_run(self, index: int) -> int:
        """First index of the term run that contains ``index`` (which must be in the log)."""
        return self._run_starts[bisect_right(self._run_starts, index) - 1]

    def last_index_of_term(self, term: int) -> int:
        """Last index holding an entry of ``term``, or 0 when the log has none."""
        pos = bisect_left(self._run_terms, term)
        if pos == len(self._run_terms) or self._run_terms[pos] != term:
            return 0
        if pos + 1 < len(self._run_starts):
            return self._run_starts[pos + 1] - 1
        return self.last_index

    def is_up_to_date(self, last_term: int, last_index: int) -> bool:
        """§5.4.1: a log ending at (last_term, last_index) is at least as up to date as ours."""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index)

    def entry(self, index: int) -> Entry | None:
        """The entry at ``index`` when it is in the window, else None."""
        pos = index - self.window_start
        if pos < 0 or index > self.last_index:
            return None
        return self._ents[pos]

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Window entries lo..hi (inclusive), cut after ``max_bytes`` payload bytes.

        ``lo`` must be >= window_start. At least one entry is returned when lo <= hi.
        """
        start = self.window_start
        a = lo - start
        b = hi - start + 1
        if max_bytes is not None and b - a > 1:
            cum = self._cum
            limit = (cum[a - 1] if a > 0 else self._cum_base) + max_bytes
            if cum[b - 1] > limit:
                b = max(a + 1, bisect_right(cum, limit, a, b))
        return self._ents[a:b]

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries continuing the log (entries[0].index == last_index + 1)."""
        if not entries:
            return
        terms = self._run_terms
        last_term = terms[-1] if terms else 0
        if entries[-1].term != last_term:
            for ent in entries:
                if ent.term != last_term:
                    if ent.term < last_term:
                        raise ValueError(f"term goes backwards at index {ent.index}")
                    self._run_starts.append(ent.index)
                    terms.append(ent.term)
                    last_term = ent.term
        self._ents.extend(entries)
        cum = self._cum
        totals = accumulate(
            map(len, map(_DATA, entries)), initial=cum[-1] if cum else self._cum_base
        )
        next(totals)  # skip the initial value
        cum.extend(totals)
        self.last_index = entries[-1].index

    def truncate_from(self, index: int) -> None:
        """Drop entries index..last_index (a conflicting suffix, §5.3)."""
        if index > self.last_index:
            return
        start = self.window_start
        if index >= start:
            del self._ents[index - start :]
            del self._cum[index - start :]
        else:
            self._ents.clear()
            self._cum.clear()
        while self._run_starts and self._run_starts[-1] >= index:
            self._run_starts.pop()
            self._run_terms.pop()
        self.last_index = index - 1

    def trim_before(self, index: int) -> None:
        """Forget window entries below ``index`` (they stay in storage and in the runs)."""
        drop = min(index - self.window_start, len(self._ents))
        if drop > 0:
            self._cum_base = self._cum[drop - 1]
            del self._ents[:drop]
            del self._cum[:drop]

    def compact(self, index: int) -> None:
        """Forget entries up to ``index`` (first_index - 1 <= index <= last_index): they are
        covered by a snapshot; ``term(index)`` stays known as ``prev_term``."""
        if index < self.first_index:
            return
        self.prev_term = self.term(index)
        self.trim_before(index + 1)
        starts, terms = self._run_starts, self._run_terms
        keep = bisect_right(starts, index) - 1  # the run holding index
        del starts[:keep]
        del terms[:keep]
        if index + 1 <= self.last_index:
            starts[0] = index + 1
        else:
            starts.clear()
            terms.clear()
        self.first_index = index + 1

    def restore(self, index: int, term: int) -> None:
        """Replace the whole log by a snapshot ending at (``index``, ``term``)."""
        self._ents.clear()
        self._cum.clear()
        self._cum_base = 0
        self._run_starts.clear()
        self._run_terms.clear()
        self.first_index = index + 1
        self.last_index = index
        self.prev_term = term

    def runs(self) -> tuple[tuple[int, int], ...]:
        """The (first index, term) runs, ascending."""
        return tuple(zip(self._run_starts, self._run_terms, strict=True))


def _boundary(
    initial: InitialState, runs: tuple[tuple[int, int], ...]
) -> tuple[int, tuple[tuple[int, int], ...]]:
    """The term of first_index - 1 and the runs clipped to start at first_index."""
    before = initial.first_index - 1
    snap = initial.snapshot
    starts = [start for start, _ in runs]
    pos = bisect_right(starts, before) - 1
    if pos >= 0:
        prev_term = runs[pos][1]
    elif snap is not None and snap.index == before:
        prev_term = snap.term
    else:
        raise ConfigError(f"no term known for index {before} before the first index held")
    rest = list(runs[pos + 1 :]) if pos >= 0 else list(runs)
    if pos >= 0 and initial.last_index > before and (not rest or rest[0][0] > before + 1):
        rest.insert(0, (before + 1, prev_term))
    return prev_term, tuple(rest)


def _runs_of(entries: Sequence[Entry]) -> tuple[tuple[int, int], ...]:
    runs: list[tuple[int, int]] = []
    for ent in entries:
        if not runs or runs[-1][1] != ent.term:
            runs.append((ent.index, ent.term))
    return tuple(runs)
