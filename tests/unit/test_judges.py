"""Tests for the pairwise judge interface and the gold-judge adapter."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from r2m.judges.base import Judge, PairwiseItem, Verdict, combine_orders
from r2m.judges.gold import GoldPairwiseJudge, UnknownPostError


class ScriptedJudge(Judge):
    """Answers from a script keyed by (item id, response_a) so the two orders can disagree."""

    name = "scripted"

    def __init__(self, script: dict[tuple[str, str], str]) -> None:
        self.script = script
        self.calls: list[PairwiseItem] = []

    def judge_one(self, item: PairwiseItem) -> Verdict:
        self.calls.append(item)
        answer = self.script[(item.id, item.response_a)]
        return Verdict(item_id=item.id, preferred=answer, raw=answer)  # type: ignore[arg-type]


def _item(i: str, a: str = "x", b: str = "y") -> PairwiseItem:
    return PairwiseItem(id=i, prompt="p", response_a=a, response_b=b, context={"post_id": i})


def test_verdict_rejects_unknown_preference() -> None:
    with pytest.raises(ValueError):
        Verdict(item_id="1", preferred="C")  # type: ignore[arg-type]


def test_swap_and_flip() -> None:
    item = _item("1", "a", "b")
    assert item.swapped().response_a == "b" and item.swapped().context == item.context
    v = Verdict("1", "A", score_a=1.0, score_b=2.0).flipped()
    assert (v.preferred, v.score_a, v.score_b) == ("B", 2.0, 1.0)


def test_both_orders_combination() -> None:
    # In the swapped order, response_a is "y": "B" there means "x" (original A) wins.
    # item id -> (answer on (x, y), answer on swapped (y, x))
    answers = {
        "ok": ("A", "B"),  # consistent: A
        "okb": ("B", "A"),  # consistent: B
        "flip": ("A", "A"),  # position bias: tie, inconsistent
        "half": ("A", "tie"),  # disagreement: tie, inconsistent
        "tt": ("tie", "tie"),  # consistent tie
        "bad": ("A", "invalid"),  # invalid recorded, not guessed
    }
    script = {(i, a): ans for i, pair in answers.items() for a, ans in zip("xy", pair, strict=True)}
    judge = ScriptedJudge(script)
    ids = ["ok", "okb", "flip", "half", "tt", "bad"]
    verdicts = judge.judge([_item(i) for i in ids])
    assert len(judge.calls) == 12
    got = {v.item_id: (v.preferred, v.consistent) for v in verdicts}
    assert got == {
        "ok": ("A", True),
        "okb": ("B", True),
        "flip": ("tie", False),
        "half": ("tie", False),
        "tt": ("tie", True),
        "bad": ("invalid", None),
    }
    assert "[BA] invalid" in verdicts[-1].raw


def test_single_order_has_no_consistency() -> None:
    judge = ScriptedJudge({("a", "x"): "B"})
    [v] = judge.judge([_item("a")], both_orders=False)
    assert v.preferred == "B" and v.consistent is None and len(judge.calls) == 1


def test_combine_averages_scores() -> None:
    fwd = Verdict("1", "A", score_a=3.0, score_b=1.0)
    bwd = Verdict("1", "B", score_a=1.2, score_b=2.8)  # swapped labels
    v = combine_orders(fwd, bwd)
    assert v.preferred == "A" and v.consistent
    assert v.score_a == pytest.approx(2.9) and v.score_b == pytest.approx(1.1)


@dataclass
class FakePost:
    id: str
    keyword: str


def fake_scorer(post: FakePost, summary: str) -> float:
    return summary.count(post.keyword) / max(1, len(summary.split()))


def test_gold_pairwise_judge() -> None:
    posts = {"p1": FakePost("p1", "cat"), "p2": FakePost("p2", "dog")}
    judge = GoldPairwiseJudge(fake_scorer, posts)
    items = [
        PairwiseItem("i1", "", "cat sat", "dog sat", {"post_id": "p1"}),
        PairwiseItem("i2", "", "cat sat", "dog sat", {"post_id": "p2"}),
        PairwiseItem("i3", "", "a b", "c d", {"post_id": "p1"}),
    ]
    v1, v2, v3 = judge.judge(items, progress=False)
    assert (v1.preferred, v2.preferred, v3.preferred) == ("A", "B", "tie")
    assert all(v.consistent for v in (v1, v2, v3))
    assert v1.score_a == pytest.approx(0.5) and v1.score_b == pytest.approx(0.0)
    assert "0.5000" in v1.reason


def test_gold_tie_margin() -> None:
    posts = {"p": FakePost("p", "cat")}
    item = PairwiseItem("i", "", "cat a b c", "cat a b", {"post_id": "p"})  # 0.25 vs 0.333
    assert GoldPairwiseJudge(fake_scorer, posts).judge_one(item).preferred == "B"
    assert GoldPairwiseJudge(fake_scorer, posts, tie_margin=0.1).judge_one(item).preferred == "tie"


def test_gold_non_finite_score_is_invalid() -> None:
    judge = GoldPairwiseJudge(lambda post, s: float("nan"), {"p": object()})
    assert judge.judge_one(PairwiseItem("i", "", "a", "b", {"post_id": "p"})).preferred == "invalid"


def test_gold_missing_post_names_the_id() -> None:
    judge = GoldPairwiseJudge(fake_scorer, {"p1": FakePost("p1", "cat")})
    with pytest.raises(KeyError, match="nope"):
        judge.judge_one(PairwiseItem("i", "", "a", "b", {"post_id": "nope"}))
    with pytest.raises(UnknownPostError, match="post_id"):
        judge.judge_one(PairwiseItem("i", "", "a", "b"))
