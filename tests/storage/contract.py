"""The storage contract: one test class every Storage adapter must pass.

Subclasses provide the ``factory`` fixture: ``factory(cluster, node_id)`` returns a new,
unopened store over the SAME underlying data, so tests can reopen ("restart") it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from raftmq.core.log import RaftLog
from raftmq.core.membership import encode, membership
from raftmq.core.types import INCARNATION_PATTERN, Entry, EntryKind, HardState
from raftmq.errors import StorageError, StorageRefused, StoreMismatch
from raftmq.storage.memory import MemoryStorage
from raftmq.storage.port import ClientSession, LogExtent, PersistBatch, Snapshot, Storage
from raftmq.storage.sql import SqlStorage

StoreFactory = Callable[[str, str], Storage]


class FakeClock:
    """A wall clock (seconds) that moves only when a test sets ``now``."""

    def __init__(self, now: float) -> None:
        self.now = now  # what the clock reads

    def __call__(self) -> float:
        return self.now


def stamped_by(store: Storage, clock: FakeClock) -> Storage:
    """``store``, stamping the entries it saves with ``clock`` (every adapter takes one)."""
    assert isinstance(store, MemoryStorage | SqlStorage)
    store.clock = clock
    return store


def sized(lo: int, hi: int, term: int = 1) -> tuple[Entry, ...]:
    """Entries lo..hi whose payload is as many bytes as their index."""
    return tuple(Entry(index=i, term=term, data=b"x" * i) for i in range(lo, hi + 1))


def entries(lo: int, hi: int, term: int, size: int = 10) -> tuple[Entry, ...]:
    """Entries lo..hi of ``term`` with ``size``-byte payloads that name their index."""
    return tuple(
        Entry(index=i, term=term, data=(f"{i}:".encode() + b"x" * size)[:size])
        for i in range(lo, hi + 1)
    )


class StorageContract:
    """Behaviour shared by MemoryStorage and SqlStorage (SQLite and Postgres)."""

    @pytest.fixture
    def factory(self) -> StoreFactory:
        raise NotImplementedError

    async def opened(self, factory: StoreFactory, cluster: str = "c", node: str = "n1") -> Storage:
        store = factory(cluster, node)
        await store.open()
        return store

    async def test_fresh_store_is_empty(self, factory: StoreFactory) -> None:
        store = await self.opened(factory)
        try:
            state = await store.initial_state()
            assert state.hard_state == HardState()
            assert (state.first_index, state.last_index, state.term_runs, state.tail) == (
                1,
                0,
                (),
                (),
            )
            assert state.applied == 0
            assert await store.first_index() == 1
            assert await store.last_index() == 0
            assert await store.term_at(0) == 0
            assert await store.term_at(1) is None
            assert await store.entries(1, 10) == []
            assert await store.snapshot() is None
            assert await store.sessions() == []
            assert await store.applied() == 0
            assert await store.fanout_watermark() == 0
        finally:
            await store.close()

    async def test_saved_state_survives_reopen(self, factory: StoreFactory) -> None:
        store = await self.opened(factory)
        hard = HardState(term=3, voted_for="n2", commit=4)
        batch = PersistBatch(hard_state=hard, entries=entries(1, 5, 2), applied=3)
        await store.save(batch)
        await store.save(PersistBatch(fanout_watermark=2))
        await store.close()
        await store.close()  # idempotent
        again = await self.opened(factory)
        try:
            state = await again.initial_state()
            assert state.hard_state == hard
            assert (state.first_index, state.last_index) == (1, 5)
            assert state.tail == entries(1, 5, 2)
            assert state.applied == 3
            assert await again.hard_state() == hard
            assert await again.fanout_watermark() == 2
            assert await again.term_at(5) == 2
        finally:
            await again.close()

    async def test_truncate_and_append_in_one_batch(self, factory: StoreFactory) -> None:
        store = await self.opened(factory)
        try:
            await store.save(PersistBatch(hard_state=HardState(term=1), entries=entries(1, 6, 1)))
            await store.save(PersistBatch(entries=entries(7, 8, 2)))
            new = entries(4, 5, 3)
            await store.save(
                PersistBatch(hard_state=HardState(term=3), truncate_from=4, entries=new)
            )
            assert await store.last_index() == 5
            assert await store.entries(1, 100) == [*entries(1, 3, 1), *new]
            assert await store.term_at(4) == 3
            assert await store.term_at(6) is None
            state = await store.initial_state()
            assert state.term_runs == ((1, 1), (4, 3))
            # A truncation alone shortens the log.
            await store.save(PersistBatch(truncate_from=2))
            assert await store.entries(1, 100) == list(entries(1, 1, 1))
            assert (await store.initial_state()).term_runs == ((1, 1),)
        finally:
            await store.close()

    async def test_term_runs_and_tail_limit(self, factory: StoreFactory) -> None:
        store = await self.opened(factory)
        try:
            await store.save(PersistBatch(entries=entries(1, 3, 1)))
            await store.save(PersistBatch(entries=entries(4, 4, 2)))
            await store.save(PersistBatch(entries=entries(5, 9, 5)))
            state = await store.initial_state(tail_entries=2)
            assert state.term_runs == ((1, 1), (4, 2), (5, 5))
            assert state.tail == entries(8, 9, 5)
            assert (await store.initial_state(tail_entries=0)).tail == ()
        finally:
            await store.close()

    async def test_entries_bounded_by_bytes(self, factory: StoreFactory) -> None:
        store = await self.opened(factory)
        try:
            await store.save(PersistBatch(entries=entries(1, 600, 1, size=10)))
            assert len(await store.entries(1, 600, max_bytes=35)) == 3
            assert len(await store.entries(1, 600, max_bytes=30)) == 3
            assert len(await store.entries(1, 600, max_bytes=1)) == 1  # at least one
            got = await store.entries(10, 600, max_bytes=4_000)
            assert [e.index for e in got] == list(range(10, 410))
            assert await store.entries(590, 1_000) == list(entries(590, 600, 1))
            assert await store.entries(601, 700) == []
            assert await store.entries(5, 4) == []
        finally:
            await store.close()

    async def test_entry_kinds_and_binary_payloads(self, factory: StoreFactory) -> None:
        store = await self.opened(factory)
        try:
            batch = (
                Entry(index=1, term=1, kind=EntryKind.NOOP),
                Entry(index=2, term=1, kind=EntryKind.NORMAL, data=bytes(range(256))),
                Entry(index=3, term=1, kind=EntryKind.CONFIG, data=b"\x00voters"),
            )
            await store.save(PersistBatch(entries=batch))
            assert await store.entries(1, 3) == list(batch)
        finally:
            await store.close()

    async def test_invalid_batches_write_nothing(self, factory: StoreFactory) -> None:
        store = await self.opened(factory)
        try:
            await store.save(PersistBatch(hard_state=HardState(term=5), entries=entries(1, 3, 5)))
            bad = [
                PersistBatch(hard_state=HardState(term=4), entries=entries(4, 4, 5)),
                PersistBatch(entries=entries(5, 6, 5)),  # gap
                PersistBatch(truncate_from=2, entries=entries(3, 3, 5)),  # not after cut
                PersistBatch(hard_state=HardState(term=6), entries=entries(3, 3, 6)),  # overlap
            ]
            for batch in bad:
                with pytest.raises(StorageError):
                    await store.save(batch)
            assert await store.hard_state() == HardState(term=5)
            assert await store.entries(1, 10) == list(entries(1, 3, 5))
        finally:
            await store.close()

    async def test_retried_save_that_landed_is_accepted(self, factory: StoreFactory) -> None:
        """A save whose commit landed but whose answer was lost is retried as the same
        batch: the store recognises its entries (same indexes and terms) and accepts it,
        writing nothing twice; a batch that overlaps with other terms is still refused."""
        store = await self.opened(factory)
        try:
            session = ClientSession("p", last_seq=2, last_index=2, last_term=1, updated_index=2)
            landed = PersistBatch(
                hard_state=HardState(term=1, voted_for="n1", commit=1),
                entries=entries(1, 3, 1),
                applied=1,
                sessions=(session,),
            )
            await store.save(landed)
            await store.save(landed)  # the retry
            assert await store.entries(1, 10) == list(entries(1, 3, 1))
            assert (await store.initial_state()).term_runs == ((1, 1),)
            assert await store.session("p") == session
            await store.save(PersistBatch(entries=entries(4, 5, 1)))  # the log goes on
            assert await store.last_index() == 5
            for bad in (
                PersistBatch(entries=entries(4, 6, 2)),  # overlaps with other terms
                PersistBatch(entries=entries(2, 3, 1)),  # would leave 4..5 behind it
            ):
                with pytest.raises(StorageRefused, match="does not continue the log"):
                    await store.save(bad)
            assert await store.entries(1, 10) == list(entries(1, 5, 1))
        finally:
            await store.close()

    async def test_values_no_column_holds_are_refused_before_writing(
        self, factory: StoreFactory
    ) -> None:
        """Every adapter holds the same values (keys of at most 200 characters, valid
        UTF-8 without NUL, int64): what one refuses, all refuse, writing nothing, so the
        node can check what it will save before it accepts it."""
        store = await self.opened(factory)
        try:
            longest = ClientSession("k" * 200, 1, 1, 1, 1)
            await store.save(PersistBatch(sessions=(longest,)))
            assert await store.session("k" * 200) == longest
            unstorable = [
                ClientSession("mid:" + "m" * 255, 1, 1, 1, 1),  # longer than the column
                ClientSession("\ud800", 1, 1, 1, 1),  # not UTF-8
                ClientSession("a\x00b", 1, 1, 1, 1),  # NUL: Postgres text cannot hold it
                ClientSession("p", 10**30, 1, 1, 1),  # outside int64
                ClientSession("p", 3, 3, 1, 3, floor=1, above=(1 << 63,)),
            ]
            for session in unstorable:
                with pytest.raises(StorageRefused):
                    await store.save(PersistBatch(applied=7, sessions=(session,)))
            with pytest.raises(StorageRefused):
                await store.save(PersistBatch(applied=1 << 63))
            assert await store.sessions() == [longest]
            assert await store.applied() == 0
        finally:
            await store.close()

    async def test_sessions_upsert_and_expire(self, factory: StoreFactory) -> None:
        store = await self.opened(factory)
        try:
            a1 = ClientSession("a", last_seq=1, last_index=1, last_term=1, updated_index=1)
            b1 = ClientSession("b", last_seq=7, last_index=2, last_term=1, updated_index=2)
            await store.save(PersistBatch(sessions=(a1, b1)))
            a2 = ClientSession("a", last_seq=2, last_index=5, last_term=2, updated_index=5)
            await store.save(PersistBatch(sessions=(a2,)))
            assert await store.session("a") == a2
            assert await store.sessions() == [a2, b1]
            await store.save(PersistBatch(expire_sessions_before=3))
            assert await store.sessions() == [a2]
            assert await store.session("b") is None
        finally:
            await store.close()

    async def test_session_seq_set_round_trips(self, factory: StoreFactory) -> None:
        store = await self.opened(factory)
        try:
            legacy = ClientSession("l", last_seq=4, last_index=9, last_term=1, updated_index=9)
            assert legacy.floor == 4 and legacy.above == ()  # floor defaults to last_seq
            gap = ClientSession("g", 12, 30, 2, 31, floor=5, above=(7, 8, 12))
            empty = ClientSession("e", 0, 0, 0, 3, floor=0)
            await store.save(PersistBatch(sessions=(legacy, gap, empty)))
            assert await store.session("g") == gap
            assert await store.sessions() == [empty, gap, legacy]
            filled = ClientSession("g", 12, 30, 2, 33, floor=8, above=(12,))
            await store.save(PersistBatch(sessions=(filled,)))
            assert await store.session("g") == filled
        finally:
            await store.close()

    async def test_the_configuration_is_handed_back_on_restart(self, factory: StoreFactory) -> None:
        """The core rebuilds its membership from the snapshot's configuration (learners
        too) and the CONFIG entries after it (raftmq.core.membership); storage hands both
        back, and keeps an old snapshot's plain list of voters readable."""
        store = await self.opened(factory)
        config = encode(membership(["n1", "n2", "n3"], ["n4"]))
        later = encode(membership(["n1", "n2", "n3", "n4"]))
        log = [
            *entries(1, 3, 1),
            Entry(index=4, term=1, kind=EntryKind.CONFIG, data=config),
            *entries(5, 6, 1),
            Entry(index=7, term=2, kind=EntryKind.CONFIG, data=later),
            *entries(8, 9, 2),
        ]
        await store.save(PersistBatch(entries=tuple(log)))
        state = await store.initial_state(tail_entries=0)
        assert state.config_entries == (log[3], log[6])  # none of them in the tail asked
        await store.save_snapshot(Snapshot(5, 1, ("n1", "n2", "n3"), b"s", ("n4",)))
        await store.close()
        again = await self.opened(factory)
        try:
            state = await again.initial_state()
            assert state.snapshot == Snapshot(5, 1, ("n1", "n2", "n3"), b"s", ("n4",))
            assert state.config_entries == (log[6],)  # the one before is in the snapshot
            await again.save_snapshot(Snapshot(8, 2, ("n1", "n2", "n3", "n4"), b"t"))
            state = await again.initial_state()
            assert (state.snapshot.voters, state.snapshot.learners) == (  # type: ignore[union-attr]
                ("n1", "n2", "n3", "n4"),
                (),
            )
            assert state.config_entries == ()
        finally:
            await again.close()

    async def test_the_incarnation_is_made_with_the_store_and_kept(
        self, factory: StoreFactory
    ) -> None:
        """A store has an incarnation id from its creation (what tells a member's
        database from a new one under its id, raftmq.core.membership), the same after
        saves and a reopen."""
        store = await self.opened(factory)
        first = (await store.initial_state()).incarnation
        assert re.fullmatch(INCARNATION_PATTERN, first)
        await store.save(PersistBatch(hard_state=HardState(term=3), entries=entries(1, 2, 3)))
        await store.close()
        again = await self.opened(factory)
        try:
            assert (await again.initial_state()).incarnation == first
        finally:
            await again.close()

    async def test_a_snapshot_keeps_its_configurations_pins(self, factory: StoreFactory) -> None:
        """The incarnations a configuration pins come back with the snapshot that holds
        it, taken or installed (a snapshot without pins keeps the older column form)."""
        pins = (("n1", "a" * 32), ("n3", "b" * 32))
        store = await self.opened(factory)
        try:
            await store.save(PersistBatch(entries=entries(1, 4, 1)))
            taken = Snapshot(3, 1, ("n1", "n2", "n3"), b"s", ("n4",), pins)
            await store.save_snapshot(taken)
            assert (await store.initial_state()).snapshot == taken
            installed = Snapshot(9, 2, ("n1", "n2"), b"t", (), (("n2", "c" * 32),))
            await store.install_snapshot(installed, PersistBatch(hard_state=HardState(term=2)))
            await store.close()
            store = await self.opened(factory)
            assert (await store.initial_state()).snapshot == installed
        finally:
            await store.close()

    async def test_taken_snapshot_keeps_the_log_and_compaction_is_exact(
        self, factory: StoreFactory
    ) -> None:
        """A snapshot taken here leaves the log alone; compact deletes up to an index the
        snapshot covers and nothing above it; reopening gives the same bounds, terms and
        snapshot, and an InitialState the core's log accepts."""
        store = await self.opened(factory)
        await store.save(PersistBatch(entries=(*entries(1, 5, 1), *entries(6, 10, 2))))
        snap = Snapshot(index=7, term=2, voters=("n1", "n2", "n3"), data=b"state@7")
        await store.save_snapshot(snap)
        assert (await store.first_index(), await store.last_index()) == (1, 10)
        await store.save_snapshot(Snapshot(3, 1, ("n1",), b"old"))  # older: ignored
        assert await store.snapshot() == snap
        for bad in (Snapshot(11, 2, (), b"beyond"), Snapshot(8, 1, (), b"wrong term")):
            with pytest.raises(StorageRefused):
                await store.save_snapshot(bad)
        with pytest.raises(StorageRefused):
            await store.compact(8)  # not covered by the snapshot
        assert await store.first_index() == 1
        await store.compact(5)
        assert (await store.first_index(), await store.last_index()) == (6, 10)
        assert await store.term_at(5) == 1
        assert await store.term_at(4) is None
        assert await store.entries(1, 10) == []
        assert await store.entries(6, 10) == list(entries(6, 10, 2))  # nothing above 5 gone
        await store.close()
        again = await self.opened(factory)
        try:
            state = await again.initial_state()
            assert (state.first_index, state.last_index) == (6, 10)
            assert state.term_runs == ((5, 1), (6, 2))
            assert state.tail == entries(6, 10, 2)
            assert state.snapshot == snap
            assert RaftLog(state).term(5) == 1
            await again.compact(2)  # below the first index: nothing to do
            await again.compact(7)
            assert await again.entries(8, 10) == list(entries(8, 10, 2))
            with pytest.raises(StorageRefused):
                await again.save(PersistBatch(truncate_from=7))
        finally:
            await again.close()
        third = await self.opened(factory)
        try:
            state = await third.initial_state()
            assert (state.first_index, state.last_index, state.term_runs) == (8, 10, ((7, 2),))
            assert await third.term_at(7) == 2
            assert RaftLog(state).term(7) == 2
        finally:
            await third.close()

    async def test_install_replaces_the_log_in_one_step_and_reopens_exactly(
        self, factory: StoreFactory
    ) -> None:
        store = await self.opened(factory)
        old = ClientSession("p", 1, 2, 1, 2)
        hard = HardState(term=1, voted_for="n2", commit=3)
        await store.save(
            PersistBatch(hard_state=hard, entries=entries(1, 10, 1), applied=3, sessions=(old,))
        )
        snap = Snapshot(index=20, term=3, voters=("n1", "n2"), data=b"state@20")
        session = ClientSession("p", 5, 19, 3, 19)
        batch = PersistBatch(
            hard_state=HardState(term=3, voted_for=None, commit=20),
            entries=entries(21, 22, 3),
            applied=2,  # deferred bookkeeping from before: the snapshot's index wins
            fanout_watermark=18,
            sessions=(session,),
        )
        await store.install_snapshot(snap, batch)
        expected_hard = HardState(term=3, voted_for=None, commit=20)

        async def check(s: Storage) -> None:
            assert await s.snapshot() == snap
            assert (await s.first_index(), await s.last_index()) == (21, 22)
            assert await s.term_at(20) == 3
            assert await s.term_at(10) is None
            assert await s.entries(1, 22) == []
            assert await s.entries(21, 22) == list(entries(21, 22, 3))
            assert await s.hard_state() == expected_hard
            assert (await s.applied(), await s.fanout_watermark()) == (20, 18)
            assert await s.sessions() == [session]
            state = await s.initial_state()
            assert (state.first_index, state.last_index, state.applied) == (21, 22, 20)
            assert state.term_runs == ((20, 3),)
            assert state.tail == entries(21, 22, 3)
            assert state.snapshot == snap
            assert RaftLog(state).term(20) == 3

        await check(store)
        await store.install_snapshot(snap, batch)  # a retry of the install that landed
        await check(store)
        with pytest.raises(StorageRefused):  # an older snapshot
            await store.install_snapshot(Snapshot(15, 3, ("n1",), b"old"), PersistBatch())
        with pytest.raises(StorageRefused):  # same index, another term
            await store.install_snapshot(Snapshot(20, 2, ("n1",), b"other"), PersistBatch())
        await check(store)
        await store.close()
        again = await self.opened(factory)
        try:
            await check(again)
            # Without a hard state in the batch the commit index still reaches the snapshot.
            await again.install_snapshot(Snapshot(30, 4, ("n1",), b"s30"), PersistBatch())
            assert (await again.hard_state()).commit == 30
            assert (await again.first_index(), await again.last_index()) == (31, 30)
            assert await again.applied() == 30
        finally:
            await again.close()

    async def test_refused_install_changes_nothing(self, factory: StoreFactory) -> None:
        store = await self.opened(factory)
        hard = HardState(term=2, voted_for="n1", commit=3)
        await store.save(PersistBatch(hard_state=hard, entries=entries(1, 6, 2), applied=3))
        snap = Snapshot(index=9, term=3, voters=("n1",), data=b"s9")
        gap = PersistBatch(hard_state=HardState(term=3, commit=9), entries=entries(12, 12, 3))
        backwards = PersistBatch(hard_state=HardState(term=1, commit=9))
        for batch in (gap, backwards):
            with pytest.raises(StorageRefused):
                await store.install_snapshot(snap, batch)
        await store.close()
        again = await self.opened(factory)
        try:
            assert await again.snapshot() is None
            assert await again.hard_state() == hard
            assert (await again.first_index(), await again.last_index()) == (1, 6)
            assert await again.entries(1, 6) == list(entries(1, 6, 2))
            assert await again.applied() == 3
        finally:
            await again.close()

    async def test_another_node_or_cluster_is_refused(self, factory: StoreFactory) -> None:
        store = await self.opened(factory, "c", "n1")
        await store.save(PersistBatch(hard_state=HardState(term=2), entries=entries(1, 2, 2)))
        await store.close()
        for cluster, node in (("c", "n2"), ("other", "n1")):
            intruder = factory(cluster, node)
            with pytest.raises(StoreMismatch, match="belongs to node 'n1' of cluster 'c'"):
                await intruder.open()
            await intruder.close()
        owner = await self.opened(factory, "c", "n1")
        try:
            assert await owner.hard_state() == HardState(term=2)
            assert await owner.last_index() == 2
        finally:
            await owner.close()

    async def test_cluster_id_is_saved_once_and_never_replaced(self, factory: StoreFactory) -> None:
        """A fresh database has no cluster id; the first one saved stays across reopens;
        saving it again does nothing; another id, an empty or an over-long one is refused
        and nothing changes (the database of one bootstrap never joins another)."""
        store = await self.opened(factory)
        try:
            assert await store.cluster_id() is None
            await store.save(PersistBatch(hard_state=HardState(term=1), entries=entries(1, 1, 1)))
            await store.save_cluster_id("a" * 32)
            await store.save_cluster_id("a" * 32)  # idempotent: a retried start
            for bad in ("", "x" * 65):
                with pytest.raises(StorageRefused):
                    await store.save_cluster_id(bad)
            with pytest.raises(StoreMismatch, match="belongs to cluster id " + "a" * 32):
                await store.save_cluster_id("b" * 32)
        finally:
            await store.close()
        again = await self.opened(factory)
        try:
            assert await again.cluster_id() == "a" * 32
            assert await again.last_index() == 1
        finally:
            await again.close()

    async def test_operations_need_open(self, factory: StoreFactory) -> None:
        store = factory("c", "n1")
        with pytest.raises(StorageError):
            await store.save(PersistBatch(hard_state=HardState(term=1)))
        with pytest.raises(StorageError):
            await store.last_index()
        await store.close()

    async def test_extent_follows_saves_and_truncations_and_survives_reopen(
        self, factory: StoreFactory
    ) -> None:
        """extent() counts the stored entries and their payload bytes and gives the save
        time of the first one; a truncation takes its entries out, a truncation of the
        whole log its time too; a reopened store gives the same extent."""
        clock = FakeClock(1_000.0)
        store = stamped_by(await self.opened(factory), clock)
        assert await store.extent() == LogExtent(1, 0, 0, 0, None)
        await store.save(PersistBatch(hard_state=HardState(term=1), entries=entries(1, 5, 1)))
        assert await store.extent() == LogExtent(1, 5, 5, 50, 1_000.0)
        clock.now = 1_010.5
        await store.save(PersistBatch(entries=entries(6, 8, 1, size=7)))
        assert await store.extent() == LogExtent(1, 8, 8, 71, 1_000.0)
        await store.save(PersistBatch(truncate_from=7, entries=entries(7, 7, 2, size=3)))
        assert await store.extent() == LogExtent(1, 7, 7, 60, 1_000.0)
        await store.save(PersistBatch(truncate_from=6))
        assert await store.extent() == LogExtent(1, 5, 5, 50, 1_000.0)
        await store.save(PersistBatch(applied=2))  # no log change
        assert await store.extent() == LogExtent(1, 5, 5, 50, 1_000.0)
        clock.now = 1_020.25
        await store.save(PersistBatch(truncate_from=1, entries=entries(1, 2, 3, size=4)))
        expected = LogExtent(1, 2, 2, 8, 1_020.25)
        assert await store.extent() == expected
        await store.close()
        again = await self.opened(factory)
        try:
            assert await again.extent() == expected
        finally:
            await again.close()

    async def test_extent_follows_compaction_and_install_and_survives_reopen(
        self, factory: StoreFactory
    ) -> None:
        clock = FakeClock(100.0)
        store = stamped_by(await self.opened(factory), clock)
        if isinstance(store, SqlStorage):
            store.compact_batch_rows = 2  # the caches follow every compaction batch
        await store.save(PersistBatch(entries=entries(1, 4, 1)))
        clock.now = 200.0
        await store.save(PersistBatch(entries=entries(5, 10, 1, size=6)))
        await store.save_snapshot(Snapshot(8, 1, ("n1",), b"s8"))
        assert await store.extent() == LogExtent(1, 10, 10, 76, 100.0)
        await store.compact(3)
        assert await store.extent() == LogExtent(4, 10, 7, 46, 100.0)
        await store.compact(8)
        assert await store.extent() == LogExtent(9, 10, 2, 12, 200.0)
        await store.save_snapshot(Snapshot(10, 1, ("n1",), b"s10"))
        await store.compact(10)
        assert await store.extent() == LogExtent(11, 10, 0, 0, None)
        clock.now = 300.0
        await store.save(PersistBatch(entries=entries(11, 12, 1, size=5)))
        assert await store.extent() == LogExtent(11, 12, 2, 10, 300.0)
        await store.close()
        again = stamped_by(await self.opened(factory), clock)
        try:
            assert await again.extent() == LogExtent(11, 12, 2, 10, 300.0)
            clock.now = 400.0
            batch = PersistBatch(hard_state=HardState(term=2), entries=entries(21, 23, 2, 3))
            await again.install_snapshot(Snapshot(20, 2, ("n1",), b"s20"), batch)
            assert await again.extent() == LogExtent(21, 23, 3, 9, 400.0)
            await again.install_snapshot(Snapshot(30, 2, ("n1",), b"s30"), PersistBatch())
            assert await again.extent() == LogExtent(31, 30, 0, 0, None)
            clock.now = 500.0
            await again.save(PersistBatch(entries=entries(31, 31, 2, size=2)))
        finally:
            await again.close()
        third = await self.opened(factory)
        try:
            assert await third.extent() == LogExtent(31, 31, 1, 2, 500.0)
        finally:
            await third.close()

    async def test_retention_point_of_each_bound_and_their_combinations(
        self, factory: StoreFactory
    ) -> None:
        """Each bound alone lets the oldest entries go up to its point, the furthest of
        the set bounds wins, the newest entry always stays, and nothing set or an empty
        log lets nothing go. Entries i has i payload bytes (1..10, 55 in all): kept from
        the newest backwards, 10, 19, 27, 34, 40, 45, 49, 52, 54, 55 bytes."""
        clock = FakeClock(100.0)
        store = stamped_by(await self.opened(factory), clock)
        try:
            point = store.retention_point
            assert await point() == 0
            assert await point(keep_entries=1, keep_bytes=1, max_age=1.0, now=1e9) == 0
            await store.save(PersistBatch(entries=sized(1, 4)))
            clock.now = 200.0
            await store.save(PersistBatch(entries=sized(5, 7)))
            clock.now = 300.0
            await store.save(PersistBatch(entries=sized(8, 10)))
            assert await point() == 0  # nothing set
            assert await point(keep_entries=-1, keep_bytes=-1, max_age=-1.0) == 0
            # By count: all but the newest keep_entries.
            counts = {1: 9, 3: 7, 9: 1, 10: 0, 100: 0}
            for keep, expected in counts.items():
                assert await point(keep_entries=keep) == expected, keep
            # By bytes: the newest entries that fit; the newest always (walked from
            # either end: both agree).
            sizes = {1: 9, 10: 9, 18: 9, 19: 8, 26: 8, 27: 7, 40: 5, 53: 2, 54: 1, 55: 0}
            for keep, expected in (*sizes.items(), (1_000, 0)):
                assert await point(keep_bytes=keep) == expected, keep
            # By age: entries saved before now - max_age; never the newest.
            ages = {1_000.0: 0, 200.0: 4, 150.0: 4, 149.999: 7, 50.0: 7, 49.999: 9, 0.001: 9}
            for age, expected in ages.items():
                assert await point(max_age=age, now=350.0) == expected, age
            clock.now = 350.0  # now defaults to the clock (time.time())
            assert await point(max_age=100.0) == 7
            # Combined: the furthest point wins.
            assert await point(keep_entries=8, keep_bytes=27, max_age=200.0, now=350.0) == 7
            assert await point(keep_entries=8, keep_bytes=1_000, max_age=200.0) == 4
            assert await point(keep_entries=1, keep_bytes=1_000, max_age=1_000.0) == 9
            assert await point(keep_entries=100, keep_bytes=54, max_age=1_000.0) == 1
        finally:
            await store.close()

    async def test_retention_point_after_compaction_and_reopen(self, factory: StoreFactory) -> None:
        """Retention looks only at the stored entries: after a compaction it never names an
        index before first_index - 1; the entries' times survive a reopen."""
        clock = FakeClock(100.0)
        store = stamped_by(await self.opened(factory), clock)
        await store.save(PersistBatch(entries=sized(1, 4)))
        clock.now = 200.0
        await store.save(PersistBatch(entries=sized(5, 7)))
        clock.now = 300.0
        await store.save(PersistBatch(entries=sized(8, 10)))
        await store.save_snapshot(Snapshot(6, 1, ("n1",), b"s6"))
        await store.compact(await store.retention_point(max_age=200.0, now=350.0))
        assert await store.first_index() == 5
        await store.compact(5)
        await store.close()
        again = await self.opened(factory)
        try:
            point = again.retention_point
            assert await point(keep_entries=100) == 5
            assert await point(keep_entries=2) == 8
            assert await point(keep_bytes=27) == 7
            assert await point(keep_bytes=1) == 9
            assert await point(keep_bytes=1_000) == 5
            assert await point(max_age=200.0, now=350.0) == 5  # 1..4 are gone already
            assert await point(max_age=100.0, now=350.0) == 7
            assert await point(max_age=100.0, now=250.0) == 5
        finally:
            await again.close()
