"""The gold judge: a deterministic, programmatic stand-in for human (or GPT-4) judgement of summaries.

For a post with key facts F_1..F_k (each with values V_i, written as in the post) and a summary s::

    score(s) = base
             + coverage_weight * (1/k) * sum_i |{v in V_i : v in s}| / |V_i|      (key facts covered)
             - hallucination_penalty * #(value-like tokens of s not in the post)  (each occurrence)
             - distractor_penalty    * #(distractor values present in s)           (each distinct value)
             - repetition_penalty    * #(repeated word trigrams of s)              ("a b c a b c" -> 1)
             - over_length_penalty   * max(0, n_words - length_budget)
             - under_length_penalty  * max(0, length_floor - n_words)

Matching is on normalised text (:func:`r2m.data.task.normalise_text`: case-insensitive, punctuation dropped,
``$`` amounts and numbers kept, "$1,200" == "$1200"), whole tokens only. A token is *value-like* when it
holds a digit or belongs to ``VALUE_VOCAB`` (names, places, weekdays, months, brands...); it is hallucinated
when it does not occur in the post (a bare number is accepted when the post has it as "$300" or "24M").
``n_words`` counts normalised tokens. Coverage is normalised by the number of facts, so every post's ceiling
is ``base + coverage_weight``; the length floor makes saying almost nothing a poor strategy, and one value's
share of coverage is of the same order as one hallucination, so the optimum is a faithful, complete, concise
summary.

With the defaults a reference scores +3.0 (the ceiling: all facts, no penalty), the empty string -2.5, a
reference with one fact dropped +1.7 on average, with one value swapped for a wrong one +1.5, the reference
plus 60 distinct filler words -4.5. Pairwise preference is Bradley-Terry:
``P(a > b) = sigmoid((score(a) - score(b)) / temperature)``; temperature 1.8 makes labels sampled from it
agree with the gold ordering ~72% of the time on the default preference pairs (real annotators: 65-75%).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from r2m.data.task import VALUE_VOCAB, Post, normalise_text

_HAS_DIGIT = re.compile(r"\d")
_NUMBER_CORE = re.compile(r"\$?(\d+)")
_MAX_CACHE = 100_000


@dataclass
class GoldConfig:
    """Weights of the gold score (see the module docstring for the formula)."""

    coverage_weight: float = field(default=3.5, metadata={"help": "score for covering all key facts' values"})
    hallucination_penalty: float = field(
        default=0.5,
        metadata={"help": "per value-like token (number, $amount, name...) not in the post"},
    )
    distractor_penalty: float = field(default=0.3, metadata={"help": "per distractor value included"})
    repetition_penalty: float = field(default=0.35, metadata={"help": "per repeated word trigram"})
    length_budget: int = field(default=32, metadata={"help": "words allowed before the over-length penalty"})
    over_length_penalty: float = field(default=0.15, metadata={"help": "per word beyond length_budget"})
    length_floor: int = field(default=10, metadata={"help": "words below which under_length_penalty applies"})
    under_length_penalty: float = field(default=0.2, metadata={"help": "per word missing below length_floor"})
    base: float = field(default=-0.5, metadata={"help": "offset: a fluent summary without facts scores < 0"})
    temperature: float = field(default=1.8, metadata={"help": "Bradley-Terry temperature of preference_prob"})


@dataclass(frozen=True)
class _PostIndex:
    """What the judge needs from a post, normalised once."""

    facts: tuple[tuple[str, ...], ...]  # normalised values per key fact
    distractors: tuple[str, ...]  # normalised distinct distractor values
    allowed: frozenset[str]  # tokens of the post, plus the numbers inside "$300" / "24M"


def is_value_like(token: str) -> bool:
    """Whether a normalised token is a value: it holds a digit or is in ``VALUE_VOCAB``."""
    return token in VALUE_VOCAB or _HAS_DIGIT.search(token) is not None


def allowed_tokens(post: Post) -> frozenset[str]:
    """Normalised tokens of the post, plus the bare numbers inside "$300" / "24M" (not hallucinations)."""
    tokens = set(normalise_text(post.text).split())
    return frozenset(tokens | {m.group(1) for t in tokens if (m := _NUMBER_CORE.match(t))})


def _index(post: Post) -> _PostIndex:
    facts = tuple(tuple(normalise_text(v) for v in f.values) for f in post.facts)
    distractors = tuple(dict.fromkeys(normalise_text(v) for v in post.distractor_values))
    return _PostIndex(facts, distractors, allowed_tokens(post))


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


class GoldJudge:
    """Deterministic gold score of a summary for a :class:`Post`; robust to arbitrary text, pure Python."""

    def __init__(self, config: GoldConfig | None = None) -> None:
        self.config = config or GoldConfig()
        self._cache: dict[tuple[str, str], _PostIndex] = {}

    def _post_index(self, post: Post) -> _PostIndex:
        key = (post.id, post.text)
        idx = self._cache.get(key)
        if idx is None:
            if len(self._cache) >= _MAX_CACHE:
                self._cache.clear()
            idx = self._cache[key] = _index(post)
        return idx

    def breakdown(self, post: Post, summary: str) -> dict[str, float]:
        """Signed score components, ``total``, and the counts behind them."""
        cfg = self.config
        idx = self._post_index(post)
        norm = normalise_text(summary if isinstance(summary, str) else str(summary or ""))
        tokens = norm.split()
        padded = f" {norm} "
        n_words = len(tokens)

        covered = 0.0
        for values in idx.facts:
            if values:
                covered += sum(f" {v} " in padded for v in values) / len(values)
        coverage_fraction = covered / len(idx.facts) if idx.facts else 0.0
        n_distractors = sum(f" {v} " in padded for v in idx.distractors)
        allowed = idx.allowed
        n_hallucinated = sum(1 for t in tokens if t not in allowed and is_value_like(t))
        trigrams = list(zip(tokens, tokens[1:], tokens[2:], strict=False))
        repeated = len(trigrams) - len(set(trigrams))

        parts = {
            "base": cfg.base,
            "coverage": cfg.coverage_weight * coverage_fraction,
            "hallucination": -cfg.hallucination_penalty * n_hallucinated,
            "distractor": -cfg.distractor_penalty * n_distractors,
            "repetition": -cfg.repetition_penalty * repeated,
            "over_length": -cfg.over_length_penalty * max(0, n_words - cfg.length_budget),
            "under_length": -cfg.under_length_penalty * max(0, cfg.length_floor - n_words),
        }
        parts["total"] = sum(parts.values())
        parts.update(
            n_words=float(n_words),
            repeated_trigrams=float(repeated),
            n_hallucinated=float(n_hallucinated),
            n_distractors=float(n_distractors),
            coverage_fraction=coverage_fraction,
        )
        return parts

    def score(self, post: Post, summary: str) -> float:
        """The gold score (``breakdown(...)["total"]``)."""
        return self.breakdown(post, summary)["total"]

    def score_batch(self, posts: Sequence[Post], summaries: Sequence[str]) -> list[float]:
        """Scores of ``summaries[i]`` for ``posts[i]``."""
        if len(posts) != len(summaries):
            raise ValueError(f"score_batch: {len(posts)} posts but {len(summaries)} summaries")
        return [self.score(p, s) for p, s in zip(posts, summaries, strict=True)]

    def preference_prob(self, post: Post, a: str, b: str) -> float:
        """Bradley-Terry probability that ``a`` is preferred to ``b``."""
        return _sigmoid((self.score(post, a) - self.score(post, b)) / self.config.temperature)
