"""`dvc repro` runs the same stages on the `ci` profile; a second `dvc repro` has nothing to do; the DVC commands a
user reaches for (metrics show/diff, plots show/diff, exp run -S, exp show --only-changed, push to a local remote
and pull into a clean clone) work on the result."""

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
    assert "dvc_plots" not in sh(["git", "status", "--porcelain"], wd, env), "dvc_plots/ is not ignored"
    sh([*git, "add", "-A"], wd, env)
    sh([*git, "commit", "-qm", "baseline"], wd, env)
    assert sh(["git", "status", "--porcelain"], wd, env) == "", "a dvc repro output is neither tracked nor ignored"

    # a local remote: dvc push, then a clean clone's dvc pull restores everything and there is nothing to reproduce
    store = tmp_path / "store"
    sh(["dvc", "remote", "add", "-d", "store", str(store)], wd, env)
    sh([*git, "commit", "-qam", "remote"], wd, env)
    sh(["dvc", "push"], wd, env)
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(wd), str(clone)], tmp_path, env)
    assert not (clone / "models").exists()
    sh(["dvc", "pull"], clone, {**env, "PYTHONPATH": str(clone)})
    for f in ("models/rl/grpo-vanilla/final/policy/model.safetensors", "data/rm_train.jsonl", "metrics/summary.json"):
        assert (clone / f).read_bytes() == (wd / f).read_bytes(), f
    assert "up to date" in sh(["dvc", "status"], clone, {**env, "PYTHONPATH": str(clone)})

    # an experiment that changes only the analysis: only hidden_states and what follows it rerun
    out = sh(["dvc", "exp", "run", "-n", "perm10", "-S", "analysis.n_permutations=10"], wd, env)
    assert "Running stage 'hidden_states'" in out and "Running stage 'sft'" not in out, out
    # -S on a key the profile sets wins over the profile (ci sets best_of_n.n_prompts: 4)
    out = sh(["dvc", "exp", "run", "-n", "bon2", "-S", "best_of_n.n_prompts=2"], wd, env)
    assert "Running stage 'best_of_n'" in out and "Running stage 'rl@" not in out, out
    assert json.loads((wd / "metrics" / "best_of_n.json").read_text())["n_prompts"] == 2
    shown = json.loads(sh(["dvc", "exp", "show", "--json"], wd, env))
    exps = {r["name"]: r["data"] for row in shown for e in row.get("experiments") or [] for r in e["revs"]}
    assert {"perm10", "bon2"} <= set(exps), list(exps)
    bon2 = exps["bon2"]
    assert bon2["metrics"]["metrics/best_of_n.json"]["data"]["n_prompts"] == 2  # metrics tracked, not '!'
    assert bon2["params"]["params.yaml"]["data"]["best_of_n"]["n_prompts"] == 2
    changed = sh(["dvc", "exp", "show", "--only-changed", "--csv"], wd, env).splitlines()[0].split(",")
    assert "best_of_n.n_prompts" in changed and "analysis.n_permutations" in changed and len(changed) < 120, changed
    assert "metrics/hidden_states.json" in sh(["dvc", "metrics", "diff", "--all"], wd, env)
    assert "n_prompts" in sh(["dvc", "metrics", "diff", "HEAD", "bon2"], wd, env)
    sh(["dvc", "plots", "diff", "HEAD", "bon2", "-o", "dvc_plots"], wd, env)
    assert (wd / "dvc_plots" / "index.html").exists()
