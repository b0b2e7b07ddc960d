"""Reward-model accuracy and calibration on (chosen, rejected) preference pairs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _margins(scores_chosen: Sequence[float], scores_rejected: Sequence[float]) -> np.ndarray:
    chosen = np.asarray(scores_chosen, dtype=float)
    rejected = np.asarray(scores_rejected, dtype=float)
    if chosen.ndim != 1 or chosen.shape != rejected.shape:
        raise ValueError(f"scores must be equal-length 1-D sequences, got {chosen.shape} and {rejected.shape}")
    if chosen.size == 0:
        raise ValueError("need at least one (chosen, rejected) pair")
    if not np.all(np.isfinite(chosen)) or not np.all(np.isfinite(rejected)):
        raise ValueError("scores must be finite")
    return chosen - rejected


def pairwise_accuracy(scores_chosen: Sequence[float], scores_rejected: Sequence[float]) -> float:
    """Fraction of pairs with ``chosen > rejected``; a tie counts as wrong (RewardBench convention)."""
    return float(np.mean(_margins(scores_chosen, scores_rejected) > 0))


def expected_calibration_error(
    scores_chosen: Sequence[float], scores_rejected: Sequence[float], n_bins: int = 10
) -> float:
    """ECE of the Bradley-Terry probability ``p = sigmoid(s_c - s_r)`` that the chosen response wins.

    Evaluated symmetrically: confidence ``max(p, 1 - p)`` (= ``sigmoid(|margin|)``), correct when the
    predicted side is the chosen one; an exact tie (p = 0.5) counts as half correct. Confidences are
    put in ``n_bins`` equal-width bins over [0.5, 1]; ECE = sum_b (n_b / n) |accuracy_b - confidence_b|.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    margin = _margins(scores_chosen, scores_rejected)
    confidence = 1.0 / (1.0 + np.exp(-np.abs(margin)))
    correct = np.where(margin > 0, 1.0, np.where(margin < 0, 0.0, 0.5))
    bins = np.clip(np.floor((confidence - 0.5) / 0.5 * n_bins).astype(int), 0, n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        mask = bins == b
        ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


ACCURACY_KEYS = ("n", "accuracy", "ece", "mean_margin", "ties")


def reward_accuracy_report(
    scores_chosen: Sequence[float], scores_rejected: Sequence[float], n_bins: int = 10
) -> dict[str, Any]:
    """``{"n", "accuracy", "ece", "mean_margin", "ties"}`` for a set of preference pairs."""
    margin = _margins(scores_chosen, scores_rejected)
    return {
        "n": int(margin.size),
        "accuracy": pairwise_accuracy(scores_chosen, scores_rejected),
        "ece": expected_calibration_error(scores_chosen, scores_rejected, n_bins=n_bins),
        "mean_margin": float(margin.mean()),
        "ties": int(np.sum(margin == 0)),
    }


def pairs_digest(pairs: Sequence[Mapping]) -> str:
    """Short sha256 of the (prompt, chosen, rejected) of ``pairs`` in order: which pairs an accuracy was scored on."""
    h = hashlib.sha256()
    for r in pairs:
        h.update(json.dumps([r["prompt"], r["chosen"], r["rejected"]]).encode() + b"\n")
    return h.hexdigest()[:16]


def pair_accuracy(score, pairs) -> dict:
    """:func:`reward_accuracy_report` of ``score(prompts, responses) -> rewards`` on rows with "prompt", "chosen" and
    "rejected" (any reward model: vanilla, R2M with policy feedback, ...)."""
    prompts = [r["prompt"] for r in pairs]
    return reward_accuracy_report(
        score(prompts, [r["chosen"] for r in pairs]), score(prompts, [r["rejected"] for r in pairs])
    )


def length_split_accuracy(rows: list[dict], chosen: list[float], rejected: list[float]) -> dict:
    """Accuracy on pairs where the longer response is the chosen one vs where it is the rejected one."""
    out = {}
    for name, want_longer in (("acc_longer_chosen", True), ("acc_longer_rejected", False)):
        idx = [i for i, r in enumerate(rows) if (len(r["chosen"]) > len(r["rejected"])) == want_longer]
        if idx:
            out[name] = sum(chosen[i] > rejected[i] for i in idx) / len(idx)
            out[f"n_{name[4:]}"] = len(idx)
    return out
