"""Empirical TPO's parts (r2m/transfer): UCB over win rates, the win-sample rule, best-of-N replacement, the
annotation budget, and each source on hand-made texts."""

from __future__ import annotations

import math
import random

import pytest
import torch

from r2m.transfer.collect import (
    AnnotationBudget,
    BudgetExhausted,
    best_and_worst,
    best_of_n,
    collect_prompt,
    replace_with_source,
)
from r2m.transfer.sources import (
    EmbeddingSource,
    LogProbSource,
    SourceSpec,
    build_source,
    rouge_l,
    rouge_l_source,
)
from r2m.transfer.ucb import EPS, ONLINE, WinRateUCB, win_sample

CANDIDATES = ("rouge_l", "embedding", ONLINE)


# --- UCB -----------------------------------------------------------------------------------------------------------


def test_ucb_values_are_the_authors_arithmetic():
    ucb = WinRateUCB(CANDIDATES, coef=1.0, refresh_every=4)
    for c, w in (("rouge_l", 1), ("rouge_l", 0), ("rouge_l", 1), ("embedding", 0)):
        ucb.record(c, w)
    v = ucb.values()
    assert v["rouge_l"] == pytest.approx(2 / (3 + EPS) + 1 / math.sqrt(3 + EPS))
    assert v["embedding"] == pytest.approx(0 + 1 / math.sqrt(1 + EPS))
    assert v[ONLINE] == pytest.approx(1 / math.sqrt(EPS))  # never tried: chosen next (bonus 1000)
    assert ucb.select() == ONLINE


def test_online_samples_are_the_bar_whatever_is_passed():
    ucb = WinRateUCB(CANDIDATES, bar=0.55, refresh_every=2)
    ucb.record(ONLINE, None)
    ucb.record(ONLINE, 1)
    assert ucb.wins[ONLINE] == pytest.approx(1.1) and ucb.counts[ONLINE] == 2


def test_uniform_before_the_first_refresh_then_fixed_until_the_next():
    ucb = WinRateUCB(CANDIDATES, refresh_every=5, rng=random.Random(3))
    early = [ucb.select() for _ in range(300)]
    assert {c: early.count(c) for c in CANDIDATES} == pytest.approx(dict.fromkeys(CANDIDATES, 100), abs=30)
    for c in ("rouge_l", "rouge_l", "embedding", ONLINE, ONLINE):  # not pooled until the 5th
        assert ucb.counts["rouge_l"] == 0
        ucb.record(c, 1 if c == "rouge_l" else 0)
    assert ucb.counts == {"rouge_l": 2, "embedding": 1, ONLINE: 2}
    chosen = ucb.select()
    # rouge_l 2/2 + 1/sqrt(2) = 1.71 > online 0.55 + 1/sqrt(2) = 1.26 > embedding 0/1 + 1/sqrt(1) = 1.0
    assert chosen == "rouge_l"
    assert all(ucb.select() == chosen for _ in range(20))  # kept until the next refresh


def test_ties_go_to_the_first_candidate_and_reset_forgets():
    ucb = WinRateUCB(("a", "b", ONLINE), bar=0.5, refresh_every=3)
    for c in ("a", "b", ONLINE):
        ucb.record(c, 0.5)  # equal means and counts: equal values
    assert ucb.select() == "a"
    ucb.reset()
    assert ucb.counts == {"a": 0, "b": 0, ONLINE: 0} and ucb._choice is None


def test_ucb_rejects_bad_candidates():
    with pytest.raises(ValueError, match="distinct"):
        WinRateUCB(("a", "a"))
    with pytest.raises(ValueError, match="refresh_every"):
        WinRateUCB(("a",), refresh_every=0)


def test_win_sample_rule():
    assert win_sample(0, (0, 1, 2, 3)) == 1 and win_sample(3, (0, 1, 2, 3)) == 1
    assert win_sample(4, (0, 1, 2, 3)) == 0 and win_sample(0, ()) == 0


# --- collection ----------------------------------------------------------------------------------------------------


def test_best_of_n_replacement_keeps_k():
    responses = [f"online {i}" for i in range(8)]
    extras = [f"extra {i}" for i in range(32)]
    scores = [float(i % 5) for i in range(32)]  # 4, 9, 14, ... score 4
    texts, slots = replace_with_source(responses, extras, scores, 4)
    assert len(texts) == 8 and slots == (0, 1, 2, 3)
    assert texts[:4] == ["extra 4", "extra 9", "extra 14", "extra 19"]  # the best, the earlier of equals first
    assert texts[4:] == responses[4:]
    assert replace_with_source(responses, extras, scores, 0) == (responses, ())
    with pytest.raises(ValueError, match="replace"):
        replace_with_source(responses, extras, scores, 9)
    assert best_of_n([1.0, 3.0, 3.0, 2.0], 2) == [1, 2]


def test_best_and_worst_as_the_authors_order_ties():
    assert best_and_worst([0.1, 0.9, 0.5]) == (1, 0)
    assert best_and_worst([1.0, 1.0, 1.0]) == (2, 0)  # sorted by (score, index): last best, first worst


def test_collect_prompt_with_a_source_and_online():
    budget = AnnotationBudget(limit=16)
    human = lambda texts: [float(len(t)) for t in texts]  # noqa: E731  (the longest is best)
    source = lambda texts: [-float(len(t)) for t in texts]  # noqa: E731  (prefers short extras)
    responses = ["aaaa", "bbbbbbbb", "cc", "ddddddd"]
    extras = ["x", "yy", "zzz"]
    got = collect_prompt("rouge_l", responses, extras, source, human, budget, replace=2)
    assert got.responses == ["x", "yy", "cc", "ddddddd"] and got.source_slots == (0, 1)
    assert (got.chosen, got.rejected, got.win) == ("ddddddd", "x", 0)
    assert budget.used == 4
    online = collect_prompt(ONLINE, responses, extras, None, human, budget, replace=2)
    assert online.responses == responses and online.win is None and online.chosen == "bbbbbbbb"
    assert budget.used == 8
    with pytest.raises(ValueError, match="needs its source"):
        collect_prompt("rouge_l", responses, extras, None, human, budget, replace=2)


def test_the_budget_is_never_exceeded():
    budget = AnnotationBudget(limit=10)
    budget.spend(8)
    with pytest.raises(BudgetExhausted, match="budget 10: 8 used, 4 more"):
        budget.spend(4)
    assert budget.used == 8 and budget.left == 2  # a refused spend takes nothing
    calls = []
    human = lambda texts: calls.append(texts) or [0.0] * len(texts)  # noqa: E731
    with pytest.raises(BudgetExhausted):
        collect_prompt(ONLINE, ["a", "b", "c"], [], None, human, budget, replace=0)
    assert calls == [] and budget.used == 8  # the human was not asked
    unlimited = AnnotationBudget()
    unlimited.spend(10**6)
    assert unlimited.left is None
    with pytest.raises(ValueError):
        unlimited.spend(-1)


# --- sources -------------------------------------------------------------------------------------------------------


def test_rouge_l_on_hand_made_texts():
    ref = "the landlord raised the rent and will not fix the heating"
    assert rouge_l(ref, ref) == pytest.approx(1.0)
    assert rouge_l("", ref) == 0.0 and rouge_l("completely unrelated words", ref) == 0.0
    # LCS("landlord raised rent", ref) = 3 tokens: P = 3/3, R = 3/11
    assert rouge_l("Landlord raised rent!", ref) == pytest.approx(2 * 1 * (3 / 11) / (1 + 3 / 11))
    assert rouge_l_source(["p", "p"], ["landlord raised rent", "cats"], [ref, ref])[1] == 0.0


def test_embedding_similarity_ranks_a_paraphrase_above_an_unrelated_text():
    src = EmbeddingSource()
    ref = "My landlord raised the rent and refuses to fix the heating."
    para, other = "The landlord increased rent and won't repair the heater.", "I baked a chocolate cake for my sister."
    same, close, far = src(["p"] * 3, [ref, para, other], [ref] * 3)
    assert same == pytest.approx(1.0, abs=1e-5) and close > 0.5 > far


def test_logprob_source_is_the_sum_over_the_response_tokens(lm):
    tok, policy, _ = lm
    src = LogProbSource.__new__(LogProbSource)
    src.model, src.tok, src.batch_size = policy, tok, 2
    prompt, response = "hello world", " hi there"
    got, short, again = src([prompt, "hi", prompt], [response, " world", response], [""] * 3)  # padded batches
    assert again == pytest.approx(got, abs=1e-5)
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    y = tok(response, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = policy(input_ids=torch.tensor([p + y])).logits[0]
    want = sum(torch.log_softmax(logits[len(p) - 1 + i], -1)[t].item() for i, t in enumerate(y))
    assert got == pytest.approx(want, abs=1e-4) and got < 0


def test_reward_model_source_and_a_users_own(tmp_path, lm):
    from r2m.models.reward_model import RewardModel

    tok, policy, _ = lm
    RewardModel(policy.gpt_neox, tok).save(tmp_path / "models" / "rm")
    rm_src = build_source(SourceSpec("rm", "reward_model"), workdir=tmp_path)
    scores = rm_src(["hello ", "hello "], ["world", "there"], ["", ""])
    again = RewardModel.load(tmp_path / "models" / "rm").score_texts(["hello world", "hello there"], max_length=512)
    assert scores == pytest.approx(again.tolist())
    own = build_source(SourceSpec("len", "tests.unit.test_transfer:length_source"))
    assert own(["p"], ["four"], ["r"]) == [4.0]
    with pytest.raises(ValueError, match="unknown kind 'bleu'"):
        build_source(SourceSpec("b", "bleu"))


def length_source(prompts, responses, references):
    return [float(len(r)) for r in responses]
