"""One comparison of two systems' completions on the same prompts, judged in both orders; and which comparisons the
evaluation report makes."""

from __future__ import annotations

from typing import Any

from r2m.evaluation.agreement import judge_agreement
from r2m.evaluation.winrate import position_calibrated, win_rate_report
from r2m.judges.base import Judge, PairwiseItem, Verdict


def compare(
    judge: Judge,
    rows: list[dict],
    a: list[str],
    b: list[str],
    tag: str,
    progress: bool = True,
    reference_judge: Judge | None = None,
) -> tuple[dict[str, Any], list[dict]]:
    """Judge ``a`` (model under test) against ``b`` on the same prompts, both orders.

    Returns the win-rate report (with LC win rate on word counts) and one record per prompt for the verdict file.
    With a ``reference_judge`` (the gold judge, when the task has one and ``judge`` is an LLM) the report also
    holds ``gold_agreement``: how often ``judge`` agrees with it on these very items.
    """
    items = [
        PairwiseItem(f"{r['id']}:{tag}", r["prompt"], x, y, {"post_id": r.get("post_id", r["id"])})
        for r, x, y in zip(rows, a, b, strict=True)
    ]
    verdicts: list[Verdict] = judge.judge(items, both_orders=True, progress=progress)
    report = win_rate_report(
        verdicts, lengths_a=[len(x.split()) for x in a], lengths_b=[len(y.split()) for y in b], seed=0
    )
    gold: list[Verdict | None] = [None] * len(items)
    if reference_judge is not None:
        gold = reference_judge.judge(items, both_orders=True)
        report["gold_agreement"] = judge_agreement(verdicts, gold)
    calibrated = position_calibrated(verdicts) if judge.name != "gold" else None
    if calibrated is not None:  # a judge reporting P(A), P(B): also decide by the order-averaged probabilities
        cal = win_rate_report(calibrated, seed=0)
        report["position_calibrated"] = {k: cal[k] for k in ("wins", "ties", "losses", "invalid", "win_rate_ties_half")}
        report["position_calibrated"].update(ci_low=cal["ci_low"], ci_high=cal["ci_high"])
        if reference_judge is not None:
            report["position_calibrated"]["gold_agreement"] = judge_agreement(calibrated, gold)
    records = [
        {
            "id": it.id,
            "prompt": it.prompt,
            "response_a": it.response_a,
            "response_b": it.response_b,
            "preferred": v.preferred,
            "consistent": v.consistent,
            "reason": v.reason,
            "raw": v.raw,
            "score_a": v.score_a,
            "score_b": v.score_b,
            **({"gold": g.preferred} if g is not None else {}),
        }
        for it, v, g in zip(items, verdicts, gold, strict=True)
    ]
    return report, records


def comparison_pairs(runs: list[str]) -> list[tuple[str, str]]:
    """``(a, b)`` comparisons of the evaluation report: each run vs the references and vs SFT, then each non-vanilla
    method head-to-head against vanilla RL of the same algorithm (when that run is among ``runs``)."""
    pairs = [(r, base) for r in runs for base in ("reference", "sft")]
    for r in runs:
        algo, method = r.split("-", 1)
        if method != "vanilla" and f"{algo}-vanilla" in runs:
            pairs.append((r, f"{algo}-vanilla"))  # the head-to-head: each method vs vanilla RL, same algorithm
    return pairs
