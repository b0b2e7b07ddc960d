"""Lineage: the git state and input hashes a stage run is tagged with, the parent run's status under one process
per stage (as ``dvc repro`` runs them), and the refusal of a copied project's MLflow database."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import mlflow
import pytest
import yaml

from r2m import tracking
from r2m.config import ConfigError, load_config
from tasks import lineage, stages
from tasks.common import tracked
from tests.conftest import REPO

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def _sh(cwd: Path, *cmd: str) -> str:
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_git_state_commit_and_dirty_flag(tmp_path):
    assert lineage.git_state(tmp_path) == {"r2m.git.commit": "unknown", "r2m.git.dirty": "unknown"}
    _sh(tmp_path, "git", "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    _sh(tmp_path, "git", "add", "a.py")
    _sh(tmp_path, *GIT, "commit", "-qm", "a")
    head = _sh(tmp_path, "git", "rev-parse", "HEAD")
    assert lineage.git_state(tmp_path) == {"r2m.git.commit": head, "r2m.git.dirty": "false"}
    (tmp_path / "untracked.txt").write_text("not code\n")  # untracked files do not make the code dirty
    assert lineage.git_state(tmp_path)["r2m.git.dirty"] == "false"
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "m.json").write_text("{}\n")
    _sh(tmp_path, "git", "add", "metrics")
    _sh(tmp_path, *GIT, "commit", "-qm", "m")
    head = _sh(tmp_path, "git", "rev-parse", "HEAD")
    (tmp_path / "metrics" / "m.json").write_text('{"acc": 1}\n')  # the pipeline's own output: not dirty code
    assert lineage.git_state(tmp_path)["r2m.git.dirty"] == "false"
    (tmp_path / "a.py").write_text("x = 2\n")
    assert lineage.git_state(tmp_path) == {"r2m.git.commit": head, "r2m.git.dirty": "true"}


def test_stage_tags_hash_every_input_and_quote_dvc_lock(tmp_path, ci_cfg):
    sft = stages.get("sft")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sft.jsonl").write_text('{"prompt": "p", "completion": "c"}\n')
    lock = {"schema": "2.0", "stages": {"prepare": {"outs": [{"path": "data/sft.jsonl", "md5": "abc", "size": 3}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    tags = lineage.stage_tags(ci_cfg, sft, None, tmp_path)
    assert "data/sft.jsonl" in sft.deps  # what this test relies on
    assert tags["r2m.input.data/sft.jsonl"] == hashlib.sha256((tmp_path / "data/sft.jsonl").read_bytes()).hexdigest()
    assert tags["r2m.dvc.data/sft.jsonl"] == "abc"
    before = tags["r2m.inputs.sha256"]
    (tmp_path / "data" / "sft.jsonl").write_text('{"prompt": "p", "completion": "d"}\n')
    after = lineage.stage_tags(ci_cfg, sft, None, tmp_path)
    assert (
        after["r2m.inputs.sha256"] != before and after["r2m.input.data/sft.jsonl"] != tags["r2m.input.data/sft.jsonl"]
    )
    (tmp_path / "dvc.lock").unlink()
    assert not any(k.startswith("r2m.dvc.") for k in lineage.stage_tags(ci_cfg, sft, None, tmp_path))


@pytest.fixture()
def project(tmp_path, monkeypatch, ci_cfg):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(tracking.PIPELINE_ID_ENV, raising=False)
    yield tmp_path
    if mlflow.active_run() is not None:
        mlflow.end_run()
    tracking._state.clear()


def _parent(client, pid: str):
    return client.get_run(tracking.find_pipeline_run(pid))


def test_parent_run_follows_each_stage_and_carries_the_config(project, ci_cfg):
    pid = "lineage-test"
    with tracked("prepare", ci_cfg, project, pid, params={"x": 1}) as run:
        client = mlflow.MlflowClient()
        assert _parent(client, pid).info.status == "RUNNING"
        assert run.parent_id == _parent(client, pid).info.run_id
    parent = _parent(client, pid)
    assert parent.info.status == "FINISHED"  # no flow closes it under dvc repro: the stage does
    assert parent.data.params["rl.lr"] == str(ci_cfg.rl.lr) and parent.data.params["profile"] == "ci"
    assert parent.data.tags["r2m.git.dirty"] in ("true", "false")
    with pytest.raises(RuntimeError, match="boom"), tracked("sft", ci_cfg, project, pid):
        raise RuntimeError("boom")
    assert _parent(client, pid).info.status == "FAILED"
    with tracked("sft", ci_cfg, project, pid):
        pass
    assert _parent(client, pid).info.status == "FINISHED"  # a rerun that succeeds finishes it again
    other = load_config(REPO / "params.yaml", profile="ci", overrides=["rl.lr=0.123"])
    with tracked("sft", other, project, pid):
        pass
    parent = _parent(client, pid)
    assert parent.data.params["rl.lr"] == str(ci_cfg.rl.lr) and parent.data.tags["r2m.config.differs"] == "rl.lr"


def test_a_copied_projects_database_is_refused(project, ci_cfg, tmp_path_factory):
    with tracked("prepare", ci_cfg, project, None):
        pass
    copy = tmp_path_factory.mktemp("copy") / "proj"
    shutil.copytree(project, copy)
    tracking._state.clear()
    with pytest.raises(ConfigError, match=r"mlflow.db: experiment 'r2m' keeps its artifacts in .*outside this project"):
        with tracked("prepare", ci_cfg, copy, None):
            pass
    renamed = load_config(REPO / "params.yaml", profile="ci", overrides=["mlflow.experiment=r2m-copy"])
    with tracked("prepare", renamed, copy, None):  # the other fix the message names
        pass
    exp = mlflow.MlflowClient().get_experiment_by_name("r2m-copy")
    assert Path(mlflow.utils.file_utils.local_file_uri_to_path(exp.artifact_location)) == (copy / "mlartifacts")
