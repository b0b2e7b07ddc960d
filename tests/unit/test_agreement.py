"""Judge-vs-gold agreement on hand-made verdicts."""

from __future__ import annotations

import pytest

from r2m.evaluation.agreement import judge_agreement
from r2m.judges.base import Verdict


def _v(labels: str) -> list[Verdict]:
    names = {"A": "A", "B": "B", "t": "tie", "x": "invalid"}
    return [Verdict(item_id=str(i), preferred=names[c]) for i, c in enumerate(labels)]  # type: ignore[arg-type]


def test_agreement_counts_ties_as_a_label_and_skips_invalid():
    out = judge_agreement(_v("AABtx"), _v("ABBtA"))
    assert out["n_compared"] == 4  # the invalid item is left out
    assert out["agreement"] == pytest.approx(3 / 4)  # A=A, A!=B, B=B, tie=tie
    assert out["n_decisive"] == 3 and out["decisive_agreement"] == pytest.approx(2 / 3)


def test_agreement_none_when_nothing_comparable_and_rejects_misaligned_items():
    assert judge_agreement(_v("xx"), _v("AB"))["agreement"] is None
    with pytest.raises(ValueError, match="2 verdicts vs 1"):
        judge_agreement(_v("AB"), _v("A"))
    shifted = [Verdict(item_id="9", preferred="A")]
    with pytest.raises(ValueError, match="item '0' is paired with reference item '9'"):
        judge_agreement(_v("A"), shifted)
