"""Pairwise adapter around the programmatic gold scorer (``r2m.data.gold.GoldJudge.score``), and the embedded task's
gold scorer loaded from a working directory's ``data/posts.jsonl``."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from r2m.data.gold import GoldJudge
from r2m.data.io import read_jsonl
from r2m.data.task import Post
from r2m.judges.base import Judge, PairwiseItem, Preference, Verdict
from r2m.paths import Paths


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


def load_gold(paths: Paths):
    """``(posts, gold_fn)`` for the embedded task, where ``gold_fn(post_ids, completions) -> scores``;
    ``(None, None)`` for a real dataset (its ``posts.jsonl`` rows name their ``source``: there is no gold judge)
    or without a ``posts.jsonl``."""
    posts_file = paths.data / "posts.jsonl"
    if not posts_file.exists():
        return None, None
    rows = read_jsonl(posts_file)
    if any("source" in p for p in rows[:1]):
        return None, None
    posts = {p["id"]: Post.from_dict(p) for p in rows}
    judge = GoldJudge()

    def gold_fn(post_ids, completions) -> list[float]:
        return [judge.score(posts[i], c) for i, c in zip(post_ids, completions, strict=True)]

    return posts, gold_fn


def gold_judge(posts, gold_fn) -> GoldPairwiseJudge:
    """The embedded task's gold scorer as a pairwise judge (``posts``, ``gold_fn`` from :func:`load_gold`)."""
    return GoldPairwiseJudge(lambda post, text: gold_fn([post.id], [text])[0], posts)
