"""Tests for r2m.tracking: parent/nested runs, params hygiene, metrics, artefacts, registry and promotion."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import mlflow
import pytest
from mlflow import MlflowClient

from r2m import tracking

SECRET = "sk-SECRET"


@pytest.fixture(scope="module")
def mlflow_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One sqlite DB + artefact dir for the module (DB creation costs ~1.5 s); global state restored after."""
    root = tmp_path_factory.mktemp("mlflow")
    previous_uri = mlflow.get_tracking_uri()
    yield root
    if mlflow.active_run() is not None:
        mlflow.end_run()
    tracking._state.clear()
    mlflow.set_tracking_uri(previous_uri)


@pytest.fixture()
def mlf(mlflow_root: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """chdir into the tracking dir and (re)configure MLflow there; returns a client."""
    monkeypatch.chdir(mlflow_root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(tracking.PIPELINE_ID_ENV, raising=False)
    tracking.configure(
        f"sqlite:///{mlflow_root}/mlflow.db", "r2m-test", artifact_location=str(mlflow_root / "mlartifacts")
    )
    return MlflowClient()


@pytest.fixture(scope="module")
def hf_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 2-layer GPTNeoX (hidden 32) saved as a safetensors directory."""
    import torch
    from transformers import AutoModelForCausalLM, GPTNeoXConfig

    torch.manual_seed(0)
    config = GPTNeoXConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    model = AutoModelForCausalLM.from_config(config)
    out = tmp_path_factory.mktemp("hf") / "policy"
    model.save_pretrained(out, safe_serialization=True)
    return out


def _head_dir(path: Path, value: float) -> Path:
    """A reward-head style directory: ``head.safetensors`` + ``config.json``."""
    import torch
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    save_file({"weight": torch.full((1, 4), value)}, str(path / "head.safetensors"))
    (path / "config.json").write_text('{"hidden_size": 4}')
    return path


# --------------------------------------------------------------------------------------------- pure helpers
def test_flatten_and_secret_keys() -> None:
    assert tracking.flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {
        "a.b": 1,
        "a.c.d": [1, 2],
        "e": None,
    }
    assert tracking.flatten({"x": 1}, prefix="p") == {"p.x": 1}
    for key in ("judge.api_key", "OPENAI_API_KEY", "hf_token", "token", "db.Password", "client_secret"):
        assert tracking.is_secret_key(key), key
    for key in ("max_new_tokens", "tokenizer.name", "judge.model", "lr"):
        assert not tracking.is_secret_key(key), key
    assert tracking.numeric_items({"a": {"b": 1, "ok": True, "s": "x", "n": float("nan")}, "l": [1]}) == {
        "a.b": 1.0,
        "a.ok": 1.0,
    }


# --------------------------------------------------------------------------------------------- runs
def test_configure_relative_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    exp_id = tracking.configure("sqlite:///mlflow.db", "rel")
    assert (tmp_path / "mlflow.db").is_file()
    assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = MlflowClient().get_experiment(exp_id)
    assert exp.artifact_location == (tmp_path / "mlartifacts").as_uri()
    assert tracking.configure("sqlite:///mlflow.db", "rel") == exp_id


def test_parent_and_nested_stage_runs(mlf: MlflowClient) -> None:
    parent = tracking.pipeline_run("pipe-a", tags={"profile": "tiny"})
    assert tracking.pipeline_run("pipe-a") == parent
    assert mlflow.active_run() is None  # the parent is not made active
    assert mlf.get_run(parent).data.tags[tracking.TAG_PIPELINE_ID] == "pipe-a"

    with tracking.stage_run("sft", "pipe-a", params={"lr": 0.1}) as run:
        assert mlflow.active_run().info.run_id == run.info.run_id
        mlflow.log_metric("loss", 1.5)  # the global API targets the stage run
    with tracking.stage_run("reward_model", "pipe-a") as run2:
        pass
    assert mlflow.active_run() is None

    for rid, stage in ((run.info.run_id, "sft"), (run2.info.run_id, "reward_model")):
        child = mlf.get_run(rid)
        assert child.data.tags["mlflow.parentRunId"] == parent
        assert child.data.tags[tracking.TAG_STAGE] == stage
        assert child.info.run_name == stage
        assert child.info.status == "FINISHED"
    assert mlf.get_run(run.info.run_id).data.metrics["loss"] == 1.5
    # only the parent carries the pipeline tag
    found = mlf.search_runs([mlf.get_run(parent).info.experiment_id], "tags.`r2m.pipeline_id` = 'pipe-a'")
    assert [r.info.run_id for r in found] == [parent]

    with tracking.stage_run("standalone") as top:
        pass
    assert "mlflow.parentRunId" not in mlf.get_run(top.info.run_id).data.tags


def test_stage_run_from_worker_thread(mlf: MlflowClient) -> None:
    parent = tracking.pipeline_run("pipe-thread")

    def task() -> str:
        with tracking.stage_run("rl", "pipe-thread") as run:
            mlflow.log_metric("reward", 0.25)
            tracking.log_metrics_dict({"kl": 0.5})
            return run.info.run_id

    with tracking.stage_run("outer") as outer:  # another run active in the main thread
        with ThreadPoolExecutor(1) as pool:
            child_id = pool.submit(task).result()
        assert mlflow.active_run().info.run_id == outer.info.run_id
    child = mlf.get_run(child_id)
    assert child.data.tags["mlflow.parentRunId"] == parent
    assert child.data.metrics == {"reward": 0.25, "kl": 0.5}
    assert child.info.status == "FINISHED"


def test_params_flattened_and_secrets_never_stored(mlf: MlflowClient, mlflow_root: Path) -> None:
    params = {
        "judge": {"api_key": SECRET, "model": "gpt-x", "base_url": "http://localhost"},
        "rl": {"lr": 1e-5, "max_new_tokens": 16, "hf_token": "hf_" + "x" * 20},
        "notes": "y" * 7000,
        "other": "sk-abcdefghijklmnopqrstuvwxyz",
    }
    with tracking.stage_run("judge", "pipe-secret", params=params, tags={"openai_api_key": SECRET}) as run:
        tracking.log_params({"late": {"password": SECRET, "ok": 1}})
    data = mlf.get_run(run.info.run_id).data
    assert data.params["judge.model"] == "gpt-x"
    assert data.params["rl.max_new_tokens"] == "16"
    assert data.params["rl.lr"] == "1e-05"
    assert data.params["late.ok"] == "1"
    assert len(data.params["notes"]) == tracking.MAX_PARAM_VAL_LENGTH
    assert not {"judge.api_key", "rl.hf_token", "other", "late.password"} & set(data.params)
    assert "openai_api_key" not in data.tags
    assert all(SECRET not in v for v in [*data.params.values(), *data.tags.values()])
    for path in mlflow_root.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_failing_body_marks_run_failed(mlf: MlflowClient) -> None:
    with pytest.raises(ValueError, match="boom"):
        with tracking.stage_run("rl", "pipe-fail") as run:
            raise ValueError("boom")
    assert mlf.get_run(run.info.run_id).info.status == "FAILED"
    assert mlflow.active_run() is None
    assert tracking.finish_pipeline_run("pipe-fail", "FAILED") == tracking.pipeline_run("pipe-fail")
    assert mlf.get_run(tracking.pipeline_run("pipe-fail")).info.status == "FAILED"


def test_metrics_step_metrics_and_artifacts(mlf: MlflowClient, tmp_path: Path) -> None:
    rows = [{"step": s, "reward": s / 10, "kl": {"mean": 2.0 * s}, "note": "x"} for s in range(600)]
    rows[3]["reward"] = float("nan")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "a.png").write_bytes(b"png")
    (tmp_path / "metrics.json").write_text("{}")
    with tracking.stage_run("rl", "pipe-metrics") as run:
        logged = tracking.log_step_metrics(rows)
        tracking.log_metrics_dict({"eval": {"acc": 0.75, "ok": True, "name": "x"}}, prefix="final", step=2)
        tracking.log_artifacts(tmp_path / "plots", "plots")
        tracking.log_artifacts(tmp_path / "metrics.json")
    rid = run.info.run_id
    assert logged == 1199  # 600 kl + 599 reward (NaN skipped), sent as 2 batches
    reward = {m.step: m.value for m in mlf.get_metric_history(rid, "reward")}
    assert len(reward) == 599 and 3 not in reward
    assert reward[0] == 0.0 and math.isclose(reward[599], 59.9)
    kl = mlf.get_metric_history(rid, "kl.mean")
    assert sorted((m.step, m.value) for m in kl)[10] == (10, 20.0)
    metrics = mlf.get_run(rid).data.metrics
    assert metrics["final.eval.acc"] == 0.75 and metrics["final.eval.ok"] == 1.0
    assert "final.eval.name" not in metrics
    assert mlf.get_metric_history(rid, "final.eval.acc")[0].step == 2
    assert {a.path for a in mlf.list_artifacts(rid)} == {"plots", "metrics.json"}
    assert [a.path for a in mlf.list_artifacts(rid, "plots")] == ["plots/a.png"]
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        tracking.log_metrics_dict({"x": 1})


# --------------------------------------------------------------------------------------------- registry
def test_register_and_load_hf_model(mlf: MlflowClient, hf_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    name = "test-policy"
    with tracking.stage_run("register", "pipe-reg") as run:
        v1 = tracking.register_model_dir(hf_model_dir, name, run_id=run.info.run_id, kind="policy", description="tiny")
    assert v1 == 1
    assert tracking.get_version_by_alias(name, "candidate") == 1
    assert tracking.get_version_by_alias(name, "champion") is None
    assert tracking.get_version_by_alias("no-such-model", "candidate") is None
    mv = mlf.get_model_version(name, "1")
    assert mv.tags[tracking.TAG_KIND] == "policy" and mv.description == "tiny"
    assert mv.run_id == run.info.run_id

    v2 = tracking.register_model_dir(hf_model_dir, name, run_id=run.info.run_id, kind="policy")
    assert v2 == 2 and tracking.get_version_by_alias(name, "candidate") == 2
    tracking.set_alias(name, 1, "champion")
    assert tracking.get_version_by_alias(name, "champion") == 1

    loaded_dir = tracking.load_registered(name, "candidate")
    assert (loaded_dir / "config.json").is_file() and list(loaded_dir.glob("*.safetensors"))
    original = AutoModelForCausalLM.from_pretrained(hf_model_dir).state_dict()
    loaded = AutoModelForCausalLM.from_pretrained(loaded_dir).state_dict()
    assert original.keys() == loaded.keys()
    assert all(torch.equal(original[k], loaded[k]) for k in original)
    assert tracking.load_registered(name, version=1).is_dir()

    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}@champion")  # models from code: nothing unpickled
    assert Path(pyfunc.unwrap_python_model().model_dir).samefile(tracking.load_registered(name))

    with pytest.raises(LookupError):
        tracking.load_registered(name, "staging")
    with pytest.raises(ValueError, match="kind"):
        tracking.register_model_dir(hf_model_dir, name, run_id=run.info.run_id, kind="bogus")


def test_promote_rollback_and_audit(mlf: MlflowClient, tmp_path: Path) -> None:
    from r2m.config import PromoteConfig
    from r2m.promotion import Evidence, decide

    name = "test-rm"

    def register(correct: int, eval_set: str = "rm_test.jsonl:abc") -> int:
        evidence = Evidence("reward_model", eval_set, correct=correct, n_pairs=200, ece=0.05)
        with tracking.stage_run("register", "pipe-promote") as run:
            return tracking.register_model_dir(
                _head_dir(tmp_path / f"rm{correct}{eval_set}", correct),
                name,
                run_id=run.info.run_id,
                kind="reward_model",
                tags=evidence.to_tags(),
            )

    def gate(cand: int, cand_tags: dict, champ: int | None, champ_tags: dict | None):
        champion = Evidence.from_tags("reward_model", champ_tags) if champ_tags else None
        return decide(
            Evidence.from_tags("reward_model", cand_tags),
            champion,
            PromoteConfig(),
            candidate_version=cand,
            champion_version=champ,
        )

    with pytest.raises(LookupError, match="does not exist"):
        tracking.promote(name, gate)
    assert register(160) == 1
    dry = tracking.promote(name, gate, dry_run=True)
    assert dry["promote"] and not dry["promoted"] and tracking.get_version_by_alias(name, "champion") is None
    first = tracking.promote(name, gate)
    assert first["promoted"] and first["champion"] is None and tracking.get_version_by_alias(name, "champion") == 1
    assert {"passed": True, "check": "no champion yet"} in first["checks"]
    assert not tracking.promote(name, gate)["promoted"]  # already the champion

    assert register(165) == 2  # inside v2's interval: a tie keeps v1
    tie = tracking.promote(name, gate)
    assert not tie["promote"] and "tie" in tie["reason"] and tracking.get_version_by_alias(name, "champion") == 1
    forced = tracking.promote(name, gate, force=True)  # a reviewer's override, audited
    assert forced["promoted"] and forced["forced"] and tracking.get_version_by_alias(name, "champion") == 2
    assert tracking.rollback(name)["to"] == 1 and tracking.get_version_by_alias(name, "champion") == 1
    assert register(190) == 3
    assert tracking.promote(name, gate)["promoted"] and tracking.get_version_by_alias(name, "champion") == 3
    assert register(195, eval_set="rm_test.jsonl:other") == 4
    assert "not comparable" in tracking.promote(name, gate)["reason"]

    with pytest.raises(LookupError, match="staging"):
        tracking.promote(name, gate, from_alias="staging")
    assert tracking.rollback(name, dry_run=True) == {**tracking.rollback(name, dry_run=True), "from": 3, "to": 1}
    assert tracking.get_version_by_alias(name, "champion") == 3
    back = tracking.rollback(name)
    assert back["rolled_back"] and tracking.get_version_by_alias(name, "champion") == 1
    with pytest.raises(LookupError, match="no previous holder"):
        tracking.rollback(name)

    log = tracking.audit_log(name)
    assert [(e["action"], e["alias"], e["from"], e["to"]) for e in log] == [
        ("register", "candidate", None, 1),
        ("promote", "champion", None, 1),
        ("register", "candidate", 1, 2),
        ("force", "champion", 1, 2),
        ("rollback", "champion", 2, 1),
        ("register", "candidate", 2, 3),
        ("promote", "champion", 1, 3),
        ("register", "candidate", 3, 4),
        ("rollback", "champion", 3, 1),
    ]
    assert [e["seq"] for e in log] == list(range(1, 10)) and all(e["user"] and e["time"].endswith("Z") for e in log)
    assert "lies below the candidate" in log[6]["reason"] and "tie" in log[3]["reason"]
    assert mlf.get_model_version(name, "1").tags["r2m.alias.champion"].endswith("rollback")

    mlf.set_registered_model_alias(name, "champion", "2")  # moved outside r2m: "previous" is unknown
    with pytest.raises(LookupError, match="outside r2m"):
        tracking.rollback(name)


def test_a_rerun_links_to_the_stage_run_that_failed_or_died(mlf: MlflowClient) -> None:
    parent = tracking.pipeline_run("pipe-retry")
    with pytest.raises(RuntimeError), tracking.stage_run("rl-grpo-r2m", "pipe-retry"):
        raise RuntimeError("boom")
    with tracking.stage_run("rl-grpo-r2m", "pipe-retry") as retry:
        pass
    query = f"attributes.status = 'FAILED' and tags.`mlflow.parentRunId` = '{parent}'"
    (failed,) = mlf.search_runs([mlf.get_run(parent).info.experiment_id], query, max_results=5)
    assert mlf.get_run(retry.info.run_id).data.tags[tracking.TAG_RETRY_OF] == failed.info.run_id
    with tracking.stage_run("rl-grpo-r2m", "pipe-retry") as third:  # the last one finished: no link
        pass
    assert tracking.TAG_RETRY_OF not in mlf.get_run(third.info.run_id).data.tags
    # a run left RUNNING by a process that died (kill -9) is ended FAILED by the next run of the stage
    exp = mlf.get_run(parent).info.experiment_id
    dead = mlf.create_run(exp, tags={tracking.TAG_STAGE: "evaluate", "mlflow.parentRunId": parent}).info.run_id
    with tracking.stage_run("evaluate", "pipe-retry") as after:
        pass
    assert mlf.get_run(dead).info.status == "FAILED"
    assert mlf.get_run(after.info.run_id).data.tags[tracking.TAG_RETRY_OF] == dead
