"""Random fault schedules for the safety search: one seed -> one long, reproducible run.

A schedule picks a cluster size and configuration, then alternates random faults
(partitions, disconnects, crashes -- half of them in the middle of a Ready, between the
steps of production's Ready order -- restarts, network drops/delays/duplicates/reorders)
with bursts of ticks and proposals; in a third of the seeds a forging member
(:class:`~tests.sim.adversary.Adversary`) injects TimeoutNow, transfer votes,
out-of-range replies and impossible terms all along. The simulation's checkers run on
every Ready and after every tick. It ends with a recovery phase that must elect a
leader within :data:`LIVENESS_TICKS` (the liveness checker) and reach agreement again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from raftmq.core.membership import ChangeKind, ConfChange
from raftmq.node.driver import ReadyDriver
from raftmq.testing import Simulation
from raftmq.testing.checkers import LivenessChecker
from raftmq.testing.simulation import DriverFactory
from tests.sim.adversary import Adversary
from tests.sim.harness import AGREEMENT_BUDGET, ELECTION_BUDGET, applied_data, same_applied

REPLAY_COMMAND = (
    "RAFTMQ_SAFETY_SEED={seed} .venv/bin/pytest tests/sim/test_safety_search.py -k replay"
)
"""One-line command that replays a seed."""

PHASES = 100  # fault/traffic phases per schedule
RECOVERY_TICKS = 600  # ticks allowed to converge once every fault is lifted
LIVENESS_TICKS = ELECTION_BUDGET  # ticks allowed for a leader once every fault is lifted
ADVERSARY_SHARE = 1 / 3  # share of seeds with a forging member


@dataclass
class ScheduleResult:
    """What a schedule did; ``actions`` is the trace printed when a seed fails."""

    sim: Simulation  # the simulation at the end of the run
    actions: list[str] = field(default_factory=list)  # "tick: action" lines, in order
    proposed: int = 0  # proposals a leader accepted
    changes: int = 0  # membership changes a leader accepted
    adversary: Adversary | None = None  # the forging member, in the seeds that have one
    wipes: int = 0  # members whose database was lost
    lost: str | None = None  # the wiped member not back as a pinned voter yet, if any
    replaced: set[str] = field(default_factory=set)  # learners to promote once caught up

    @property
    def reads_answered(self) -> int:
        """Reads that got a read index (each checked against the writes before it)."""
        return sum(1 for read in self.sim.read_log.values() if read.index is not None)


def _split(rng: random.Random, nodes: list[str]) -> list[list[str]]:
    shuffled = nodes[:]
    rng.shuffle(shuffled)
    cuts = sorted(rng.sample(range(1, len(nodes)), rng.choice([1, 1, 2])))
    groups, start = [], 0
    for cut in [*cuts, len(nodes)]:
        groups.append(shuffled[start:cut])
        start = cut
    return groups


def run_schedule(
    seed: int,
    actions: list[str] | None = None,
    driver: DriverFactory = ReadyDriver,
    *,
    snapshots: bool = True,
    members: bool = True,
    amnesia: bool = True,
) -> ScheduleResult:
    """Run the schedule of ``seed``; raises a SafetyViolation (or AssertionError for a
    failure to recover) when something goes wrong. ``actions``, when given, receives the
    trace as it happens (so a caller still has it after a failure); ``driver`` builds the
    nodes' Ready drivers (production's, unless a test plants a bug); ``snapshots=False``
    runs the schedule as it was before snapshots existed (no snapshot is ever taken);
    ``members=False`` never changes the membership; ``amnesia=False`` never wipes a
    member's database."""
    rng = random.Random(seed)
    size = rng.choice([3, 3, 5, 5, 5, 7])
    nodes = [f"n{i}" for i in range(1, size + 1)]
    election = rng.choice([5, 10])
    options: dict[str, Any] = {
        "election_ticks": election,
        "heartbeat_ticks": rng.choice([1, 2]),
        "pre_vote": rng.random() < 0.75,
        "check_quorum": rng.random() < 0.75,
        "max_inflight": rng.choice([1, 4, 64]),
        "max_batch_entries": rng.choice([1, 1, 3, 512]),
        "max_batch_bytes": rng.choice([16, 64, 1 << 20]),
        "max_cached_entries": rng.choice([1, 8, 16_384]),
    }
    # A stream of its own, so that a seed's faults are drawn as they were before snapshots.
    snapping = random.Random(f"snapshots:{seed}")
    options["trailing_entries"] = snapping.choice([0, 0, 1, 3, 20])
    options["snapshot_chunk_bytes"] = snapping.choice([7, 16, 64, 1 << 20])
    snap_rate = snapping.choice([0.0, 0.02, 0.1, 0.3])  # per tick: some node snapshots
    if not snapshots:
        snap_rate = 0.0
    tail = rng.choice([None, 0, 1, 5])
    # Membership changes, a stream of their own: in some seeds one or two spare nodes
    # start outside the cluster, and the leader adds, promotes and removes members.
    changing = random.Random(f"members:{seed}")
    change_rate = changing.choice([0.0, 0.0, 0.03, 0.1]) if members else 0.0
    spares = [f"n{size + i}" for i in range(1, changing.randint(0, 2) + 1)] if change_rate else []
    voters = nodes
    nodes = nodes + spares
    sim = Simulation(
        nodes,
        seed=rng.getrandbits(32),
        restart_tail=tail,
        driver=driver,
        voters=voters,
        **options,
    )
    result = ScheduleResult(sim, actions if actions is not None else [])
    result.actions.append(f"0: {size} nodes, {options}, restart_tail={tail}")
    if change_rate:
        result.actions.append(f"0: spares {spares}, a membership change per tick: {change_rate}")
    net = sim.network
    # A stream of its own, so that a seed's faults are drawn as they were before.
    forging = random.Random(f"adversary:{seed}")
    if forging.random() < ADVERSARY_SHARE:
        result.adversary = Adversary(sim, forging)
        result.actions.append("0: a forging member is active until recovery")

    def note(action: str) -> None:
        result.actions.append(f"{sim.now}: {action}")

    # Lost disks, a stream of their own: in some seeds a member's database is wiped (it
    # restarts empty under another incarnation); the leader replaces and promotes it.
    losing = random.Random(f"amnesia:{seed}")
    wipe_rate = losing.choice([0.0, 0.0, 0.01, 0.03]) if amnesia else 0.0

    # Linearizable reads on random nodes (leaders and followers), a stream of their own.
    reading = random.Random(f"reads:{seed}")
    read_rate = reading.choice([0.0, 0.1, 0.3])  # per tick: a read is asked somewhere

    burst_rate = rng.choice([0.0, 0.2, 0.5])  # share of phases that are Figure 8 bursts
    for _ in range(PHASES):
        if rng.random() < burst_rate:
            _figure8_burst(sim, rng, nodes, result)
            continue
        roll = rng.random()
        node_id = rng.choice(nodes)
        if roll < 0.12:
            groups = _split(rng, nodes)
            sim.partition(*groups)
            note(f"partition {groups}")
        elif roll < 0.22:
            sim.heal()
            note("heal")
        elif roll < 0.30:
            sim.disconnect(node_id)
            note(f"disconnect {node_id}")
        elif roll < 0.38:
            sim.connect(node_id)
            note(f"connect {node_id}")
        elif roll < 0.48:
            # half the time the leader: crashes with entries in flight are the hard case
            victim = (sim.leader() or node_id) if rng.random() < 0.5 else node_id
            if rng.random() < 0.5:  # in the middle of a Ready: some steps done, not all
                sim.crash_in_ready(victim)
                note(f"crash {victim} in its next Ready")
            else:
                sim.crash(victim)
                note(f"crash {victim}")
        elif roll < 0.60:
            crashed = [n for n in nodes if not sim.is_alive(n)]
            if crashed:
                target = rng.choice(crashed)
                sim.restart(target)
                note(f"restart {target}")
        elif roll < 0.75:
            net.drop_rate = rng.choice([0.0, 0.05, 0.2, 0.4])
            lo = rng.randint(0, 2)
            net.delay_ticks = (lo, lo + rng.randint(0, 4))
            net.duplicate_rate = rng.choice([0.0, 0.05, 0.2])
            net.reorder = rng.choice([0.0, 0.1, 0.3])
            note(
                f"network drop={net.drop_rate} delay={net.delay_ticks} "
                f"dup={net.duplicate_rate} reorder={net.reorder}"
            )
        elif roll < 0.82:
            net.reliable()
            note("network reliable")
        # traffic: ticks with proposals sprinkled in
        for _ in range(rng.randint(1, 3 * election)):
            if result.adversary is not None:
                result.adversary.strike(forging.randint(0, 2))
            if snap_rate and snapping.random() < snap_rate:
                snapper = snapping.choice(nodes)
                snapshot = sim.take_snapshot(snapper)
                if snapshot is not None:
                    note(f"snapshot {snapper} at {snapshot.index}")
            if change_rate and changing.random() < change_rate and result.lost is None:
                _change_membership(sim, changing, nodes, result)
            if wipe_rate and losing.random() < wipe_rate:
                _wipe(sim, losing, nodes, result)
            _tend_lost(sim, result)
            if read_rate and reading.random() < read_rate:
                reader = reading.choice(nodes)
                if sim.read(reader) is not None:
                    note(f"read on {reader}")
            if rng.random() < 0.4:
                proposer = sim.leader() if rng.random() < 0.8 else rng.choice(nodes)
                if proposer is not None:
                    count = rng.randint(1, 4)
                    items = [f"{seed}:{result.proposed + i}".encode() for i in range(count)]
                    if sim.propose_batch(proposer, items) is not None:
                        result.proposed += count
            sim.step()

    _recover(sim, nodes, result)
    return result


def _change_membership(
    sim: Simulation, rng: random.Random, nodes: list[str], result: ScheduleResult
) -> None:
    """Ask the leader (if any) for one random single-server change."""
    leader = sim.leader()
    if leader is None:
        return
    m = sim.core(leader).membership
    choices: list[ConfChange] = []
    for node_id in nodes:
        if node_id not in m.members:
            choices += [ConfChange(ChangeKind.ADD_LEARNER, node_id)]
            choices += [ConfChange(ChangeKind.ADD_VOTER, node_id)]
        elif node_id in m.learners:
            choices += [ConfChange(ChangeKind.ADD_VOTER, node_id)]
            choices += [ConfChange(ChangeKind.REMOVE, node_id)]
        elif len(m.voters) > 1:
            choices += [ConfChange(ChangeKind.REMOVE, node_id)]
    change = rng.choice(choices)
    index = sim.change_membership(leader, change)
    if index is not None:
        result.changes += 1
        what = f"{change.kind} {change.node_id}"
        result.actions.append(f"{sim.now}: {leader} proposes {what} at {index}")


def _wipe(sim: Simulation, rng: random.Random, nodes: list[str], result: ScheduleResult) -> None:
    """Wipe one member's database, when that loses nothing a correct cluster needs: every
    node's durable configuration pins every member to its database (a member lost before
    then is not caught: raftmq.core.membership), no other wiped member is outstanding, and
    every configuration that counts the victim keeps a majority without it."""
    if result.lost is not None:
        return
    configs = [sim.persisted_membership(n) for n in nodes]
    configs += [sim.core(n).membership for n in nodes if sim.is_alive(n)]  # unsaved too
    for n in nodes:
        for m in configs:
            if n in m.members and dict(m.incarnations).get(n) != sim.incarnation(n):
                return  # not pinned everywhere yet
    victim = rng.choice(nodes)
    if any(victim in m.voters and len(m.voters) < 3 for m in configs):
        return
    sim.wipe(victim)
    result.wipes += 1
    result.lost = victim
    result.actions.append(f"{sim.now}: wipe {victim} (its database is lost)")


def _tend_lost(sim: Simulation, result: ScheduleResult) -> None:
    """The operator of lost disks: a member the leader names a stranger (it answers from
    another database than its pin's) is replaced -- a learner pinned to its new database
    -- and promoted once it caught up."""
    leader = sim.leader()
    if leader is None:
        return
    core = sim.core(leader)
    m = core.membership
    pins = dict(m.incarnations)
    lost = result.lost
    back = lost is not None and (
        lost not in m.members or (lost in m.voters and pins.get(lost) == sim.incarnation(lost))
    )
    if back and not core.config_pending:
        result.lost = None  # back (or removed), and committed: another may be wiped
    change: ConfChange | None = None
    strangers = [n for n, _ in core.status().strangers if n != leader and n in m.members]
    if strangers:
        change = ConfChange(ChangeKind.REPLACE, strangers[0])
    else:
        for node in sorted(result.replaced):
            if node not in m.learners:
                result.replaced.discard(node)  # promoted, or removed
                continue
            progress = core.status().progress.get(node)
            if pins.get(node) == sim.incarnation(node) and (
                progress is not None and progress.match >= core.commit_index
            ):
                change = ConfChange(ChangeKind.ADD_VOTER, node)
                break
    if change is None:
        return
    index = sim.change_membership(leader, change)
    if index is not None:
        if change.kind is ChangeKind.REPLACE:
            result.replaced.add(change.node_id)
        result.actions.append(
            f"{sim.now}: {leader} proposes {change.kind} {change.node_id} at {index}"
        )


def _figure8_burst(
    sim: Simulation, rng: random.Random, nodes: list[str], result: ScheduleResult
) -> None:
    """§5.4.2 Figure 8 pressure: leaders crash right after proposing, with their
    AppendEntries still in flight, while a majority is kept running."""
    majority = len(nodes) // 2 + 1
    for _ in range(rng.randint(5, 20)):
        leader = None
        for node_id in sim.alive():
            item = f"{sim.seed}:{result.proposed}".encode()
            if sim.propose(node_id, item) is not None:
                result.proposed += 1
                leader = node_id
        if leader is not None and rng.random() < 0.5:
            sim.crash_in_ready(leader)  # e.g. its AppendEntries out, its save not done
            result.actions.append(f"{sim.now}: figure 8: crash leader {leader} in its Ready")
        sim.run(rng.randint(0, 2) if rng.random() < 0.9 else rng.randint(3, 20))
        if leader is not None and sim.is_alive(leader):
            sim.crash(leader)
            result.actions.append(f"{sim.now}: figure 8: crash leader {leader}")
        crashed = [n for n in nodes if not sim.is_alive(n)]
        while len(nodes) - len(crashed) < majority:
            back = crashed.pop(rng.randrange(len(crashed)))
            sim.restart(back)
            result.actions.append(f"{sim.now}: figure 8: restart {back}")


def _recover(sim: Simulation, nodes: list[str], result: ScheduleResult) -> None:
    """Lift every fault and require the cluster to agree on one more entry, everywhere."""
    sim.heal()
    sim.network.reliable()
    sim.cancel_crashes_in_ready()
    for node_id in nodes:
        if not sim.is_alive(node_id):
            sim.restart(node_id)
    result.actions.append(f"{sim.now}: recovery: heal, reliable network, restart all")
    liveness = LivenessChecker(LIVENESS_TICKS)
    liveness.arm(sim.now)
    marker = b"recovered"
    members = nodes
    deadline = sim.now + RECOVERY_TICKS
    while sim.now < deadline:
        liveness.observe(sim.now, sim.leader())
        _tend_lost(sim, result)
        # like the lab's one(): a stale leader's proposal may be overwritten; retry
        leader = sim.leader()
        index = sim.propose(leader, marker) if leader is not None else None
        if index is None:
            sim.step()
            continue
        # Everyone in the leader's configuration (removed nodes and spares never added
        # get nothing more, and do not count: a removed node may apply it too), while
        # the operator replaces a member that lost its database.
        members = sorted(sim.core(leader).membership.members) if leader else nodes

        def done(index: int = index, members: list[str] = members) -> bool:
            _tend_lost(sim, result)
            return all(applied_data(sim, n, index) == marker for n in members)

        if sim.run_until(done, min(AGREEMENT_BUDGET, max(1, deadline - sim.now))):
            break
    else:
        raise AssertionError(
            f"cluster did not agree on a new entry within {RECOVERY_TICKS} ticks of recovery: "
            + ", ".join(
                f"{n} role {sim.role(n)} term {sim.term(n)} applied {sim.applied_index(n)}"
                for n in nodes
            )
        )
    # (members: the configuration of the leader whose marker everyone applied)
    assert sim.run_until(lambda: same_applied(sim, members), AGREEMENT_BUDGET), (
        "applied logs differ after recovery"
    )
