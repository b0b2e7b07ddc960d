"""Tests for reward-model accuracy and calibration."""

from __future__ import annotations

import math

import pytest

from r2m.evaluation.accuracy import expected_calibration_error, pairwise_accuracy, reward_accuracy_report

LOG3, LOG19 = math.log(3.0), math.log(19.0)


def test_accuracy_ties_are_wrong() -> None:
    assert pairwise_accuracy([2.0, 1.0, 0.5, 3.0], [1.0, 1.0, 0.7, 0.0]) == 0.5


def test_ece_zero_for_calibrated_case() -> None:
    # p = 0.75 for every pair and the chosen side wins 3 out of 4 times: perfectly calibrated.
    chosen = [LOG3, LOG3, LOG3, 0.0] * 5
    rejected = [0.0, 0.0, 0.0, LOG3] * 5
    assert expected_calibration_error(chosen, rejected) == pytest.approx(0.0, abs=1e-12)
    # All exact ties: confidence 0.5, half correct.
    assert expected_calibration_error([1.0] * 8, [1.0] * 8) == pytest.approx(0.0)


def test_ece_hand_case() -> None:
    # Confidences 0.75 (right), 0.95 (right), 0.95 (wrong); 5 bins of width 0.1.
    # ECE = 1/3 * |1 - 0.75| + 2/3 * |0.5 - 0.95| = (0.25 + 0.9) / 3.
    chosen, rejected = [LOG3, LOG19, 0.0], [0.0, 0.0, LOG19]
    assert expected_calibration_error(chosen, rejected, n_bins=5) == pytest.approx(1.15 / 3)
    # One bin: |2/3 - (0.75 + 0.95 + 0.95) / 3|
    assert expected_calibration_error(chosen, rejected, n_bins=1) == pytest.approx(abs(2 / 3 - 2.65 / 3))


def test_report() -> None:
    r = reward_accuracy_report([1.0, 2.0, 0.0], [0.0, 2.0, 1.0])
    assert r["n"] == 3 and r["ties"] == 1
    assert r["accuracy"] == pytest.approx(1 / 3)
    assert r["mean_margin"] == pytest.approx(0.0)
    assert 0.0 <= r["ece"] <= 0.5


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        pairwise_accuracy([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        pairwise_accuracy([], [])
    with pytest.raises(ValueError):
        expected_calibration_error([float("nan")], [0.0])


def test_pair_accuracy_with_any_scorer():
    from r2m.evaluation.accuracy import pair_accuracy

    pairs = [
        {"prompt": "p", "chosen": "long answer", "rejected": "x"},
        {"prompt": "q", "chosen": "a", "rejected": "bb"},
    ]
    rep = pair_accuracy(lambda ps, rs: [float(len(r)) for r in rs], pairs)  # "longer is better" scorer
    assert rep["n"] == 2 and rep["accuracy"] == 0.5
