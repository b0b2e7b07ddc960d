"""Best-of-n math (r2m.evaluation.best_of_n): the exact subset estimator against brute force, KL_bon, the
"gold must rise" rule, the d (a - b d) fit, the report and its plot."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from r2m.evaluation.best_of_n import (
    best_of_n_report,
    best_of_n_values,
    fit_gold_curve,
    gold_rise,
    kl_bon,
    ns_up_to,
    pick_weights,
    plot_best_of_n,
)

# two prompts, N = 6: the first with proxy ties (one of them at the top), the second without
PROXY = np.array(
    [
        [0.3, 1.0, -0.5, 1.0, 0.3, 0.7],
        [2.0, -1.0, 0.5, 3.0, 0.0, 1.5],
    ]
)
GOLD = np.array(
    [
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        [0.5, -2.0, 1.5, -1.0, 4.0, 2.5],
    ]
)


def brute_force(proxy: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Mean over every n-subset of the value at its proxy argmax (first maximum on ties, as np.argmax): [P]."""
    out = []
    for p_row, v_row in zip(proxy, values, strict=True):
        picks = [v_row[max(s, key=lambda i: (p_row[i], -i))] for s in itertools.combinations(range(len(p_row)), n)]
        out.append(sum(picks) / len(picks))
    return np.array(out)


def test_estimator_equals_brute_force_for_every_n():
    got = best_of_n_values(PROXY, GOLD, range(1, 7))
    assert got.shape == (2, 6)
    for k, n in enumerate(range(1, 7)):
        np.testing.assert_allclose(got[:, k], brute_force(PROXY, GOLD, n), rtol=0, atol=1e-12, err_msg=f"n={n}")


def test_estimator_hand_computed_and_ties_pick_the_first_maximum():
    # n = 1 is the mean; n = N the value at the argmax; proxy ties at the top of prompt 0 go to index 1 (gold 2.0)
    got = best_of_n_values(PROXY, GOLD, [1, 6])
    np.testing.assert_allclose(got[:, 0], [3.5, 5.5 / 6])
    np.testing.assert_allclose(got[:, 1], [2.0, -1.0])
    # N = 3, proxy ascending: {0,1} -> b, {0,2} -> c, {1,2} -> c
    assert best_of_n_values(np.array([[0.0, 1.0, 2.0]]), np.array([[10.0, 20.0, 40.0]]), [2])[0, 0] == pytest.approx(
        (20 + 2 * 40) / 3
    )
    np.testing.assert_allclose(pick_weights(3, 2), [0.0, 1 / 3, 2 / 3])
    assert best_of_n_values(np.array([[1.0, 1.0]]), np.array([[10.0, 20.0]]), [2])[0, 0] == 10.0
    # the proxy of the proxy's pick never falls with n
    proxy_curve = best_of_n_values(PROXY, PROXY, range(1, 7))
    assert (np.diff(proxy_curve, axis=1) >= -1e-12).all()


def test_pick_weights_sum_to_one_and_reject_bad_n():
    for n in (1, 2, 5, 32, 64):
        assert pick_weights(64, n).sum() == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="n must be in"):
        pick_weights(4, 5)


def test_kl_bon_and_ns():
    assert kl_bon(1) == 0.0
    assert kl_bon(2) == pytest.approx(math.log(2) - 0.5)
    assert kl_bon(64) == pytest.approx(math.log(64) - 63 / 64)
    assert ns_up_to(8) == [1, 2, 4, 8]
    with pytest.raises(ValueError, match="power of 2"):
        ns_up_to(6)


NS = [1, 2, 4, 8]


def test_gold_rises_on_a_clear_gain():
    gold = np.array([[0.0, 1.0, 1.5, 1.2], [0.1, 1.1, 1.4, 1.3], [0.2, 0.9, 1.6, 1.0], [0.0, 1.2, 1.5, 1.4]])
    rise = gold_rise(gold, NS)
    assert rise.rises and rise.n == 4
    assert rise.gain == pytest.approx(1.425)
    assert rise.se == pytest.approx(np.std([1.5, 1.3, 1.4, 1.5], ddof=1) / 2)


def test_gold_does_not_rise_on_noise_or_a_fall():
    noisy = np.array([[0.0, 1.0, 2.0, 0.0], [0.0, -1.0, -1.0, 0.0], [0.0, 1.0, -1.5, 0.0], [0.0, -1.0, 1.0, 0.0]])
    rise = gold_rise(noisy, NS)
    assert not rise.rises and rise.n == 4 and rise.gain == pytest.approx(0.125)
    falling = np.tile([0.0, -1.0, -2.0, -3.0], (4, 1))  # se 0 but the gain is negative
    assert not gold_rise(falling, NS).rises
    # the largest gain (n=4) is judged by its own SE, not by the small, sure gain at n=2
    mixed = np.array([[0.0, 0.1, 3.0, 0.0], [0.0, 0.1, -1.0, 0.0], [0.0, 0.1, 3.0, 0.0], [0.0, 0.1, -1.0, 0.0]])
    rise = gold_rise(mixed, NS)
    assert rise.n == 4 and not rise.rises
    assert gold_rise(mixed[:, :2], NS[:2]).rises  # with n_max = 2 the sure gain decides
    # n = 16 is beyond the rule's n in {2, 4, 8}
    late = np.concatenate([np.zeros((4, 4)), np.full((4, 1), 5.0)], axis=1) + np.arange(4)[:, None]
    assert not gold_rise(late, [1, 2, 4, 8, 16]).rises
    with pytest.raises(ValueError, match="at least 2 prompts"):
        gold_rise(noisy[:1], NS)


def test_fit_recovers_a_and_b():
    d = np.array([math.sqrt(kl_bon(n)) for n in ns_up_to(64)])
    a, b = fit_gold_curve(d, d * (0.8 - 0.3 * d))
    assert a == pytest.approx(0.8, abs=1e-10) and b == pytest.approx(0.3, abs=1e-10)
    with pytest.raises(ValueError, match="2 points"):
        fit_gold_curve(d[:2], d[:2])


def test_report_when_the_proxy_is_gold_and_when_it_is_anti_gold():
    rng = np.random.default_rng(0)
    gold = rng.normal(size=(5, 8))
    heldout = gold + rng.normal(scale=0.1, size=gold.shape)
    up = best_of_n_report(gold, gold, heldout)
    assert [r["n"] for r in up["curve"]] == [1, 2, 4, 8]
    assert up["gold_n1"] == pytest.approx(gold.mean()) and up["curve"][0]["gold_se"] == 0.0
    assert up["gold_at_n_max"] == pytest.approx(up["oracle_gold"]) == pytest.approx(gold.max(axis=1).mean())
    assert up["gold_rises"] and up["gold_peak_n"] == 8 and up["n_prompts"] == 5 and up["n_samples"] == 8
    assert up["verdict"].startswith("gold rises from") and "still at its peak at n=8" in up["verdict"]
    assert up["curve"][1]["kl"] == pytest.approx(math.log(2) - 0.5) and up["fit_a"] > 0
    down = best_of_n_report(-gold, gold, heldout)
    assert not down["gold_rises"] and down["gold_peak_n"] == 1
    assert down["verdict"].startswith("gold does not rise with n") and "mean nothing" in down["verdict"]
    assert best_of_n_report(gold[:, :2], gold[:, :2], heldout[:, :2])["fit_a"] is None  # n_max = 2: no fit
    heldout[0, 0] = math.nan
    with pytest.raises(ValueError, match="non-finite heldout"):
        best_of_n_report(gold, gold, heldout)


def test_verdict_says_when_gold_falls_after_its_peak():
    # prompt-wise: samples ascending by proxy, gold rises over the first ranks and drops at the top rank
    proxy = np.tile(np.arange(8.0), (4, 1))
    gold = np.tile([0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 1.0], (4, 1)) + np.arange(4)[:, None] * 0.01
    m = best_of_n_report(proxy, gold, gold)
    assert m["gold_rises"] and m["gold_peak_n"] == 4 and m["gold_peak"] == pytest.approx(119 / 70 + 0.015)
    assert f"then falls to {m['gold_at_n_max']:.4f} at n=8" in m["verdict"]


def test_plot_writes_a_png(tmp_path):
    gold = np.random.default_rng(1).normal(size=(3, 4))
    m = best_of_n_report(gold, gold, gold)
    out = plot_best_of_n(m["curve"], m["verdict"], tmp_path / "p" / "bon.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
