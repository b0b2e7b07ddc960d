"""The Prefect flow: every stage of the stage table (:mod:`tasks.stages`) in order, as Prefect tasks.

prepare -> sft -> reward_model -> rl and evaluate (each ``<algo>-<method>``) -> hidden_states -> report -> register.
Each task runs its stage exactly as ``dvc repro`` does: ``python -m tasks <stage>``, in a process of its own. So the
bytes a stage writes cannot depend on the orchestrator (Prefect's own threads draw from Python's global random
generator, which the RL checkpoint saves), and ``r2m run`` and ``dvc repro`` produce the same files. The RL task
retries once: a retry resumes from the last finished round instead of starting over. MLflow: one parent run per
configuration (the one ``dvc repro`` uses too), one nested run per stage.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from r2m.config import load_config
from r2m.data.io import read_json
from r2m.env import set_offline_env
from r2m.evaluation.report import timings_report
from r2m.paths import Paths
from tasks import stages
from tasks.common import dvc_pipeline_id
from tasks.register import REGISTRY_FILE

set_offline_env()


def stage_command(
    stage: str,
    params: str,
    profile: str | None,
    overrides: list[str],
    workdir: str,
    mlflow: bool,
    run: str | None = None,
) -> list[str]:
    """The ``python -m tasks`` command line of one stage (the one ``dvc.yaml`` runs, plus the flow's options)."""
    cmd = [sys.executable, "-m", "tasks", stage, "--params", params, "--workdir", workdir]
    if profile:
        cmd += ["--profile", profile]
    for o in overrides:
        cmd += ["--set", o]
    if run is not None:
        algo, method = run.split("-", 1)
        cmd += ["--algo", algo, "--method", method]
    return cmd + ([] if mlflow else ["--no-mlflow"])


def _stage_task(stage: stages.Stage):
    """The Prefect task of one stage (no Prefect caching: DVC and the RL resume logic decide what to skip)."""

    def run(cmd: list[str]) -> None:
        done = subprocess.run(cmd, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"stage {stage.name} failed (exit {done.returncode}): {' '.join(cmd)}")

    run.__doc__ = stage.doc
    return task(name=stage.name, cache_policy=NO_CACHE, retries=stage.prefect_retries, retry_delay_seconds=2)(run)


TASKS = {s.name: _stage_task(s) for s in stages.STAGES}


@flow(name="r2m-pipeline")
def pipeline(
    profile: str | None = None,
    overrides: list[str] | None = None,
    params: str = "params.yaml",
    workdir: str = ".",
    mlflow: bool = True,
) -> dict:
    """Run the whole pipeline; returns the summary (``metrics/summary.md``), the timings table and the registered
    versions."""
    logger = get_run_logger()
    overrides = list(overrides or [])
    cfg = load_config(params, profile=profile, overrides=overrides)
    logger.info("profile=%s runs=%s workdir=%s", cfg.profile, cfg.run_names(), Path(workdir).resolve())
    for stage in stages.STAGES:
        if not stage.needed(cfg):  # an optional stage no method of rl.methods needs
            continue
        if stage.needs_mlflow and not mlflow:
            logger.info("skipping %s (needs MLflow)", stage.name)
            continue
        for run in cfg.run_names() if stage.matrix else [None]:
            cmd = stage_command(stage.name, params, profile, overrides, workdir, mlflow, run)
            TASKS[stage.name].with_options(task_run_name="-".join([stage.name, *([run] if run else [])]))(cmd)
    paths = Paths.of(cfg, workdir)
    registered = read_json(paths.root / REGISTRY_FILE) if mlflow else None
    if mlflow:
        from r2m import tracking
        from tasks.common import tracking_uri

        tracking.configure(tracking_uri(cfg, workdir), cfg.mlflow.experiment)
        tracking.finish_pipeline_run(dvc_pipeline_id(cfg))
    table = (paths.metrics / "summary.md").read_text()
    create_markdown_artifact(key="r2m-summary", markdown=table, description=f"R2M pipeline summary ({cfg.profile})")
    timings = timings_report(paths.timings, cfg.run_names())
    logger.info("summary:\n%s\ntimings (wall clock, not reproducible):\n%s", table, timings)
    return {"table": table, "timings": timings, "registered": registered}
