"""Shared fixtures: offline env, a tiny pipeline workdir built once per session on the `ci` profile."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from r2m.env import set_offline_env

set_offline_env()
REPO = Path(__file__).resolve().parents[1]


def ci_overrides(**extra: object) -> list[str]:
    return [f"{k}={v}" for k, v in extra.items()]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def make_workdir(dst: Path) -> Path:
    """A working directory with the project's params and profiles (stages write under it)."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", dst / "params.yaml")
    shutil.copytree(REPO / "configs", dst / "configs", dirs_exist_ok=True)
    return dst


@pytest.fixture(scope="session")
def ci_cfg():
    from r2m.config import load_config

    return load_config(REPO / "params.yaml", profile="ci")


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory, ci_cfg) -> Path:
    """prepare -> sft -> preferences -> reward_model on the `ci` profile, without MLflow; shared by the stage tests."""
    from tasks.common import run_stage

    wd = make_workdir(tmp_path_factory.mktemp("pipeline"))
    run_stage("prepare", ci_cfg, wd, mlflow=False)
    run_stage("sft", ci_cfg, wd, mlflow=False)
    run_stage("preferences", ci_cfg, wd, mlflow=False)
    run_stage("reward_model", ci_cfg, wd, mlflow=False)
    return wd


_SESSION_MLFLOW_URI = os.environ.get("MLFLOW_TRACKING_URI", "")


@pytest.fixture(autouse=True)
def _no_user_state(monkeypatch, tmp_path_factory):
    home = tmp_path_factory.getbasetemp() / "prefect-home"
    monkeypatch.setenv("PREFECT_HOME", str(home))
    # the value the session started with: mlflow.set_tracking_uri exports the variable, so a test calling it would
    # otherwise send every later test's runs (and its stage subprocesses') to that test's database
    monkeypatch.setenv("MLFLOW_TRACKING_URI", _SESSION_MLFLOW_URI)
