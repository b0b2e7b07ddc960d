"""The Prefect flow: every stage of the stage table (:mod:`tasks.stages`) in order, as Prefect tasks.

prepare -> sft -> reward_model -> rl and evaluate (each ``<algo>-<method>``) -> hidden_states -> report -> register.
Each task runs the same stage function that ``dvc repro`` runs (``python -m tasks <stage>``). The RL task retries
once: a retry resumes from the last finished round instead of starting over. One MLflow parent run per flow run,
one nested run per stage.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from r2m.config import Config, load_config
from r2m.env import set_offline_env
from r2m.evaluation.report import timings_report
from r2m.paths import Paths
from tasks import stages
from tasks.common import run_stage

set_offline_env()


def _stage_task(stage: stages.Stage):
    """The Prefect task of one stage (no Prefect caching: DVC and the RL resume logic decide what to skip)."""

    def run(cfg: Config, workdir: str, pipeline_id: str, mlflow: bool, run: str | None = None) -> dict:
        return run_stage(stage.name, cfg, workdir, pipeline_id, mlflow, run=run)

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
    """Run the whole pipeline; returns the report (summary table) and the registered versions."""
    logger = get_run_logger()
    cfg = load_config(params, profile=profile, overrides=overrides or [])
    pid = f"prefect-{flow_run.get_id() or 'local'}"
    logger.info("profile=%s runs=%s workdir=%s", cfg.profile, cfg.run_names(), Path(workdir).resolve())
    results: dict[str, dict] = {}
    for stage in stages.STAGES:
        if stage.needs_mlflow and not mlflow:
            logger.info("skipping %s (needs MLflow)", stage.name)
            continue
        t = TASKS[stage.name]
        if stage.matrix:
            for run in cfg.run_names():
                t.with_options(task_run_name=f"{stage.name}-{run}")(cfg, workdir, pid, mlflow, run=run)
        else:
            results[stage.name] = t(cfg, workdir, pid, mlflow)
    if mlflow:
        from r2m import tracking

        tracking.finish_pipeline_run(pid)
    table = results["report"]["table"]
    create_markdown_artifact(key="r2m-summary", markdown=table, description=f"R2M pipeline summary ({cfg.profile})")
    timings = timings_report(Paths.of(cfg, workdir).timings, cfg.run_names())
    logger.info("summary:\n%s\ntimings (wall clock, not reproducible):\n%s", table, timings)
    registered = results["register"]["registered"] if "register" in results else None
    return {"table": table, "timings": timings, "registered": registered}
