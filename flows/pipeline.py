"""The Prefect flow: prepare -> sft -> reward_model -> rl (each algo x method) -> evaluate -> hidden_states -> report
-> register.

Each task wraps the same stage function that ``dvc.yaml`` runs. ``hidden_states`` (the paper's hidden-state analysis
of the SFT policy and every run's final policy) runs once after all RL runs and evaluations, before the report that
quotes it. The RL task retries once: a retry resumes from the last finished round instead of starting over. One
MLflow parent run per flow run, one nested run per stage.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from r2m.config import load_config
from r2m.env import set_offline_env
from tasks import evaluate, hidden_states, prepare, register, report, reward_model, rl, sft

set_offline_env()

prepare_task = task(name="prepare", cache_policy=NO_CACHE)(prepare.run)
sft_task = task(name="sft", cache_policy=NO_CACHE)(sft.run)
reward_model_task = task(name="reward_model", cache_policy=NO_CACHE)(reward_model.run)
rl_task = task(name="rl", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)(rl.run)
evaluate_task = task(name="evaluate", cache_policy=NO_CACHE)(evaluate.run)
hidden_states_task = task(name="hidden_states", cache_policy=NO_CACHE)(hidden_states.run)
report_task = task(name="report", cache_policy=NO_CACHE)(report.run)
register_task = task(name="register", cache_policy=NO_CACHE)(register.run)


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
    common = dict(workdir=workdir, pipeline_id=pid, mlflow=mlflow)
    prepare_task(cfg, **common)
    sft_task(cfg, **common)
    reward_model_task(cfg, **common)
    for algo in cfg.rl.algos:
        for method in cfg.rl.methods:
            name = f"{algo}-{method}"
            rl_task.with_options(task_run_name=f"rl-{name}")(cfg, algo=algo, method=method, **common)
            evaluate_task.with_options(task_run_name=f"evaluate-{name}")(cfg, algo=algo, method=method, **common)
    hidden_states_task(cfg, **common)
    summary = report_task(cfg, **common)
    registered = register_task(cfg, **common)["registered"] if mlflow else None
    if mlflow:
        from r2m import tracking

        tracking.finish_pipeline_run(pid)
    create_markdown_artifact(
        key="r2m-summary", markdown=summary["table"], description=f"R2M pipeline summary ({cfg.profile})"
    )
    logger.info("summary:\n%s", summary["table"])
    return {"table": summary["table"], "registered": registered}
