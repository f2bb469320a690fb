"""Graceful handover: a stopping leader hands leadership to the most caught-up voter and
waits until it took over (docs/core.md, "Graceful handover"), so that a rolling restart
never waits for an election timeout. :meth:`raftmq.node.node.Node.stop` calls it after
the services stopped and before the loop stops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from raftmq.core.types import Role, SoftState
from raftmq.errors import NodeStopped, NotLeader
from raftmq.node.loop import NodeLoop

logger = logging.getLogger("raftmq.node.handover")

# A stopping leader's handover waits at most this many (longest) election timeouts by
# default: the core gives one transfer one election timeout, so a few targets get a turn.
HANDOVER_ELECTION_TIMEOUTS = 3


def _leading(loop: NodeLoop) -> bool:
    return not loop.stopping and loop.core.role is Role.LEADER


async def hand_over(
    loop: NodeLoop,
    role_observers: list[Callable[[SoftState], None]],
    *,
    timeout: float,
    attempt: float,
) -> None:
    """While ``loop``'s core leads: transfer leadership (thesis §3.10) to the voter with
    the highest match index and wait up to ``attempt`` seconds for it to take over, then
    to the next one, each voter once; give up after that or ``timeout`` seconds (logged:
    when every node of a cluster stops at once, nobody takes over). Returns at once when
    the node does not lead or is the only voter; never raises for a failed handover."""
    if timeout <= 0 or not _leading(loop) or loop.core.most_caught_up_peer() is None:
        return
    node_id = loop.node_id
    clock = asyncio.get_running_loop()
    started = clock.time()
    left = asyncio.Event()

    def observe(soft: SoftState) -> None:
        # Done once another node is known to lead: stepping down on the target's vote
        # request comes a round trip before its first AppendEntries.
        if soft.role is not Role.LEADER and soft.leader_id not in (None, node_id):
            left.set()

    tried: list[str] = []  # every voter gets one turn, the most caught-up first
    role_observers.append(observe)
    try:
        async with asyncio.timeout(timeout):  # bounds a loop stuck in storage retries too
            while _leading(loop):
                target = loop.core.most_caught_up_peer(tried)
                if target is None:
                    raise TimeoutError  # nobody took over in its turn: they are all down
                tried.append(target)
                logger.info("%s: stopping; handing leadership to %s", node_id, target)
                try:
                    await loop.request_transfer(target)
                except (NotLeader, NodeStopped):
                    break  # no longer leading, or the loop ended
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(attempt):
                        await left.wait()
    except TimeoutError:
        logger.warning(
            "%s: nobody took over within %.1f s (tried %s); stopping anyway",
            node_id,
            clock.time() - started,
            ", ".join(tried),
        )
        return
    finally:
        role_observers.remove(observe)
    leader = loop.core.leader_id
    if loop.failure is None and leader is not None and leader != node_id:
        logger.info(
            "%s: handed leadership over to %s in %.2f s", node_id, leader, clock.time() - started
        )
    elif loop.failure is None:
        logger.info("%s: no longer leading after %.2f s", node_id, clock.time() - started)
