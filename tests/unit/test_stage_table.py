"""The stage table is the one declaration of the pipeline: dvc.yaml, the Prefect flow and the CLI follow it, and a
stage can read only the config it declares."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import yaml

from r2m.config import Config, ConfigError, load_config
from tasks import dvc_yaml, stages


def test_committed_dvc_yaml_is_the_generated_one(repo):
    assert dvc_yaml.check(repo / "dvc.yaml") is None, "run `r2m dvc-yaml` and commit dvc.yaml"


def test_check_names_a_drifted_dvc_yaml(tmp_path):
    f = tmp_path / "dvc.yaml"
    f.write_text(dvc_yaml.render().replace("python -m tasks sft", "python -m tasks sft --set sft.steps=1"))
    assert "r2m dvc-yaml" in dvc_yaml.check(f)


def test_every_stage_is_in_dvc_yaml_with_its_declarations(repo):
    doc = yaml.safe_load((repo / "dvc.yaml").read_text())
    cfg = load_config(repo / "params.yaml")
    # every stage the default methods need; the optional ones (ensembles, PAR) only when a method needs them
    assert list(doc["stages"]) == [s.name for s in stages.STAGES if s.needed(cfg)]
    assert [s.name for s in stages.STAGES if not s.needed(cfg)] == ["reward_ensemble", "par_reference"]
    for s in stages.STAGES:
        if not s.needed(cfg):
            continue
        entry = doc["stages"][s.name]
        assert ("foreach" in entry) == s.matrix
        body = entry["do"] if s.matrix else entry
        assert body["params"] == [*stages.COMMON_PARAMS, *s.params]
        assert "configs/${profile}.yaml" in body["deps"]
        assert set(s.code()) <= set(body["deps"])
        if s.matrix:
            assert list(entry["foreach"]) == cfg.run_names()


def test_code_deps_follow_imports_and_leave_out_orchestration():
    rl = stages.get("rl").code()
    for f in ("tasks/rl.py", "tasks/common.py", "r2m/rl/r2m.py", "r2m/losses.py", "r2m/schedule.py", "r2m/__init__.py"):
        assert f in rl, f
    evaluate = stages.get("evaluate").code()
    assert "r2m/judges/gold.py" in evaluate and "r2m/evaluation/compare.py" in evaluate
    for deps in (rl, evaluate):
        assert not any(d.startswith("flows/") for d in deps)
        assert "tasks/stages.py" not in deps  # the table itself is compared by DVC through dvc.yaml
    assert "r2m/rl/r2m.py" not in stages.get("prepare").code()
    assert "tasks/__main__.py" in stages.get("prepare").code()


def test_declared_params_are_real_config_keys():
    cfg = Config()
    for s in stages.STAGES:
        for p in (*stages.COMMON_PARAMS, *s.params):
            section, _, key = p.partition(".")
            assert hasattr(cfg, section), f"{s.name}: {p}"
            if key:
                assert key in {f.name for f in dataclasses.fields(getattr(cfg, section))}, f"{s.name}: {p}"


def test_stage_config_allows_only_what_is_declared(repo):
    cfg = load_config(repo / "params.yaml", profile="ci")
    view = stages.stage_config(cfg, stages.get("report"))
    assert view.rl.algos == cfg.rl.algos and view.seed == cfg.seed and view.paths.data == "data"
    assert view.run_names() == cfg.run_names()
    with pytest.raises(ConfigError, match=r"stage 'report' reads config 'rl.lr' but does not declare it"):
        _ = view.rl.lr
    with pytest.raises(ConfigError, match=r"'sft.steps'"):
        _ = view.sft.steps
    d = view.to_dict()
    assert d["rl"] == {"algos": cfg.rl.algos, "methods": cfg.rl.methods, "steps": cfg.rl.steps}
    assert "sft" not in d and "judge" not in d
    assert view.fingerprint() != cfg.fingerprint()


def test_prefect_flow_and_cli_use_the_table():
    from flows.cli import stage as stage_command
    from flows.pipeline import TASKS

    assert list(TASKS) == list(stages.NAMES)
    assert TASKS["rl"].retries == 1
    choices = next(p for p in stage_command.params if p.name == "name").type.choices
    assert tuple(choices) == stages.NAMES


def test_matrix_kwargs():
    assert stages.get("rl").matrix_kwargs("grpo-r2m_no_gre") == {"algo": "grpo", "method": "r2m_no_gre"}
    assert stages.get("sft").matrix_kwargs(None) == {}
    with pytest.raises(ValueError, match="name the run"):
        stages.get("evaluate").matrix_kwargs(None)
    with pytest.raises(ValueError, match="unknown stage 'train'"):
        stages.get("train")


def test_cli_writes_the_dvc_yaml_of_the_project_it_is_run_in(repo, tmp_path, monkeypatch):
    # an editable install lives elsewhere than a clone: `r2m dvc-yaml` must write the clone's file, from its params
    from click.testing import CliRunner

    from flows.cli import main

    before = (repo / "dvc.yaml").read_text()
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["rl"]["methods"] = ["vanilla", "kl", "par"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(repo / "configs", tmp_path / "configs")  # the profiles the params name
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["dvc-yaml"])
    assert res.exit_code == 0, res.output
    written = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    assert "par_reference" in written["stages"]
    assert set(written["stages"]["rl"]["foreach"]) == {"grpo-vanilla", "grpo-kl", "grpo-par"}
    assert (repo / "dvc.yaml").read_text() == before  # the install's file untouched
    assert CliRunner().invoke(main, ["dvc-yaml", "--check"]).exit_code == 0

    empty = tmp_path / "elsewhere"
    empty.mkdir()
    res = CliRunner().invoke(main, ["dvc-yaml", "--repo", str(empty)])
    assert res.exit_code != 0 and "has no params.yaml" in res.output
    assert not (empty / "dvc.yaml").exists()


def test_an_unknown_algo_or_method_is_refused_before_anything_runs(tmp_path):
    import subprocess
    import sys

    rl = stages.get("rl")
    assert rl.matrix_kwargs("rloo-r2m") == {"algo": "rloo", "method": "r2m"}
    with pytest.raises(ConfigError, match=r"--method 'foo': unknown method; valid: .*r2m"):
        rl.matrix_kwargs("grpo-foo")
    with pytest.raises(ConfigError, match=r"--algo 'ppo': unknown RL algorithm; valid: grpo, rloo"):
        rl.matrix_kwargs("ppo-vanilla")
    cmd = [sys.executable, "-m", "tasks", "rl", "--algo", "grpo", "--method", "foo", "--profile", "ci"]
    done = subprocess.run([*cmd, "--workdir", str(tmp_path), "--no-mlflow"], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: rl: --method 'foo': unknown method")
    assert not (tmp_path / "models").exists()
