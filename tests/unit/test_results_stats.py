"""The results protocol's statistics and aggregation (r2m.evaluation.results) on hand-made numbers and run dirs."""

from __future__ import annotations

import json
import math

import pytest

from r2m.evaluation.results import (
    ResultsError,
    aggregate,
    by_step,
    curve_metrics,
    eval_metrics,
    load_runs,
    mean_ci,
    moving_average_peak,
    paired_differences,
    results_markdown,
    t_half_width,
    verdict,
    window_means,
    write_results,
)

# ---- statistics ---------------------------------------------------------------------------------------------------


def test_t_half_width_n5_by_hand():
    # mean 3, sample sd sqrt(2.5); t(0.975, 4 dof) = 2.776445 (tables): 2.776445 * sqrt(2.5) / sqrt(5) = 1.963243
    assert t_half_width([1, 2, 3, 4, 5]) == pytest.approx(2.7764451 * math.sqrt(2.5) / math.sqrt(5), abs=1e-6)
    assert t_half_width([1, 2, 3, 4, 5]) == pytest.approx(1.963243, abs=1e-6)
    assert t_half_width([3, 3, 3]) == 0.0
    assert t_half_width([1.0]) is None and t_half_width([]) is None


def test_mean_ci():
    assert mean_ci([1, 2, 3, 4, 5]) == {"mean": 3.0, "half_width": pytest.approx(1.963243, abs=1e-6), "n": 5}
    assert mean_ci([2.5]) == {"mean": 2.5, "half_width": None, "n": 1}


@pytest.mark.parametrize(
    ("mean", "hw", "expected"),
    [
        (0.5, 0.2, "higher"),
        (-0.5, 0.2, "lower"),
        (0.1, 0.2, "tie"),
        (-0.1, 0.2, "tie"),
        (0.2, 0.2, "tie"),  # the interval [0, 0.4] contains 0
        (0.3, 0.0, "higher"),  # every seed the same nonzero difference
        (0.0, 0.0, "tie"),
        (0.3, None, "n/a"),  # one seed: no interval
    ],
)
def test_verdict(mean, hw, expected):
    assert verdict(mean, hw) == expected


def test_paired_differences_pair_by_seed():
    method = {2: 4.0, 0: 1.0, 1: 2.0}
    baseline = {1: 3.0, 3: 9.0, 0: 0.5, 2: 1.0}  # seed 3 has no partner: left out
    d = paired_differences(method, baseline)
    assert d == {0: 0.5, 1: -1.0, 2: 3.0}
    assert list(d) == [0, 1, 2]


# ---- moving-average peak ------------------------------------------------------------------------------------------


def test_window_means():
    assert window_means([1, 2, 3, 4], 2).tolist() == [1.5, 2.5, 3.5]
    assert window_means([1, 2, 3], 10).tolist() == [2.0]  # fewer rows than the window: one window of all


def test_moving_average_peak_and_its_step():
    values = [0, 0, 1, 2, 3, 2, 1, 0, 0, 5, 0, 0]
    steps = list(range(1, 13))
    # 3-step means: .33 1 2 2.33 2 1 .33 1.67 1.67 1.67 -> peak 7/3 over rows 3..5 (steps 4, 5, 6), centre step 5;
    # the lone 5 at step 10 is not a peak of the average
    peak = moving_average_peak(steps, values, 3)
    assert peak == {"value": pytest.approx(7 / 3), "step": 5, "start": 3, "stop": 6}
    # even window: the later of the two middle steps; first peak on ties
    assert moving_average_peak([10, 20, 30, 40], [1, 1, 0, 0], 2) == {"value": 1.0, "step": 20, "start": 0, "stop": 2}
    # window longer than the run: the mean of all, centre step
    assert moving_average_peak([1, 2, 3], [1.0, 2.0, 6.0], 10) == {"value": 3.0, "step": 2, "start": 0, "stop": 3}


def test_by_step_sorts_and_keeps_the_last_row_of_a_step():
    rows = [{"step": 2, "g": 1}, {"step": 1, "g": 0}, {"step": 2, "g": 5}, {"g": 9}]
    assert by_step(rows) == [{"step": 1, "g": 0}, {"step": 2, "g": 5}]


# ---- hand-made runs: 1 algo x 2 methods x 3 seeds -----------------------------------------------------------------

SEEDS = (0, 1, 2)
STEPS = range(1, 21)


def step_rows(seed: int, method: str) -> list[dict]:
    """Gold peaks at step 8.5 (a parabola), shifted by 0.1 per seed; r2m: gold +0.3 and KL 0.8x on every seed,
    words vanilla 20, r2m 19 / 20 / 21 by seed (a tie); no repeated_trigrams in r2m's rows."""
    rows = []
    for t in STEPS:
        row = {
            "step": t,
            "gold_score": 0.1 * seed - (t - 8.5) ** 2 / 100 + (0.3 if method == "r2m" else 0.0),
            "proxy_reward": 0.1 * t,
            "train_reward": 0.2 * t,
            "kl_to_ref": (0.04 if method == "r2m" else 0.05) * t,
            "completion_words": 20.0 + (seed - 1 if method == "r2m" else 0),
            "distinct_ratio": 0.9,
        }
        if method == "vanilla":
            row["repeated_trigrams"] = 0.5
        rows.append(row)
    return rows


def win(rate: float) -> dict:
    return {"win_rate_ties_half": rate, "ci_low": rate - 0.1, "ci_high": rate + 0.1, "n_valid": 12}


def evaluation(seed: int, method: str) -> dict:
    bonus = 0.1 if method == "r2m" else 0.0
    ckpt = lambda g: {"round": 1, "step": 10, "gold": g, "proxy": 1.0, "heldout": 0.5}  # noqa: E731
    checkpoints = {
        "final": {**ckpt(0.2 + 0.1 * seed + bonus), "vs_sft": win(0.5 + bonus), "vs_reference": win(0.3)},
        "best_proxy": ckpt(0.1),
        "best_heldout": {**ckpt(0.4), "vs_sft": win(0.6), "vs_reference": win(0.4)},
        "oracle": ckpt(0.5 + seed),
    }
    if method == "r2m":
        del checkpoints["oracle"]  # an evaluation without the oracle: its metric is absent, not a crash
        if seed == 2:
            del checkpoints["best_heldout"]["vs_sft"]
    return {"run": f"grpo-{method}", "checkpoints": checkpoints}


def write_run(wd, seed: int, method: str) -> None:
    run_dir = wd / "models" / "rl" / f"grpo-{method}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in step_rows(seed, method)))
    ev = wd / "metrics" / "eval"
    ev.mkdir(parents=True, exist_ok=True)
    (ev / f"grpo-{method}.json").write_text(json.dumps(evaluation(seed, method)))


@pytest.fixture()
def seed_dirs(tmp_path):
    dirs = {}
    for s in SEEDS:
        dirs[s] = tmp_path / "runs" / f"seed_{s}"
        for m in ("vanilla", "r2m"):
            write_run(dirs[s], s, m)
    bon = tmp_path / "runs" / "best_of_n.json"
    bon.write_text(json.dumps({"curve": [{"n": n, "sqrt_kl": math.sqrt(n) / 4, "gold": 0.1 * n} for n in (1, 2, 4)]}))
    return dirs


def test_curve_metrics_by_hand():
    m = curve_metrics(step_rows(1, "vanilla"))
    # window 10 over steps 1..20; the best window is steps 4..13 (centred on 8.5): mean of -(t-8.5)^2/100 = -0.0825
    assert m["gold_peak"] == pytest.approx(0.1 - 0.0825)
    assert m["gold_peak_step"] == 9  # centre of steps 4..13, the later middle step
    assert m["kl_at_gold_peak"] == pytest.approx(0.05 * 8.5)  # mean KL over the same window
    assert m["gold_initial"] == pytest.approx(0.1 - 0.1725)  # steps 1..10
    assert m["gold_final"] == pytest.approx(0.1 - 0.5725)  # steps 11..20
    assert m["proxy_initial"] == pytest.approx(0.55) and m["proxy_final"] == pytest.approx(1.55)
    assert m["kl_final"] == pytest.approx(0.05 * 15.5)
    assert m["words_final"] == 20.0 and m["repeated_trigrams_final"] == 0.5
    assert "repeated_trigrams_final" not in curve_metrics(step_rows(1, "r2m"))  # key missing: metric absent


def test_curve_metrics_with_kl_measured_every_fourth_step():
    rows = step_rows(1, "vanilla")  # steps 1..20, KL 0.05 t
    for r in rows:
        if (r["step"] - 1) % 4 and r["step"] != 20:
            del r["kl_to_ref"]
    m = curve_metrics(rows)
    assert m["gold_peak_step"] == 9  # the gold is on every step: unchanged
    assert m["kl_at_gold_peak"] == pytest.approx(0.05 * (5 + 9 + 13) / 3)  # the measured steps of window 4..13
    assert m["kl_final"] == pytest.approx(0.05 * (13 + 17 + 20) / 3)  # measured among steps 11..20


def test_eval_metrics_missing_keys_are_absent():
    assert eval_metrics({}) == {}
    m = eval_metrics(evaluation(2, "r2m"))
    assert m["gold@final"] == pytest.approx(0.5) and m["win_vs_sft@final"] == pytest.approx(0.6)
    assert "gold@oracle" not in m and "win_vs_sft@best_heldout" not in m
    assert m["win_vs_reference@best_heldout"] == 0.4 and "win_vs_sft@best_proxy" not in m


def summary_of(results: dict, method: str) -> dict:
    return next(r for r in results["summary"] if r["method"] == method)["metrics"]


def paired_of(results: dict, method: str) -> dict:
    return next(r for r in results["paired"] if r["method"] == method)["metrics"]


def test_aggregate_means_cis_and_paired_verdicts(seed_dirs):
    runs = load_runs(seed_dirs, ["grpo"], ["vanilla", "r2m"])
    res = aggregate(runs, ["grpo"], ["vanilla", "r2m"])
    assert res["protocol"]["seeds"] == [0, 1, 2] and len(res["runs"]) == 6
    van = summary_of(res, "vanilla")
    # gold_final per seed 0.1 s - 0.5725: mean 0.1 - 0.5725, sd 0.1, t(0.975, 2) = 4.302653
    assert van["gold_final"]["mean"] == pytest.approx(0.1 - 0.5725)
    assert van["gold_final"]["half_width"] == pytest.approx(4.302653 * 0.1 / math.sqrt(3), abs=1e-6)
    assert van["gold_final"]["n"] == 3 and van["gold_peak_step"]["mean"] == 9
    assert van["gold@oracle"]["mean"] == pytest.approx(1.5)
    r2m = summary_of(res, "r2m")
    assert "gold@oracle" not in r2m and "repeated_trigrams_final" not in r2m
    assert r2m["win_vs_sft@best_heldout"]["n"] == 2

    assert [(p["algo"], p["method"], p["baseline"]) for p in res["paired"]] == [("grpo", "r2m", "vanilla")]
    d = paired_of(res, "r2m")
    assert d["gold_final"]["mean"] == pytest.approx(0.3) and d["gold_final"]["verdict"] == "higher"
    assert d["gold_final"]["half_width"] == pytest.approx(0.0, abs=1e-9)
    assert d["kl_final"]["verdict"] == "lower"
    assert d["words_final"]["mean"] == pytest.approx(0.0) and d["words_final"]["verdict"] == "tie"  # -1, 0, +1
    assert [p["difference"] for p in d["words_final"]["per_seed"]] == [-1.0, 0.0, 1.0]
    assert [p["seed"] for p in d["words_final"]["per_seed"]] == [0, 1, 2]
    assert d["win_vs_sft@best_heldout"]["n"] == 2  # only the seeds both runs have
    assert "gold@oracle" not in d and "repeated_trigrams_final" not in d

    curve = res["curves"][0]["gold"]
    assert curve["step"] == list(STEPS) and len(curve["sqrt_kl"]) == len(curve["y"]) == len(curve["half_width"]) == 20
    assert curve["half_width"][0] == pytest.approx(4.302653 * 0.1 / math.sqrt(3), abs=1e-6)  # seeds differ by 0.1


def test_results_json_byte_identical_and_files(seed_dirs, tmp_path):
    algos, methods = ["grpo"], ["vanilla", "r2m"]
    bon = tmp_path / "runs" / "best_of_n.json"
    a, b = tmp_path / "a", tmp_path / "b"
    res = write_results(seed_dirs, algos, methods, a, best_of_n=bon)
    write_results(seed_dirs, algos, methods, b, best_of_n=bon)
    assert (a / "results.json").read_bytes() == (b / "results.json").read_bytes()
    assert (a / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (a / "results.json").read_text()
    assert str(tmp_path) not in text and "seconds" not in text
    assert res["best_of_n"] == [{"sqrt_kl": math.sqrt(n) / 4, "gold": 0.1 * n} for n in (1, 2, 4)]
    assert write_results(seed_dirs, algos, methods, tmp_path / "c")["best_of_n"] is None  # no best-of-n file


def test_missing_run_is_one_clear_error(seed_dirs):
    (seed_dirs[2] / "models" / "rl" / "grpo-r2m" / "metrics.jsonl").unlink()
    (seed_dirs[1] / "metrics" / "eval" / "grpo-vanilla.json").unlink()
    with pytest.raises(ResultsError) as e:
        load_runs(seed_dirs, ["grpo"], ["vanilla", "r2m"])
    msg = str(e.value)
    assert msg.startswith("2 run(s) missing")
    assert "seed 1 grpo-vanilla" in msg and "grpo-vanilla.json" in msg
    assert "seed 2 grpo-r2m" in msg and "metrics.jsonl" in msg
    with pytest.raises(ResultsError, match="seed 0 rloo-vanilla"):
        load_runs(seed_dirs, ["rloo"], ["vanilla"])


def test_markdown_tables_and_one_seed(seed_dirs):
    runs = load_runs(seed_dirs, ["grpo"], ["vanilla", "r2m"])
    md = results_markdown(aggregate(runs, ["grpo"], ["vanilla", "r2m"]), "r2m results --seeds 0 1 2", 12.3)
    lines = md.splitlines()
    assert lines[0] == "Produced by: `r2m results --seeds 0 1 2`"
    assert lines[-1].startswith("Timing: 12 s") and md.count("Timing") == 1
    assert "| grpo | vanilla | 3 | " in md and "| grpo | r2m - vanilla | gold_final | +0.300 |" in md
    row = next(ln for ln in lines if ln.startswith("| grpo | r2m - vanilla | words_final |"))
    assert row.endswith("| tie | 3 |")

    one = {k: v for k, v in runs.items() if k[0] == 0}
    md1 = results_markdown(aggregate(one, ["grpo"], ["vanilla", "r2m"]), "r2m results --seeds 0")
    assert "± n/a" in md1 and "| n/a | n/a | 1 |" in md1 and "Timing" not in md1

    no_base = results_markdown(aggregate(runs, ["grpo"], ["r2m"]), "cmd")
    assert "no paired differences" in no_base


def test_gold_at_a_matched_kl_level():
    from r2m.evaluation.results import gold_at_sqrt_kl, matched_kl_levels

    # sqrt(KL) = t / 10 (KL = t^2 / 100), gold = t: smoothing by 1 step keeps the points
    rows = [{"step": t, "kl_to_ref": t * t / 100, "gold_score": float(t)} for t in range(0, 21)]
    assert gold_at_sqrt_kl(rows, 0.55, window=1) == pytest.approx(5.5)  # between t = 5 and 6
    assert gold_at_sqrt_kl(rows, 0.0, window=1) == 0.0
    assert gold_at_sqrt_kl(rows, 3.0, window=1) is None  # never that far
    slow = [{**r, "kl_to_ref": r["kl_to_ref"] / 4} for r in rows]  # sqrt(KL) = t / 20: ends at 1.0
    runs = {(0, "grpo", "a"): {"rows": rows}, (0, "grpo", "b"): {"rows": slow}}
    assert matched_kl_levels(runs, window=1) == {"grpo": pytest.approx(1.0)}


def test_many_methods_get_one_frontier_panel_each_against_the_baseline(tmp_path):
    from r2m.evaluation.results import OVERLAY_MAX, frontier_figure, plot_frontier

    def curve(method: str, shift: float) -> dict:
        xs = [0.0, 1.0, 2.0]
        gold = {"step": [0, 1, 2], "sqrt_kl": xs, "y": [shift + x for x in xs], "half_width": [0.1, 0.1, 0.1]}
        return {"algo": "grpo", "method": method, "n_seeds": 5, "gold": gold, "proxy": gold}

    methods = ["vanilla", "r2m", "kl", "par", "warm", "ensemble_min"]
    res = {
        "curves": [curve(m, i) for i, m in enumerate(methods)],
        "protocol": {"baseline": "vanilla", "smooth_steps": 10},
        "best_of_n": [{"sqrt_kl": 0.0, "gold": 0.0}, {"sqrt_kl": 1.0, "gold": 0.5}],
    }
    assert len(res["curves"]) > OVERLAY_MAX
    fig = frontier_figure(res)
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in panels] == [f"grpo-{m} (n=5)" for m in methods[1:]]
    for ax, m in zip(panels, methods[1:], strict=True):
        # each panel: the baseline (grey), best-of-n, and the method itself
        assert [line.get_label() for line in ax.get_lines()] == ["vanilla", "best-of-n", m]
    assert len(fig.axes) == 8 and len(panels) == 5  # a 2 x 4 grid, the last 3 blank
    two = frontier_figure({**res, "curves": res["curves"][:2]})
    assert len(two.axes) == 2  # few methods: gold and proxy, overlaid
    assert plot_frontier(res, tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
