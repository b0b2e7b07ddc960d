"""Preference pairs: candidate edits on a hand-made post, sampled labels, and the default mix's statistics."""

from __future__ import annotations

import random

import pytest

from r2m.data.gold import GoldJudge
from r2m.data.preferences import (
    CANDIDATE_KINDS,
    DEFAULT_PAIR_MIX,
    make_candidates,
    make_preference_pairs,
    pair_stats,
    remove_fact,
)
from r2m.data.task import Fact, Post, format_completion, format_prompt, generate_posts

POST = Post(
    id="h1",
    topic="family",
    text=(
        "So I'm 27F and my brother Tyler is 31M. He is getting married in Austin in October. He expects "
        "everyone to spend around $2,000 on the trip. He told me I can't bring my partner Nina. I also have "
        "a dentist appointment on Monday, which doesn't help. My friend Omar thinks I'm overthinking it. "
        "Would it be wrong to skip the wedding?"
    ),
    facts=(
        Fact("my brother Tyler (31M)", ("Tyler", "31M")),
        Fact("is getting married in Austin in October", ("Austin", "October")),
        Fact("expects me to spend $2,000 on the trip", ("$2,000",)),
        Fact("won't let me bring my partner Nina", ("Nina",)),
    ),
    distractor_values=("Monday", "Omar"),
    reference=(
        "my brother Tyler (31M) is getting married in Austin in October, expects me to spend $2,000 on the "
        "trip and won't let me bring my partner Nina, should I skip the wedding?"
    ),
)


@pytest.fixture(scope="module")
def judge() -> GoldJudge:
    return GoldJudge()


def test_remove_fact_keeps_the_sentence_joined() -> None:
    ref = POST.reference
    assert remove_fact(ref, POST.facts[1]) == (
        "my brother Tyler (31M) expects me to spend $2,000 on the trip and won't let me bring my partner "
        "Nina, should I skip the wedding?"
    )
    assert remove_fact(ref, POST.facts[2]) == (
        "my brother Tyler (31M) is getting married in Austin in October and won't let me bring my partner "
        "Nina, should I skip the wedding?"
    )
    assert remove_fact(ref, POST.facts[0]).startswith("is getting married in Austin")
    assert remove_fact(ref, POST.facts[3]) == (
        "my brother Tyler (31M) is getting married in Austin in October, expects me to spend $2,000 on the "
        "trip, should I skip the wedding?"
    )


@pytest.mark.parametrize("seed", range(5))
def test_reference_beats_every_edit(judge: GoldJudge, seed: int) -> None:
    cands = make_candidates(POST, random.Random(seed))
    assert set(cands) == set(CANDIDATE_KINDS)
    ref = judge.score(POST, cands["reference"])
    for kind, text in cands.items():
        if kind != "reference":
            assert judge.score(POST, text) < ref - 0.25, (kind, text)
    b = judge.breakdown
    assert b(POST, cands["drop_fact"])["coverage_fraction"] == pytest.approx(3 / 4)
    assert b(POST, cands["drop_two"])["coverage_fraction"] == pytest.approx(2 / 4)
    assert b(POST, cands["hallucinate"])["n_hallucinated"] == 1
    assert b(POST, cands["add_distractor"])["n_distractors"] == 1
    assert b(POST, cands["repeat"])["repeated_trigrams"] >= 1
    assert b(POST, cands["pad"])["n_words"] > b(POST, cands["reference"])["n_words"]
    assert b(POST, cands["truncate"])["coverage_fraction"] < 1
    assert b(POST, cands["vague"])["coverage_fraction"] == 0


def test_pairs_are_deterministic_and_well_formed(judge: GoldJudge) -> None:
    posts = generate_posts(30, seed=9)
    rows = make_preference_pairs(posts, seed=1, judge=judge)
    assert rows == make_preference_pairs(posts, seed=1, judge=judge)
    assert rows != make_preference_pairs(posts, seed=2, judge=judge)
    assert len(rows) == len(posts)
    posts_by_id = {p.id: p for p in posts}
    for r in rows:
        post = posts_by_id[r["post_id"]]
        assert r["prompt"] == format_prompt(post)
        assert r["chosen"].startswith(" ") and r["rejected"].startswith(" ")
        assert r["chosen"] == format_completion(r["chosen"])
        assert {r["chosen_kind"], r["rejected_kind"]} <= set(CANDIDATE_KINDS)
        margin = judge.score(post, r["chosen"]) - judge.score(post, r["rejected"])
        assert r["gold_margin"] == pytest.approx(margin)
        assert r["label_agrees_with_gold"] == (margin > 0)
    assert len(make_preference_pairs(posts[:5], seed=1, judge=judge, pairs_per_post=3)) == 15


def test_default_mix_statistics() -> None:
    assert sum(DEFAULT_PAIR_MIX.values()) == pytest.approx(1.0)
    rows = make_preference_pairs(generate_posts(300, seed=11), seed=0, judge=GoldJudge())
    stats = pair_stats(rows)
    assert stats["n"] == 300
    assert 0.65 <= stats["label_agreement"] <= 0.80  # noisy, like real annotators
    assert stats["longer_gold_better"] >= 0.70  # the spurious correlate
    assert 0.55 <= stats["longer_chosen"] <= 0.75


def test_custom_mix_and_validation(judge: GoldJudge) -> None:
    mix = {"reference vs vague": 1.0}
    rows = make_preference_pairs(generate_posts(60, seed=2), seed=0, judge=judge, pair_mix=mix)
    kinds = {(r["chosen_kind"], r["rejected_kind"]) for r in rows}
    assert kinds <= {("reference", "vague"), ("vague", "reference")}
    assert pair_stats(rows)["label_agreement"] > 0.8
    with pytest.raises(ValueError):
        make_preference_pairs([POST], seed=0, judge=judge, pair_mix={"reference vs nonsense": 1.0})
    with pytest.raises(ValueError):
        make_preference_pairs([POST], seed=0, judge=judge, pair_mix={"reference-drop_fact": 1.0})
