"""End to end: the Prefect flow on the `ci` profile with MLflow tracking and registration."""

from __future__ import annotations

import json

import pytest

from tests.conftest import make_workdir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    import os

    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def test_flow_runs_all_stages_tracks_and_registers(prefect_server, tmp_path, monkeypatch):
    import mlflow

    from flows.pipeline import pipeline
    from r2m import tracking

    wd = make_workdir(tmp_path / "wd")
    monkeypatch.chdir(wd)
    result = pipeline(
        profile="ci",
        overrides=["rl.algos=[grpo]", "rl.methods=[vanilla, r2m]"],
        params=str(wd / "params.yaml"),
        workdir=str(wd),
    )
    assert "grpo-vanilla" in result["table"] and "grpo-r2m" in result["table"]
    for f in (
        "metrics/summary.json",
        "metrics/summary.md",
        "plots/proxy_vs_gold.png",
        "registry.json",
        "metrics/hidden_states.json",
        "plots/hidden_states.png",
    ):
        assert (wd / f).exists(), f
    hs = json.loads((wd / "metrics" / "hidden_states.json").read_text())
    assert set(hs["policies"]) == {"sft", "grpo-vanilla", "grpo-r2m"}
    assert "Hidden states" in (wd / "metrics" / "summary.md").read_text()
    reg = json.loads((wd / "registry.json").read_text())

    tracking.configure(f"sqlite:///{wd / 'mlflow.db'}", "r2m")
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("r2m")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("r2m.role") == "pipeline"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = {
        r.data.tags.get("r2m.stage") for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id
    }
    assert {
        "prepare",
        "sft",
        "preferences",
        "reward_model",
        "best_of_n",
        "rl-grpo-vanilla",
        "rl-grpo-r2m",
        "evaluate-grpo-vanilla",
        "hidden_states",
        "report",
        "register",
    } <= children
    rl_run = next(r for r in runs if r.data.tags.get("r2m.stage") == "rl-grpo-vanilla")
    hist = client.get_metric_history(rl_run.info.run_id, "gold_score")
    assert [m.step for m in hist] == [1, 2, 3, 4]
    proxy = client.get_metric_history(rl_run.info.run_id, "proxy_reward")  # the frozen vanilla RM, every method
    assert [m.step for m in proxy] == [1, 2, 3, 4]
    assert tracking.get_version_by_alias("r2m-policy", "candidate") == reg["policy"]["version"]
    assert tracking.get_version_by_alias("r2m-reward-model", "candidate") == reg["reward_model"]["version"]
    assert reg["reward_head"]["run"] == "grpo-r2m"
    assert tracking.get_version_by_alias("r2m-reward-head", "candidate") == reg["reward_head"]["version"]
    from r2m.models.r2m_head import R2MRewardHead

    head = R2MRewardHead.load(tracking.load_registered("r2m-reward-head", "candidate"))
    assert head.attn is not None and head.config.total_steps == 4
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tracking.load_registered("r2m-policy", "candidate"))
