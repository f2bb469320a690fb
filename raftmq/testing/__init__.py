"""Public test kit: a deterministic Raft cluster simulator and safety checkers.

Use it to test your own state machine against crashes, partitions and an unreliable
network without any I/O::

    from raftmq.testing import Simulation

    sim = Simulation(["n1", "n2", "n3"], seed=7)
    sim.run_until(lambda: sim.leader() is not None, max_ticks=200)
    sim.propose(sim.leader(), b"hello")
    sim.run(ticks=10)
    assert sim.applied("n2") == [(2, b"hello")]   # index 1 is the leader's NOOP
"""

from raftmq.testing.checkers import (
    CommitRegressionViolation,
    ElectionSafetyViolation,
    LeaderCompletenessViolation,
    LivenessChecker,
    LivenessViolation,
    LogMatchingViolation,
    SafetyChecker,
    SafetyViolation,
    StateMachineSafetyViolation,
)
from raftmq.testing.network import Network
from raftmq.testing.simulation import PersistedState, Simulation, SimulationError

__all__ = [
    "CommitRegressionViolation",
    "ElectionSafetyViolation",
    "LeaderCompletenessViolation",
    "LivenessChecker",
    "LivenessViolation",
    "LogMatchingViolation",
    "Network",
    "PersistedState",
    "SafetyChecker",
    "SafetyViolation",
    "Simulation",
    "SimulationError",
    "StateMachineSafetyViolation",
]
