"""Hot-path constructors for already-valid pydantic objects.

The core builds entries and replication messages from values it has just checked
itself, many thousands of times per second. Pydantic validation (and, in pydantic
2.x, even ``model_construct``) costs several microseconds per object; these helpers
fill the instance's ``__dict__`` directly. The result equals the validated object
(``==``, hash, frozen-ness and serialisation are unchanged); only use them with
values of the declared types.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

from raftmq.core.messages import AppendEntries, AppendEntriesReply
from raftmq.core.types import Entry, EntryKind, HardState

_M = TypeVar("_M", bound=BaseModel)
_new = object.__new__
_set = object.__setattr__


def _build(cls: type[_M], values: dict[str, Any], fields_set: frozenset[str]) -> _M:
    obj = _new(cls)
    _set(obj, "__dict__", values)
    _set(obj, "__pydantic_fields_set__", set(fields_set))
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
    return obj


_ENTRY_SET = frozenset(("index", "term", "kind", "data"))
_APPEND_SET = frozenset(
    (
        "term",
        "sender",
        "recipient",
        "prev_log_index",
        "prev_log_term",
        "entries",
        "leader_commit",
        "read_seq",
    )
)
_REPLY_SET = frozenset(
    (
        "term",
        "sender",
        "recipient",
        "success",
        "match_index",
        "reject_index",
        "conflict_term",
        "conflict_index",
        "read_seq",
        "incarnation",
    )
)
_HARD_SET = frozenset(("term", "voted_for", "commit"))


def new_entry(index: int, term: int, kind: EntryKind, data: bytes) -> Entry:
    """An :class:`Entry` without validation."""
    return _build(Entry, {"index": index, "term": term, "kind": kind, "data": data}, _ENTRY_SET)


def new_hard_state(term: int, voted_for: str | None, commit: int) -> HardState:
    """A :class:`HardState` without validation."""
    return _build(HardState, {"term": term, "voted_for": voted_for, "commit": commit}, _HARD_SET)


def new_append(
    term: int,
    sender: str,
    recipient: str,
    prev_log_index: int,
    prev_log_term: int,
    entries: tuple[Entry, ...],
    leader_commit: int,
    read_seq: int = 0,
) -> AppendEntries:
    """An :class:`AppendEntries` without validation."""
    values = {
        "term": term,
        "sender": sender,
        "recipient": recipient,
        "type": "append_entries",
        "prev_log_index": prev_log_index,
        "prev_log_term": prev_log_term,
        "entries": entries,
        "leader_commit": leader_commit,
        "read_seq": read_seq,
    }
    return _build(AppendEntries, values, _APPEND_SET)


def new_append_reply(
    term: int,
    sender: str,
    recipient: str,
    success: bool,
    match_index: int = 0,
    reject_index: int = 0,
    conflict_term: int = 0,
    conflict_index: int = 0,
    read_seq: int = 0,
    incarnation: str = "",
) -> AppendEntriesReply:
    """An :class:`AppendEntriesReply` without validation."""
    values = {
        "term": term,
        "sender": sender,
        "recipient": recipient,
        "type": "append_entries_reply",
        "success": success,
        "match_index": match_index,
        "reject_index": reject_index,
        "conflict_term": conflict_term,
        "conflict_index": conflict_index,
        "read_seq": read_seq,
        "incarnation": incarnation,
    }
    return _build(AppendEntriesReply, values, _REPLY_SET)
