"""Helpers shared by the scenario tests, after the well-known Raft lab harness.

Tick budgets: an election timeout is 10-19 ticks and a heartbeat 2 ticks with the
default configuration, so "a few election timeouts" is about 100 ticks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from raftmq.core.types import Role
from raftmq.testing import Simulation

ELECTION_BUDGET = 300  # ticks allowed for a leader to emerge (many election timeouts)
AGREEMENT_BUDGET = 100  # ticks allowed for one proposal to reach every expected node


def connected_live(sim: Simulation) -> list[str]:
    """Nodes that are running and not disconnected."""
    return [n for n in sim.alive() if sim.network.is_connected(n)]


def check_one_leader(sim: Simulation, among: Iterable[str] | None = None) -> str:
    """Run until exactly one node of ``among`` (default: connected live nodes) leads the
    highest term seen there, and return it."""
    group = list(among) if among is not None else connected_live(sim)

    def one_leader() -> bool:
        leaders = [n for n in group if sim.role(n) is Role.LEADER]
        if len(leaders) != 1:
            return False
        top = max(sim.term(n) for n in group)
        return sim.term(leaders[0]) == top

    assert sim.run_until(one_leader, ELECTION_BUDGET), (
        f"no single leader among {group} after {ELECTION_BUDGET} ticks (seed {sim.seed})"
    )
    leaders = [n for n in group if sim.role(n) is Role.LEADER]
    return leaders[0]


def check_no_leader(sim: Simulation, among: Iterable[str]) -> None:
    """Assert no node of ``among`` believes it leads."""
    leaders = [n for n in among if sim.role(n) is Role.LEADER]
    assert not leaders, f"unexpected leaders {leaders} (seed {sim.seed})"


def applied_data(sim: Simulation, node_id: str, index: int) -> bytes | None:
    """The data ``node_id`` applied at ``index`` (b"" for a NOOP), or None."""
    applied = sim.applied_entries(node_id)
    return applied[index - 1].data if index <= len(applied) else None


def n_applied(sim: Simulation, index: int, data: bytes) -> int:
    """How many nodes applied ``data`` at ``index`` (the checker guarantees they agree)."""
    return sum(1 for n in sim.node_ids if applied_data(sim, n, index) == data)


def applied_by(sim: Simulation, index: int, data: bytes, expected: int) -> Callable[[], bool]:
    """A predicate: at least ``expected`` nodes applied ``data`` at ``index``."""
    return lambda: n_applied(sim, index, data) >= expected


def one(sim: Simulation, data: bytes, expected: int, budget: int = 10 * AGREEMENT_BUDGET) -> int:
    """Like the lab's ``one()``: propose ``data`` on whichever connected node leads, retry
    until ``expected`` nodes applied it at the returned index."""
    deadline = sim.now + budget
    while sim.now < deadline:
        index: int | None = None
        for node_id in connected_live(sim):
            index = sim.propose(node_id, data)
            if index is not None:
                break
        if index is None:
            sim.step()
            continue
        if sim.run_until(applied_by(sim, index, data, expected), AGREEMENT_BUDGET):
            return index
    raise AssertionError(
        f"{data!r} did not reach {expected} nodes within {budget} ticks (seed {sim.seed})"
    )


def same_applied(sim: Simulation, nodes: Iterable[str]) -> bool:
    """True when every node in ``nodes`` applied exactly the same entries."""
    logs = [sim.applied(n) for n in nodes]
    return all(log == logs[0] for log in logs)
