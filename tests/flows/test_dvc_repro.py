"""`dvc repro` runs the same stages on the `ci` profile; a second `dvc repro` has nothing to do; the DVC commands a
user reaches for (metrics show/diff, plots show, exp run -S) work on the result."""

from __future__ import annotations

import json
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
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(repo / name, wd / name)
    shutil.copytree(repo / ".dvc", wd / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    shutil.copy(repo / ".dvcignore", wd / ".dvcignore")
    for d in ("configs", "r2m", "tasks"):
        shutil.copytree(repo / d, wd / d, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((wd / "params.yaml").read_text())
    params["profile"] = "ci"
    (wd / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(wd), "R2M_PIPELINE_ID": "dvc-test"}
    sh(["git", "init", "-q"], wd, env)
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

    # what the committed .dvc/config sets: no analytics, no update check (offline-safe)
    assert "analytics = false" in (wd / ".dvc" / "config").read_text()
    metrics = json.loads(sh(["dvc", "metrics", "show", "--json"], wd, env))
    shown = json.dumps(metrics)
    for key in ("test_accuracy", "gold_score_final", "win_rate_ties_half", "loss_final"):
        assert key in shown, key
    plots = sh(["dvc", "plots", "show", "-o", "dvc_plots"], wd, env)
    assert (wd / "dvc_plots" / "index.html").exists(), plots
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    sh([*git, "add", "-A"], wd, env)
    sh([*git, "commit", "-qm", "baseline"], wd, env)
    # an experiment that changes only the analysis: only hidden_states and what follows it rerun
    out = sh(["dvc", "exp", "run", "-S", "analysis.n_permutations=10"], wd, env)
    assert "Running stage 'hidden_states'" in out and "Running stage 'sft'" not in out, out
    diff = json.loads(sh(["dvc", "exp", "show", "--json"], wd, env))
    assert diff, "dvc exp show lists no experiment"
    assert "metrics/hidden_states.json" in sh(["dvc", "metrics", "diff", "--all"], wd, env)
