"""Where a write landed: :class:`Commit` (a node's answer), :class:`Receipt` (a producer's),
and what a batch receipt says (docs/protocol.md §3): one outcome per write of the batch.

Pure parsing, no I/O: the Producer hands each outcome to the write that awaits it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from raftmq.errors import WriteRejected


@dataclass(frozen=True, slots=True)
class Commit:
    """Where a write landed: committed at ``index`` in ``term``."""

    index: int  # log index of the write (of the original when duplicate; 0: no longer known)
    term: int  # term of the entry
    duplicate: bool = False  # the write was already in the log (client session, §6.3)


@dataclass(frozen=True, slots=True)
class Receipt:
    """The outcome of one publish. Invariant: index and term are both set or both None."""

    index: int | None  # log index (None: wait_commit=False, or a duplicate of an unknown place)
    term: int | None  # term of that entry (None when index is None)
    duplicate: bool  # True when the write was already in the log (index names the original)
    seq: int  # the producer sequence number the write carried


def batch_outcomes(body: bytes, status: object, seqs: list[int]) -> list[Receipt | WriteRejected]:
    """The outcome of each write ``seqs`` of a batch, in batch order, from its receipt:
    ``{"results": [...]}`` with status ``ok``, or ``{"reason": ...}`` with status
    ``error`` when the batch as a whole was refused. Raises ValueError when the receipt
    is not one (not JSON, not an object, a result count or field that does not fit)."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError) as exc:  # deep nesting exhausts the stack
        raise ValueError(f"receipt is not JSON: {exc}") from None
    if not isinstance(answer, dict):
        raise ValueError("receipt is not a JSON object")
    if status != "ok":
        return [_rejected(seq, answer.get("reason")) for seq in seqs]
    results = answer.get("results")
    if not isinstance(results, list) or len(results) != len(seqs):
        got = len(results) if isinstance(results, list) else "no"
        raise ValueError(f"{got} results for {len(seqs)} writes")
    return [_outcome(result, seq) for result, seq in zip(results, seqs, strict=True)]


def _outcome(result: Any, seq: int) -> Receipt | WriteRejected:
    if not isinstance(result, dict):
        raise ValueError(f"result for seq {seq} is not a JSON object")
    if "index" not in result:
        return _rejected(seq, result.get("reason"))
    # A duplicate whose original's place the cluster no longer knows has index and term
    # null (protocol §3): it is committed, just not locatable.
    index, term = result.get("index"), result.get("term")
    if index is None or term is None:
        index = term = None
    elif not (isinstance(index, int) and isinstance(term, int)):
        raise ValueError(f"result for seq {seq} has a bad index or term")
    return Receipt(index, term, duplicate=bool(result.get("duplicate", False)), seq=seq)


def _rejected(seq: int, reason: object) -> WriteRejected:
    return WriteRejected(f"write seq {seq} rejected: {reason}")
