"""`dvc repro` runs the same stages on the `ci` profile; a second `dvc repro` has nothing to do."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

pytestmark = pytest.mark.slow


def sh(cmd: list[str], cwd, env) -> str:
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout + p.stderr


def test_dvc_repro_then_nothing_to_reproduce(repo, tmp_path):
    wd = tmp_path / "proj"
    wd.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(repo / name, wd / name)
    for d in ("configs", "r2m", "tasks"):
        shutil.copytree(repo / d, wd / d, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((wd / "params.yaml").read_text())
    params["profile"] = "ci"
    (wd / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(wd), "R2M_PIPELINE_ID": "dvc-test"}
    sh(["git", "init", "-q"], wd, env)
    sh(["dvc", "init", "-q"], wd, env)
    out = sh(["dvc", "repro"], wd, env)
    assert "Running stage 'rl@grpo-vanilla'" in out or "rl@" in out
    for f in (
        "metrics/summary.json",
        "plots/proxy_vs_gold.png",
        "registry.json",
        "metrics/hidden_states.json",
        "plots/hidden_states.png",
        "models/rl/grpo-vanilla/final/policy/model.safetensors",
    ):
        assert (wd / f).exists(), f
    again = sh(["dvc", "repro"], wd, env)
    assert "Data and pipelines are up to date" in again, again
    status = sh(["dvc", "status"], wd, env)
    assert "up to date" in status
