"""Tests for win-rate statistics."""

from __future__ import annotations

import pytest

from r2m.evaluation.winrate import length_controlled_win_rate, win_rate_report
from r2m.judges.base import Verdict


def _verdicts(spec: str, consistent: bool | None = None) -> list[Verdict]:
    code = {"W": "A", "L": "B", "T": "tie", "X": "invalid"}
    return [
        Verdict(str(i), code[c], consistent=None if c == "X" else consistent)  # type: ignore[arg-type]
        for i, c in enumerate(spec)
    ]


def test_three_wins_one_loss() -> None:
    r = win_rate_report(_verdicts("WWWL"))
    assert (r["n"], r["n_valid"], r["wins"], r["losses"], r["ties"], r["invalid"]) == (4, 4, 3, 1, 0, 0)
    assert r["win_rate"] == 0.75 and r["win_rate_ties_half"] == 0.75
    assert r["position_consistency"] is None and "lc_win_rate" not in r


def test_ties_half_and_invalid_excluded() -> None:
    r = win_rate_report(_verdicts("WWTLXX"))
    assert r["n"] == 6 and r["n_valid"] == 4 and r["invalid"] == 2
    assert r["win_rate"] == pytest.approx(0.5)
    assert r["win_rate_ties_half"] == pytest.approx(2.5 / 4)


def test_ci_contains_estimate_and_shrinks() -> None:
    small = win_rate_report(_verdicts("WWWL" * 5))
    large = win_rate_report(_verdicts("WWWL" * 100))
    for r in (small, large):
        assert r["ci_low"] <= r["win_rate_ties_half"] <= r["ci_high"]
        assert r["ci_low"] < r["ci_high"]
    assert large["ci_high"] - large["ci_low"] < 0.5 * (small["ci_high"] - small["ci_low"])
    assert win_rate_report(_verdicts("WWWL" * 5), seed=3)["ci_low"] == pytest.approx(small["ci_low"], abs=0.1)


def test_ci_reproducible() -> None:
    a, b = win_rate_report(_verdicts("WTL" * 7), seed=1), win_rate_report(_verdicts("WTL" * 7), seed=1)
    assert (a["ci_low"], a["ci_high"]) == (b["ci_low"], b["ci_high"])


def test_position_consistency() -> None:
    vs = _verdicts("WWW", consistent=True) + _verdicts("T", consistent=False) + _verdicts("X")
    assert win_rate_report(vs)["position_consistency"] == pytest.approx(0.75)


def test_no_valid_verdicts() -> None:
    r = win_rate_report(_verdicts("XX"), lengths_a=[1, 2], lengths_b=[2, 1])
    assert r["n_valid"] == 0 and r["win_rate"] is None and r["ci_low"] is None and r["lc_win_rate"] is None


def test_lc_equals_plain_when_lengths_equal() -> None:
    vs = _verdicts("WWTLWLTWX")
    r = win_rate_report(vs, lengths_a=[50.0] * len(vs), lengths_b=[50.0] * len(vs))
    assert r["lc_win_rate"] == pytest.approx(r["win_rate_ties_half"], abs=1e-9)


def test_lc_lower_when_wins_are_the_longer_responses() -> None:
    # Longer-than-baseline group: 15 wins 5 losses; shorter group: 5 wins 5 losses.
    spec = "W" * 15 + "L" * 5 + "W" * 5 + "L" * 5
    lengths_a = [200.0] * 20 + [100.0] * 10
    lengths_b = [100.0] * 20 + [200.0] * 10
    r = win_rate_report(_verdicts(spec), lengths_a=lengths_a, lengths_b=lengths_b)
    assert r["win_rate_ties_half"] == pytest.approx(20 / 30)
    # Symmetric +-feature: logit(LC) = (logit(0.75) + logit(0.5)) / 2  ->  sqrt(3) / (1 + sqrt(3)).
    assert r["lc_win_rate"] == pytest.approx(3**0.5 / (1 + 3**0.5), abs=1e-3)
    assert r["lc_win_rate"] < r["win_rate_ties_half"]


def test_lc_degenerate_and_separable_cases() -> None:
    assert length_controlled_win_rate([1.0, 1.0], [3, 1], [1, 3]) == 1.0
    # Perfectly separable by length: finite (tiny L2) and in (0, 1).
    lc = length_controlled_win_rate([1, 1, 0, 0], [5, 6, 1, 2], [1, 2, 5, 6])
    assert 0.0 < lc < 1.0


def test_lengths_validation() -> None:
    with pytest.raises(ValueError):
        win_rate_report(_verdicts("WL"), lengths_a=[1, 2])
    with pytest.raises(ValueError):
        win_rate_report(_verdicts("WL"), lengths_a=[1], lengths_b=[1])


def test_position_calibration_decides_by_order_averaged_scores() -> None:
    from r2m.evaluation.winrate import position_calibrated
    from r2m.judges.base import combine_orders

    # a judge biased to "A" by +0.3 in both orders: raw verdicts tie, calibrated ones follow the content
    fwd = Verdict("1", "A", score_a=0.8, score_b=0.2)  # true preference for A: 0.5 + 0.3
    back = Verdict("1", "A", score_a=0.6, score_b=0.4)  # swapped: shown-first (= original B) 0.3 + bias 0.3
    combined = combine_orders(fwd, back)
    assert combined.preferred == "tie"
    (cal,) = position_calibrated([combined])
    assert cal.preferred == "A" and cal.score_a == pytest.approx(0.6)  # (0.8 + 0.4) / 2
    assert position_calibrated([Verdict("2", "A")]) is None  # no scores: not applicable
    inv = Verdict("3", "invalid")
    assert position_calibrated([inv])[0].preferred == "invalid"
