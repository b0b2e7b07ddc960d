"""Noisy preference pairs for the vanilla reward model: edits of the reference, labelled by the gold judge.

Candidates (:func:`make_candidates`) are edits of a post's reference summary. A pair's label is *sampled*
from the gold judge's Bradley-Terry probability, so labels are noisy like real annotators' (they agree with
the gold ordering ~70-75% of the time under the default mix).

The default mix (:data:`DEFAULT_PAIR_MIX`) carries a realistic spurious correlate: in ~75% of the pairs the
longer candidate is the better one, because it holds more facts (reference vs drop_fact / drop_two /
truncate / vague, drop_fact vs drop_two / truncate). Only ~25% of the pairs show that extra length can be
bad (padding, repetition, a distractor) or that a value can be wrong (hallucination, same length). A reward
model trained on these pairs learns "longer is better" alongside "more facts is better", and a policy can
exploit it.

Measured with the default judge (2,000 posts): labels agree with gold 72%; the gold-better candidate is the
longer one in 79% of the pairs of unequal length, and the chosen one is the longer one in 62%.
Mean gold per candidate kind: reference +3.0, add_distractor +2.1, drop_fact +1.7, hallucinate +1.5,
truncate +1.2, pad +0.8, repeat +0.6, drop_two +0.2, drop_fact_pad -0.4, hallucinate_pad -0.6, vague -0.7.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from r2m.data.gold import GoldJudge, allowed_tokens, is_value_like
from r2m.data.task import (
    AGE_RANGE,
    FEMALE_NAMES,
    MALE_NAMES,
    PLACES,
    QUANTITY_RANGES,
    VALUE_POOLS,
    Fact,
    Post,
    format_completion,
    format_prompt,
    normalise_text,
)

CANDIDATE_KINDS: tuple[str, ...] = (
    "reference",
    "drop_fact",
    "drop_two",
    "add_distractor",
    "hallucinate",
    "repeat",
    "pad",
    "truncate",
    "vague",
    "drop_fact_pad",
    "hallucinate_pad",
)
# "a vs b" -> share of pairs. Longer-is-better pairs: 0.75; longer-is-worse or same-length pairs: 0.25.
DEFAULT_PAIR_MIX: dict[str, float] = {
    "reference vs drop_fact": 0.25,
    "reference vs drop_two": 0.10,
    "reference vs truncate": 0.15,
    "reference vs vague": 0.10,
    "drop_fact vs drop_two": 0.10,
    "drop_fact vs truncate": 0.05,
    "reference vs pad": 0.05,
    "reference vs repeat": 0.05,
    "reference vs hallucinate": 0.05,
    "reference vs add_distractor": 0.05,
    "reference vs drop_fact_pad": 0.05,
}
FILLERS: tuple[str, ...] = (
    "basically",
    "to be honest",
    "long story short",
    "so yeah",
    "honestly",
    "like",
    "I guess",
    "you know",
    "at the end of the day",
    "for what it's worth",
    "pretty much",
    "kind of",
    "just",
    "really",
    "literally",
    "in a nutshell",
    "if that makes sense",
    "or whatever",
    "all things considered",
    "anyway",
)
VAGUE_SUMMARIES: tuple[str, ...] = (
    "need advice about my situation",
    "need advice about my situation, what should I do?",
    "things are complicated right now and I don't know what to do, any advice?",
    "basically there is a problem and I need some advice",
    "long story, need some advice about what is going on",
    "having issues with someone and not sure how to handle it",
)
# padded candidates get this many words (at least 8 more): beyond the default gold length budget of 32
PAD_WORDS: tuple[int, int] = (36, 50)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# swap_value draws from the first pool holding the value (gendered names before the mixed "name" pool)
_SWAP_POOLS: tuple[tuple[str, ...], ...] = (MALE_NAMES, FEMALE_NAMES, *VALUE_POOLS.values())


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+,", ",", text)
    text = re.sub(r"(,\s*)+,", ",", text)
    return text.strip(" ,")


def remove_fact(summary: str, fact: Fact) -> str:
    """``summary`` without ``fact.text`` and the joiner ("and" or ", ") that attached it."""
    t = fact.text
    for old, new in (
        (f", {t} and ", " and "),
        (f"{t} and ", " "),
        (f", {t}", " "),
        (f" and {t}", " "),
        (f"{t}, ", " "),
        (t, " "),
    ):
        if old in summary:
            return _tidy(summary.replace(old, new, 1))
    return summary


def swap_value(value: str, post: Post, rng: random.Random) -> str:
    """A value of the same kind as ``value`` (a name for a name, "$N" for "$N", "N months" for "N months"...)
    whose value tokens do not occur in the post: a hallucination."""
    allowed = allowed_tokens(post)
    options: list[str]
    if m := re.fullmatch(r"(\d+)([MF])", value):
        options = [f"{a}{m.group(2)}" for a in range(AGE_RANGE[0], AGE_RANGE[1] + 1)]
    elif m := re.fullmatch(r"(\d+) (\w+)", value):
        lo, hi = QUANTITY_RANGES.get(m.group(2), (2, 12))
        options = [f"{n} {m.group(2)}" for n in range(lo, hi + 1)]
    else:
        options = next((list(pool) for pool in _SWAP_POOLS if value in pool), list(PLACES))
    in_post = [any(t in allowed and is_value_like(t) for t in normalise_text(o).split()) for o in options]
    options = [o for o, seen in zip(options, in_post, strict=True) if not seen]
    return rng.choice(options) if options else "$9,999"  # (never needed in practice) still a hallucination


def _replace_value(summary: str, value: str, new: str) -> str:
    pattern = r"(?<![\w$])" + re.escape(value) + r"(?![\w])"
    return re.sub(pattern, lambda _: new, summary, count=1)


def _pad(summary: str, rng: random.Random) -> str:
    """Insert filler phrases between the summary's words (never inside another filler), to PAD_WORDS words."""
    words = summary.split()
    n_missing = max(8, rng.randint(*PAD_WORDS) - len(words))
    fillers = list(FILLERS)
    rng.shuffle(fillers)
    inserts: dict[int, list[str]] = {}
    while n_missing > 0:
        filler = fillers.pop() if fillers else "so yeah"
        inserts.setdefault(rng.randint(0, len(words)), []).append(filler)
        n_missing -= len(filler.split())
    out = list(inserts.get(0, []))
    for i, word in enumerate(words, start=1):
        out += [word, *inserts.get(i, [])]
    return " ".join(out)


def _repeat(summary: str, post: Post, rng: random.Random) -> str:
    """A phrase of 1-4 words starting at a key value, repeated 2-4 more times ("Jake and Jake and Jake")."""
    words = summary.split()
    key_tokens = {t for f in post.facts for v in f.values for t in normalise_text(v).split()}
    starts = [i for i, w in enumerate(words) if set(normalise_text(w).split()) & key_tokens] or [0]
    i = rng.choice(starts)
    span = words[i : i + rng.randint(1, 4)]
    phrase = " ".join(span) if len(span) > 1 else f"{span[0]} and"
    extra = rng.randint(2, 4)
    return " ".join(words[:i] + [phrase] * extra + words[i:])


def _add_distractor(summary: str, post: Post, rng: random.Random) -> str:
    """Insert the post's sentence holding a distractor value as a clause before the closing question."""
    value = rng.choice(post.distractor_values) if post.distractor_values else None
    pattern = r"(?<![\w$])" + re.escape(value) + r"(?![\w])" if value else None
    sentence = next((s for s in _SENTENCE_END.split(post.text) if pattern and re.search(pattern, s)), None)
    if sentence is None:
        return summary
    clause = sentence.rstrip(".!? ")
    if not clause.startswith(("I ", "I'")):
        clause = clause[0].lower() + clause[1:]
    body, sep, question = summary.rpartition(", ")
    return f"{body}, and {clause}, {question}" if sep else f"{summary}, and {clause}"


def _truncate(summary: str, post: Post, rng: random.Random) -> str:
    """Cut mid-sentence before the last key fact's first value (so at least one fact is lost)."""
    words = summary.split()
    last = {t for v in post.facts[-1].values for t in normalise_text(v).split()}
    hits = (i for i, w in enumerate(words) if set(normalise_text(w).split()) & last)
    stop = max(next(hits, int(0.6 * len(words))), 2)
    return " ".join(words[: rng.randint(max(1, stop // 2), stop)]).rstrip(",")


def make_candidates(post: Post, rng: random.Random) -> dict[str, str]:
    """Edited versions of ``post.reference``, keyed by :data:`CANDIDATE_KINDS`."""
    ref = post.reference
    facts = list(post.facts)
    dropped = rng.sample(facts, min(2, len(facts)))
    drop_fact = remove_fact(ref, dropped[0])
    value = rng.choice([v for f in facts for v in f.values])
    hallucinate = _replace_value(ref, value, swap_value(value, post, rng))
    return {
        "reference": ref,
        "drop_fact": drop_fact,
        "drop_two": remove_fact(drop_fact, dropped[-1]),
        "add_distractor": _add_distractor(ref, post, rng),
        "hallucinate": hallucinate,
        "repeat": _repeat(ref, post, rng),
        "pad": _pad(ref, rng),
        "truncate": _truncate(ref, post, rng),
        "vague": rng.choice(VAGUE_SUMMARIES),
        "drop_fact_pad": _pad(drop_fact, rng),
        "hallucinate_pad": _pad(hallucinate, rng),
    }


def _parse_mix(pair_mix: dict[str, float]) -> tuple[list[tuple[str, str]], list[float]]:
    pairs, weights = [], []
    for key, weight in pair_mix.items():
        a, sep, b = key.partition(" vs ")
        if not sep or a not in CANDIDATE_KINDS or b not in CANDIDATE_KINDS:
            raise ValueError(f"pair_mix key {key!r} must be '<kind> vs <kind>', kinds in {CANDIDATE_KINDS}")
        if weight < 0:
            raise ValueError(f"pair_mix weight for {key!r} must be >= 0, got {weight}")
        pairs.append((a, b))
        weights.append(float(weight))
    if not pairs or sum(weights) <= 0:
        raise ValueError("pair_mix needs at least one pair with a positive weight")
    return pairs, weights


def make_preference_pairs(
    posts: Sequence[Post],
    seed: int,
    judge: GoldJudge,
    pair_mix: dict[str, float] | None = None,
    pairs_per_post: int = 1,
) -> list[dict[str, Any]]:
    """``pairs_per_post`` labelled pairs per post, deterministic by ``seed``.

    Each pair's kinds are drawn from ``pair_mix`` ("a vs b" -> weight; default :data:`DEFAULT_PAIR_MIX`); the
    label is sampled: a is chosen with probability ``judge.preference_prob(post, a, b)``. ``gold_margin`` is
    gold(chosen) - gold(rejected); ``label_agrees_with_gold`` is ``gold_margin > 0``.
    """
    pairs, weights = _parse_mix(pair_mix or DEFAULT_PAIR_MIX)
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for post in posts:
        candidates = make_candidates(post, rng)
        prompt = format_prompt(post)
        for k in range(pairs_per_post):
            kind_a, kind_b = rng.choices(pairs, weights)[0]
            a, b = candidates[kind_a], candidates[kind_b]
            score_a, score_b = judge.score(post, a), judge.score(post, b)
            if rng.random() < judge.preference_prob(post, a, b):
                chosen, rejected, margin = (a, kind_a), (b, kind_b), score_a - score_b
            else:
                chosen, rejected, margin = (b, kind_b), (a, kind_a), score_b - score_a
            rows.append(
                {
                    "id": f"{post.id}-{k}",
                    "post_id": post.id,
                    "prompt": prompt,
                    "chosen": format_completion(chosen[0]),
                    "rejected": format_completion(rejected[0]),
                    "chosen_kind": chosen[1],
                    "rejected_kind": rejected[1],
                    "gold_margin": margin,
                    "label_agrees_with_gold": margin > 0,
                }
            )
    return rows


def pair_stats(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """n; label agreement with the gold ordering; among pairs of different word counts, the fraction where the
    chosen one is longer and the fraction where the gold-better one is longer (the spurious correlate)."""
    n = len(rows)
    agree = sum(bool(r["label_agrees_with_gold"]) for r in rows)
    longer_chosen = n_diff = longer_better = n_gold = 0
    for r in rows:
        lc, lr = len(r["chosen"].split()), len(r["rejected"].split())
        if lc == lr:
            continue
        n_diff += 1
        longer_chosen += lc > lr
        if r["gold_margin"] != 0:  # gold ties have no better candidate
            n_gold += 1
            longer_better += (lc > lr) == (r["gold_margin"] > 0)
    return {
        "n": float(n),
        "label_agreement": agree / n if n else 0.0,
        "longer_chosen": longer_chosen / n_diff if n_diff else 0.0,
        "longer_gold_better": longer_better / n_gold if n_gold else 0.0,
    }
