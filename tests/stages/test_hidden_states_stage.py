"""Stage ``hidden_states`` on the `ci` profile: the SFT policy alone (no RL run yet), then with a run's final policy."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from r2m.evaluation.report import hidden_state_line
from tasks import hidden_states
from tasks.common import run_stage

KEYS = {
    "within_chosen",
    "within_rejected",
    "within",
    "across",
    "gap",
    "pair_cosine",
    "gap_null_mean",
    "gap_null_std",
    "gap_p_value",
    "pair_pearson",
    "pair_spearman",
    "all_pairs_pearson",
    "all_pairs_spearman",
}


@pytest.fixture()
def workdir(tiny_pipeline, tmp_path):
    """A copy of the shared pipeline without any RL run (other tests may add runs to the shared one)."""
    wd = tmp_path / "wd"
    shutil.copytree(tiny_pipeline, wd, ignore=shutil.ignore_patterns("rl", "plots", "mlflow.db", "mlartifacts"))
    return wd


def test_sft_policy_alone(workdir, ci_cfg):
    out = run_stage("hidden_states", ci_cfg, workdir, mlflow=False)
    data = json.loads((workdir / "metrics" / "hidden_states.json").read_text())
    assert data == json.loads(json.dumps(out["summary"]))
    n_test = len((workdir / "data" / "rm_test.jsonl").read_text().splitlines())  # ties dropped: can be < n_rm_test
    assert 2 <= n_test <= ci_cfg.data.n_rm_test
    assert data["n"] == min(ci_cfg.analysis.n_pairs, n_test)
    assert data["layers"] == [0, 1, 2]  # 2-layer ci policy: embeddings, middle, last
    assert list(data["policies"]) == ["sft"]
    assert data["runs_without_final_policy"] == ci_cfg.run_names()
    assert 0.0 <= data["reward"]["accuracy"] <= 1.0 and data["reward"]["mean_abs_diff"] > 0
    per_layer = data["policies"]["sft"]["layers"]
    assert list(per_layer) == ["0", "1", "2"]
    for stats in per_layer.values():
        assert set(stats) == KEYS
        assert all(math.isfinite(v) for v in stats.values()), stats
        assert -1.0 <= stats["across"] <= 1.0 and -1.0 <= stats["pair_spearman"] <= 1.0
        assert stats["gap"] == pytest.approx(stats["within"] - stats["across"])
        assert 0.0 < stats["gap_p_value"] <= 1.0
    for name in (hidden_states.SIMILARITY_PLOT, hidden_states.REWARD_PLOT):
        png = (workdir / "plots" / name).read_bytes()
        assert png[:4] == b"\x89PNG" and len(png) > 1000
    assert "sft.layer2.gap" in out["metrics"]  # the flat MLflow metrics
    assert "sft gap" in hidden_state_line(data) and hidden_state_line({}) == ""


def test_a_run_with_the_sft_weights_gives_the_sft_numbers(workdir, ci_cfg):
    run = ci_cfg.run_names()[0]
    shutil.copytree(workdir / "models" / "sft", workdir / "models" / "rl" / run / "final" / "policy")
    data = run_stage("hidden_states", ci_cfg, workdir, mlflow=False)["summary"]
    assert list(data["policies"]) == ["sft", run]
    assert data["runs_without_final_policy"] == ci_cfg.run_names()[1:]
    assert data["policies"][run]["layers"] == data["policies"]["sft"]["layers"]
