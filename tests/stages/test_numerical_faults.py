"""RL on the `ci` profile with broken numbers: a non-finite reward skips the step (the policy is not touched) and
stops the run after rl.max_nonfinite_steps with one line naming the source; a runaway R2M head is reported."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from r2m.config import load_config
from r2m.paths import Paths
from r2m.rl.numerics import NumericalFault
from tasks.common import run_stage
from tests.conftest import REPO


@pytest.fixture
def workdir(tiny_pipeline, tmp_path):
    wd = tmp_path / "wd"
    shutil.copytree(tiny_pipeline, wd, ignore=shutil.ignore_patterns("rl", "eval", "timings", "mlflow.db"))
    return wd


def _inf_bias(wd):
    head = wd / "models" / "rm" / "head.safetensors"
    state = load_file(head)
    state["bias"] = torch.full_like(state["bias"], float("inf"))
    save_file(state, head)


def test_non_finite_rewards_skip_steps_then_stop_the_run(workdir, ci_cfg):
    _inf_bias(workdir)
    with pytest.raises(NumericalFault, match=r"3 RL steps had non-finite values \(steps 1, 2, 3; .*reward: 4 of 4"):
        run_stage("rl", ci_cfg, workdir, mlflow=False, run="grpo-vanilla")
    run_dir = Paths.of(ci_cfg, workdir).rl_run("grpo-vanilla")
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["skipped_nonfinite"][0].startswith("reward: ") for r in rows)
    assert all("train_reward" in r["nonfinite"] for r in rows)  # named, not dropped
    assert not (run_dir / "final").exists()  # no "final" policy for a broken run


def test_the_cli_says_it_in_one_line(workdir):
    _inf_bias(workdir)
    cmd = [sys.executable, "-m", "tasks", "rl", "--algo", "grpo", "--method", "vanilla", "--profile", "ci"]
    cmd += ["--params", str(REPO / "params.yaml"), "--workdir", str(workdir), "--no-mlflow"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: rl: 3 RL steps had non-finite values") and "Traceback" not in done.stderr


def test_a_runaway_r2m_head_is_reported(workdir):
    cfg = load_config(REPO / "params.yaml", profile="ci", overrides=["r2m.rm_lr=1000000.0"])
    out = run_stage("rl", cfg, workdir, mlflow=False, run="grpo-r2m")["metrics"]
    assert isinstance(out["reward_diverged_step"], int)
    rows = [
        json.loads(x) for x in (Paths.of(cfg, workdir).rl_run("grpo-r2m") / "metrics.jsonl").read_text().splitlines()
    ]
    ratios = [r["reward_scale_ratio"] for r in rows if "reward_scale_ratio" in r]
    assert ratios and max(ratios) > cfg.rl.max_reward_scale
