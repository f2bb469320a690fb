"""The node's public value types: applied writes, callbacks, services."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from pydantic import BaseModel

from raftmq.protocol.record import Record

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Applied(Generic[T]):
    """One committed write, handed to ``on_commit`` on every node in index order."""

    index: int  # log index, strictly increasing across calls
    term: int  # term of the entry
    value: T  # the decoded write
    record: Record  # the raw record (body, content type, headers, producer session)


OnCommit = Callable[[Applied[T]], Awaitable[None] | None]
"""A sync or async callback; exceptions are logged and counted, never stop the node."""

OnRecord = Callable[[int, int, Record], Awaitable[None] | None]
"""Raw form of ``on_commit``: (index, term, record), for consumers that keep bytes as bytes."""


class Service(Protocol):
    """Something that runs beside a node (ingest, fan-out, replay): started after the node
    loop starts, stopped before it stops."""

    async def start(self) -> None:
        """Begin (the node is running)."""
        ...

    async def stop(self) -> None:
        """End; must not raise."""
        ...
