"""Batch receipts (docs/protocol.md §3) as the Producer reads them: one outcome per write,
and a clear error for a receipt that is not one (the Producer logs it and keeps waiting:
the write is re-published after the silence, never resolved from garbage)."""

from __future__ import annotations

import json

import pytest

from raftmq.errors import WriteRejected
from raftmq.protocol.receipts import Receipt, batch_outcomes


def _body(answer: object) -> bytes:
    return json.dumps(answer).encode()


def test_each_write_gets_its_result_in_batch_order() -> None:
    body = _body(
        {
            "results": [
                {"seq": 7, "index": 10, "term": 2, "duplicate": False},
                {"seq": 8, "index": 4, "term": 1, "duplicate": True},
                {"seq": 9, "reason": "too_large: 2000000 bytes"},
            ]
        }
    )
    first, second, third = batch_outcomes(body, "ok", [7, 8, 9])
    assert first == Receipt(index=10, term=2, duplicate=False, seq=7)
    assert second == Receipt(index=4, term=1, duplicate=True, seq=8)
    assert isinstance(third, WriteRejected) and "seq 9" in str(third)
    assert "too_large" in str(third)


def test_a_duplicate_whose_original_is_unknown_has_no_index() -> None:
    body = _body({"results": [{"seq": 3, "index": None, "term": None, "duplicate": True}]})
    assert batch_outcomes(body, "ok", [3]) == [Receipt(None, None, duplicate=True, seq=3)]


def test_a_refused_batch_rejects_every_write() -> None:
    outcomes = batch_outcomes(_body({"reason": "bad_batch: truncated"}), "error", [1, 2])
    assert all(isinstance(o, WriteRejected) and "bad_batch" in str(o) for o in outcomes)
    assert ["seq 1" in str(outcomes[0]), "seq 2" in str(outcomes[1])] == [True, True]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (_body([1, 2]), "not a JSON object"),
        (_body({"results": [{"index": 1, "term": 1}]}), "1 results for 2 writes"),
        (_body({"no": "results"}), "no results for 2 writes"),
        (_body({"results": [{"index": 1, "term": 1}, "junk"]}), "seq 6 is not a JSON object"),
        (_body({"results": [{"index": "1", "term": 1}, {}]}), "seq 5 has a bad index"),
    ],
)
def test_a_receipt_that_is_not_one_is_an_error(body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        batch_outcomes(body, "ok", [5, 6])
