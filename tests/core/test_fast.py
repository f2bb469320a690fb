"""The hot-path constructors of :mod:`raftmq.core.fast` build exactly what validation builds.

``fast`` fills pydantic's instance slots (``__dict__``, ``__pydantic_fields_set__``,
``__pydantic_extra__``, ``__pydantic_private__``) by hand, so a pydantic release that
adds a slot or changes what these hold would silently give the core objects that
differ from validated ones. These tests compare every constructor with the validated
model built from the same values (every argument passed explicitly, as the core
does), field by field, slot by slot, and through the JSON the transport sends.
"""

from __future__ import annotations

import copy
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from raftmq.core import MESSAGE_ADAPTER, AppendEntries, AppendEntriesReply, Entry, HardState
from raftmq.core.fast import new_append, new_append_reply, new_entry, new_hard_state
from raftmq.core.types import MAX_INDEX, MAX_TERM, NODE_ID_PATTERN, EntryKind

INDEX = st.integers(0, MAX_INDEX)  # indexes as validation lets them in (signed 64-bit)
TERM = st.integers(0, MAX_TERM)  # terms as validation lets them in (room to increment)
NODE = st.from_regex(NODE_ID_PATTERN, fullmatch=True)  # node ids as validation allows
KIND = st.sampled_from(EntryKind)
DATA = st.binary(max_size=64)


def assert_same(fast: BaseModel, valid: BaseModel) -> None:
    """``fast`` is indistinguishable from the validated ``valid``."""
    assert type(fast) is type(valid)
    assert fast == valid
    assert valid == fast
    assert hash(fast) == hash(valid)
    assert repr(fast) == repr(valid)
    assert list(fast) == list(valid)  # same fields, same order
    assert fast.model_dump() == valid.model_dump()
    assert fast.model_dump(mode="json") == valid.model_dump(mode="json")
    assert fast.model_dump(exclude_unset=True) == valid.model_dump(exclude_unset=True)
    assert fast.model_fields_set == valid.model_fields_set
    assert isinstance(fast.model_fields_set, set)
    # Every slot pydantic gives an instance is filled, with what validation puts there.
    for slot in BaseModel.__slots__:
        assert getattr(fast, slot) == getattr(valid, slot), slot
    assert fast.model_dump_json() == valid.model_dump_json()
    back = type(valid).model_validate_json(fast.model_dump_json())
    assert back == fast
    assert back.model_dump() == fast.model_dump()
    assert pickle.loads(pickle.dumps(fast)) == valid
    assert copy.deepcopy(fast) == valid
    assert fast.model_copy() == valid


def assert_frozen(obj: BaseModel, field: str, value: object) -> None:
    """Assigning to a frozen model fails the same way for a fast-built instance."""
    with pytest.raises(ValidationError):
        setattr(obj, field, value)


def assert_message(
    fast: AppendEntries | AppendEntriesReply, valid: AppendEntries | AppendEntriesReply
) -> None:
    """``assert_same`` plus the adapter the transport encodes and decodes with."""
    assert_same(fast, valid)
    wire = MESSAGE_ADAPTER.dump_json(fast)
    assert wire == MESSAGE_ADAPTER.dump_json(valid)
    assert MESSAGE_ADAPTER.validate_json(wire) == valid


def entries_of(raw: list[tuple[int, int, EntryKind, bytes]]) -> tuple[Entry, ...]:
    """Fast-built entries from (index, term, kind, data) tuples."""
    return tuple(new_entry(i, t, k, d) for i, t, k, d in raw)


ENTRY_ARGS = st.tuples(st.integers(1, MAX_INDEX), st.integers(1, MAX_TERM), KIND, DATA)


@st.composite
def append_args(draw: st.DrawFn) -> tuple[int, int, int, list[tuple[int, int, EntryKind, bytes]]]:
    """(term, prev index, prev term, entries) as a leader sends them: entries contiguous
    from prev index + 1, terms non-decreasing from prev term and never above term."""
    term = draw(st.integers(1, MAX_TERM))
    count = draw(st.integers(0, 5))
    prev_index = draw(st.integers(0, MAX_INDEX - count))
    prev_term = 0 if prev_index == 0 else draw(st.integers(1, term))
    terms = sorted(
        draw(st.lists(st.integers(max(prev_term, 1), term), min_size=count, max_size=count))
    )
    raw = [(prev_index + 1 + pos, t, draw(KIND), draw(DATA)) for pos, t in enumerate(terms)]
    return term, prev_index, prev_term, raw


# ----------------------------------------------------------------------------- entries


@settings(max_examples=200, deadline=None)
@given(st.integers(1, MAX_INDEX), st.integers(1, MAX_TERM), KIND, DATA)
def test_new_entry_equals_validated(index: int, term: int, kind: EntryKind, data: bytes) -> None:
    """new_entry == Entry(...) for any field values."""
    fast = new_entry(index, term, kind, data)
    assert_same(fast, Entry(index=index, term=term, kind=kind, data=data))
    raw = {"index": index, "term": term, "kind": int(kind), "data": data}
    assert_same(fast, Entry.model_validate(raw))


def test_new_entry_is_frozen() -> None:
    """A fast-built entry cannot be changed, like a validated one."""
    assert_frozen(new_entry(1, 1, EntryKind.NORMAL, b"x"), "term", 2)


def test_new_entry_noop_as_the_leader_builds_it() -> None:
    """The no-op a new leader appends (§5.4.2) equals the validated default-data entry."""
    fast = new_entry(7, 3, EntryKind.NOOP, b"")
    assert fast == Entry(index=7, term=3, kind=EntryKind.NOOP)
    assert_same(fast, Entry(index=7, term=3, kind=EntryKind.NOOP, data=b""))


# ----------------------------------------------------------------------------- hard state


@settings(max_examples=200, deadline=None)
@given(TERM, st.none() | NODE, INDEX)
def test_new_hard_state_equals_validated(term: int, voted_for: str | None, commit: int) -> None:
    """new_hard_state == HardState(...) for any field values, a vote or none."""
    fast = new_hard_state(term, voted_for, commit)
    assert_same(fast, HardState(term=term, voted_for=voted_for, commit=commit))


def test_new_hard_state_is_frozen() -> None:
    """A fast-built hard state cannot be changed, like a validated one."""
    assert_frozen(new_hard_state(1, None, 0), "commit", 1)


# ----------------------------------------------------------------------------- AppendEntries


@settings(max_examples=200, deadline=None)
@given(append_args(), NODE, NODE, INDEX, st.booleans())
def test_new_append_equals_validated(
    args: tuple[int, int, int, list[tuple[int, int, EntryKind, bytes]]],
    sender: str,
    recipient: str,
    commit: int,
    validated_entries: bool,
) -> None:
    """new_append == AppendEntries(...), with fast-built or validated entries inside."""
    term, prev_index, prev_term, raw = args
    ents = entries_of(raw)
    inner = tuple(Entry(index=i, term=t, kind=k, data=d) for i, t, k, d in raw)
    fast = new_append(term, sender, recipient, prev_index, prev_term, ents, commit, commit // 3)
    valid = AppendEntries(
        term=term,
        sender=sender,
        recipient=recipient,
        prev_log_index=prev_index,
        prev_log_term=prev_term,
        entries=inner if validated_entries else ents,
        leader_commit=commit,
        read_seq=commit // 3,
    )
    assert_message(fast, valid)
    from_dict = AppendEntries.model_validate(
        {
            "term": term,
            "sender": sender,
            "recipient": recipient,
            "prev_log_index": prev_index,
            "prev_log_term": prev_term,
            "entries": [{"index": i, "term": t, "kind": k, "data": d} for i, t, k, d in raw],
            "leader_commit": commit,
            "read_seq": commit // 3,
        }
    )
    assert_message(fast, from_dict)


def test_new_append_heartbeat_and_frozen() -> None:
    """A heartbeat (no entries) equals the validated one; fast-built messages are frozen."""
    fast = new_append(2, "a", "b", 5, 1, (), 4)
    valid = AppendEntries(
        term=2,
        sender="a",
        recipient="b",
        prev_log_index=5,
        prev_log_term=1,
        entries=(),
        leader_commit=4,
        read_seq=0,
    )
    assert_message(fast, valid)
    assert_frozen(fast, "leader_commit", 5)


# ----------------------------------------------------------------------------- replies


INCARNATION = st.one_of(st.just(""), st.from_regex(r"[0-9a-f]{32}", fullmatch=True))
REPLY_ARGS = st.tuples(TERM, NODE, NODE, st.booleans(), INDEX, INDEX, TERM, INDEX, INCARNATION)


@settings(max_examples=200, deadline=None)
@given(REPLY_ARGS)
def test_new_append_reply_equals_validated(
    args: tuple[int, str, str, bool, int, int, int, int, str],
) -> None:
    """new_append_reply (every argument passed, as the core does) == AppendEntriesReply(...)."""
    term, sender, recipient, success, match, reject, c_term, c_index, incarnation = args
    fast = new_append_reply(
        term, sender, recipient, success, match, reject, c_term, c_index, match // 2, incarnation
    )
    valid = AppendEntriesReply(
        term=term,
        sender=sender,
        recipient=recipient,
        success=success,
        match_index=match,
        reject_index=reject,
        conflict_term=c_term,
        conflict_index=c_index,
        read_seq=match // 2,
        incarnation=incarnation,
    )
    assert_message(fast, valid)


def test_new_append_reply_defaults() -> None:
    """Leaving the optional arguments out gives the validated defaults, but reports them
    as set (the core always passes every argument, so this never shows on the wire)."""
    fast = new_append_reply(3, "b", "a", True)
    minimal = AppendEntriesReply(term=3, sender="b", recipient="a", success=True)
    assert fast == minimal
    assert fast.model_dump() == minimal.model_dump()
    assert fast.model_dump_json() == minimal.model_dump_json()
    explicit = AppendEntriesReply(
        term=3,
        sender="b",
        recipient="a",
        success=True,
        match_index=0,
        reject_index=0,
        conflict_term=0,
        conflict_index=0,
        read_seq=0,
        incarnation="",
    )
    assert_message(fast, explicit)
    assert_frozen(fast, "success", False)
