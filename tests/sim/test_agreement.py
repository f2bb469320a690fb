"""Log replication scenarios (§5.3, §5.4), in the spirit of the Raft lab's 2B tests."""

from __future__ import annotations

from raftmq.core.messages import AppendEntriesReply, Message
from raftmq.core.types import Role
from raftmq.testing import Simulation
from tests.sim.harness import applied_by, check_one_leader, n_applied, one

NODES3 = ["n1", "n2", "n3"]
NODES5 = ["n1", "n2", "n3", "n4", "n5"]


def test_basic_agreement() -> None:
    """§5.3: each proposal is applied by every node at consecutive indexes, in order."""
    sim = Simulation(NODES3, seed=1)
    leader = check_one_leader(sim)
    # the leader's configuration entry pinning the members' databases comes first
    assert sim.run_until(lambda: len(sim.core(leader).membership.incarnations) == 3, 50)
    indexes = []
    for i in range(1, 4):
        data = f"cmd{i}".encode()
        assert sim.leader() is not None
        assert all(n_applied(sim, idx, data) == 0 for idx in range(1, 10))
        indexes.append(one(sim, data, 3))
    assert indexes == sorted(indexes) and len(set(indexes)) == 3
    assert indexes[1:] == [indexes[0] + 1, indexes[0] + 2]
    expected = [(idx, f"cmd{i}".encode()) for i, idx in enumerate(indexes, start=1)]
    for node_id in NODES3:
        assert sim.applied(node_id) == expected


def test_agreement_despite_follower_failure() -> None:
    """§5.3: a majority keeps committing while one follower is cut off; the follower
    catches up once it is back."""
    sim = Simulation(NODES3, seed=2)
    one(sim, b"101", 3)
    leader = check_one_leader(sim)
    follower = next(n for n in NODES3 if n != leader)
    sim.disconnect(follower)
    one(sim, b"102", 2)
    sim.run(30)
    one(sim, b"103", 2)
    sim.run(30)
    one(sim, b"104", 2)
    one(sim, b"105", 2)
    assert [d for _, d in sim.applied(follower)] == [b"101"]
    sim.connect(follower)
    one(sim, b"106", 3)
    sim.run(20)
    want = [b"101", b"102", b"103", b"104", b"105", b"106"]
    for node_id in NODES3:
        assert [d for _, d in sim.applied(node_id)] == want


def test_no_agreement_without_quorum() -> None:
    """§5.3/§5.4.2: with 3 of 5 followers gone the leader cannot commit; after they return
    the cluster commits again, and the lost-quorum entry is either committed everywhere
    in its place or overwritten, never applied anywhere by itself."""
    sim = Simulation(NODES5, seed=3)
    one(sim, b"10", 5)
    leader = check_one_leader(sim)
    followers = [n for n in NODES5 if n != leader]
    for node_id in followers[:3]:
        sim.disconnect(node_id)
    index = sim.propose(leader, b"20")
    assert index is not None
    sim.run(40)
    assert n_applied(sim, index, b"20") == 0, "committed without a majority"
    assert sim.commit_index(leader) < index
    for node_id in followers[:3]:
        sim.connect(node_id)
    index2 = one(sim, b"30", 5)
    assert index2 >= index
    applied_20 = {n: any(d == b"20" for _, d in sim.applied(n)) for n in NODES5}
    assert len(set(applied_20.values())) == 1, applied_20


def test_concurrent_proposals() -> None:
    """Several proposals in one tick get distinct consecutive indexes and all commit;
    proposals to followers are refused (None) and never appear."""
    sim = Simulation(NODES3, seed=4)
    one(sim, b"first", 3)
    leader = check_one_leader(sim)
    followers = [n for n in NODES3 if n != leader]
    indexes = []
    for i in range(5):
        idx = sim.propose(leader, f"c{i}".encode())
        assert idx is not None
        indexes.append(idx)
        assert sim.propose(followers[i % 2], f"f{i}".encode()) is None
    assert indexes == list(range(indexes[0], indexes[0] + 5))
    assert sim.run_until(lambda: all(sim.applied_index(n) >= indexes[-1] for n in NODES3), 100)
    for node_id in NODES3:
        data = [d for _, d in sim.applied(node_id)]
        assert data == [b"first", b"c0", b"c1", b"c2", b"c3", b"c4"]


def test_stale_leader_rejoins() -> None:
    """§5.3/§5.4.1: a deposed leader's uncommitted entries are overwritten when it rejoins,
    and it cannot win back leadership with its stale log."""
    sim = Simulation(NODES3, seed=5)
    one(sim, b"101", 3)
    leader1 = check_one_leader(sim)
    sim.disconnect(leader1)
    for data in (b"102", b"103", b"104"):  # never committed: the leader is alone
        assert sim.propose(leader1, data) is not None
    sim.run(5)
    one(sim, b"103", 2)  # new leader among the other two
    leader2 = check_one_leader(sim, [n for n in NODES3 if n != leader1])
    sim.disconnect(leader2)
    sim.connect(leader1)  # old leader and the remaining follower
    one(sim, b"104", 2)
    sim.connect(leader2)
    one(sim, b"105", 3)
    sim.run(20)
    for node_id in NODES3:
        assert [d for _, d in sim.applied(node_id)] == [b"101", b"103", b"104", b"105"]
    assert sim.role(leader1) is not None


def test_fast_backup_of_divergent_logs() -> None:
    """§5.3 fast backtracking: followers with 50+ conflicting uncommitted entries converge
    in a few rejected AppendEntries (one per conflicting term), not one per entry."""
    sim = Simulation(NODES5, seed=6)
    rejections: list[AppendEntriesReply] = []

    def tap(msg: Message) -> None:
        if isinstance(msg, AppendEntriesReply) and not msg.success:
            rejections.append(msg)

    sim.network.taps.append(tap)
    one(sim, b"start", 5)
    leader1 = check_one_leader(sim)
    ids = list(sim.node_ids)
    at = ids.index(leader1)
    buddy1 = ids[(at + 1) % 5]
    rest = [n for n in ids if n not in (leader1, buddy1)]

    # leader1 and buddy1 alone: 50 entries that will never commit
    sim.partition([leader1, buddy1], rest)
    for i in range(50):
        assert sim.propose(leader1, f"lost-a{i}".encode()) is not None
    sim.run(2)
    # the other three elect a leader and commit 50 entries
    sim.partition(rest, [leader1, buddy1])
    for i in range(50):
        one(sim, f"ok-a{i}".encode(), 3)
    leader2 = check_one_leader(sim, rest)
    other = next(n for n in rest if n != leader2)
    # leader2 and one follower keep 50 uncommitted entries of a newer term
    sim.partition([leader2, other], [n for n in ids if n not in (leader2, other)])
    for i in range(50):
        assert sim.propose(leader2, f"lost-b{i}".encode()) is not None
    sim.run(2)
    # leader1's side plus `other`: `other` has the newest log and must bring the two
    # stale nodes (50 conflicting entries each) up to date
    rejections.clear()
    third = [leader1, buddy1, next(n for n in rest if n not in (leader2, other))]
    sim.partition(third, [leader2, other])
    for i in range(50):
        one(sim, f"ok-b{i}".encode(), 3)
    phase1 = len(rejections)
    # everyone together: leader2/other's 50 uncommitted entries are overwritten
    rejections.clear()
    sim.heal()
    one(sim, b"end", 5)
    phase2 = len(rejections)
    # linear backtracking needs 50 rejections per stale follower (leader1 and buddy1 each
    # hold 50 conflicting entries of term 1); fast backup skips the whole term at once
    assert 1 <= phase1 <= 12, f"{phase1} rejected AppendEntries while converging the first side"
    assert phase2 <= 12, f"{phase2} rejected AppendEntries while converging the second side"
    assert sim.run_until(
        lambda: all(sim.applied_index(n) == sim.applied_index(ids[0]) for n in ids), 100
    )
    want = sim.applied(ids[0])
    assert [d for _, d in want if d.startswith(b"lost")] == []
    assert len(want) == 102
    for node_id in ids:
        assert sim.applied(node_id) == want


def test_agreement_message_count_is_bounded() -> None:
    """Ten sequential agreements in 3 nodes cost about one AppendEntries round per entry
    plus heartbeats, and an idle leader only sends heartbeats."""
    sim = Simulation(NODES3, seed=7)
    leader = check_one_leader(sim)
    one(sim, b"warmup", 3)
    before = sim.network.total_sent()
    for i in range(10):
        index = sim.propose(leader, f"x{i}".encode())
        assert index is not None
        assert sim.run_until(applied_by(sim, index, f"x{i}".encode(), 3), 50)
    used = sim.network.total_sent() - before
    # lab bound: (iters + 1 + 3) * servers RPCs, counted here as request + reply
    assert used <= (10 + 1 + 3) * 3 * 2, f"{used} messages for 10 agreements"
    idle_before = sim.network.total_sent()
    sim.run(20)  # 10 heartbeat intervals: 2 followers x (heartbeat + reply) each
    idle = sim.network.total_sent() - idle_before
    assert idle <= 10 * 2 * 2 + 4, f"{idle} messages while idle"
    assert sim.role(leader) is Role.LEADER
