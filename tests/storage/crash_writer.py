"""The child side of the crash-consistency test, and the model both sides share.

A child opens a store and writes an endless, deterministic stream of Ready-shaped
batches (appends, truncations, term and vote changes, commit/applied/watermark moves,
client sessions), publishing after each durable ``save`` how many it has written. The
parent SIGKILLs it at a random moment, regenerates the same stream from the same seed
and starting state, and checks that the reopened store equals the state after some
fully committed batch (tests/storage/test_crash.py).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized

from raftmq.core.types import Entry, EntryKind, HardState
from raftmq.storage.port import ClientSession, PersistBatch, Storage
from raftmq.storage.sql import SqlStorage

CLUSTER = "crash"
NODE = "n1"


@dataclass
class Model:
    """What a store should hold; compared as a whole (``fingerprint``)."""

    hard: HardState = field(default_factory=HardState)  # last hard state
    log: list[Entry] = field(default_factory=list)  # log[i].index == i + 1
    applied: int = 0  # last applied
    watermark: int = 0  # last fan-out watermark
    sessions: dict[str, ClientSession] = field(default_factory=dict)  # by producer id

    def copy(self) -> Model:
        """An independent copy (entries are immutable)."""
        return Model(self.hard, list(self.log), self.applied, self.watermark, dict(self.sessions))

    def apply(self, batch: PersistBatch) -> None:
        """What ``save(batch)`` must do to a store."""
        if batch.hard_state is not None:
            self.hard = batch.hard_state
        if batch.truncate_from is not None:
            del self.log[batch.truncate_from - 1 :]
        self.log.extend(batch.entries)
        if batch.applied is not None:
            self.applied = batch.applied
        if batch.fanout_watermark is not None:
            self.watermark = batch.fanout_watermark
        for session in batch.sessions:
            self.sessions[session.producer_id] = session
        if batch.expire_sessions_before is not None:
            cutoff = batch.expire_sessions_before
            self.sessions = {k: s for k, s in self.sessions.items() if s.updated_index >= cutoff}

    def fingerprint(self) -> tuple[object, ...]:
        """Everything observable, in a comparable form."""
        log = tuple((e.index, e.term, int(e.kind), e.data) for e in self.log)
        sessions = tuple(sorted(self.sessions.items()))
        return (self.hard, log, self.applied, self.watermark, sessions)


def _entries(rng: random.Random, first: int, count: int, term: int) -> tuple[Entry, ...]:
    out = []
    for index in range(first, first + count):
        kind = EntryKind.NOOP if rng.random() < 0.05 else EntryKind.NORMAL
        data = b"" if kind is EntryKind.NOOP else rng.randbytes(rng.randrange(0, 200))
        out.append(Entry(index=index, term=term, kind=kind, data=data))
    return tuple(out)


def next_batch(model: Model, rng: random.Random) -> PersistBatch:
    """A valid, Ready-shaped batch for ``model`` (does not change it)."""
    hard, last = model.hard, len(model.log)
    term = max(hard.term, 1)
    roll = rng.random()
    if roll < 0.5:  # a leader or follower appending, commit moving
        new = _entries(rng, last + 1, rng.randrange(1, 9), term)
        commit = rng.randrange(hard.commit, last + len(new) + 1)
        return PersistBatch(
            hard_state=hard.model_copy(update={"term": term, "commit": commit}), entries=new
        )
    if roll < 0.65:  # a new term: vote, maybe the new leader's first entries
        state = HardState(
            term=term + rng.randrange(1, 3),
            voted_for=rng.choice(["n1", "n2", None]),
            commit=hard.commit,
        )
        return PersistBatch(
            hard_state=state, entries=_entries(rng, last + 1, rng.randrange(0, 3), state.term)
        )
    if roll < 0.85 and last > hard.commit:  # conflicting suffix replaced by a newer leader's
        cut = rng.randrange(hard.commit + 1, last + 1)
        state = hard.model_copy(update={"term": term + 1, "voted_for": None})
        new = _entries(rng, cut, rng.randrange(0, 6), state.term)
        return PersistBatch(hard_state=state, truncate_from=cut, entries=new)
    if roll < 0.97:  # driver bookkeeping
        applied = rng.randrange(model.applied, hard.commit + 1)
        producer = f"p{rng.randrange(5)}"
        old = model.sessions.get(producer)
        session = ClientSession(
            producer_id=producer,
            last_seq=(old.last_seq if old else 0) + 1,
            last_index=max(applied, 1),
            last_term=term,
            updated_index=applied,
        )
        return PersistBatch(applied=applied, fanout_watermark=applied, sessions=(session,))
    return PersistBatch(expire_sessions_before=model.applied)


def batch_stream(start: Model, seed: int, run: int) -> Iterator[tuple[PersistBatch, Model]]:
    """The run's batches with the state after each; same inputs, same stream."""
    rng = random.Random(f"{seed}:{run}")
    model = start.copy()
    while True:
        batch = next_batch(model, rng)
        model.apply(batch)
        yield batch, model.copy()


async def load_model(store: Storage) -> Model:
    """Read a whole (small) store back into a Model."""
    first, last = await store.first_index(), await store.last_index()
    log = await store.entries(first, last) if last >= first else []
    sessions = {s.producer_id: s for s in await store.sessions()}
    return Model(
        await store.hard_state(),
        log,
        await store.applied(),
        await store.fanout_watermark(),
        sessions,
    )


async def _write_forever(url: str, seed: int, run: int, written: Synchronized[int]) -> None:
    store = SqlStorage(url, cluster=CLUSTER, node_id=NODE)
    await store.open()
    start = await load_model(store)
    written.value = 0
    for count, (batch, _) in enumerate(batch_stream(start, seed, run), start=1):
        await store.save(batch)
        written.value = count  # published only once the batch is durable


def child_main(url: str, seed: int, run: int, written: Synchronized[int]) -> None:
    """Entry point of the child process (runs until killed)."""
    asyncio.run(_write_forever(url, seed, run, written))
