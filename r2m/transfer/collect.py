"""One prompt of empirical TPO's data collection, and the annotation budget it spends.

For a prompt the online policy has written ``K`` responses and ``N`` extras. When the chosen candidate is a source,
the first ``replace`` of the K are replaced by the source's best ``replace`` of the N extras (best-of-N: an
approximation of the source's optimal policy). The human scores the K responses (one annotation each), the DPO pair
is (best, worst), and the source's win sample is whether the best was one of its responses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from r2m.transfer.ucb import ONLINE, win_sample


class BudgetExhausted(RuntimeError):
    """More annotations were asked for than the budget holds."""


@dataclass
class AnnotationBudget:
    """Counts the human's annotations (one per scored response); ``limit`` 0 means no limit."""

    limit: int = 0
    used: int = 0

    def spend(self, n: int) -> None:
        """Take ``n`` annotations, or raise :class:`BudgetExhausted` (spending nothing) when they do not fit."""
        if n < 0:
            raise ValueError(f"cannot spend {n} annotations")
        if self.limit and self.used + n > self.limit:
            raise BudgetExhausted(f"annotation budget {self.limit}: {self.used} used, {n} more asked for")
        self.used += n

    @property
    def left(self) -> int | None:
        return None if not self.limit else self.limit - self.used


@dataclass(frozen=True)
class Collected:
    """What one prompt gave: the K responses scored, the DPO pair, the candidate and its win sample."""

    responses: list[str]
    scores: list[float]
    best: int
    worst: int
    candidate: str
    source_slots: tuple[int, ...]
    win: int | None  # None for the online candidate (its sample is UCB's bar)

    @property
    def chosen(self) -> str:
        return self.responses[self.best]

    @property
    def rejected(self) -> str:
        return self.responses[self.worst]


def best_of_n(scores: Sequence[float], n: int) -> list[int]:
    """Indices of the ``n`` highest ``scores``, best first (the earlier of equal scores first)."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:n]


def replace_with_source(responses: Sequence[str], extras: Sequence[str], extra_scores: Sequence[float], replace: int):
    """``(responses, slots)``: the K ``responses`` with slots ``0..replace-1`` replaced by the source's best
    ``replace`` extras (the K stay K)."""
    if not 0 <= replace <= len(responses):
        raise ValueError(f"replace must be in [0, K={len(responses)}], got {replace}")
    if replace > len(extras):
        raise ValueError(f"replace ({replace}) needs at least as many extra samples, got {len(extras)}")
    picked = [extras[i] for i in best_of_n(extra_scores, replace)]
    return picked + list(responses[replace:]), tuple(range(replace))


def best_and_worst(scores: Sequence[float]) -> tuple[int, int]:
    """The human's best and worst of the K, as the authors order them (by ``(score, index)``: of equal scores the
    last is best and the first is worst)."""
    order = sorted(range(len(scores)), key=lambda i: (scores[i], i))
    return order[-1], order[0]


def collect_prompt(
    candidate: str,
    responses: Sequence[str],
    extras: Sequence[str],
    source_score: Callable[[Sequence[str]], list[float]] | None,
    human_score: Callable[[Sequence[str]], list[float]],
    budget: AnnotationBudget,
    replace: int,
) -> Collected:
    """One prompt's collection (see the module docstring); ``source_score`` scores texts under the candidate source
    (None for :data:`~r2m.transfer.ucb.ONLINE`)."""
    if candidate == ONLINE:
        texts, slots = list(responses), ()
    else:
        if source_score is None:
            raise ValueError(f"candidate {candidate!r} needs its source's scores")
        texts, slots = replace_with_source(responses, extras, source_score(extras), replace)
    budget.spend(len(texts))
    scores = [float(s) for s in human_score(texts)]
    best, worst = best_and_worst(scores)
    win = None if candidate == ONLINE else win_sample(best, slots)
    return Collected(texts, scores, best, worst, candidate, slots, win)
