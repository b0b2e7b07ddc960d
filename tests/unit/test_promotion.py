"""The registry's promotion gates (r2m.promotion) and the champion history replayed from the audit log."""

from __future__ import annotations

import pytest

from r2m.config import PromoteConfig
from r2m.evaluation.winrate import bootstrap_ci
from r2m.promotion import Evidence, decide, wilson_interval
from r2m.tracking import alias_history

CFG = PromoteConfig()


def rm(correct: int, n: int = 200, ece: float = 0.05, eval_set: str = "rm_test.jsonl:abc") -> Evidence:
    return Evidence("reward_model", eval_set, correct=correct, n_pairs=n, ece=ece)


def policy(wins: int, ties: int, losses: int, eval_set: str = "eval_prompts.jsonl:abc:gold") -> Evidence:
    return Evidence("policy", eval_set, wins=wins, ties=ties, losses=losses)


def test_wilson_interval_matches_hand_computed_values() -> None:
    low, high = wilson_interval(8, 10, 0.95)
    assert low == pytest.approx(0.49016, abs=1e-4) and high == pytest.approx(0.94332, abs=1e-4)
    assert wilson_interval(0, 5) == pytest.approx((0.0, 0.43448), abs=1e-4)
    assert wilson_interval(50, 100, 0.99)[0] < wilson_interval(50, 100, 0.9)[0]
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_evidence_tags_round_trip_and_rates() -> None:
    e = rm(150, ece=0.0625)
    assert e.rate == 0.75 and e.n == 200
    assert Evidence.from_tags("reward_model", {**e.to_tags(), "r2m.kind": "reward_model"}) == e
    p = policy(10, 4, 6)
    assert p.rate == pytest.approx(0.6) and p.n == 20
    assert Evidence.from_tags("policy", p.to_tags()) == p
    assert p.interval(CFG) == bootstrap_ci(10, 4, 6, n_bootstrap=CFG.n_bootstrap, seed=0, confidence=0.95)
    assert Evidence.from_tags("policy", {"r2m.kind": "policy"}) is None
    with pytest.raises(ValueError, match="malformed"):
        Evidence.from_tags("reward_model", {"r2m.gate.eval_set": "x", "r2m.gate.correct": "nan"})
    with pytest.raises(ValueError, match="no items"):
        policy(0, 0, 0)


def test_first_promotion_needs_evidence_a_floor_and_calibration() -> None:
    ok = decide(rm(160), None, CFG, candidate_version=1, champion_version=None)
    assert ok.promote and "no champion yet" in ok.reason
    none = decide(None, None, CFG, candidate_version=1, champion_version=None)
    assert not none.promote and "no gate evidence" in none.reason
    chance = decide(rm(105), None, CFG, candidate_version=1, champion_version=None)  # 0.525: interval covers 0.5
    assert not chance.promote and "< floor 0.500" in chance.reason
    uncalibrated = decide(rm(160, ece=0.3), None, CFG, candidate_version=1, champion_version=None)
    assert not uncalibrated.promote and "ECE 0.300 > max_ece" in uncalibrated.reason
    same = decide(rm(160), rm(160), CFG, candidate_version=2, champion_version=2)
    assert not same.promote and "already is the champion" in same.reason


def test_a_difference_inside_the_interval_is_a_tie() -> None:
    tie = decide(rm(165), rm(160), CFG, candidate_version=2, champion_version=1)
    assert not tie.promote and "tie" in tie.reason and "inside" in tie.reason
    win = decide(rm(190), rm(160), CFG, candidate_version=2, champion_version=1)
    assert win.promote and all(ok for ok, _ in win.checks)
    worse = decide(rm(140), rm(190), CFG, candidate_version=2, champion_version=1)
    assert not worse.promote and "above" in worse.reason and "< margin" in worse.reason
    margin = decide(rm(190), rm(160), PromoteConfig(margin=0.2), candidate_version=2, champion_version=1)
    assert not margin.promote and "+0.150 < margin 0.2" in margin.reason
    drift = decide(rm(190, ece=0.15), rm(160, ece=0.05), CFG, candidate_version=2, champion_version=1)
    assert not drift.promote and "ECE 0.150 > champion's 0.050" in drift.reason


def test_policy_gate_reads_the_win_rate_interval() -> None:
    strong, weak = policy(50, 4, 10), policy(20, 4, 40)
    assert decide(strong, weak, CFG, candidate_version=2, champion_version=1).promote
    floor = decide(weak, None, PromoteConfig(policy_min_win_rate=0.5), candidate_version=1, champion_version=None)
    assert not floor.promote and "< floor 0.500" in floor.reason
    other_judge = policy(50, 4, 10, eval_set="eval_prompts.jsonl:abc:local-smollm2")
    mixed = decide(other_judge, weak, CFG, candidate_version=2, champion_version=1)
    assert not mixed.promote and "not comparable" in mixed.reason
    unmeasured_champion = decide(strong, None, CFG, candidate_version=2, champion_version=1)
    assert unmeasured_champion.promote and "not compared" in unmeasured_champion.reason


def test_alias_history_replays_promotions_and_rollbacks() -> None:
    def e(action: str, to: int, alias: str = "champion") -> dict:
        return {"action": action, "alias": alias, "to": to}

    log = [e("register", 1, "candidate"), e("promote", 1), e("promote", 2), e("promote", 3), e("rollback", 2)]
    assert alias_history(log) == [1, 2]
    assert alias_history([*log, e("rollback", 1)]) == [1]
    assert alias_history([*log, e("set", 5)]) == [1, 2, 5]
    assert alias_history(log, "candidate") == [1]
