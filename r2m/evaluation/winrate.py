"""Win-rate statistics over pairwise verdicts: bootstrap CI, position consistency and a
length-controlled win rate (a minimal AlpacaEval-2-style logistic regression).

Convention: response A is the model under test, response B the baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from r2m.judges.base import Verdict

_OUTCOME = {"A": 1.0, "B": 0.0, "tie": 0.5}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # numerically stable logistic


def bootstrap_ci(
    wins: int, ties: int, losses: int, *, n_bootstrap: int = 2000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``(wins + 0.5 ties) / n`` resampling items with replacement.

    Outcomes take only three values, so resampling ``n`` items is exactly a multinomial
    draw of the three counts (constant memory in ``n``).
    """
    n = wins + ties + losses
    if n == 0:
        raise ValueError("bootstrap_ci needs at least one item")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [wins / n, ties / n, losses / n], size=n_bootstrap)
    stats = (counts[:, 0] + 0.5 * counts[:, 1]) / n
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(low), float(high)


def length_controlled_win_rate(
    outcomes: Sequence[float],
    lengths_a: Sequence[float],
    lengths_b: Sequence[float],
    *,
    l2: float = 1e-4,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> float:
    """Win rate predicted at zero length difference.

    Fits ``P(A wins) = sigmoid(b0 + b1 * tanh((len_a - len_b) / std))`` by Newton's method on
    the (fractional-target) log-loss, where a tie is the target 0.5 (identical to two
    half-weight rows, one win and one loss). Only ``b1`` gets the tiny ``l2`` penalty, so with
    equal lengths the result is exactly the mean outcome. Returns ``sigmoid(b0)``.
    """
    y = np.asarray(outcomes, dtype=float)
    diff = np.asarray(lengths_a, dtype=float) - np.asarray(lengths_b, dtype=float)
    if y.ndim != 1 or diff.shape != y.shape:
        raise ValueError(f"outcomes {y.shape} and length differences {diff.shape} must be equal 1-D shapes")
    if y.size == 0:
        raise ValueError("length_controlled_win_rate needs at least one item")
    if np.any((y < 0) | (y > 1)):
        raise ValueError("outcomes must lie in [0, 1]")
    if np.all(y == y[0]) and y[0] in (0.0, 1.0):
        return float(y[0])  # all wins / all losses: the MLE intercept is +-inf
    std = diff.std()
    feature = np.tanh(diff / std) if std > 0 else np.zeros_like(diff)
    x = np.stack([np.ones_like(feature), feature], axis=1)
    penalty = np.array([0.0, l2])
    beta = np.zeros(2)

    def loss(b: np.ndarray) -> float:
        z = x @ b
        # log(1 + e^z) - y z, stable for large |z|
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * np.sum(penalty * b * b))

    current = loss(beta)
    for _ in range(max_iter):
        p = _sigmoid(x @ beta)
        grad = x.T @ (p - y) + penalty * beta
        hess = (x * (p * (1.0 - p))[:, None]).T @ x + np.diag(penalty) + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while True:  # backtracking keeps Newton monotone near (quasi-)separation
            new = loss(beta - t * step)
            if new <= current + 1e-12:
                break
            t *= 0.5
            if t < 1e-8:
                return float(_sigmoid(np.array(beta[0])))  # no further progress possible
        beta = beta - t * step
        converged = current - new < tol and float(np.max(np.abs(t * step))) < 1e-8
        current = new
        if converged:
            break
    return float(_sigmoid(np.array(beta[0])))


def win_rate_report(
    verdicts: Sequence[Verdict],
    *,
    lengths_a: Sequence[float] | None = None,
    lengths_b: Sequence[float] | None = None,
    n_bootstrap: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Summarise verdicts of the model under test (A) against the baseline (B).

    Keys: ``n``, ``n_valid``, ``wins``, ``losses``, ``ties``, ``invalid``, ``win_rate``
    (wins / valid), ``win_rate_ties_half`` ((wins + ties/2) / valid), ``ci_low``/``ci_high``
    (percentile bootstrap of ``win_rate_ties_half`` over items), ``position_consistency``
    (fraction of valid two-order items judged consistently; ``None`` without such items) and,
    when ``lengths_a``/``lengths_b`` (aligned with ``verdicts``) are given, ``lc_win_rate``.
    Invalid verdicts are excluded from every denominator. Rates are ``None`` when no
    verdict is valid.
    """
    if (lengths_a is None) != (lengths_b is None):
        raise ValueError("give both lengths_a and lengths_b, or neither")
    if lengths_a is not None and lengths_b is not None:
        if not len(lengths_a) == len(lengths_b) == len(verdicts):
            raise ValueError(f"lengths must align with verdicts: {len(lengths_a)}, {len(lengths_b)} vs {len(verdicts)}")
    valid_idx = [i for i, v in enumerate(verdicts) if v.is_valid]
    wins = sum(1 for v in verdicts if v.preferred == "A")
    losses = sum(1 for v in verdicts if v.preferred == "B")
    ties = sum(1 for v in verdicts if v.preferred == "tie")
    n_valid = len(valid_idx)
    two_order = [v.consistent for v in verdicts if v.is_valid and v.consistent is not None]
    report: dict[str, Any] = {
        "n": len(verdicts),
        "n_valid": n_valid,
        "wins": wins,
        "losses": losses,
        "ties": ties,
        "invalid": len(verdicts) - n_valid,
        "win_rate": None,
        "win_rate_ties_half": None,
        "ci_low": None,
        "ci_high": None,
        "position_consistency": (sum(two_order) / len(two_order)) if two_order else None,
    }
    if n_valid:
        report["win_rate"] = wins / n_valid
        report["win_rate_ties_half"] = (wins + 0.5 * ties) / n_valid
        report["ci_low"], report["ci_high"] = bootstrap_ci(
            wins, ties, losses, n_bootstrap=n_bootstrap, seed=seed, confidence=confidence
        )
    if lengths_a is not None and lengths_b is not None:
        report["lc_win_rate"] = None
        if n_valid:
            outcomes = [_OUTCOME[verdicts[i].preferred] for i in valid_idx]
            report["lc_win_rate"] = length_controlled_win_rate(
                outcomes, [lengths_a[i] for i in valid_idx], [lengths_b[i] for i in valid_idx]
            )
    return report


def position_calibrated(verdicts: Sequence[Verdict]) -> list[Verdict] | None:
    """Balanced position calibration (Wang et al. 2023, "Large Language Models are not Fair Evaluators").

    A judge that reports scores (e.g. P(A), P(B) of the answer token) has them averaged over the two presentation
    orders by :func:`r2m.judges.base.combine_orders`; this re-decides each valid item by those averaged scores
    (higher wins, equal is a tie), so a judge with a constant position bias still ranks by content. Invalid items stay
    invalid. Returns ``None`` unless every valid verdict carries both scores.
    """
    out = []
    for v in verdicts:
        if not v.is_valid:
            out.append(v)
            continue
        if v.score_a is None or v.score_b is None:
            return None
        preferred = "A" if v.score_a > v.score_b else "B" if v.score_b > v.score_a else "tie"
        out.append(Verdict(item_id=v.item_id, preferred=preferred, score_a=v.score_a, score_b=v.score_b))
    return out
