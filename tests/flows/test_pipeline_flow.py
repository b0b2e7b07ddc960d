"""End to end: the Prefect flow on the `ci` profile with MLflow tracking and registration."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, make_workdir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    import os

    home = tmp_path_factory.mktemp("prefect")
    os.environ["PREFECT_HOME"] = str(home)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield home


def test_flow_runs_all_stages_tracks_and_registers(prefect_server, tmp_path, monkeypatch):
    import mlflow

    from flows.pipeline import pipeline
    from r2m import tracking

    wd = make_workdir(tmp_path / "wd")
    monkeypatch.chdir(wd)
    canary = "sk-canary-7f3c9e1d2b4a"  # a judge key in the environment of the whole flow: stored nowhere
    monkeypatch.setenv("OPENAI_API_KEY", canary)
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
    # lineage: the parent holds the whole config and the headline metrics; each stage run the config it reads,
    # the code's git state and the content hash of every input
    parent = parents[0].data
    assert parent.params["profile"] == "ci" and parent.params["rl.lr"] and parent.params["data.n_sft"] == "400"
    assert {"rm_test_accuracy", "grpo-r2m.gold_final", "grpo-vanilla.win_rate_vs_sft"} <= set(parent.metrics)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    by_stage = {r.data.tags.get("r2m.stage"): r.data for r in runs}
    for name, data in by_stage.items():
        if name is None:
            continue
        assert data.tags["r2m.git.commit"] == head.stdout.strip() and data.tags["r2m.git.dirty"] in ("true", "false")
        assert len(data.tags["r2m.inputs.sha256"]) == 64, name
    sft_data = (wd / "data" / "sft.jsonl").read_bytes()
    assert by_stage["sft"].tags["r2m.input.data/sft.jsonl"] == hashlib.sha256(sft_data).hexdigest()
    assert {"rl.lr", "rl.steps", "r2m.rm_lr", "algo", "method"} <= set(by_stage["rl-grpo-r2m"].params)
    assert {"evaluate.n_policy_pairs", "judge.kind"} <= set(by_stage["evaluate-grpo-r2m"].params)
    version = client.get_model_version("r2m-policy", str(reg["policy"]["version"]))
    assert version.tags["r2m.source_dir"] == f"models/rl/{reg['best_run']}/final/policy"  # relative: copies work
    from click.testing import CliRunner

    from flows.cli import main

    table = CliRunner().invoke(main, ["runs", "--workdir", str(wd), "--params", str(wd / "params.yaml")])
    assert table.exit_code == 0 and parents[0].info.run_name in table.output and "FINISHED" in table.output
    assert "grpo-r2m.gold_final" in table.output.splitlines()[0]

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

    # Promotion: every kind carries the evidence its gate reads; a dry run says why and moves nothing; a real
    # promotion moves champion exactly when the gate passes, and each move is in the audit log.
    for model, kind in (("policy", "policy"), ("reward-model", "reward_model"), ("reward-head", "reward_head")):
        tags = client.get_model_version(f"r2m-{model}", "1").tags
        assert tags["r2m.kind"] == kind and tags["r2m.gate.source"].startswith("metrics/"), model
        assert tags["r2m.gate.eval_set"].startswith("eval_prompts" if kind == "policy" else "rm_test"), model
        cli = ["--workdir", str(wd), "--params", str(wd / "params.yaml")]
        dry = CliRunner().invoke(main, ["promote", "--model", model, "--dry-run", *cli])
        assert dry.exit_code in (0, 1) and "candidate v1 vs no champion" in dry.output, dry.output
        assert "(dry run" in dry.output and tracking.get_version_by_alias(f"r2m-{model}", "champion") is None
        real = CliRunner().invoke(main, ["promote", "--model", model, *cli])
        assert real.exit_code == dry.exit_code, real.output
        champion = tracking.get_version_by_alias(f"r2m-{model}", "champion")
        assert champion == (1 if real.exit_code == 0 else None)
        actions = [e["action"] for e in tracking.audit_log(f"r2m-{model}")]
        assert actions == ["register"] + (["promote"] if champion else [])

    # The registered versions serve through pyfunc in a fresh process, prompted and scored as the pipeline does.
    serve = (
        "import json, mlflow\n"
        "rows = [{'prompt': 'SUBREDDIT: r/test\\nPOST: my cat ate my homework', 'response': ' TL;DR: cat'}]\n"
        "out = [mlflow.pyfunc.load_model(f'models:/r2m-{m}@candidate').predict(rows if m != 'policy' else\n"
        "       [rows[0]['prompt']], params={'max_new_tokens': 4} if m == 'policy' else None)\n"
        "       for m in ('policy', 'reward-model', 'reward-head')]\n"
        "print('RESULT' + json.dumps(out))\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{wd / 'mlflow.db'}"}
    proc = subprocess.run(
        [sys.executable, "-c", serve], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    completion, rm_score, head_score = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert isinstance(completion[0], str) and len(rm_score) == len(head_score) == 1
    assert all(isinstance(x, float) for x in rm_score + head_score)

    # An identical rerun is a cache hit for every stage: no stage runs, nothing new is registered.
    def stage_runs() -> dict[str, int]:
        out: dict[str, int] = {}
        for r in client.search_runs([exp.experiment_id]):
            if stage := r.data.tags.get("r2m.stage"):
                out[stage] = out.get(stage, 0) + 1
        return out

    before = stage_runs()
    sft_bytes = (wd / "models" / "sft" / "model.safetensors").stat().st_mtime_ns
    kwargs = {"profile": "ci", "params": str(wd / "params.yaml"), "workdir": str(wd)}
    pipeline(overrides=["rl.algos=[grpo]", "rl.methods=[vanilla, r2m]"], **kwargs)
    assert stage_runs() == before
    assert (wd / "models" / "sft" / "model.safetensors").stat().st_mtime_ns == sft_bytes
    assert len(client.search_model_versions("name='r2m-policy'")) == 1
    assert json.loads((wd / "registry.json").read_text()) == reg

    # the key in the flow's environment reached no file: work dir (MLflow store and artifacts included), Prefect home
    homes = [wd, prefect_server, Path(os.environ["PREFECT_HOME"])]
    leaked = [p for h in homes for p in h.rglob("*") if p.is_file() and canary.encode() in p.read_bytes()]
    assert not leaked, leaked

    # A judge-only change reruns judging and what reads its results; nothing upstream trains again.
    pipeline(overrides=["rl.algos=[grpo]", "rl.methods=[vanilla, r2m]", "judge.max_items=4"], **kwargs)
    after = stage_runs()
    upstream = ("prepare", "sft", "preferences", "reward_model", "best_of_n", "rl-grpo-vanilla", "rl-grpo-r2m")
    assert {s: after[s] for s in upstream} == {s: before[s] for s in upstream}
    assert after["evaluate-grpo-vanilla"] == before["evaluate-grpo-vanilla"] + 1
    assert after["hidden_states"] == before["hidden_states"]  # it reads no judge output

    # A deleted output is not trusted to the cache: the stage runs again.
    import shutil

    shutil.rmtree(wd / "models" / "rm_heldout")
    pipeline(overrides=["rl.algos=[grpo]", "rl.methods=[vanilla, r2m]", "judge.max_items=4"], **kwargs)
    assert (wd / "models" / "rm_heldout").is_dir()
    assert stage_runs()["reward_model"] == before["reward_model"] + 1
