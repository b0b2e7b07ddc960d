"""Best-of-n against the proxy reward model: the over-optimisation curve without training (Gao et al., 2022).

Per prompt, ``N`` samples of the SFT policy are scored by the proxy RM, the held-out RM and gold. Best-of-n keeps
the proxy's pick of ``n`` samples; its value is averaged *exactly* over all ``n``-subsets of the ``N`` samples (no
resampling noise): with the samples sorted ascending by proxy, rank ``i`` (0-based) is the pick of a uniformly random
``n``-subset with probability ``C(i, n-1) / C(N, n)`` (the pick is rank ``i`` when the subset holds ``i`` and ``n-1``
of the ``i`` samples below it). The policy "best-of-n of the SFT policy" is ``KL_bon(n) = log n - (n-1)/n`` nats
from it. If gold does not rise with ``n`` at first, the proxy carries no true signal and RL against it is moot.

Shapes: ``P`` prompts, ``N`` samples per prompt, ``K`` values of ``n`` (``1, 2, 4, ..., N``).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from r2m.evaluation.plots import save_figure

#: The values of ``n`` the "gold must rise at first" rule looks at (those <= N).
RISE_NS = (2, 4, 8)
#: Gold rises when its best gain over n = 1 exceeds this many paired standard errors.
RISE_SE = 2.0


def ns_up_to(n_max: int) -> list[int]:
    """``[1, 2, 4, ..., n_max]`` for ``n_max`` a power of 2."""
    if n_max < 1 or n_max & (n_max - 1):
        raise ValueError(f"n_max must be a power of 2, got {n_max}")
    return [2**k for k in range(n_max.bit_length())]


def kl_bon(n: int) -> float:
    """KL(best-of-n || base policy) = ``log n - (n - 1) / n`` nats (an upper bound that is tight for distinct
    samples; 0 at n = 1)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def pick_weights(n_samples: int, n: int) -> np.ndarray:
    """Probability that rank ``i`` (ascending proxy, 0-based) is the proxy's pick of a uniformly random ``n``-subset
    of ``n_samples``: ``C(i, n-1) / C(N, n)``, shape [N]; sums to 1."""
    if not 1 <= n <= n_samples:
        raise ValueError(f"n must be in [1, {n_samples}], got {n}")
    total = math.comb(n_samples, n)
    return np.array([math.comb(i, n - 1) / total for i in range(n_samples)])  # exact ints, one rounding each


def proxy_order(proxy: np.ndarray) -> np.ndarray:
    """Per prompt, the sample indices sorted ascending by proxy, ties broken so that the *lower* index ranks higher
    (the pick of a subset is then its first maximum, as ``np.argmax``): proxy [P, N] -> indices [P, N]."""
    descending = np.argsort(-np.asarray(proxy, dtype=float), axis=1, kind="stable")  # ties: lower index first
    return descending[:, ::-1]


def best_of_n_values(proxy: np.ndarray, values: np.ndarray, ns: Sequence[int]) -> np.ndarray:
    """Per prompt, the exact mean over ``n``-subsets of ``values`` at the subset's proxy argmax.

    Args:
        proxy: proxy rewards, [P, N].
        values: what is read at the pick (gold, proxy, held-out RM), [P, N].
        ns: the subset sizes, K of them, each in [1, N].

    Returns:
        [P, K]: column k is best-of-``ns[k]`` per prompt (n = 1: the prompt's mean; n = N: the value at the argmax).
    """
    proxy, values = np.asarray(proxy, dtype=float), np.asarray(values, dtype=float)
    if proxy.ndim != 2 or proxy.shape != values.shape:
        raise ValueError(f"proxy and values must both be [P, N], got {proxy.shape} and {values.shape}")
    ranked = np.take_along_axis(values, proxy_order(proxy), axis=1)  # [P, N], ascending proxy
    weights = np.stack([pick_weights(proxy.shape[1], n) for n in ns], axis=1)  # [N, K]
    return ranked @ weights


def paired_se(per_prompt: np.ndarray) -> np.ndarray:
    """Standard error over prompts of column k minus column 0 (paired by prompt): [P, K] -> [K] (0 for k = 0)."""
    per_prompt = np.asarray(per_prompt, dtype=float)
    p = per_prompt.shape[0]
    if p < 2:
        raise ValueError(f"a standard error over prompts needs at least 2 prompts, got {p}")
    gain = per_prompt - per_prompt[:, :1]
    return gain.std(axis=0, ddof=1) / math.sqrt(p)


@dataclass(frozen=True)
class Rise:
    """The "gold must rise at first" rule: ``rises`` iff ``gain > RISE_SE * se`` at ``n``, the n in
    :data:`RISE_NS` (<= N) with the largest mean gain of gold over n = 1."""

    rises: bool
    n: int
    gain: float
    se: float


def gold_rise(gold: np.ndarray, ns: Sequence[int]) -> Rise:
    """Apply the rule to per-prompt best-of-n gold, [P, K] with ``ns[0] == 1`` (see :class:`Rise`)."""
    ns = list(ns)
    if not ns or ns[0] != 1:
        raise ValueError(f"ns must start at 1, got {ns}")
    gold = np.asarray(gold, dtype=float)
    gain, se = (gold - gold[:, :1]).mean(axis=0), paired_se(gold)
    candidates = [k for k, n in enumerate(ns) if n in RISE_NS]
    if not candidates:
        raise ValueError(f"ns {ns} hold none of {RISE_NS}")
    k = max(candidates, key=lambda j: (gain[j], -j))  # first of the largest
    return Rise(bool(gain[k] > RISE_SE * se[k]), ns[k], float(gain[k]), float(se[k]))


def fit_gold_curve(sqrt_kl: Sequence[float], gain: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``(a, b)`` of Gao et al.'s best-of-n form ``gain = d (a - b d)``, ``d = sqrt(KL_bon)``
    (no intercept: gain is 0 at d = 0). ``sqrt_kl``, ``gain``: [K], at least two points with d > 0."""
    d, y = np.asarray(sqrt_kl, dtype=float), np.asarray(gain, dtype=float)
    if d.shape != y.shape or int((d > 0).sum()) < 2:
        raise ValueError(f"the fit needs >= 2 points with sqrt_kl > 0 and as many gains, got {d.tolist()}")
    design = np.stack([d, -(d**2)], axis=1)  # [K, 2]
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(a), float(b)


def verdict(curve: Sequence[Mapping[str, float]], rise: Rise) -> str:
    """One sentence on the gold curve (``curve``: rows with ``n`` and ``gold``, ascending n)."""
    g1, last = curve[0]["gold"], curve[-1]
    peak = max(curve, key=lambda r: r["gold"])  # first of the largest
    if not rise.rises:
        return (
            f"gold does not rise with n: its largest gain over n=1 ({g1:.4f}) is {rise.gain:+.4f} at n={rise.n}, "
            f"not above {RISE_SE:g} paired standard errors ({RISE_SE:g} x {rise.se:.4f} = {RISE_SE * rise.se:.4f}): "
            "the proxy RM carries no true signal at the start, so RL results against it mean nothing"
        )
    text = f"gold rises from {g1:.4f} (n=1) to {peak['gold']:.4f} (n={peak['n']})"
    if peak is last:
        return f"{text} and is still at its peak at n={last['n']}"
    return f"{text}, then falls to {last['gold']:.4f} at n={last['n']}"


def best_of_n_report(proxy: np.ndarray, gold: np.ndarray, heldout: np.ndarray) -> dict[str, Any]:
    """The best-of-n metrics from per-sample scores, each [P, N] (N a power of 2, P >= 2).

    Returns ``curve`` (rows ``n, kl, sqrt_kl, gold, proxy, heldout, gold_se`` for n = 1, 2, 4, ..., N, where
    ``gold_se`` is the paired standard error over prompts of ``gold(n) - gold(1)``), ``gold_n1``, ``gold_peak``,
    ``gold_peak_n``, ``gold_at_n_max``, ``oracle_gold`` (mean over prompts of the best gold of N), the rule's
    ``gold_rises`` / ``rise_n`` / ``rise_gain`` / ``rise_se``, the fit's ``fit_a`` / ``fit_b`` (None when N < 4),
    ``verdict``, ``n_prompts`` and ``n_samples``.
    """
    proxy, gold, heldout = (np.asarray(x, dtype=float) for x in (proxy, gold, heldout))
    scores = {"gold": gold, "proxy": proxy, "heldout": heldout}
    bad = [name for name, v in scores.items() if not np.isfinite(v).all()]
    if bad:
        raise ValueError(f"best-of-n: non-finite {' / '.join(bad)} scores")
    n_prompts, n_samples = proxy.shape
    ns = ns_up_to(n_samples)
    per_prompt = {name: best_of_n_values(proxy, v, ns) for name, v in scores.items()}  # [P, K] each
    means = {name: v.mean(axis=0) for name, v in per_prompt.items()}  # [K] each
    se = paired_se(per_prompt["gold"])
    curve = [
        {
            "n": n,
            "kl": kl_bon(n),
            "sqrt_kl": math.sqrt(kl_bon(n)),
            **{name: float(m[k]) for name, m in means.items()},
            "gold_se": float(se[k]),
        }
        for k, n in enumerate(ns)
    ]
    rise = gold_rise(per_prompt["gold"], ns)
    gains = [r["gold"] - curve[0]["gold"] for r in curve]
    fit_a, fit_b = fit_gold_curve([r["sqrt_kl"] for r in curve], gains) if len(ns) >= 3 else (None, None)
    peak = max(curve, key=lambda r: r["gold"])
    return {
        "curve": curve,
        "gold_n1": curve[0]["gold"],
        "gold_peak": peak["gold"],
        "gold_peak_n": peak["n"],
        "gold_at_n_max": curve[-1]["gold"],
        "oracle_gold": float(gold.max(axis=1).mean()),
        "gold_rises": rise.rises,
        "rise_n": rise.n,
        "rise_gain": rise.gain,
        "rise_se": rise.se,
        "fit_a": fit_a,
        "fit_b": fit_b,
        "verdict": verdict(curve, rise),
        "n_prompts": n_prompts,
        "n_samples": n_samples,
    }


def plot_best_of_n(curve: Sequence[Mapping[str, float]], title: str, path: str | Path) -> Path:
    """Two panels against sqrt(KL_bon): gold (with +-1 paired SE of the gain over n = 1) and proxy, each point
    labelled with its n; ``title`` (the verdict) above."""
    x = [r["sqrt_kl"] for r in curve]
    fig = Figure(figsize=(11.0, 4.4))
    ax_gold, ax_proxy = fig.subplots(1, 2)
    ax_gold.errorbar(x, [r["gold"] for r in curve], yerr=[r["gold_se"] for r in curve], color="C0", marker="o")
    ax_gold.set_title("gold of the proxy's pick (bars: paired SE of the gain over n=1)", fontsize=9)
    ax_proxy.set_title("reward models' scores of the proxy's pick (own scales)", fontsize=9)
    ax_proxy.plot(x, [r["proxy"] for r in curve], color="C1", marker="o", label="proxy RM")
    ax_proxy.plot(x, [r["heldout"] for r in curve], color="C2", marker="x", linestyle="--", label="held-out RM")
    for ax, key, label in ((ax_gold, "gold", "gold score"), (ax_proxy, "proxy", "reward")):
        for r in curve:
            ax.annotate(f"n={r['n']}", (r["sqrt_kl"], r[key]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel("sqrt(KL_bon) (nats^0.5)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    ax_proxy.legend(fontsize="small")
    fig.suptitle("\n".join(textwrap.wrap(title, 110)), fontsize=9)
    return save_figure(fig, path)
