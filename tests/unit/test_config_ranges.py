"""Every numeric parameter has a range checked when the config loads; a value outside it is one line naming the
parameter, before any stage runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from r2m.config import Config, ConfigError, load_config
from r2m.config_ranges import RANGES, describe, in_range, numeric_fields

ROOT = Path(__file__).resolve().parents[2]


def test_every_numeric_parameter_has_a_range_or_choices():
    keys = {k for k, _, f in numeric_fields(Config()) if "choices" not in f.metadata}
    assert sorted(keys - set(RANGES)) == []  # a new numeric parameter needs its range
    assert sorted(set(RANGES) - keys) == []  # no range for a parameter that no longer exists


@pytest.mark.parametrize("profile", sorted(p.stem for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_profile_and_the_defaults_are_in_range(profile):
    load_config(ROOT / "params.yaml", profile=profile)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("rl.lr=-1", "param rl.lr: must be > 0, got -1.0"),
        ("rl.temperature=-1", "param rl.temperature: must be > 0, got -1.0"),
        ("rl.max_completion_length=0", "param rl.max_completion_length: must be >= 1, got 0"),
        ("sft.steps=-5", "param sft.steps: must be >= 0, got -5"),
        ("data.n_rl_prompts=0", "param data.n_rl_prompts: must be >= 1, got 0"),
        ("preferences.label_noise=0.5", "param preferences.label_noise: must be in [0, 0.5), got 0.5"),
        ("rl.vllm_server_port=70000", "param rl.vllm_server_port: must be in [1, 65535], got 70000"),
        ("methods.repetition_penalty.max_penalty=0.5", "must be <= 0, got 0.5"),
        ("r2m.rm_lr=.nan", "param r2m.rm_lr: must be > 0, got nan"),
    ],
)
def test_a_value_out_of_range_names_the_parameter(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_config(ROOT / "params.yaml", profile="ci", overrides=[override])


def test_range_arithmetic():
    assert in_range(0, "[0,)") and not in_range(0, "(0,)") and in_range(1e-9, "(0,)")
    assert in_range(0.49, "[0,0.5)") and not in_range(0.5, "[0,0.5)") and in_range(1, "[0,1]")
    assert not in_range(float("nan"), "(,)") and in_range(-3, "(,0]")
    assert describe("[0,0.5)") == "in [0, 0.5)" and describe("(1,)") == "> 1" and describe("(,0]") == "<= 0"


def test_a_stage_with_a_bad_parameter_writes_nothing(tmp_path):
    cmd = [sys.executable, "-m", "tasks", "rl", "--algo", "grpo", "--method", "vanilla", "--profile", "ci"]
    cmd += ["--params", str(ROOT / "params.yaml"), "--workdir", str(tmp_path), "--set", "rl.lr=-1", "--no-mlflow"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == "error: rl: param rl.lr: must be > 0, got -1.0"
    assert list(tmp_path.iterdir()) == []
