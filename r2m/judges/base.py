"""Pairwise judge interface shared by the gold, LLM-API and local-LLM judges.

A judge compares two responses to the same prompt and returns a :class:`Verdict`.
:meth:`Judge.judge` runs every item in both presentation orders (A/B and B/A) to
cancel position bias: a consistent pair keeps its winner, a disagreement becomes a
tie, and an unparseable answer in either order makes the item ``"invalid"`` (it is
recorded, never guessed).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Preference = Literal["A", "B", "tie", "invalid"]
PREFERENCES: frozenset[str] = frozenset({"A", "B", "tie", "invalid"})
_FLIP: dict[str, Preference] = {"A": "B", "B": "A", "tie": "tie", "invalid": "invalid"}


@dataclass(frozen=True)
class PairwiseItem:
    """One comparison: ``response_a`` vs ``response_b`` for ``prompt``.

    ``context`` carries judge-specific side information, e.g. ``{"post_id": ...}``
    for the gold judge.
    """

    id: str
    prompt: str
    response_a: str
    response_b: str
    context: Mapping[str, Any] = field(default_factory=dict)

    def swapped(self) -> PairwiseItem:
        """The same item with the two responses exchanged (same id and context)."""
        return dataclasses.replace(self, response_a=self.response_b, response_b=self.response_a)


@dataclass(frozen=True)
class Verdict:
    """A judge's decision on one item, always expressed in the item's original A/B order.

    ``consistent`` is ``True``/``False`` when the item was judged in both orders and
    both answers were valid, and ``None`` otherwise (single order, or invalid).
    """

    item_id: str
    preferred: Preference
    reason: str = ""
    raw: str = ""
    score_a: float | None = None
    score_b: float | None = None
    consistent: bool | None = None

    def __post_init__(self) -> None:
        if self.preferred not in PREFERENCES:
            raise ValueError(f"Verdict.preferred must be one of {sorted(PREFERENCES)}, got {self.preferred!r}")

    @property
    def is_valid(self) -> bool:
        """Whether the verdict is usable (not ``"invalid"``)."""
        return self.preferred != "invalid"

    def flipped(self) -> Verdict:
        """The verdict re-expressed for the swapped item (A <-> B, scores exchanged)."""
        return dataclasses.replace(self, preferred=_FLIP[self.preferred], score_a=self.score_b, score_b=self.score_a)


def _mean_or_none(x: float | None, y: float | None) -> float | None:
    if x is None or y is None:
        return x if y is None else y
    return (x + y) / 2.0


def combine_orders(forward: Verdict, backward: Verdict) -> Verdict:
    """Combine the verdict on (a, b) with the verdict on the swapped item (b, a).

    ``backward`` is in the swapped item's own A/B labels; it is flipped back here.
    Either invalid -> ``"invalid"`` (``consistent=None``); same winner -> that winner
    (``consistent=True``); any disagreement -> ``"tie"`` (``consistent=False``).
    Scores are averaged over the two orders; reasons and raw outputs are both kept.
    """
    back = backward.flipped()
    consistent: bool | None
    if not forward.is_valid or not back.is_valid:
        preferred: Preference = "invalid"
        consistent = None
    elif forward.preferred == back.preferred:
        preferred, consistent = forward.preferred, True
    else:
        preferred, consistent = "tie", False
    return Verdict(
        item_id=forward.item_id,
        preferred=preferred,
        reason=f"[AB] {forward.reason}\n[BA] {backward.reason}",
        raw=f"[AB] {forward.raw}\n[BA] {backward.raw}",
        score_a=_mean_or_none(forward.score_a, back.score_a),
        score_b=_mean_or_none(forward.score_b, back.score_b),
        consistent=consistent,
    )


class Judge(ABC):
    """Base class for pairwise judges.

    Subclasses implement :meth:`judge_one` (a single order). Judges that can batch
    or parallelise (API clients, local LLMs) may also override :meth:`judge_batch`;
    :meth:`judge` sends both orders of every item through one ``judge_batch`` call.
    """

    name: str = "judge"

    @abstractmethod
    def judge_one(self, item: PairwiseItem) -> Verdict:
        """Judge ``item`` as presented (no order swapping). Must not raise on bad model output:
        return ``Verdict(preferred="invalid", raw=...)`` instead."""

    def judge_batch(self, items: Sequence[PairwiseItem], progress: bool = False) -> list[Verdict]:
        """Judge each item in the given order; default is a sequential loop over :meth:`judge_one`."""
        iterable: Sequence[PairwiseItem] = items
        if progress:
            from tqdm.auto import tqdm

            iterable = tqdm(items, desc=f"judge[{self.name}]", total=len(items))
        verdicts = [self.judge_one(item) for item in iterable]
        if len(verdicts) != len(items):
            raise RuntimeError(f"{self.name}: judge_batch returned {len(verdicts)} verdicts for {len(items)}")
        return verdicts

    def judge(self, items: Sequence[PairwiseItem], both_orders: bool = True, progress: bool = False) -> list[Verdict]:
        """Judge ``items``; with ``both_orders`` each is also judged swapped and combined
        via :func:`combine_orders`. Returns one verdict per item, in input order."""
        items = list(items)
        if not both_orders:
            return self.judge_batch(items, progress=progress)
        verdicts = self.judge_batch(items + [item.swapped() for item in items], progress=progress)
        if len(verdicts) != 2 * len(items):
            raise RuntimeError(f"{self.name}: expected {2 * len(items)} verdicts, got {len(verdicts)}")
        n = len(items)
        return [combine_orders(verdicts[i], verdicts[n + i]) for i in range(n)]
