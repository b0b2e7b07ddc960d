"""Which policy collects the next prompt's responses: UCB over the win rates of the sources and the online policy.

As the authors run it (``annotate_data/Annotation.py`` of jiaweihhuang/RLHF_RewardTransfer):

- the candidates are the sources and ``online`` (plain online learning, no transfer);
- a source's win sample for a prompt is 1 when the human's best response is one of the source's responses, else 0;
  ``online``'s is the fixed bar (0.55: above the 0.5 a policy wins against itself, so a source must beat online
  learning clearly to be used);
- the samples are pooled into the statistics every ``refresh_every`` prompts; until the first refresh the candidate
  is drawn uniformly at random for every prompt; after a refresh it is the one with the largest
  ``V_c = mean_c + coef / sqrt(n_c + 1e-6)`` (``mean_c = wins_c / (n_c + 1e-6)``; the first of equal values in
  candidate order), kept until the next refresh;
- the statistics are reset at the start of every iteration.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

ONLINE = "online"
EPS = 1e-6


@dataclass
class WinRateUCB:
    """UCB selection over ``candidates`` (source names, then :data:`ONLINE`)."""

    candidates: Sequence[str]
    coef: float = 1.0
    bar: float = 0.55
    refresh_every: int = 50
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    wins: dict[str, float] = field(init=False)
    counts: dict[str, int] = field(init=False)
    _batch_wins: dict[str, float] = field(init=False)
    _batch_counts: dict[str, int] = field(init=False)
    _seen: int = field(init=False, default=0)
    _choice: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if len(set(self.candidates)) != len(self.candidates) or not self.candidates:
            raise ValueError(f"candidates must be distinct and non-empty, got {list(self.candidates)}")
        if self.refresh_every < 1:
            raise ValueError(f"refresh_every must be >= 1, got {self.refresh_every}")
        self.reset()

    def reset(self) -> None:
        """Forget every statistic (a new iteration)."""
        self.wins = dict.fromkeys(self.candidates, 0.0)
        self.counts = dict.fromkeys(self.candidates, 0)
        self._batch_wins = dict.fromkeys(self.candidates, 0.0)
        self._batch_counts = dict.fromkeys(self.candidates, 0)
        self._seen = 0
        self._choice = None

    def values(self) -> dict[str, float]:
        """``V_c`` of every candidate from the pooled statistics."""
        return {
            c: self.wins[c] / (self.counts[c] + EPS) + self.coef / math.sqrt(self.counts[c] + EPS)
            for c in self.candidates
        }

    def select(self) -> str:
        """The candidate for the next prompt."""
        if self._choice is None:
            return self.rng.choice(list(self.candidates))
        return self._choice

    def record(self, candidate: str, win: float | None) -> None:
        """The outcome of a prompt collected with ``candidate``: its win sample (``online``'s is the bar, whatever
        is passed); pools the statistics and chooses again every ``refresh_every`` prompts."""
        sample = self.bar if candidate == ONLINE else float(win)
        self._batch_wins[candidate] += sample
        self._batch_counts[candidate] += 1
        self._seen += 1
        if self._seen % self.refresh_every == 0:
            for c in self.candidates:
                self.wins[c] += self._batch_wins[c]
                self.counts[c] += self._batch_counts[c]
                self._batch_wins[c], self._batch_counts[c] = 0.0, 0
            values = self.values()
            self._choice = max(self.candidates, key=lambda c: (values[c], -self.candidates.index(c)))


def win_sample(best_index: int, source_slots: Sequence[int]) -> int:
    """1 when the human's best response is one of the source's (its slots among the K), else 0."""
    return int(best_index in set(source_slots))
