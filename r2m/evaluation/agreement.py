"""Agreement between two judges' verdicts on the same items (e.g. an LLM judge against the gold judge)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from r2m.judges.base import Verdict


def judge_agreement(verdicts: Sequence[Verdict], reference: Sequence[Verdict]) -> dict[str, Any]:
    """How often ``verdicts`` match ``reference`` (same items, same A/B order).

    Keys: ``n_compared`` (items valid under both), ``agreement`` (same label among those, ties a label of their
    own), ``n_decisive`` (items both judges decided A or B) and ``decisive_agreement`` (same winner among those).
    Rates are ``None`` when nothing is comparable.
    """
    if len(verdicts) != len(reference):
        raise ValueError(f"judge_agreement: {len(verdicts)} verdicts vs {len(reference)} reference verdicts")
    for v, r in zip(verdicts, reference, strict=True):
        if v.item_id != r.item_id:
            raise ValueError(f"judge_agreement: item {v.item_id!r} is paired with reference item {r.item_id!r}")
    both = [(v.preferred, r.preferred) for v, r in zip(verdicts, reference, strict=True) if v.is_valid and r.is_valid]
    decisive = [(p, q) for p, q in both if p in ("A", "B") and q in ("A", "B")]
    return {
        "n_compared": len(both),
        "agreement": sum(p == q for p, q in both) / len(both) if both else None,
        "n_decisive": len(decisive),
        "decisive_agreement": sum(p == q for p, q in decisive) / len(decisive) if decisive else None,
    }
