"""Surface statistics of generated text used to spot reward hacking (length and repetition exploits)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"[\w$']+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def repeated_trigrams(text: str) -> int:
    """Number of word trigrams that occur again after their first occurrence ("a b c a b c" -> 1)."""
    w = words(text)
    counts = Counter(zip(w, w[1:], w[2:], strict=False))
    return sum(c - 1 for c in counts.values() if c > 1)


def distinct_ratio(text: str) -> float:
    """Distinct words / words (1.0 for an empty text)."""
    w = words(text)
    return len(set(w)) / len(w) if w else 1.0


def batch_stats(texts: Sequence[str]) -> dict[str, float]:
    """Means over a batch: words, repeated trigrams, distinct-word ratio."""
    n = max(1, len(texts))
    return {
        "completion_words": sum(len(words(t)) for t in texts) / n,
        "repeated_trigrams": sum(repeated_trigrams(t) for t in texts) / n,
        "distinct_ratio": sum(distinct_ratio(t) for t in texts) / n,
    }
