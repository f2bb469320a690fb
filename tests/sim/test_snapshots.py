"""Snapshots in the simulator: a follower behind the compacted log catches up through
InstallSnapshot, through duplicates, reordering and crashes in the middle of the transfer;
the checkers verify every snapshot covers committed entries only and that the restored
state equals the state replaying the log gives (§7; thesis ch. 5)."""

from __future__ import annotations

from raftmq.testing import Simulation
from tests.sim.harness import AGREEMENT_BUDGET, check_one_leader, one, same_applied

NODES3 = ["n1", "n2", "n3"]


def _behind(seed: int, **config: object) -> tuple[Simulation, str]:
    """n3 cut off while the others commit 30 entries and compact all of them."""
    sim = Simulation(NODES3, seed=seed, trailing_entries=0, **config)  # type: ignore[arg-type]
    check_one_leader(sim)
    sim.disconnect("n3")
    for i in range(30):
        one(sim, f"w{i}".encode(), 2)
    leader = check_one_leader(sim, ["n1", "n2"])
    for node_id in ("n1", "n2"):
        assert sim.take_snapshot(node_id) is not None
    assert sim.core(leader).first_index > sim.last_index("n3") + 1
    sim.connect("n3")
    return sim, leader


def test_a_follower_behind_the_compacted_log_catches_up_through_install_snapshot() -> None:
    """The leader sends its snapshot in chunks; n3 installs it and applies on from there."""
    sim, leader = _behind(1, snapshot_chunk_bytes=32)
    one(sim, b"after", 3)
    assert sim.run_until(lambda: same_applied(sim, NODES3), AGREEMENT_BUDGET)
    record = sim.persisted["n3"]
    assert record.snapshot is not None and record.first == record.snapshot.index + 1
    assert sim.network.sent["install_snapshot"] > 1  # more than one chunk
    assert sim.applied("n3") == sim.applied(leader)


def test_crashes_duplicates_and_reordering_in_the_middle_of_a_transfer_are_harmless() -> None:
    """n3 crashes (plainly, and in the middle of the Ready that installs) while chunks are
    duplicated and reordered; it still ends with the leader's state."""
    sim, _ = _behind(2, snapshot_chunk_bytes=8, max_inflight=4)
    sim.network.duplicate_rate = 0.3
    sim.network.reorder = 0.3
    sim.network.delay_ticks = (0, 2)
    assert sim.run_until(lambda: sim.network.delivered["install_snapshot"] > 3, 50)
    sim.crash("n3")
    sim.run(3)
    sim.restart("n3")
    sim.crash_in_ready("n3")
    sim.run(40)
    sim.cancel_crashes_in_ready()
    if not sim.is_alive("n3"):
        sim.restart("n3")
    sim.network.reliable()
    one(sim, b"after", 3)
    assert sim.run_until(lambda: same_applied(sim, NODES3), AGREEMENT_BUDGET)
    assert sim.persisted["n3"].snapshot is not None
    assert sim.network.duplicated["install_snapshot"] > 0


def test_a_restart_from_snapshot_and_trailing_entries_keeps_applying() -> None:
    """A node restarted from its snapshot plus trailing log goes on where it was."""
    sim = Simulation(NODES3, seed=3, trailing_entries=2)
    check_one_leader(sim)
    for i in range(10):
        one(sim, f"w{i}".encode(), 3)
    snapshot = sim.take_snapshot("n2")
    assert snapshot is not None
    assert sim.persisted["n2"].first == snapshot.index - 1  # two trailing entries kept
    sim.crash("n2")
    sim.restart("n2")
    one(sim, b"later", 3)
    assert sim.run_until(lambda: same_applied(sim, NODES3), AGREEMENT_BUDGET)
