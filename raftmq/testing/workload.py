"""A steady stream of writes through the writes queue, with when each committed: the load
of rolling-restart tests and benchmarks (tests/node/test_handover_processes.py,
benchmarks/membership.py)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass
from types import TracebackType

from raftmq.client.producer import Producer


@dataclass(frozen=True, slots=True)
class Committed:
    """One write's receipt, as the producer saw it."""

    body: bytes  # what was written
    index: int | None  # where it committed (None: a duplicate whose place is unknown)
    at: float  # time.monotonic() when the receipt arrived


class ContinuousWrites:
    """``writers`` tasks publishing on one Producer, one write each at a time, until the
    block ends: ``async with ContinuousWrites(url, cluster) as load: ...``. A write that
    fails is kept in ``failures`` (the writers go on)."""

    def __init__(self, amqp_url: str, cluster: str, *, writers: int = 4) -> None:
        self.producer = Producer(amqp_url, cluster, linger=0.0)
        self.writers = writers  # concurrent writes in flight
        self.committed: list[Committed] = []  # in receipt order
        self.failures: list[BaseException] = []  # writes that raised
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._next = 0

    async def __aenter__(self) -> ContinuousWrites:
        await self.producer.start()
        self._tasks = [asyncio.create_task(self._write()) for _ in range(self.writers)]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        try:
            # The writes in flight finish (their receipts may take a leader change).
            await asyncio.wait_for(asyncio.gather(*self._tasks), 120)
        finally:
            for task in self._tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                await self.producer.close()

    async def _write(self) -> None:
        while not self._stop.is_set():
            body = b"load-%d" % self._next
            self._next += 1
            try:
                receipt = await self.producer.publish(body, timeout=120)
            except Exception as exc:  # kept for the caller to judge
                self.failures.append(exc)
                continue
            self.committed.append(Committed(body, receipt.index, time.monotonic()))

    async def wait_for(self, count: int, *, timeout: float = 60.0) -> None:
        """Wait until ``count`` writes committed in all (a deadline, never a fixed sleep)."""
        async with asyncio.timeout(timeout):
            while len(self.committed) < count:  # noqa: ASYNC110 - receipts come from other tasks
                await asyncio.sleep(0.02)

    def longest_gap(self, since: float, until: float | None = None) -> float:
        """The longest time without a commit receipt between ``since`` and ``until``
        (``time.monotonic()`` values; None: the last receipt), both ends counted."""
        times = [c.at for c in self.committed if c.at >= since and (until is None or c.at <= until)]
        if not times:
            return (until or time.monotonic()) - since
        marks = [since, *times] + ([until] if until is not None else [])
        return max(b - a for a, b in itertools.pairwise(marks))
