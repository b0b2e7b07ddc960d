"""Gold judge: exact component values on a hand-made post, robustness, calibration and speed."""

from __future__ import annotations

import math
import statistics
import time

import pytest

from r2m.data.gold import GoldConfig, GoldJudge
from r2m.data.task import Fact, Post, generate_posts

POST = Post(
    id="t1",
    topic="roommates",
    text=(
        "I (22F) need some outside perspective on my roommate Jake (24M). He owes me $300 for his share of "
        "the electric bill. This has been going on for 3 months and it's always some excuse. My sister Emma "
        "lives in Denver, so I can't just crash with her. I also have a dentist appointment on Friday, which "
        "doesn't help. How do I get my money back without turning it into a huge fight?"
    ),
    facts=(
        Fact("my roommate Jake (24M)", ("Jake", "24M")),
        Fact("owes me $300 for utilities", ("$300",)),
        Fact("has been making excuses for 3 months", ("3 months",)),
    ),
    distractor_values=("Emma", "Denver", "Friday"),
    reference=(
        "my roommate Jake (24M) owes me $300 for utilities and has been making excuses for 3 months, "
        "how do I get my money back?"
    ),
)
REF = POST.reference
CFG = GoldConfig()


@pytest.fixture()
def judge() -> GoldJudge:
    return GoldJudge()


def test_reference_reaches_the_ceiling(judge: GoldJudge) -> None:
    b = judge.breakdown(POST, REF)
    assert b["coverage_fraction"] == 1.0
    assert b["n_words"] == 24
    assert b["total"] == pytest.approx(CFG.base + CFG.coverage_weight)
    assert 2.5 <= b["total"] <= 3.5


def test_dropped_fact_loses_its_share_of_coverage(judge: GoldJudge) -> None:
    dropped = "my roommate Jake (24M) owes me $300 for utilities, how do I get my money back?"
    b = judge.breakdown(POST, dropped)
    assert b["coverage_fraction"] == pytest.approx(2 / 3)
    assert b["total"] == pytest.approx(CFG.base + CFG.coverage_weight * 2 / 3)
    assert judge.score(POST, REF) - b["total"] > 1.0


def test_hallucinated_number_and_name_cost_exactly_the_penalty(judge: GoldJudge) -> None:
    bad = REF.replace("Jake", "Tyler").replace("$300", "$450")
    b = judge.breakdown(POST, bad)
    assert b["n_hallucinated"] == 2
    assert b["hallucination"] == pytest.approx(-2 * CFG.hallucination_penalty)
    assert b["coverage_fraction"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert b["total"] < judge.score(POST, REF) - 1.0
    # a bare number that the post writes as "$300" / "24M" is not a hallucination; case does not matter
    assert judge.breakdown(POST, "JAKE owes 300 and is 24")["n_hallucinated"] == 0
    assert judge.breakdown(POST, "jake owes $1,200")["n_hallucinated"] == 1


def test_distractors_are_penalised_per_value(judge: GoldJudge) -> None:
    b = judge.breakdown(POST, REF + " and my sister Emma lives in Denver")
    assert b["n_distractors"] == 2
    assert b["distractor"] == pytest.approx(-2 * CFG.distractor_penalty)
    assert b["n_hallucinated"] == 0
    assert b["total"] < judge.score(POST, REF)


def test_repeated_trigrams(judge: GoldJudge) -> None:
    assert judge.breakdown(POST, "a b c a b c")["repeated_trigrams"] == 1
    b = judge.breakdown(POST, "Jake and Jake and Jake and Jake")  # 5 trigrams, 2 distinct
    assert b["repeated_trigrams"] == 3
    assert b["repetition"] == pytest.approx(-3 * CFG.repetition_penalty)
    repeated = REF.replace("Jake (24M)", "Jake and Jake and Jake and Jake (24M)")
    assert judge.score(POST, REF) - judge.score(POST, repeated) > 1.0


def test_length_budget_and_floor(judge: GoldJudge) -> None:
    padding = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar "
    padding += "papa quebec romeo"
    b = judge.breakdown(POST, REF + " " + padding)  # 24 + 18 = 42 words, 10 beyond the budget of 32
    assert b["n_words"] == 42
    assert b["over_length"] == pytest.approx(-10 * CFG.over_length_penalty)
    short = judge.breakdown(POST, "Jake owes me $300")  # 4 words, 6 below the floor of 10
    assert short["under_length"] == pytest.approx(-6 * CFG.under_length_penalty)
    sixty = " ".join(f"pad{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(60))  # 60 distinct words
    assert judge.score(POST, REF) - judge.score(POST, REF + " " + sixty) > 3.0


def test_short_fragments_and_garbage_score_low(judge: GoldJudge) -> None:
    ref = judge.score(POST, REF)
    assert -3.0 <= judge.score(POST, "") <= -2.0
    assert judge.score(POST, "my roommate Jake: he has?") < 1.0 < ref
    assert judge.score(POST, "roommate the owes owes me for the utilities making how excuses") < 0
    garbage = ("", "   ", "!!!???", "\x00\uffff🤖 ñandú ®", "zq " * 200, "Jake " * 200, "$$$ 9999999 " * 50)
    for text in garbage:
        s = judge.score(POST, text)
        assert math.isfinite(s)
        assert s < 0.5


def test_preference_prob(judge: GoldJudge) -> None:
    worse = REF.replace("$300", "$450")
    p = judge.preference_prob(POST, REF, worse)
    assert p > 0.5
    assert p + judge.preference_prob(POST, worse, REF) == pytest.approx(1.0, abs=1e-12)
    assert judge.preference_prob(POST, REF, REF) == 0.5
    expected = 1 / (1 + math.exp(-(judge.score(POST, REF) - judge.score(POST, worse)) / CFG.temperature))
    assert p == pytest.approx(expected)
    assert judge.preference_prob(POST, REF, "Jake " * 5000) == pytest.approx(1.0)  # no overflow


def test_score_batch(judge: GoldJudge) -> None:
    texts = [REF, "", "Jake"]
    assert judge.score_batch([POST] * 3, texts) == [judge.score(POST, t) for t in texts]
    with pytest.raises(ValueError):
        judge.score_batch([POST], texts)


def test_config_weights_are_used() -> None:
    judge = GoldJudge(GoldConfig(coverage_weight=10.0, base=0.0))
    assert judge.score(POST, REF) == pytest.approx(10.0)


def test_calibration_on_generated_posts(judge: GoldJudge) -> None:
    posts = generate_posts(200, seed=3)
    refs = [judge.score(p, p.reference) for p in posts]
    assert 2.5 <= statistics.mean(refs) <= 3.5
    assert min(refs) >= 2.0
    assert all(-3.0 <= judge.score(p, "") <= -2.0 for p in posts)


def test_speed_2000_scores_under_a_second(judge: GoldJudge) -> None:
    posts = generate_posts(50, seed=4)
    summary = REF + " and he keeps saying he will pay me next week but never does it"  # ~40 words
    start = time.perf_counter()
    for i in range(2000):
        judge.score(posts[i % len(posts)], summary)
    assert time.perf_counter() - start < 1.0
