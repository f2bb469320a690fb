"""A node service that runs only while its node leads (ingest and fan-out use it)."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging

from raftmq.core.types import SoftState
from raftmq.node.types import ServiceHost

logger = logging.getLogger("raftmq.services.leading")

_RETRY_DELAY = 0.5  # seconds between attempts after a failure (broker away, ...)


class LeaderService(abc.ABC):
    """Runs :meth:`lead` while the node leads; cancels it as soon as the node stops leading
    (step-down, check-quorum, a higher term) and starts it again when it leads again.

    Subclasses implement ``lead`` as a coroutine that runs until cancelled and cleans up in
    ``finally``. Failures are logged and retried while the node still leads.
    """

    name = "service"  # for logs

    def __init__(self, node: ServiceHost) -> None:
        self.node = node  # the node whose leadership gates this service
        self._started = False  # between start() and stop()
        self._task: asyncio.Task[None] | None = None  # the running lead(), if leading
        node.on_role_change(self._on_role)

    async def start(self) -> None:
        """Begin following the node's leadership."""
        self._started = True
        self._sync()

    async def stop(self) -> None:
        """Stop leading-only work and wait for its clean-up."""
        self._started = False
        await self._cancel()

    @property
    def active(self) -> bool:
        """True while the leading-only work runs."""
        return self._task is not None and not self._task.done()

    def _on_role(self, _soft: SoftState) -> None:
        self._sync()

    def _sync(self) -> None:
        want = self._started and self.node.is_leader
        if want and not self.active:
            self._task = asyncio.create_task(self._guard(), name=f"raftmq-{self.name}")
        elif not want and self._task is not None:
            task, self._task = self._task, None
            task.cancel()

    async def _cancel(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _guard(self) -> None:
        logger.info("%s: %s starts (leader)", self.node.node_id, self.name)
        try:
            while True:
                try:
                    await self.lead()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("%s: %s failed; retrying", self.node.node_id, self.name)
                await asyncio.sleep(_RETRY_DELAY)
        finally:
            logger.info("%s: %s stops", self.node.node_id, self.name)

    @abc.abstractmethod
    async def lead(self) -> None:
        """The leading-only work; runs until cancelled."""
