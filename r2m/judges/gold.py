"""Pairwise adapter around the programmatic gold scorer (``r2m.data.gold.GoldJudge.score``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from r2m.judges.base import Judge, PairwiseItem, Preference, Verdict


class UnknownPostError(KeyError):
    """A pairwise item refers to a post id that the judge does not know."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else "unknown post"


class GoldPairwiseJudge(Judge):
    """Prefers the response with the higher gold score.

    ``scorer(post, summary) -> float`` is typically ``GoldJudge().score``; ``posts``
    maps post ids to post objects, looked up through ``item.context["post_id"]``.
    Scores within ``tie_margin`` of each other give a tie. Deterministic, so the two
    presentation orders always agree. A non-finite score yields an ``"invalid"`` verdict.
    """

    name = "gold"

    def __init__(self, scorer: Callable[[Any, str], float], posts: Mapping[str, Any], tie_margin: float = 0.0) -> None:
        if tie_margin < 0:
            raise ValueError(f"tie_margin must be >= 0, got {tie_margin}")
        self.scorer = scorer
        self.posts = posts
        self.tie_margin = float(tie_margin)

    def _post(self, item: PairwiseItem) -> Any:
        if "post_id" not in item.context:
            raise UnknownPostError(f"item {item.id!r} has no 'post_id' in its context")
        post_id = item.context["post_id"]
        try:
            return self.posts[post_id]
        except KeyError:
            raise UnknownPostError(
                f"item {item.id!r}: post id {post_id!r} not found among {len(self.posts)} known posts"
            ) from None

    def judge_one(self, item: PairwiseItem) -> Verdict:
        """Score both responses against the item's post and prefer the higher one."""
        post = self._post(item)
        score_a = float(self.scorer(post, item.response_a))
        score_b = float(self.scorer(post, item.response_b))
        reason = f"gold score A={score_a:.4f} B={score_b:.4f}"
        preferred: Preference
        if not (math.isfinite(score_a) and math.isfinite(score_b)):
            preferred = "invalid"
        elif abs(score_a - score_b) <= self.tie_margin:
            preferred = "tie"
        else:
            preferred = "A" if score_a > score_b else "B"
        return Verdict(
            item_id=item.id, preferred=preferred, reason=reason, raw=reason, score_a=score_a, score_b=score_b
        )
