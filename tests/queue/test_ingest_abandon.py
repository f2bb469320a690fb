"""A batch whose ingest stops or fails lets go of its records' commit futures cleanly.

Found in a burst of 10,000-record batches across leader changes: ingest is cancelled
when the node loses leadership, while a batch waits for its records' commits; the node
then fails those futures with NotLeader and nobody ever retrieves them, so asyncio
logged "Future exception was never retrieved" once per record (7,000 ERROR lines on
one node). The batch path now waits through :func:`raftmq.services.ingest.committed_all`
and lets go through :func:`raftmq.services.ingest.abandon`.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from raftmq.errors import NotLeader
from raftmq.protocol.receipts import Commit
from raftmq.services.ingest import abandon, committed_all

Waiter = Callable[[Sequence[asyncio.Future[Commit]]], Awaitable[Any]]


def _reports_after_cancelled_wait(wait: Waiter) -> list[dict[str, Any]]:
    """Cancel a task waiting with ``wait`` for three commits, then fail them as the node
    does when it loses leadership; what does asyncio report once they are gone?"""
    loop = asyncio.new_event_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))

    async def scenario() -> None:
        futures: list[asyncio.Future[Commit]] = [loop.create_future() for _ in range(3)]
        waiter = asyncio.ensure_future(wait(futures))
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert waiter.cancelled()
        for future in futures:  # the node's fail_pending: only futures still pending
            if not future.done():
                future.set_exception(NotLeader(None, "not the leader"))
        del futures, waiter

    try:
        loop.run_until_complete(scenario())
        gc.collect()
    finally:
        loop.close()
    return reported


def test_a_cancelled_batch_wait_leaves_nothing_unretrieved() -> None:
    assert _reports_after_cancelled_wait(lambda fs: committed_all(fs, timeout=60)) == []


def test_a_bare_wait_cancelled_leaves_every_failure_unretrieved() -> None:
    """What the batch path did before: asyncio.wait, cancelled, leaves the futures to the
    node, whose NotLeader nobody retrieves."""
    reported = _reports_after_cancelled_wait(lambda fs: asyncio.wait(fs, timeout=60))
    assert [type(r.get("exception")) for r in reported] == [NotLeader] * 3
    assert all("never retrieved" in r["message"] for r in reported)


async def test_the_first_failure_is_returned_and_every_future_abandoned() -> None:
    loop = asyncio.get_running_loop()
    ok: asyncio.Future[Commit] = loop.create_future()
    ok.set_result(Commit(index=1, term=1))
    failed: asyncio.Future[Commit] = loop.create_future()
    failed.set_exception(NotLeader(None, "not the leader"))
    late: asyncio.Future[Commit] = loop.create_future()
    failure = await committed_all([ok, late, failed], timeout=0.01)
    assert isinstance(failure, TimeoutError)  # the first in batch order: `late`, timed out
    assert late.cancelled()
    failure = await committed_all([ok, failed], timeout=60)
    assert isinstance(failure, NotLeader)
    assert await committed_all([ok], timeout=60) is None


def test_abandon_cancels_the_pending_and_retrieves_the_failed() -> None:
    loop = asyncio.new_event_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        pending: asyncio.Future[Commit] = loop.create_future()
        failed: asyncio.Future[Commit] = loop.create_future()
        failed.set_exception(NotLeader(None, "not the leader"))
        abandon([pending, failed])
        assert pending.cancelled() and not failed.cancelled()
        del pending, failed
        gc.collect()
    finally:
        loop.close()
    assert reported == []
