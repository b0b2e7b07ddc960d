"""Inputs longer than the context: a 100,000-character RL prompt is cut to policy.max_prompt_tokens (its end kept)
and counted, and the run stays small; RM texts longer than reward_model.max_length are counted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from r2m.config import load_config
from r2m.data.io import read_jsonl, write_jsonl
from tasks.common import run_stage
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_a_huge_rl_prompt_is_truncated_counted_and_cheap(tiny_pipeline, tmp_path):
    wd = tmp_path / "wd"
    shutil.copytree(tiny_pipeline, wd, ignore=shutil.ignore_patterns("rl", "eval", "timings", "mlflow.db"))
    rows = read_jsonl(wd / "data" / "rl_prompts.jsonl")[:16]
    filler = "I have been thinking about this for a long time and I do not know what to do. " * 1300
    write_jsonl(wd / "data" / "rl_prompts.jsonl", [{**r, "prompt": filler + r["prompt"]} for r in rows])
    assert all(len(r["prompt"]) > 100_000 for r in read_jsonl(wd / "data" / "rl_prompts.jsonl"))
    cmd = [sys.executable, "-m", "tasks", "rl", "--algo", "grpo", "--method", "vanilla", "--profile", "ci"]
    cmd += ["--params", str(REPO / "params.yaml"), "--workdir", str(wd), "--no-mlflow"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "16 of 16 prompts longer than policy.max_prompt_tokens lost their start" in done.stderr
    summary = json.loads((wd / "metrics" / "rl" / "grpo-vanilla.json").read_text())
    assert summary["prompts_truncated"] == 16 and summary["steps"] == 4
    timings = json.loads((wd / "timings" / "rl-grpo-vanilla.json").read_text())
    assert timings["peak_rss_gb"] < 2.5  # without the cut: past 6 GB within 100 s, still at step 0


def test_rm_texts_longer_than_the_budget_are_counted(tiny_pipeline, tmp_path):
    wd = tmp_path / "wd"
    shutil.copytree(tiny_pipeline, wd, ignore=shutil.ignore_patterns("rl", "eval", "timings", "mlflow.db"))
    short = load_config(REPO / "params.yaml", profile="ci", overrides=["reward_model.max_length=24"])
    metrics = run_stage("reward_model", short, wd, mlflow=False)["metrics"]
    n_texts = 2 * metrics["n_train"]
    assert 0 < metrics["texts_truncated"] <= n_texts
    full = load_config(REPO / "params.yaml", profile="ci", overrides=["reward_model.max_length=100000"])
    assert run_stage("reward_model", full, wd, mlflow=False)["metrics"]["texts_truncated"] == 0
